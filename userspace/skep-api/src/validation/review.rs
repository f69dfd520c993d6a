//! The create-only review kinds (`pkg/apis/authorization/validation`,
//! `pkg/apis/authentication/validation`): access review specs, their
//! attribute selectors, the empty metadata they must carry, and TokenRequest
//! lifetimes.

use serde_json::{Map, Value};

use super::names;
use crate::field::{FieldError, FieldPath, render_value};
use crate::object::{array, get, get_i64, str_or_empty};

/// The shortest token a TokenRequest may ask for (`MinTokenAgeSec`).
pub const MIN_TOKEN_SECONDS: i64 = 10 * 60;
/// The longest token a TokenRequest may ask for (2^32 seconds).
pub const MAX_TOKEN_SECONDS: i64 = 1 << 32;

/// A pointer field that is set (present and not `null`).
fn present<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    get(obj, path).filter(|v| !v.is_null())
}

/// Go's `%#v` of the internal `NonResourceAttributes` (or `"null"` for nil).
fn render_non_resource(attrs: Option<&Value>) -> String {
    attrs.map_or_else(
        || "\"null\"".to_owned(),
        |a| {
            format!(
                "authorization.NonResourceAttributes{{Path:{}, Verb:{}}}",
                render_value(&str_or_empty(a, &["path"]).into()),
                render_value(&str_or_empty(a, &["verb"]).into())
            )
        },
    )
}

