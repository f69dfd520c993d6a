//! Deployment and ReplicaSet validation (`pkg/apis/apps/validation`).

use serde_json::Value;

use super::{meta, pod};
use crate::field::{FieldError, FieldPath, render_value};
use crate::object::{get, get_i64, str_or_empty};
use crate::selector::LabelSelector;

fn non_negative(spec: &Value, key: &str, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(v) = get_i64(spec, &[key]).filter(|v| *v < 0) {
        errs.push(FieldError::invalid(
            &path.child(key),
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// Selector, template labels matching it, template spec with restartPolicy Always.
fn validate_selector_and_template(spec: &Value, path: &FieldPath, kind: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sel_path = path.child("selector");
    let selector = get(spec, &["selector"]).filter(|s| !s.is_null());
    let template_labels = get(spec, &["template", "metadata", "labels"]);
    match selector {
        None => errs.push(FieldError::required(&sel_path, "")),
        Some(sel) => {
            errs.extend(meta::validate_label_selector(sel, &sel_path));
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(serde_json::Map::is_empty)
                && crate::object::array(sel, &["matchExpressions"]).is_empty();
            if empty {
                errs.push(FieldError::invalid_raw(
                    &sel_path,
                    "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                    format!("empty selector is invalid for {kind}"),
                ));
            } else if let Ok(matcher) = LabelSelector::from_value(sel) {
                let labels = template_labels.cloned().unwrap_or(Value::Null);
                if !matcher.matches_value(&labels) {
                    errs.push(FieldError::invalid_raw(
                        &path.child("template").child("metadata").child("labels"),
                        render_value(&labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    let tpath = path.child("template");
    errs.extend(meta::validate_labels(
        template_labels,
        &tpath.child("metadata").child("labels"),
    ));
    match get(spec, &["template", "spec"]) {
        Some(tspec) => {
            errs.extend(pod::validate_pod_spec(tspec, &tpath.child("spec")));
            let policy = str_or_empty(tspec, &["restartPolicy"]);
            if !policy.is_empty() && policy != "Always" {
                errs.push(FieldError::not_supported(
                    &tpath.child("spec").child("restartPolicy"),
                    policy,
                    &["Always"],
                ));
            }
        }
        None => errs.push(FieldError::required(
            &tpath.child("spec").child("containers"),
            "",
        )),
    }
    errs
}

/// An int-or-percent (`25%` or `1`) as (value, is_percent), if well-formed.
fn int_or_percent(v: &Value) -> Option<(i64, bool)> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| (n, false)),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse().ok())
            .map(|p| (p, true)),
        _ => None,
    }
}

fn validate_strategy(spec: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let sp = path.child("strategy");
    let Some(strategy) = get(spec, &["strategy"]) else {
        return;
    };
    let kind = str_or_empty(strategy, &["type"]);
    match kind {
        "Recreate" => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                errs.push(FieldError::forbidden(
                    &sp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let rp = sp.child("rollingUpdate");
            let mut parsed = Vec::new();
            for key in ["maxUnavailable", "maxSurge"] {
                let Some(v) = get(strategy, &["rollingUpdate", key]) else {
                    parsed.push(None);
                    continue;
                };
                match int_or_percent(v) {
                    None => {
                        errs.push(FieldError::invalid(&rp.child(key), v.clone(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                        parsed.push(None);
                    }
                    Some((n, pct)) => {
                        if n < 0 {
                            errs.push(FieldError::invalid(
                                &rp.child(key),
                                v.clone(),
                                "must be greater than or equal to 0",
                            ));
                        }
                        if pct && n > 100 && key == "maxUnavailable" {
                            errs.push(FieldError::invalid(
                                &rp.child(key),
                                v.clone(),
                                "must not be greater than 100%",
                            ));
                        }
                        parsed.push(Some(n));
                    }
                }
            }
            if let [Some(0), Some(0)] = parsed[..] {
                errs.push(FieldError::invalid(
                    &rp.child("maxUnavailable"),
                    get(strategy, &["rollingUpdate", "maxUnavailable"])
                        .cloned()
                        .unwrap_or_default(),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &sp.child("type"),
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// `ValidateDeploymentSpec`.
pub fn validate_deployment(obj: &Value) -> Vec<FieldError> {
    let path = FieldPath::new("spec");
    let spec = get(obj, &["spec"]).cloned().unwrap_or_default();
    let mut errs = Vec::new();
    for key in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        non_negative(&spec, key, &path, &mut errs);
    }
    errs.extend(validate_selector_and_template(&spec, &path, "deployment"));
    validate_strategy(&spec, &path, &mut errs);
    if let Some(p) = get_i64(&spec, &["progressDeadlineSeconds"]) {
        if p < 0 {
            errs.push(FieldError::invalid(
                &path.child("progressDeadlineSeconds"),
                p,
                "must be greater than or equal to 0",
            ));
        } else if p <= get_i64(&spec, &["minReadySeconds"]).unwrap_or(0) {
            errs.push(FieldError::invalid(
                &path.child("progressDeadlineSeconds"),
                p,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

/// `ValidateReplicaSetSpec`.
pub fn validate_replicaset(obj: &Value) -> Vec<FieldError> {
    let path = FieldPath::new("spec");
    let spec = get(obj, &["spec"]).cloned().unwrap_or_default();
    let mut errs = Vec::new();
    for key in ["replicas", "minReadySeconds"] {
        non_negative(&spec, key, &path, &mut errs);
    }
    errs.extend(validate_selector_and_template(&spec, &path, "replicaset"));
    errs
}

/// `spec.selector` is immutable in apps/v1.
pub fn validate_selector_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let n = get(new, &["spec", "selector"]);
    let o = get(old, &["spec", "selector"]);
    if n == o {
        return Vec::new();
    }
    vec![FieldError::invalid_raw(
        &FieldPath::new("spec").child("selector"),
        render_selector(n.unwrap_or(&Value::Null)),
        "field is immutable",
    )]
}

/// Go's `%#v` of a `v1.LabelSelector` as kubectl shows it.
fn render_selector(sel: &Value) -> String {
    let labels = sel
        .get("matchLabels")
        .map_or_else(|| "map[string]string(nil)".to_owned(), render_value);
    let exprs = if crate::object::array(sel, &["matchExpressions"]).is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_owned()
    } else {
        format!("[]v1.LabelSelectorRequirement{}", sel["matchExpressions"])
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// A `/status` update of a Deployment or ReplicaSet: replica counts are not negative.
pub fn validate_replica_counts(new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for key in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "observedGeneration",
    ] {
        if let Some(v) = get_i64(new, &["status", key]).filter(|v| *v < 0) {
            errs.push(FieldError::invalid(
                &FieldPath::new("status").child(key),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    errs
}
