//! `ObjectMeta`, label, annotation and label-selector validation
//! (`apimachinery/pkg/api/validation`, `pkg/apis/meta/v1/validation`).

use serde_json::Value;

use super::names;
use crate::field::{FieldError, FieldPath};
use crate::object::{get, get_i64, str_or_empty};

/// Annotations may total at most 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// How a kind's names are checked.
pub type NameFn = fn(&str) -> Vec<String>;

/// Validate `metadata` of a new object.
pub fn validate_object_meta(obj: &Value, namespaced: bool, name_fn: NameFn) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    let name = str_or_empty(obj, &["metadata", "name"]);
    let generate_name = str_or_empty(obj, &["metadata", "generateName"]);
    if !generate_name.is_empty() {
        for msg in names::name_with(name_fn, generate_name, true) {
            errs.push(FieldError::invalid(
                &path.child("generateName"),
                generate_name,
                msg,
            ));
        }
    }
    if name.is_empty() {
        errs.push(FieldError::required(
            &path.child("name"),
            "name or generateName is required",
        ));
    } else {
        for msg in name_fn(name) {
            errs.push(FieldError::invalid(&path.child("name"), name, msg));
        }
    }
    let ns = str_or_empty(obj, &["metadata", "namespace"]);
    if namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required(&path.child("namespace"), ""));
        } else {
            for msg in names::dns1123_label(ns) {
                errs.push(FieldError::invalid(&path.child("namespace"), ns, msg));
            }
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(g) = get_i64(obj, &["metadata", "generation"]).filter(|g| *g < 0) {
        errs.push(FieldError::invalid(
            &path.child("generation"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_labels(
        get(obj, &["metadata", "labels"]),
        &path.child("labels"),
    ));
    errs.extend(validate_annotations(
        get(obj, &["metadata", "annotations"]),
        &path.child("annotations"),
    ));
    let finalizers = path.child("finalizers");
    for f in crate::object::array(obj, &["metadata", "finalizers"]) {
        let f = f.as_str().unwrap_or("");
        for msg in names::qualified_name(f) {
            errs.push(FieldError::invalid(&finalizers, f, msg));
        }
    }
    let owners = path.child("ownerReferences");
    for (i, o) in crate::object::array(obj, &["metadata", "ownerReferences"])
        .iter()
        .enumerate()
    {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if str_or_empty(o, &[field]).is_empty() {
                let what = if field == "apiVersion" {
                    "version"
                } else {
                    field
                };
                errs.push(FieldError::invalid(
                    &owners.index(i).child(field),
                    "",
                    format!("{what} must not be empty"),
                ));
            }
        }
    }
    errs
}

/// Immutable metadata on update: name, namespace, uid, creationTimestamp.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let n = get(new, &["metadata", field]).unwrap_or(&Value::Null);
        let o = get(old, &["metadata", field]).unwrap_or(&Value::Null);
        if n != o {
            errs.push(FieldError::invalid(
                &path.child(field),
                n.clone(),
                "field is immutable",
            ));
        }
    }
    errs
}

/// Label keys and values.
pub fn validate_labels(labels: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(Value::Object(map)) = labels else {
        return errs;
    };
    for (k, v) in map {
        for msg in names::qualified_name(k) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
        let v = v.as_str().unwrap_or("");
        for msg in names::label_value(v) {
            errs.push(FieldError::invalid(path, v, msg));
        }
    }
    errs
}

/// Annotation keys (lower-cased qualified names) and their total size.
pub fn validate_annotations(annotations: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(Value::Object(map)) = annotations else {
        return errs;
    };
    let mut total = 0;
    for (k, v) in map {
        for msg in names::qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions).
pub fn validate_label_selector(selector: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = validate_labels(selector.get("matchLabels"), &path.child("matchLabels"));
    let exprs = path.child("matchExpressions");
    for (i, expr) in crate::object::array(selector, &["matchExpressions"])
        .iter()
        .enumerate()
    {
        let p = exprs.index(i);
        let op = str_or_empty(expr, &["operator"]);
        let values = crate::object::array(expr, &["values"]);
        match op {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                &p.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                &p.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(FieldError::invalid(
                &p.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let key = str_or_empty(expr, &["key"]);
        for msg in names::qualified_name(key) {
            errs.push(FieldError::invalid(&p.child("key"), key, msg));
        }
    }
    errs
}
