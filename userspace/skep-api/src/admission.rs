//! Admission of writes: endpoint checks, typed decoding and pruning, strict
//! field validation, server-set metadata, defaulting, status-subresource
//! semantics and validation, in kube-apiserver's order.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::decode::Decoded;
use crate::defaults::{apply_defaults, initial_status};
use crate::fieldcheck::{self, FieldValidation};
use crate::object::{self, ensure_object, get, get_str, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::status::{ApiError, StatusReason};
use crate::validation;

/// etcd's default value limit: objects larger than this are refused.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// Per-request admission settings.
#[derive(Debug, Clone)]
pub struct AdmitOptions {
    /// `?fieldValidation=`.
    pub field_validation: FieldValidation,
    /// The time to stamp (`creationTimestamp`); [`now`] by default.
    pub now: Timestamp,
}

impl Default for AdmitOptions {
    fn default() -> Self {
        Self {
            field_validation: FieldValidation::default(),
            now: now(),
        }
    }
}

/// The current time, to the second.
pub fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// An admitted object, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The object to store.
    pub object: Value,
    /// `Warning` headers for the response (unknown fields under `Warn`).
    pub warnings: Vec<String>,
    /// For updates: the resourceVersion the client sent, to compare-and-swap on.
    pub precondition: Option<u64>,
}

/// RFC 3339 with seconds, as Kubernetes stamps `creationTimestamp`.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A new `metadata.uid`.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `generateName` plus 5 random characters from Kubernetes' alphabet (base cut to 58).
pub fn generate_name(base: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let cut = base
        .char_indices()
        .nth(58)
        .map_or(base, |(i, _)| &base[..i]);
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("{cut}{suffix}")
}

/// Check the body against the endpoint: an object, apiVersion/kind (filled in
/// when absent), namespace (filled from the path) and, for updates, the name.
fn check_endpoint(
    info: &ResourceInfo,
    path_namespace: &str,
    path_name: Option<&str>,
    body: &mut Value,
) -> Result<(), ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            json_type(body)
        )));
    };
    let expected_av = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), expected_av.clone().into());
        }
        Some(av) if av != expected_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({expected_av})"
            )));
        }
        Some(_) => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), info.kind.into());
        }
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        Some(_) => {}
    }
    let meta = ensure_object(body, &["metadata"]);
    if info.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), path_namespace.into());
            }
            Some(ns) if ns != path_namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            Some(_) => {}
        }
    } else {
        meta.remove("namespace");
    }
    if let Some(path_name) = path_name {
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            meta.insert("name".into(), path_name.into());
        } else if name != path_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({path_name})"
            )));
        }
    }
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Typed round trip plus field validation: returns the pruned object and warnings.
pub fn decode_typed(
    info: &ResourceInfo,
    body: &Decoded,
    policy: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let typed = info
        .typed_round_trip(&body.value)
        .and_then(|typed| crate::typed::check_quantities(&typed).map(|()| typed))
        .map_err(|err| {
            ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {err}",
                kind = info.kind,
                version = info.version
            ))
        })?;
    let mut typed = typed;
    info.strategy().normalize_typed(&body.value, &mut typed);
    let unknown = fieldcheck::unknown_fields(&body.value, &typed);
    let warnings = fieldcheck::check(policy, &unknown, &body.duplicates)?;
    Ok((typed, warnings))
}

fn invalid(info: &ResourceInfo, obj: &Value, errs: &[crate::field::FieldError]) -> ApiError {
    ApiError::invalid(info.group, info.kind, object::name(obj), errs)
}

