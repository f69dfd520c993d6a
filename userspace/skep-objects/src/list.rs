//! Lists: one consistent snapshot (a store revision), filtered by selectors,
//! paged with `limit`/`continue` like kube-apiserver.

use base64::Engine as _;
use serde_json::{Value, json};
use skep_api::{ApiError, ResourceInfo, object::ListMeta};
use skep_store::{ListRequest, ReadConsistency, StoreError};

use crate::{Filter, Objects, output, prefix, store_error};

/// What to list.
#[derive(Debug, Default)]
pub struct ListOptions {
    /// Label and field selectors; `None` lists everything.
    pub filter: Option<Filter>,
    /// At most this many items (0: all).
    pub limit: usize,
    /// A `continue` token from a previous page.
    pub continue_token: Option<String>,
}

impl Objects {
    /// The objects of `info` in `namespace` ("" for all) that match, and the
    /// list's metadata (its revision and the next page's token).
    #[tracing::instrument(skip_all, fields(kind = info.kind, %namespace))]
    pub async fn list(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<(Vec<Value>, ListMeta), ApiError> {
        let list_prefix = prefix(info, namespace);
        let (mut revision, mut start_after) =
            match options.continue_token.as_deref().filter(|c| !c.is_empty()) {
                Some(token) => {
                    let (rv, start) = decode_continue(token)?;
                    if !start.starts_with(&list_prefix) {
                        return Err(ApiError::bad_request(
                            "continue key is not valid: it is for another collection",
                        ));
                    }
                    (Some(rv), Some(start))
                }
                None => (None, None),
            };
        let limit = options.limit;
        let mut items = Vec::new();
        let mut continue_token = None;
        loop {
            let page = self
                .store()
                .list(
                    ListRequest {
                        prefix: list_prefix.clone().into(),
                        start_after: start_after.clone().map(Into::into),
                        limit: if limit == 0 { 0 } else { limit - items.len() },
                        revision,
                    },
                    ReadConsistency::Linearizable,
                )
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                    other => store_error(info, "", other),
                })?;
            revision = Some(page.revision);
            let last_key = page.items.last().map(|kv| kv.key.clone());
            for kv in &page.items {
                let obj = output(kv)?;
                if options.filter.as_ref().is_none_or(|f| f.matches(&obj)) {
                    items.push(obj);
                }
            }
            match last_key {
                Some(last) if page.more => {
                    if limit != 0 && items.len() >= limit {
                        continue_token = Some(encode_continue(page.revision, &last));
                        break;
                    }
                    start_after = Some(String::from_utf8_lossy(&last).into_owned());
                }
                _ => break,
            }
        }
        let meta = ListMeta {
            resource_version: revision.unwrap_or_default(),
            continue_token,
            remaining_item_count: None,
        };
        Ok((items, meta))
    }
}

/// The `continue` token: the revision of the first page and the last key.
pub fn encode_continue(revision: u64, last_key: &[u8]) -> String {
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": revision, "start": String::from_utf8_lossy(last_key)});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

/// The revision and last key inside a `continue` token.
pub fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: the token is malformed");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let revision = value["rv"].as_u64().ok_or_else(bad)?;
    let start = value["start"].as_str().ok_or_else(bad)?.to_owned();
    Ok((revision, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue(42, b"/registry/core/pods/default/a");
        assert_eq!(
            decode_continue(&token).ok(),
            Some((42, "/registry/core/pods/default/a".to_owned()))
        );
        assert!(decode_continue("not base64!").is_err());
        assert!(decode_continue("e30=").is_err());
    }
}
