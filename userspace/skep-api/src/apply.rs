//! Server-side apply and `metadata.managedFields`: field sets per manager in
//! the `FieldsV1` format, conflicts between managers, and ownership changes
//! recorded on ordinary updates.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::admission::format_time;
use crate::patch::schema::{ListStrategy, list_strategy};
use crate::patch::strategic::strategic_merge;
use crate::registry::ResourceInfo;
use crate::status::{ApiError, StatusCause, StatusDetails, StatusReason};

/// A path to one owned field, as `FieldsV1` keys: `["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"]`.
/// A trailing `"."` means the map or list element itself.
pub type FieldPathV1 = Vec<String>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    /// Field manager name (`kubectl`, `kubectl-client-side-apply`, …).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the manager used.
    pub api_version: String,
    /// When it last changed its fields.
    pub time: String,
    /// `status`/`scale` for subresource writes, empty otherwise.
    pub subresource: String,
    /// The fields it owns.
    pub fields: BTreeSet<FieldPathV1>,
}

/// Options of one apply request.
#[derive(Debug, Clone)]
pub struct ApplyOptions<'a> {
    /// `?fieldManager=` (required for apply).
    pub field_manager: &'a str,
    /// `?force=true`: take ownership of conflicting fields.
    pub force: bool,
    /// Time to record.
    pub now: Timestamp,
}

/// Top-level and metadata fields no manager owns.
fn untracked(path: &[&str]) -> bool {
    matches!(
        path,
        ["apiVersion" | "kind"]
            | [
                "metadata",
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "creationTimestamp"
                    | "generation"
                    | "managedFields"
                    | "selfLink"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
                    | "generateName"
            ]
    )
}

/// Struct fields that are atomic (`+structType=atomic`), owned as a whole.
fn atomic(info: &ResourceInfo, path: &[&str]) -> bool {
    info.strategy().atomic(path)
}

/// Granular maps (`map[string]…`) whose ownership includes the map itself (`.`).
fn is_map_field(info: &ResourceInfo, name: &str, path: &[&str]) -> bool {
    matches!(
        name,
        "labels"
            | "annotations"
            | "data"
            | "binaryData"
            | "stringData"
            | "nodeSelector"
            | "limits"
            | "requests"
            | "capacity"
            | "allocatable"
            | "matchLabels"
    ) || info.strategy().granular_map(path)
}

/// Collect the leaf field paths of `value` (an object of `info`'s kind), status excluded.
pub fn field_set(info: &ResourceInfo, value: &Value) -> BTreeSet<FieldPathV1> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = value {
        walk_map(info, m, &mut Vec::new(), &mut Vec::new(), &mut out);
    }
    out
}

/// The leaf field paths under `status` only (for `/status` writes).
pub fn status_field_set(info: &ResourceInfo, value: &Value) -> BTreeSet<FieldPathV1> {
    let mut out = BTreeSet::new();
    if let Some(status) = value.get("status") {
        let mut names = vec!["status".to_owned()];
        let mut prefix = vec!["f:status".to_owned()];
        walk_value(info, "status", status, &mut names, &mut prefix, &mut out);
    }
    out
}

fn walk_map(
    info: &ResourceInfo,
    map: &Map<String, Value>,
    names: &mut Vec<String>,
    prefix: &mut FieldPathV1,
    out: &mut BTreeSet<FieldPathV1>,
) {
    for (k, v) in map {
        names.push(k.clone());
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let top_status = names.len() == 1 && k == "status";
        if !(untracked(&name_refs) || top_status) {
            prefix.push(format!("f:{k}"));
            walk_value(info, k, v, names, prefix, out);
            prefix.pop();
        }
        names.pop();
    }
}

