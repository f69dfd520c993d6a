//! Watches: the store's revision-ordered events as the ADDED / MODIFIED /
//! DELETED events a Kubernetes client sees through its selectors.

use std::collections::VecDeque;

use serde_json::Value;
use skep_api::{
    ApiError, ResourceInfo,
    object::{self, WatchEventType},
    selector::{FieldSelector, LabelSelector},
};
use skep_store::{EventKind, ListRequest, ReadConsistency, StoreError, WatchStream};

use crate::{Objects, output, prefix, store_error};

/// Label and field selectors of a list or watch.
#[derive(Debug)]
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
    info: ResourceInfo,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector` strings for objects of `info`.
    pub fn parse(info: &ResourceInfo, labels: &str, fields: &str) -> Result<Self, ApiError> {
        Ok(Self {
            labels: LabelSelector::parse(labels)?,
            fields: FieldSelector::parse(info, fields)?,
            info: *info,
        })
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(&self.info, obj)
    }
}

/// A running watch on a collection: first the current state as ADDED events
/// when it started without a revision, then every change in revision order.
pub struct ObjectWatch {
    initial: VecDeque<Value>,
    stream: Option<WatchStream>,
    gone: Option<ApiError>,
    filter: Option<Filter>,
    revision: u64,
}

impl Objects {
    /// Watches objects of `info` in `namespace` ("" for all) that match
    /// `filter`. With `from` = `None` the watch starts with the current
    /// objects as ADDED events; with `Some(rv)` it replays what changed after
    /// `rv` (a compacted `rv` yields one `410 Gone` error, then ends).
    #[tracing::instrument(skip_all, fields(kind = info.kind, %namespace, ?from))]
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        filter: Option<Filter>,
        from: Option<u64>,
    ) -> Result<ObjectWatch, ApiError> {
        let watch_prefix = prefix(info, namespace);
        let mut initial = VecDeque::new();
        let from = if let Some(from) = from {
            from
        } else {
            let page = self
                .store()
                .list(
                    ListRequest {
                        prefix: watch_prefix.clone().into(),
                        ..ListRequest::default()
                    },
                    ReadConsistency::Linearizable,
                )
                .await
                .map_err(|e| store_error(info, "", e))?;
            for kv in &page.items {
                let obj = output(kv)?;
                if filter.as_ref().is_none_or(|f| f.matches(&obj)) {
                    initial.push_back(obj);
                }
            }
            page.revision
        };
        let (stream, gone) = match self.store().watch(watch_prefix.into_bytes(), from) {
            Ok(stream) => (Some(stream), None),
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => (None, Some(ApiError::gone(requested, compacted))),
            Err(other) => return Err(store_error(info, "", other)),
        };
        Ok(ObjectWatch {
            initial,
            stream,
            gone,
            filter,
            revision: from,
        })
    }
}

impl ObjectWatch {
    /// The next event, `Err` once if the history it needs was compacted (or
    /// the store failed), `None` when the watch is over.
    pub async fn next(&mut self) -> Option<Result<(WatchEventType, Value), ApiError>> {
        if let Some(obj) = self.initial.pop_front() {
            return Some(Ok((WatchEventType::Added, obj)));
        }
        if let Some(gone) = self.gone.take() {
            return Some(Err(gone));
        }
        loop {
            let event = match self.stream.as_mut()?.next().await? {
                Ok(event) => event,
                Err(StoreError::Compacted {
                    requested,
                    compacted,
                }) => {
                    self.stream = None;
                    return Some(Err(ApiError::gone(requested, compacted)));
                }
                Err(err) => {
                    tracing::warn!(%err, "watch stream failed");
                    self.stream = None;
                    return Some(Err(ApiError::internal(err)));
                }
            };
            self.revision = event.revision();
            if let Some(translated) = translate(self.filter.as_ref(), &event) {
                return Some(Ok(translated));
            }
        }
    }

    /// The revision of the last event seen (including filtered-out ones):
    /// where a bookmark says the watch is.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// A store event as the watch event a client sees, given its selectors: an
/// object entering the selection is ADDED, leaving it is DELETED.
fn translate(
    filter: Option<&Filter>,
    event: &skep_store::Event,
) -> Option<(WatchEventType, Value)> {
    let matches = |obj: &Value| filter.is_none_or(|f| f.matches(obj));
    let prev = event.prev_kv.as_ref().and_then(|kv| output(kv).ok());
    let prev_matches = prev.as_ref().is_some_and(matches);
    match event.kind {
        EventKind::Put => {
            let obj = output(&event.kv).ok()?;
            let now_matches = matches(&obj);
            match (prev_matches, now_matches) {
                (_, true) if event.prev_kv.is_none() => Some((WatchEventType::Added, obj)),
                (true, true) => Some((WatchEventType::Modified, obj)),
                (false, true) => Some((WatchEventType::Added, obj)),
                (true, false) => Some((WatchEventType::Deleted, obj)),
                (false, false) => None,
            }
        }
        EventKind::Delete => {
            let mut obj = prev?;
            if !prev_matches {
                return None;
            }
            object::set_resource_version(&mut obj, event.revision());
            Some((WatchEventType::Deleted, obj))
        }
    }
}
