//! ConfigMap and Secret validation: keys, the 1 MiB data limit, secret types,
//! and `immutable`.

use std::collections::HashSet;

use serde_json::Value;

use super::names;
use crate::field::{FieldError, FieldPath};
use crate::object::{get, str_or_empty};

/// `MaxSecretSize`: ConfigMap and Secret data may total at most 1 MiB.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

/// How to measure a data section's values: plain strings or base64 text.
type Section<'a> = (&'a str, fn(&Value) -> usize);

/// Check the keys of the data sections, duplicates between them, and the total
/// size (reported at `size_path`: `[]` for ConfigMaps, `data` for Secrets, as
/// Kubernetes does).
fn validate_data(obj: &Value, sections: &[Section<'_>], size_path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for (section, measure) in sections {
        let Some(Value::Object(map)) = obj.get(*section) else {
            continue;
        };
        let path = FieldPath::new(section);
        for (k, v) in map {
            for msg in names::config_map_key(k) {
                errs.push(FieldError::invalid(&path.key(k), k.as_str(), msg));
            }
            if !seen.insert(k.as_str()) {
                errs.push(FieldError::duplicate(&path.key(k), k.as_str()));
            }
            total += measure(v);
        }
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(
            &FieldPath::new(size_path),
            MAX_DATA_SIZE,
        ));
    }
    errs
}

fn string_len(v: &Value) -> usize {
    v.as_str().map_or(0, str::len)
}

/// Base64 text of `n` chars decodes to about `n * 3 / 4` bytes.
fn base64_len(v: &Value) -> usize {
    v.as_str()
        .map_or(0, |s| s.trim_end_matches('=').len() * 3 / 4)
}

/// `ValidateConfigMap`.
pub fn validate_config_map(obj: &Value) -> Vec<FieldError> {
    validate_data(
        obj,
        &[("data", string_len), ("binaryData", base64_len)],
        "[]",
    )
}

/// `ValidateSecret`, including the per-type required keys.
pub fn validate_secret(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_data(
        obj,
        &[("data", base64_len), ("stringData", string_len)],
        "data",
    );
    let data_key =
        |k: &str| get(obj, &["data", k]).is_some() || get(obj, &["stringData", k]).is_some();
    let data = FieldPath::new("data");
    let required: &[&str] = match str_or_empty(obj, &["type"]) {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in required {
        if !data_key(k) {
            errs.push(FieldError::required(&data.key(k), ""));
        }
    }
    if str_or_empty(obj, &["type"]) == "kubernetes.io/basic-auth"
        && !data_key("username")
        && !data_key("password")
    {
        errs.push(FieldError::required(&data.key("username"), ""));
        errs.push(FieldError::required(&data.key("password"), ""));
    }
    if str_or_empty(obj, &["type"]) == "kubernetes.io/service-account-token"
        && get(
            obj,
            &[
                "metadata",
                "annotations",
                "kubernetes.io/service-account.name",
            ],
        )
        .is_none()
    {
        errs.push(FieldError::required(
            &FieldPath::new("metadata")
                .child("annotations")
                .key("kubernetes.io/service-account.name"),
            "",
        ));
    }
    errs
}

/// Immutable ConfigMaps/Secrets, and a Secret's immutable `type`.
pub fn validate_config_update(new: &Value, old: &Value, secret: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if secret && new.get("type") != old.get("type") {
        errs.push(FieldError::invalid(
            &FieldPath::new("type"),
            new.get("type").cloned().unwrap_or_default(),
            "field is immutable",
        ));
    }
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if new.get("immutable").and_then(Value::as_bool) != Some(true) {
            errs.push(FieldError::forbidden(
                &FieldPath::new("immutable"),
                "field is immutable when `immutable` is set",
            ));
        }
        let sections: &[&str] = if secret {
            &["data"]
        } else {
            &["data", "binaryData"]
        };
        for s in sections {
            if new.get(*s) != old.get(*s) {
                errs.push(FieldError::forbidden(
                    &FieldPath::new(s),
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
    errs
}