fn walk_value(
    info: &ResourceInfo,
    name: &str,
    v: &Value,
    names: &mut Vec<String>,
    prefix: &mut FieldPathV1,
    out: &mut BTreeSet<FieldPathV1>,
) {
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    match v {
        Value::Object(m) if !m.is_empty() && !atomic(info, &name_refs) => {
            if is_map_field(info, name, &name_refs) {
                let mut dot = prefix.clone();
                dot.push(".".into());
                out.insert(dot);
            }
            walk_map(info, m, names, prefix, out);
        }
        Value::Array(items) => match list_strategy(info, &name_refs) {
            ListStrategy::MergeByKey(key) => {
                for item in items {
                    let Some(kv) = item.get(key) else { continue };
                    let mut key_map = Map::new();
                    key_map.insert(key.to_owned(), kv.clone());
                    if matches!(key, "containerPort" | "port") {
                        // listMapKeys of ports are (port, protocol), protocol defaulting to TCP.
                        let protocol = item
                            .get("protocol")
                            .cloned()
                            .unwrap_or_else(|| "TCP".into());
                        key_map.insert("protocol".into(), protocol);
                    }
                    prefix.push(format!("k:{}", Value::Object(key_map)));
                    let mut dot = prefix.clone();
                    dot.push(".".into());
                    out.insert(dot);
                    if let Value::Object(m) = item {
                        walk_map(info, m, names, prefix, out);
                    }
                    prefix.pop();
                }
            }
            ListStrategy::MergePrimitives => {
                for item in items {
                    let mut p = prefix.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            ListStrategy::Replace => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The `FieldsV1` JSON of a field set.
pub fn to_fields_v1(set: &BTreeSet<FieldPathV1>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let next = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            let Value::Object(m) = next else { break };
            cur = m;
        }
    }
    Value::Object(root)
}

/// Parse `FieldsV1` JSON into a field set.
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPathV1> {
    fn go(v: &Value, prefix: &mut FieldPathV1, out: &mut BTreeSet<FieldPathV1>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    go(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    go(v, &mut Vec::new(), &mut out);
    out.retain(|p| !p.is_empty());
    out
}

/// Whether a list element has the key fields of a `k:` path segment
/// (a missing `protocol` counts as its default, TCP).
fn element_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| match item.get(k) {
        Some(x) => x == v,
        None => k == "protocol" && v == "TCP",
    })
}

/// The value at a field path, if present.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        if seg == "." {
            return Some(cur);
        }
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = seg.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items.iter().find(|i| element_matches(i, &key));
    }
    if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return items.iter().find(|i| **i == want);
    }
    None
}

/// Remove the field at `path` from `obj` (no-op if absent).
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        remove_at(obj, parents);
        return;
    }
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let Some(k) = seg.strip_prefix("k:") else {
                return;
            };
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut()
                .and_then(|items| items.iter_mut().find(|i| element_matches(i, &key)))
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut() {
        if let Some(k) = last.strip_prefix("k:") {
            if let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) {
                items.retain(|i| !element_matches(i, &key));
            }
        } else if let Some(v) = last.strip_prefix("v:")
            && let Ok(want) = serde_json::from_str::<Value>(v)
        {
            items.retain(|i| *i != want);
        }
    }
}

