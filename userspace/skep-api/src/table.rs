//! Server-side printing: `meta.k8s.io/v1 Table` with the columns
//! kube-apiserver prints per kind (`pkg/printers/internalversion/printers.go`).
//! Each kind's columns and row cells are its [`crate::kinds::Strategy`]'s;
//! the cell helpers they share live here.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::admission::selector_string;
use crate::object::{array, get, get_str, str_or_empty};
use crate::registry::ResourceInfo;

/// `?includeObject=` for Table rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No `object` in rows.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parse the query value (empty means `Metadata`).
    pub fn parse(s: &str) -> Self {
        match s {
            "None" => Self::None,
            "Object" => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// One column: name, type, priority (0 default, 1 wide), description.
pub type Column = (&'static str, &'static str, u8, &'static str);

/// The `Name` column.
pub const NAME: Column = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
/// The `Age` column.
pub const AGE: Column = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
/// The wide `Containers` column of kinds with a pod template.
pub const CONTAINERS: Column = (
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
);
/// The wide `Images` column of kinds with a pod template.
pub const IMAGES: Column = (
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);

/// kubectl's `HumanDuration` for an age in seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: the age of an RFC 3339 timestamp, `<unknown>` if unset.
pub fn age(timestamp: Option<&str>, now: Timestamp) -> String {
    match timestamp.and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

/// `<none>` for an empty string.
pub(crate) fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_owned()
    }
}

/// The age of an object (`metadata.creationTimestamp`).
pub(crate) fn creation_age(obj: &Value, now: Timestamp) -> Value {
    age(get_str(obj, &["metadata", "creationTimestamp"]), now).into()
}

/// The `Created At` column of kinds printed by kube-apiserver's default
/// table convertor (RBAC roles).
pub const CREATED_AT: Column = ("Created At", "date", 0, AGE.3);

/// The `Created At` cell: `metadata.creationTimestamp` in RFC 3339 UTC, Go's
/// zero time when unset.
pub(crate) fn created_at(obj: &Value) -> Value {
    get_str(obj, &["metadata", "creationTimestamp"])
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or_else(
            || "0001-01-01T00:00:00Z".to_owned(),
            |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
        .into()
}

/// An object's `metadata.name` cell.
pub(crate) fn object_name(obj: &Value) -> Value {
    str_or_empty(obj, &["metadata", "name"]).into()
}

/// The Containers, Images and Selector cells of a workload's pod template.
pub(crate) fn template_columns(obj: &Value) -> [Value; 3] {
    let containers = array(obj, &["spec", "template", "spec", "containers"]);
    let join = |key: &str| {
        containers
            .iter()
            .map(|c| str_or_empty(c, &[key]))
            .collect::<Vec<_>>()
            .join(",")
    };
    let selector = get(obj, &["spec", "selector"])
        .map(selector_string)
        .unwrap_or_default();
    [
        join("name").into(),
        join("image").into(),
        none_if_empty(&selector).into(),
    ]
}

/// A `map[string]string` selector as `k=v,…` (`<none>` if empty).
pub(crate) fn map_selector(sel: Option<&Value>) -> String {
    let parts: Vec<String> = sel
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    none_if_empty(&parts.join(","))
}

/// Up to three addresses, then `+ N more...`.
pub(crate) fn list_endpoints(addrs: &[String]) -> String {
    if addrs.is_empty() {
        return "<none>".into();
    }
    let shown = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if addrs.len() > 3 {
        format!("{shown} + {} more...", addrs.len() - 3)
    } else {
        shown
    }
}

/// Access modes abbreviated as kubectl prints them (RWO, ROX, …).
pub(crate) fn access_modes(modes: &[Value]) -> String {
    modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The cells of one row for `obj`, all columns (wide included).
pub fn row_cells(info: &ResourceInfo, obj: &Value, now: Timestamp) -> Vec<Value> {
    info.strategy().row(obj, now)
}

/// The `columnDefinitions` for a kind.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    info.strategy()
        .columns()
        .iter()
        .map(|&(name, ty, priority, description)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// `PartialObjectMetadata` of an object, as a Table row's default `object`.
pub fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A `meta.k8s.io/v1 Table` for objects of `info` (one or a list's items).
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_meta: &crate::object::ListMeta,
    include: IncludeObject,
    now: Timestamp,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = json!({"cells": row_cells(info, obj, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_object_metadata(obj),
                IncludeObject::Object => row["object"] = obj.clone(),
            }
            row
        })
        .collect();
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "resourceVersion".into(),
        list_meta.resource_version.to_string().into(),
    );
    if let Some(c) = &list_meta.continue_token {
        metadata.insert("continue".into(), c.clone().into());
    }
    if let Some(n) = list_meta.remaining_item_count {
        metadata.insert("remainingItemCount".into(), n.into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(info),
        "rows": rows,
    })
}

#[cfg(test)]
#[path = "table_test.rs"]
mod tests;
