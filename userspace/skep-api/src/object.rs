//! Small accessors on JSON objects and the helpers the server uses around them:
//! object keys, `metadata.resourceVersion`, list wrapping.

use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;

/// The value at a path of object keys, if every step is an object with that key.
pub fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

/// The string at a path.
pub fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// The string at a path, or `""`.
pub fn str_or_empty<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get_str(v, path).unwrap_or("")
}

/// The integer at a path.
pub fn get_i64(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

/// The array at a path, or an empty slice.
pub fn array<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The object at a path, creating empty objects along the way (replacing non-objects).
pub fn ensure_object<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for key in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else {
            unreachable!("just made an object")
        };
        cur = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    match cur {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// Set `key` in `map` to `value` if it is absent or null (Kubernetes defaulting).
pub fn default_field(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_owned(), value.into());
        }
    }
}

/// `metadata.name`, or `""`.
pub fn name(obj: &Value) -> &str {
    str_or_empty(obj, &["metadata", "name"])
}

/// `metadata.namespace`, or `""`.
pub fn namespace(obj: &Value) -> &str {
    str_or_empty(obj, &["metadata", "namespace"])
}

/// The store key of an object: `(namespace, name)`, namespace empty for cluster scope.
pub fn key(obj: &Value) -> (String, String) {
    (namespace(obj).to_owned(), name(obj).to_owned())
}

/// `metadata.resourceVersion` parsed as a store revision, if set and numeric.
pub fn resource_version(obj: &Value) -> Option<u64> {
    get_str(obj, &["metadata", "resourceVersion"]).and_then(|rv| rv.parse().ok())
}

/// Set `metadata.resourceVersion` from a store revision before returning an object.
pub fn set_resource_version(obj: &mut Value, revision: u64) {
    ensure_object(obj, &["metadata"]).insert("resourceVersion".into(), revision.to_string().into());
}

/// `metadata` of a list response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListMeta {
    /// Store revision the list was read at.
    pub resource_version: u64,
    /// Opaque continue token for the next page, if any.
    pub continue_token: Option<String>,
    /// Items left after this page, if known.
    pub remaining_item_count: Option<u64>,
}

/// Wrap items as `{kind: PodList, apiVersion: v1, metadata: {...}, items: [...]}`.
pub fn wrap_list(info: &ResourceInfo, items: Vec<Value>, meta: &ListMeta) -> Value {
    let mut list = Map::new();
    list.insert("kind".into(), info.list_kind().into());
    list.insert("apiVersion".into(), info.api_version().into());
    list.extend(wrap_list_meta(meta));
    list.insert("items".into(), Value::Array(items));
    Value::Object(list)
}

/// `{"metadata": ListMeta}` of a list.
fn wrap_list_meta(meta: &ListMeta) -> Map<String, Value> {
    let mut list = Map::new();
    let mut metadata = Map::new();
    metadata.insert(
        "resourceVersion".into(),
        meta.resource_version.to_string().into(),
    );
    if let Some(token) = &meta.continue_token {
        metadata.insert("continue".into(), token.clone().into());
    }
    if let Some(n) = meta.remaining_item_count {
        metadata.insert("remainingItemCount".into(), n.into());
    }
    list.insert("metadata".into(), Value::Object(metadata));
    list
}

/// An object as `meta.k8s.io` `PartialObjectMetadata` (`Accept: …;as=
/// PartialObjectMetadata;g=meta.k8s.io;v=v1`): its metadata alone, as
/// upstream's `asPartialObjectMetadata` answers; `api_version` is
/// `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`.
#[must_use]
pub fn partial_object_metadata(obj: &Value, api_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A list as `PartialObjectMetadataList` (upstream's
/// `asPartialObjectMetadataList`): each item's metadata, the list's
/// resourceVersion, continue and remaining count. An empty list's `items`
/// is `null`, as Go encodes the list it never appended to.
#[must_use]
pub fn partial_object_metadata_list(items: &[Value], meta: &ListMeta, api_version: &str) -> Value {
    let mut list = wrap_list_meta(meta);
    let items: Vec<Value> = items
        .iter()
        .map(|item| partial_object_metadata(item, api_version))
        .collect();
    list.insert("kind".into(), "PartialObjectMetadataList".into());
    list.insert("apiVersion".into(), api_version.into());
    list.insert(
        "items".into(),
        if items.is_empty() {
            Value::Null
        } else {
            Value::Array(items)
        },
    );
    Value::Object(list)
}

/// A watch event: `{type: ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, object}`.
pub fn watch_event(event_type: WatchEventType, object: Value) -> Value {
    let mut event = Map::new();
    event.insert("type".into(), event_type.as_str().into());
    event.insert("object".into(), object);
    Value::Object(event)
}

/// The `type` of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    /// Object created (or present at the start of a watch).
    Added,
    /// Object updated.
    Modified,
    /// Object deleted.
    Deleted,
    /// Progress marker carrying only a resourceVersion.
    Bookmark,
    /// The watch failed; the object is a Status.
    Error,
}

impl WatchEventType {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
            Self::Bookmark => "BOOKMARK",
            Self::Error => "ERROR",
        }
    }
}

/// A bookmark event object for `allowWatchBookmarks`.
pub fn bookmark(info: &ResourceInfo, revision: u64) -> Value {
    watch_event(
        WatchEventType::Bookmark,
        json!({
            "kind": info.kind,
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    #[test]
    fn partial_object_metadata_keeps_only_metadata() {
        let cm = json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}});
        assert_eq!(
            partial_object_metadata(&cm, "meta.k8s.io/v1"),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "a", "labels": {"x": "y"}}})
        );
        let meta = ListMeta {
            resource_version: 7,
            continue_token: Some("next".into()),
            remaining_item_count: None,
        };
        let list = partial_object_metadata_list(&[cm], &meta, "meta.k8s.io/v1");
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            list["metadata"],
            json!({"resourceVersion": "7", "continue": "next"})
        );
        assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(list["items"][0].get("data"), None);
        let empty = partial_object_metadata_list(&[], &meta, "meta.k8s.io/v1");
        assert_eq!(empty["items"], Value::Null);
    }

    #[test]
    fn list_and_rv() {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "default"}});
        set_resource_version(&mut pod, 42);
        assert_eq!(resource_version(&pod), Some(42));
        assert_eq!(key(&pod), ("default".to_owned(), "p".to_owned()));
        let list = wrap_list(
            &kinds::DEPLOYMENT,
            vec![pod],
            &ListMeta {
                resource_version: 43,
                continue_token: Some("t".into()),
                remaining_item_count: Some(3),
            },
        );
        assert_eq!(list["kind"], "DeploymentList");
        assert_eq!(list["apiVersion"], "apps/v1");
        assert_eq!(
            list["metadata"],
            json!({"resourceVersion": "43", "continue": "t", "remainingItemCount": 3})
        );
        assert_eq!(
            bookmark(&kinds::POD, 7)["object"]["metadata"]["resourceVersion"],
            "7"
        );
    }

    #[test]
    fn ensure_and_default() {
        let mut v = json!({"spec": 3});
        let m = ensure_object(&mut v, &["spec", "template"]);
        default_field(m, "a", 1);
        default_field(m, "a", 2);
        assert_eq!(v, json!({"spec": {"template": {"a": 1}}}));
    }
}