/// Read `metadata.managedFields`.
pub fn managed_fields(obj: &Value) -> Vec<ManagedEntry> {
    crate::object::array(obj, &["metadata", "managedFields"])
        .iter()
        .map(|e| ManagedEntry {
            manager: crate::object::str_or_empty(e, &["manager"]).to_owned(),
            operation: crate::object::str_or_empty(e, &["operation"]).to_owned(),
            api_version: crate::object::str_or_empty(e, &["apiVersion"]).to_owned(),
            time: crate::object::str_or_empty(e, &["time"]).to_owned(),
            subresource: crate::object::str_or_empty(e, &["subresource"]).to_owned(),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

/// Write `metadata.managedFields`, dropping entries that own nothing.
pub fn set_managed_fields(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    crate::object::ensure_object(obj, &["metadata"])
        .insert("managedFields".into(), Value::Array(list));
}

fn is_leaf(p: &FieldPathV1) -> bool {
    p.last().is_some_and(|s| s != ".")
}

/// Render a path as Kubernetes prints it in conflicts: `.spec.replicas`,
/// `.spec.containers[name="c"].image`.
pub fn display_path(p: &FieldPathV1) -> String {
    let mut s = String::new();
    for seg in p {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect();
            s.push('[');
            s.push_str(&parts.join(","));
            s.push(']');
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str("[=");
            s.push_str(v);
            s.push(']');
        }
    }
    s
}

/// Server-side apply of `config` (the decoded apply body) onto `live`
/// (`None` creates). Returns the object to admit, with managedFields updated.
#[tracing::instrument(skip_all, fields(kind = info.kind, manager = opts.field_manager))]
pub fn apply(
    info: &ResourceInfo,
    live: Option<&Value>,
    config: &Value,
    opts: &ApplyOptions<'_>,
) -> Result<Value, ApiError> {
    if opts.field_manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requests require fieldManager to be set",
        ));
    }
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: apply configuration must be an object",
        ));
    }
    let applied = field_set(info, config);
    let Some(live) = live else {
        let mut obj = config.clone();
        let entry = ManagedEntry {
            manager: opts.field_manager.to_owned(),
            operation: "Apply".into(),
            api_version: info.api_version(),
            time: format_time(opts.now),
            subresource: String::new(),
            fields: applied,
        };
        set_managed_fields(&mut obj, &[entry]);
        return Ok(obj);
    };
    let mut entries = managed_fields(live);
    let is_me = |e: &ManagedEntry| {
        e.manager == opts.field_manager && e.operation == "Apply" && e.subresource.is_empty()
    };
    let mut conflicts: Vec<(String, String, FieldPathV1)> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !is_me(e) && e.subresource.is_empty())
    {
        for p in applied.intersection(&e.fields).filter(|p| is_leaf(p)) {
            if value_at(config, p) != value_at(live, p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !opts.force {
        return Err(conflict_error(info, live, &conflicts));
    }
    for (manager, _, p) in &conflicts {
        for e in entries.iter_mut().filter(|e| &e.manager == manager) {
            e.fields.remove(p);
        }
    }
    let previous: BTreeSet<FieldPathV1> = entries
        .iter()
        .filter(|e| is_me(e))
        .flat_map(|e| e.fields.clone())
        .collect();
    let mut base = live.clone();
    for p in previous.difference(&applied) {
        let owned_elsewhere = entries.iter().any(|e| !is_me(e) && e.fields.contains(p));
        if !owned_elsewhere && is_leaf(p) {
            remove_at(&mut base, p);
        }
    }
    let mut config_body = config.clone();
    if let Some(m) = config_body.as_object_mut() {
        m.remove("status");
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    let mut merged = strategic_merge(info, &base, &config_body)?;
    entries.retain(|e| !is_me(e));
    entries.push(ManagedEntry {
        manager: opts.field_manager.to_owned(),
        operation: "Apply".into(),
        api_version: info.api_version(),
        time: format_time(opts.now),
        subresource: String::new(),
        fields: applied,
    });
    set_managed_fields(&mut merged, &entries);
    Ok(merged)
}

fn conflict_error(
    info: &ResourceInfo,
    live: &Value,
    conflicts: &[(String, String, FieldPathV1)],
) -> ApiError {
    let n = conflicts.len();
    let message = if let [(manager, api_version, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {manager:?} using {api_version}: {}",
            display_path(p)
        )
    } else {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, av, p)| format!("conflict with {m:?} using {av}: {}", display_path(p)))
            .collect();
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    ApiError {
        reason: StatusReason::Conflict,
        message,
        details: Some(Box::new(StatusDetails {
            name: crate::object::name(live).to_owned(),
            group: info.group.to_owned(),
            kind: info.plural.to_owned(),
            causes: conflicts
                .iter()
                .map(|(m, av, p)| StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with {m:?} using {av}"),
                    field: display_path(p),
                })
                .collect(),
            retry_after_seconds: None,
        })),
    }
}

/// Record an ordinary write (create, update, patch) by `manager` in
/// `new.metadata.managedFields`: it takes ownership of every field it changed.
pub fn record_update(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    now: Timestamp,
) {
    let mut entries = old.map(managed_fields).unwrap_or_default();
    let set_of = |v: &Value| {
        if subresource == "status" {
            status_field_set(info, v)
        } else {
            field_set(info, v)
        }
    };
    let old_set = old.map(set_of).unwrap_or_default();
    let new_set = set_of(new);
    let changed: BTreeSet<FieldPathV1> = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)) || !old_set.contains(*p))
        .cloned()
        .collect();
    let removed: BTreeSet<FieldPathV1> = old_set.difference(&new_set).cloned().collect();
    for e in &mut entries {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        let api_version = info.api_version();
        let time = format_time(now);
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = time;
                e.api_version = api_version;
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: "Update".into(),
                api_version,
                time,
                subresource: subresource.to_owned(),
                fields: changed,
            }),
        }
    }
    set_managed_fields(new, &entries);
}

#[cfg(test)]
#[path = "apply_test.rs"]
mod tests;
