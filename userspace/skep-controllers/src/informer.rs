//! Shared informers, like client-go's: one list+watch per kind kept in an
//! in-memory cache, telling every registered handler what changed. The
//! watch resumes from the last revision it saw after an error and relists
//! when that revision was compacted (`410 Gone`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use skep_api::{ResourceInfo, StatusReason, object::WatchEventType};
use skep_objects::{ListOptions, Objects};
use tokio_util::sync::CancellationToken;

/// Called with `(old, new)`: `(None, Some)` added, `(Some, Some)` changed,
/// `(Some, None)` deleted.
pub type Handler = Box<dyn Fn(Option<&Value>, Option<&Value>) + Send + Sync>;

/// Wait before re-watching after a failure.
const RETRY: Duration = Duration::from_millis(200);

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn object_key(obj: &Value) -> String {
    let ns = skep_api::object::namespace(obj);
    let name = skep_api::object::name(obj);
    if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    }
}

/// Splits a key into `(namespace, name)`.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// One kind's objects, kept current by a watch.
pub struct Informer {
    objects: Objects,
    info: &'static ResourceInfo,
    cache: RwLock<BTreeMap<String, Value>>,
    handlers: RwLock<Vec<Handler>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl Informer {
    fn new(objects: Objects, info: &'static ResourceInfo) -> Self {
        Self {
            objects,
            info,
            cache: RwLock::new(BTreeMap::new()),
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
        }
    }

    /// The kind this informer follows.
    pub fn info(&self) -> &'static ResourceInfo {
        self.info
    }

    /// Registers a handler for every later change (and the initial list).
    pub fn add_handler(&self, handler: Handler) {
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handler);
    }

    /// The cached object under `key`.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// All cached objects.
    pub fn list(&self) -> Vec<Value> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// All cached objects in `namespace`, as `T`s (objects that do not
    /// decode are skipped: the API admitted them, so that is a bug).
    pub fn list_typed<T: DeserializeOwned>(&self, namespace: &str) -> Vec<T> {
        self.list()
            .into_iter()
            .filter(|o| namespace.is_empty() || skep_api::object::namespace(o) == namespace)
            .filter_map(|o| match serde_json::from_value(o) {
                Ok(t) => Some(t),
                Err(err) => {
                    tracing::error!(%err, kind = self.info.kind, "cached object does not decode");
                    None
                }
            })
            .collect()
    }

    /// Waits until the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // An error means the sender is gone, which cannot happen while
        // `self` lives.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    fn notify(&self, old: Option<&Value>, new: Option<&Value>) {
        for handler in self
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            handler(old, new);
        }
    }

    fn put(&self, obj: &Value) {
        let key = object_key(obj);
        let old = self
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, obj.clone());
        self.notify(old.as_ref(), Some(obj));
    }

    fn remove(&self, obj: &Value) {
        let old = self
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&object_key(obj));
        self.notify(Some(old.as_ref().unwrap_or(obj)), None);
    }

    /// Replaces the cache with a fresh list, telling handlers the difference.
    async fn relist(&self) -> Result<u64, skep_api::ApiError> {
        let (items, meta) = self
            .objects
            .list(self.info, "", &ListOptions::default())
            .await?;
        let fresh: BTreeMap<String, Value> =
            items.into_iter().map(|o| (object_key(&o), o)).collect();
        let gone: Vec<Value> = {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            cache
                .iter()
                .filter(|(k, _)| !fresh.contains_key(*k))
                .map(|(_, v)| v.clone())
                .collect()
        };
        for obj in &gone {
            self.remove(obj);
        }
        for obj in fresh.into_values() {
            let unchanged = self.get(&object_key(&obj)).is_some_and(|old| old == obj);
            if !unchanged {
                self.put(&obj);
            }
        }
        self.synced.send_replace(true);
        Ok(meta.resource_version)
    }

    /// Lists and watches until `shutdown`.
    #[tracing::instrument(skip_all, fields(kind = self.info.kind))]
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut revision: Option<u64> = None;
        while !shutdown.is_cancelled() {
            let from = match revision {
                Some(rv) => rv,
                None => match self.relist().await {
                    Ok(rv) => rv,
                    Err(err) => {
                        tracing::warn!(%err, kind = self.info.kind, "failed to list");
                        sleep_or_shutdown(&shutdown, RETRY).await;
                        continue;
                    }
                },
            };
            revision = Some(from);
            let mut watch = match self.objects.watch(self.info, "", None, Some(from)).await {
                Ok(watch) => watch,
                Err(err) => {
                    tracing::warn!(%err, kind = self.info.kind, "failed to watch");
                    if err.reason == StatusReason::Gone || err.reason == StatusReason::Expired {
                        revision = None;
                    }
                    sleep_or_shutdown(&shutdown, RETRY).await;
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = watch.next() => event,
                };
                match event {
                    None => break,
                    Some(Ok((kind, obj))) => {
                        match kind {
                            WatchEventType::Deleted => self.remove(&obj),
                            _ => self.put(&obj),
                        }
                        revision = Some(watch.revision());
                    }
                    Some(Err(err)) => {
                        if err.reason == StatusReason::Gone || err.reason == StatusReason::Expired {
                            tracing::info!(
                                kind = self.info.kind,
                                "watch history compacted; relisting"
                            );
                            revision = None;
                        } else {
                            tracing::warn!(%err, kind = self.info.kind, "watch failed; resuming");
                            revision = Some(watch.revision());
                            sleep_or_shutdown(&shutdown, RETRY).await;
                        }
                        break;
                    }
                }
            }
        }
    }
}

async fn sleep_or_shutdown(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// The informers of one process, one per kind, shared by the controllers.
pub struct Informers {
    objects: Objects,
    /// Keyed by group and plural.
    by_kind: std::sync::Mutex<HashMap<(&'static str, &'static str), Arc<Informer>>>,
}

impl Informers {
    /// No informers yet; they are made on first request.
    pub fn new(objects: Objects) -> Self {
        Self {
            objects,
            by_kind: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The informer for `info`'s kind.
    pub fn of(&self, info: &'static ResourceInfo) -> Arc<Informer> {
        self.by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((info.group, info.plural))
            .or_insert_with(|| Arc::new(Informer::new(self.objects.clone(), info)))
            .clone()
    }

    /// The informer for `T`.
    pub fn of_type<T: k8s_openapi::Resource>(&self) -> Arc<Informer> {
        self.of(skep_objects::info_of::<T>())
    }

    /// Starts every informer made so far.
    pub fn start(&self, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|informer| tokio::spawn(Arc::clone(informer).run(shutdown.clone())))
            .collect()
    }
}
