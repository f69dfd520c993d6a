//! Typed round trip through the k8s-openapi model: what kube-apiserver's Go
//! decoder does to a built-in object (type errors rejected, unknown fields dropped).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A value that does not fit its Kubernetes type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TypedError {
    /// Dotted path of the offending field (`spec.replicas`), empty at the root.
    pub path: String,
    /// Go-style description: `cannot unmarshal string into Go struct field .spec.replicas of type int32`.
    pub message: String,
}

/// Translate serde's `invalid type: string "3", expected i32` into Go's wording.
fn go_message(path: &str, serde_msg: &str) -> String {
    let Some(rest) = serde_msg.strip_prefix("invalid type: ") else {
        return serde_msg.to_owned();
    };
    let (got, want) = rest.split_once(", expected ").unwrap_or((rest, "?"));
    let got = if got.starts_with("string") {
        "string"
    } else if got.starts_with("integer") || got.starts_with("floating point") {
        "number"
    } else if got.starts_with("boolean") {
        "bool"
    } else if got.starts_with("map") {
        "object"
    } else if got.starts_with("sequence") {
        "array"
    } else {
        got
    };
    let want = match want {
        "i32" => "int32",
        "i64" => "int64",
        "f64" => "float64",
        "a string" | "string" => "string",
        "a boolean" | "bool" => "bool",
        w if w.contains("sequence") || w.contains("vec") => "[]interface {}",
        w if w.contains("map") || w.starts_with("struct") => "map[string]interface {}",
        w => w,
    };
    format!("cannot unmarshal {got} into Go struct field .{path} of type {want}")
}

/// Decode `value` as `T` and serialize it back to JSON.
pub fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, TypedError> {
    let typed: T = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = format!("json: {}", go_message(&path, &err.inner().to_string()));
        TypedError { path, message }
    })?;
    serde_json::to_value(&typed).map_err(|err| TypedError {
        path: String::new(),
        message: err.to_string(),
    })
}

/// Go's `resource.ParseQuantity` failure message.
pub const QUANTITY_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Quantity suffixes: decimal SI, binary SI (exponents are handled apart).
const SUFFIXES: &[&str] = &[
    "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
];

/// Whether `s` parses as a Kubernetes `resource.Quantity` (`100m`, `1Gi`, `1e3`, `0.5`).
pub fn is_quantity(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(digits_end);
    if !number.chars().any(|c| c.is_ascii_digit()) || number.matches('.').count() > 1 {
        return false;
    }
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()))
}

/// Maps whose values are quantities in the built-in kinds.
const QUANTITY_MAPS: &[&str] = &[
    "requests",
    "limits",
    "capacity",
    "allocatable",
    "hard",
    "used",
];

/// Check every quantity in a typed object (k8s-openapi keeps them as strings;
/// Go rejects a bad one while decoding).
pub fn check_quantities(value: &Value) -> Result<(), TypedError> {
    fn walk(v: &Value, path: &str) -> Result<(), TypedError> {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let is_quantity_map = QUANTITY_MAPS.contains(&k.as_str()) && child.is_object();
                    if is_quantity_map || k == "sizeLimit" {
                        let values: Vec<&Value> = match child {
                            Value::Object(q) => q.values().collect(),
                            other => vec![other],
                        };
                        if values
                            .iter()
                            .any(|q| q.as_str().is_some_and(|q| !is_quantity(q)))
                        {
                            return Err(TypedError {
                                path: p,
                                message: QUANTITY_ERROR.to_owned(),
                            });
                        }
                    } else {
                        walk(child, &p)?;
                    }
                }
                Ok(())
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, c)| walk(c, &format!("{path}[{i}]"))),
            _ => Ok(()),
        }
    }
    walk(value, "")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    #[test]
    fn type_error_names_the_field() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3"}});
        let err = round_trip::<Deployment>(&d)
            .err()
            .unwrap_or_else(|| TypedError {
                path: String::new(),
                message: String::new(),
            });
        assert_eq!(err.path, "spec.replicas");
        assert_eq!(
            err.to_string(),
            "json: cannot unmarshal string into Go struct field .spec.replicas of type int32"
        );
    }

    #[test]
    fn unknown_fields_are_pruned_known_kept() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "bogus": 1},
            "spec": {"replicas": 2, "minReadySeconds": 5, "foo": "bar",
                     "selector": {"matchLabels": {"a": "b"}},
                     "template": {"spec": {"containers": [{"name": "c", "image": "i", "stdin": true}]}}}});
        let out = round_trip::<Deployment>(&d).unwrap_or_default();
        assert!(out["spec"].get("foo").is_none());
        assert!(out["metadata"].get("bogus").is_none());
        assert_eq!(out["spec"]["minReadySeconds"], 5);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["stdin"],
            true
        );
    }
}

#[cfg(test)]
mod quantity_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quantities_like_resource_parse_quantity() {
        for ok in [
            "1", "100m", "1Gi", "0.5", "1e3", "2E-2", "+1k", "512Mi", "1.5Gi",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "abc", "1GB", "1..2", "Gi", "1e", "1 Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        let pod = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "lots"}}}]}});
        let err = check_quantities(&pod).err();
        assert_eq!(
            err.as_ref().map(|e| e.path.as_str()),
            Some("spec.containers[0].resources.limits")
        );
        assert_eq!(err.map(|e| e.message), Some(QUANTITY_ERROR.to_owned()));
        assert!(
            check_quantities(&json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}}))
                .is_ok()
        );
    }
}

#[cfg(test)]
mod time_tests {
    use k8s_openapi::api::core::v1::{Event, Pod};
    use serde_json::json;

    use super::*;

    #[test]
    fn timestamps_keep_kubernetes_format() {
        let cm = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": "2024-01-02T03:04:05Z"}});
        let out = round_trip::<Pod>(&cm).unwrap_or_default();
        assert_eq!(out["metadata"]["creationTimestamp"], "2024-01-02T03:04:05Z");
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "involvedObject": {},
            "eventTime": "2024-01-02T03:04:05.123456Z"});
        let out = round_trip::<Event>(&ev).unwrap_or_default();
        assert_eq!(out["eventTime"], "2024-01-02T03:04:05.123456Z");
    }
}
