//! Typed round trip through the k8s-openapi model: what kube-apiserver's Go
//! decoder does to a built-in object (type errors rejected, unknown fields dropped).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A value that does not fit its Kubernetes type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("json: {message}")]
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
        let message = go_message(&path, &err.inner().to_string());
        TypedError { path, message }
    })?;
    serde_json::to_value(&typed).map_err(|err| TypedError {
        path: String::new(),
        message: err.to_string(),
    })
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