/// The rules shared by every access review spec: exactly one of
/// `resourceAttributes` / `nonResourceAttributes`, then the selectors.
fn validate_attributes(obj: &Value) -> Vec<FieldError> {
    let spec = FieldPath::new("spec");
    let resource = present(obj, &["spec", "resourceAttributes"]);
    let non_resource = present(obj, &["spec", "nonResourceAttributes"]);
    let mut errs = Vec::new();
    if resource.is_some() && non_resource.is_some() {
        errs.push(FieldError::invalid_raw(
            &spec.child("nonResourceAttributes"),
            render_non_resource(non_resource),
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if resource.is_none() && non_resource.is_none() {
        errs.push(FieldError::invalid_raw(
            &spec.child("resourceAttributes"),
            render_non_resource(None),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    errs
}

/// `ValidateSubjectAccessReviewSpec`: the attribute rules, a user or group,
/// then the resource attributes' selectors.
pub fn validate_subject_access_review_spec(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_attributes(obj);
    let user = str_or_empty(obj, &["spec", "user"]);
    if user.is_empty() && array(obj, &["spec", "groups"]).is_empty() {
        errs.push(FieldError::invalid(
            &FieldPath::new("spec").child("user"),
            user,
            "at least one of user or group must be specified",
        ));
    }
    errs.extend(validate_resource_attributes(obj));
    errs
}

/// `ValidateSelfSubjectAccessReviewSpec`: the attribute rules and selectors.
pub fn validate_self_subject_access_review_spec(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_attributes(obj);
    errs.extend(validate_resource_attributes(obj));
    errs
}

/// `validateResourceAttributes`: the field and label selectors, if set.
fn validate_resource_attributes(obj: &Value) -> Vec<FieldError> {
    let Some(attrs) = present(obj, &["spec", "resourceAttributes"]) else {
        return Vec::new();
    };
    // Upstream names this path as one element, printed the same.
    let path = FieldPath::new("spec.resourceAttributes");
    let mut errs = Vec::new();
    for (key, label) in [("fieldSelector", false), ("labelSelector", true)] {
        if let Some(selector) = present(attrs, &[key]) {
            errs.extend(validate_selector_attributes(
                selector,
                label,
                &path.child(key),
            ));
        }
    }
    errs
}

/// `validateFieldSelectorAttributes` / `validateLabelSelectorAttributes`:
/// `rawSelector` or `requirements`, not both; each requirement checked with
/// unknown operators allowed.
fn validate_selector_attributes(
    selector: &Value,
    label: bool,
    path: &FieldPath,
) -> Vec<FieldError> {
    let raw = str_or_empty(selector, &["rawSelector"]);
    let requirements = array(selector, &["requirements"]);
    let mut errs = Vec::new();
    if !raw.is_empty() && !requirements.is_empty() {
        errs.push(FieldError::invalid(
            &path.child("rawSelector"),
            raw,
            "may not specified at the same time as requirements",
        ));
    }
    if raw.is_empty() && requirements.is_empty() {
        errs.push(FieldError::required(
            &path.child("requirements"),
            format!("when {path} is specified, requirements or rawSelector is required"),
        ));
    }
    let requirements_path = path.child("requirements");
    for (i, requirement) in requirements.iter().enumerate() {
        errs.extend(validate_requirement(
            requirement,
            label,
            &requirements_path.index(i),
        ));
    }
    errs
}

/// `ValidateLabelSelectorRequirement` / `ValidateFieldSelectorRequirement`
/// with `AllowUnknownOperatorInRequirement`.
fn validate_requirement(requirement: &Value, label: bool, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let key = str_or_empty(requirement, &["key"]);
    if !label && key.is_empty() {
        errs.push(FieldError::required(
            &path.child("key"),
            "must be specified",
        ));
    }
    let values = array(requirement, &["values"]);
    match str_or_empty(requirement, &["operator"]) {
        "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
            &path.child("values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
            &path.child("values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        _ => {}
    }
    if label {
        for msg in names::qualified_name(key) {
            errs.push(FieldError::invalid(&path.child("key"), key, msg));
        }
    }
    errs
}

/// Whether a JSON value is Go's zero value under `Semantic.DeepEqual`
/// (empty and nil maps and slices are equal).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.values().all(is_zero),
    }
}

/// The metadata rule of reviews: nothing set beyond the fields in `allowed`
/// (`managedFields` always, `namespace` for LocalSubjectAccessReview).
fn validate_empty_metadata(obj: &Value, allowed: &[&str], detail: &str) -> Vec<FieldError> {
    let empty = Map::new();
    let meta = get(obj, &["metadata"])
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let set = meta
        .iter()
        .any(|(k, v)| !allowed.contains(&k.as_str()) && !is_zero(v));
    if !set {
        return Vec::new();
    }
    // Go prints the whole `ObjectMeta` struct with `%#v`; the JSON form
    // stands in for it.
    vec![FieldError::invalid_raw(
        &FieldPath::new("metadata"),
        Value::Object(meta.clone()).to_string(),
        detail,
    )]
}

/// `ValidateSubjectAccessReview`.
pub fn validate_subject_access_review(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_subject_access_review_spec(obj);
    errs.extend(validate_empty_metadata(
        obj,
        &["managedFields"],
        "must be empty",
    ));
    errs
}

/// `ValidateSelfSubjectAccessReview`.
pub fn validate_self_subject_access_review(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_self_subject_access_review_spec(obj);
    errs.extend(validate_empty_metadata(
        obj,
        &["managedFields"],
        "must be empty",
    ));
    errs
}

/// `ValidateLocalSubjectAccessReview`: a SubjectAccessReview in one
/// namespace, about resources in that namespace only.
pub fn validate_local_subject_access_review(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_subject_access_review_spec(obj);
    errs.extend(validate_empty_metadata(
        obj,
        &["managedFields", "namespace"],
        "must be empty except for namespace",
    ));
    let namespace = str_or_empty(obj, &["metadata", "namespace"]);
    if let Some(attrs) = present(obj, &["spec", "resourceAttributes"]) {
        let asked = str_or_empty(attrs, &["namespace"]);
        if asked != namespace {
            errs.push(FieldError::invalid(
                &FieldPath::new("spec.resourceAttributes.namespace"),
                asked,
                "must match metadata.namespace",
            ));
        }
    }
    if let Some(non_resource) = present(obj, &["spec", "nonResourceAttributes"]) {
        errs.push(FieldError::invalid_raw(
            &FieldPath::new("spec.nonResourceAttributes"),
            render_non_resource(Some(non_resource)),
            "disallowed on this kind of request",
        ));
    }
    errs
}

/// `ValidateTokenRequest`: a lifetime between ten minutes and 2^32 seconds
/// (after defaulting to an hour). Attestations are not in v1.32's API.
pub fn validate_token_request(obj: &Value) -> Vec<FieldError> {
    let exp = get_i64(obj, &["spec", "expirationSeconds"]).unwrap_or(0);
    let path = FieldPath::new("spec").child("expirationSeconds");
    let mut errs = Vec::new();
    if exp < MIN_TOKEN_SECONDS {
        errs.push(FieldError::invalid(
            &path,
            exp,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if exp > MAX_TOKEN_SECONDS {
        errs.push(FieldError::invalid(
            &path,
            exp,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    errs
}

#[cfg(test)]
#[path = "review_test.rs"]
mod tests;