fn check_size(obj: &Value) -> Result<(), ApiError> {
    let size = serde_json::to_vec(obj).map_or(0, |b| b.len());
    if size > MAX_OBJECT_BYTES {
        return Err(ApiError::new(
            StatusReason::RequestEntityTooLarge,
            format!(
                "Request entity too large: object is {size} bytes, the limit is {MAX_OBJECT_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// Admit a create (`POST`) to `info`'s collection in `path_namespace`.
#[tracing::instrument(skip_all, fields(kind = info.kind, namespace = path_namespace))]
pub fn admit_create(
    info: &ResourceInfo,
    path_namespace: &str,
    mut body: Decoded,
    opts: &AdmitOptions,
) -> Result<Admitted, ApiError> {
    check_endpoint(info, path_namespace, None, &mut body.value)?;
    let (mut obj, warnings) = decode_typed(info, &body, opts.field_validation)?;
    if get_str(&obj, &["metadata", "resourceVersion"]).is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    info.strategy().prepare_for_create(&mut obj);
    let meta = ensure_object(&mut obj, &["metadata"]);
    for server_owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        meta.remove(server_owned);
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() && !generate.is_empty() {
        let generated = generate_name(generate);
        meta.insert("name".into(), generated.into());
    }
    meta.insert("uid".into(), new_uid().into());
    meta.insert("creationTimestamp".into(), format_time(opts.now).into());
    if info.tracks_generation {
        meta.insert("generation".into(), 1.into());
    }
    if info.has_status()
        && !info.strategy().keeps_status_on_create()
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    apply_defaults(info, &mut obj);
    if info.has_status() {
        initial_status(info, &mut obj);
    }
    let errs = validation::validate_create(info, &obj);
    if !errs.is_empty() {
        return Err(invalid(info, &obj, &errs));
    }
    check_size(&obj)?;
    Ok(Admitted {
        object: obj,
        warnings,
        precondition: None,
    })
}

/// Admit a create to a create-only kind ([`Serving::CreateOnly`]: reviews,
/// TokenRequest, Binding) in `path_namespace`: the body is checked, typed,
/// defaulted and validated like a stored object's, but gets no server-owned
/// metadata (a review's metadata must stay empty). The handler then computes
/// the answer from the admitted object; nothing is stored.
#[tracing::instrument(skip_all, fields(kind = info.kind, namespace = path_namespace))]
pub fn admit_create_only(
    info: &ResourceInfo,
    path_namespace: &str,
    mut body: Decoded,
    opts: &AdmitOptions,
) -> Result<Admitted, ApiError> {
    match info.serving {
        Serving::CreateOnly => {}
        Serving::Stored => return Err(ApiError::method_not_allowed()),
    }
    check_endpoint(info, path_namespace, None, &mut body.value)?;
    let (mut obj, warnings) = decode_typed(info, &body, opts.field_validation)?;
    info.strategy().prepare_for_create(&mut obj);
    apply_defaults(info, &mut obj);
    let errs = validation::validate_create(info, &obj);
    if !errs.is_empty() {
        return Err(invalid(info, &obj, &errs));
    }
    check_size(&obj)?;
    Ok(Admitted {
        object: obj,
        warnings,
        precondition: None,
    })
}

/// The part of an object whose change bumps `metadata.generation`.
fn spec_of(obj: &Value) -> Option<&Value> {
    obj.get("spec")
}

/// Copy what the server owns from the stored object onto an update, then
/// the kind's own update preparation.
fn carry_server_fields(info: &ResourceInfo, new: &mut Value, old: &Value) {
    let old_meta = get(old, &["metadata"])
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = ensure_object(new, &["metadata"]);
    for key in [
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(key) {
            Some(v) => meta.insert(key.into(), v.clone()),
            None => meta.remove(key),
        };
    }
    if meta
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
        && let Some(uid) = old_meta.get("uid")
    {
        meta.insert("uid".into(), uid.clone());
    }
    info.strategy().prepare_for_update(new, old);
}

fn bump_generation(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if info.tracks_generation && spec_of(new) != spec_of(old) {
        let g = object::get_i64(old, &["metadata", "generation"]).unwrap_or(0) + 1;
        ensure_object(new, &["metadata"]).insert("generation".into(), g.into());
    }
}

fn check_precondition(
    info: &ResourceInfo,
    new: &Value,
    old: &Value,
) -> Result<Option<u64>, ApiError> {
    let sent = str_or_empty(new, &["metadata", "resourceVersion"]);
    if sent.is_empty() {
        return Ok(None);
    }
    let stored = str_or_empty(old, &["metadata", "resourceVersion"]);
    if sent != stored {
        return Err(ApiError::conflict_modified(
            info.group,
            info.plural,
            object::name(old),
        ));
    }
    Ok(sent.parse().ok())
}

/// Admit a full update (`PUT`, or the result of a patch) of `old` at
/// `path_namespace/path_name`: a main-resource update keeps the old status.
#[tracing::instrument(skip_all, fields(kind = info.kind, namespace = path_namespace, name = path_name))]
pub fn admit_update(
    info: &ResourceInfo,
    path_namespace: &str,
    path_name: &str,
    mut body: Decoded,
    old: &Value,
    opts: &AdmitOptions,
) -> Result<Admitted, ApiError> {
    check_endpoint(info, path_namespace, Some(path_name), &mut body.value)?;
    let (mut obj, warnings) = decode_typed(info, &body, opts.field_validation)?;
    let precondition = check_precondition(info, &obj, old)?;
    carry_server_fields(info, &mut obj, old);
    if info.has_status()
        && let Some(m) = obj.as_object_mut()
    {
        match old.get("status") {
            Some(s) => m.insert("status".into(), s.clone()),
            None => m.remove("status"),
        };
    }
    apply_defaults(info, &mut obj);
    bump_generation(info, &mut obj, old);
    let errs = validation::validate_update(info, &obj, old);
    if !errs.is_empty() {
        return Err(invalid(info, &obj, &errs));
    }
    check_size(&obj)?;
    Ok(Admitted {
        object: obj,
        warnings,
        precondition,
    })
}

/// Admit a `/status` update: only `status` changes; spec and metadata stay as stored.
#[tracing::instrument(skip_all, fields(kind = info.kind, namespace = path_namespace, name = path_name))]
pub fn admit_status_update(
    info: &ResourceInfo,
    path_namespace: &str,
    path_name: &str,
    mut body: Decoded,
    old: &Value,
    opts: &AdmitOptions,
) -> Result<Admitted, ApiError> {
    if !info.has_status() {
        return Err(ApiError::not_found(
            info.group,
            &format!("{}/status", info.plural),
            path_name,
        ));
    }
    check_endpoint(info, path_namespace, Some(path_name), &mut body.value)?;
    let (obj, warnings) = decode_typed(info, &body, opts.field_validation)?;
    let precondition = check_precondition(info, &obj, old)?;
    let mut out = old.clone();
    if let Some(m) = out.as_object_mut() {
        match obj.get("status") {
            Some(s) => m.insert("status".into(), s.clone()),
            None => m.remove("status"),
        };
    }
    let errs = validation::validate_status_update(info, &out, old);
    if !errs.is_empty() {
        return Err(invalid(info, &out, &errs));
    }
    check_size(&out)?;
    Ok(Admitted {
        object: out,
        warnings,
        precondition,
    })
}

/// The `autoscaling/v1 Scale` view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let selector = get(obj, &["spec", "selector"])
        .map(selector_string)
        .unwrap_or_default();
    let mut metadata = serde_json::Map::new();
    for key in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = get(obj, &["metadata", key]) {
            metadata.insert(key.into(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": object::get_i64(obj, &["spec", "replicas"]).unwrap_or(0)},
        "status": {
            "replicas": object::get_i64(obj, &["status", "replicas"]).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// A `metav1.LabelSelector` in the query-string syntax (`app=web,tier in (a,b)`).
pub fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(Value::Object(labels)) = sel.get("matchLabels") {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in object::array(sel, &["matchExpressions"]) {
        let key = str_or_empty(e, &["key"]);
        let values: Vec<&str> = object::array(e, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match str_or_empty(e, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// Admit a `/scale` update: set `spec.replicas` on `old` from the Scale body.
pub fn admit_scale_update(
    info: &ResourceInfo,
    path_namespace: &str,
    path_name: &str,
    mut body: Decoded,
    old: &Value,
    opts: &AdmitOptions,
) -> Result<Admitted, ApiError> {
    if info.subresource("scale").is_none() {
        return Err(ApiError::not_found(
            info.group,
            &format!("{}/scale", info.plural),
            path_name,
        ));
    }
    let scale_info = &crate::kinds::SCALE;
    check_endpoint(scale_info, path_namespace, Some(path_name), &mut body.value)?;
    let (scale, warnings) = decode_typed(scale_info, &body, opts.field_validation)?;
    let precondition = check_precondition(info, &scale, old)?;
    let errs = validation::validate_create(scale_info, &scale);
    if !errs.is_empty() {
        return Err(ApiError::invalid(
            scale_info.group,
            "Scale",
            path_name,
            &errs,
        ));
    }
    let mut out = old.clone();
    let replicas = object::get_i64(&scale, &["spec", "replicas"]).unwrap_or(0);
    ensure_object(&mut out, &["spec"]).insert("replicas".into(), replicas.into());
    bump_generation(info, &mut out, old);
    Ok(Admitted {
        object: out,
        warnings,
        precondition,
    })
}

/// Apply a `Binding` (`pods/binding` or `bindings`) to a stored pod: set
/// `spec.nodeName` and the PodScheduled condition.
pub fn bind_pod(pod: &Value, binding: &Decoded, now: Timestamp) -> Result<Value, ApiError> {
    let info = &crate::kinds::BINDING;
    let (binding, _) = decode_typed(info, binding, FieldValidation::Ignore)?;
    let errs = validation::validate_create(
        info,
        &json!({"metadata": {"name": object::name(pod), "namespace": object::namespace(pod)}, "target": binding.get("target")}),
    );
    if !errs.is_empty() {
        return Err(ApiError::invalid("", "Binding", object::name(pod), &errs));
    }
    let name = object::name(pod);
    if get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null()) {
        return Err(ApiError::conflict(
            "",
            "pods/binding",
            name,
            &format!("pod {name} is being deleted, cannot be assigned to a host"),
        ));
    }
    let current = str_or_empty(pod, &["spec", "nodeName"]);
    if !current.is_empty() {
        return Err(ApiError::conflict(
            "",
            "pods/binding",
            name,
            &format!("pod {name} is already assigned to node {current:?}"),
        ));
    }
    let node = str_or_empty(&binding, &["target", "name"]).to_owned();
    let mut out = pod.clone();
    ensure_object(&mut out, &["spec"]).insert("nodeName".into(), node.into());
    let status = ensure_object(&mut out, &["status"]);
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if let Value::Array(list) = conditions {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": format_time(now)}));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "admission_test.rs"]
mod tests;
