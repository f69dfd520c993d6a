//! Strict field validation: compare what the client sent with the typed round
//! trip to find fields Kubernetes does not know (`?fieldValidation=`).

use serde_json::Value;

use crate::status::ApiError;

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject unknown and duplicate fields (kubectl's default).
    Strict,
    /// Accept, returning a warning per field (the server default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// Parse the query value; empty means the server default (`Warn`).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Strict" => Ok(Self::Strict),
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Paths of fields in `input` that the typed round trip `typed` dropped.
/// A null input value is not reported: it means "unset" for a known field.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, typed, "", &mut out);
    out
}

fn walk(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => walk(v, tv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                walk(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Apply the policy: `Err` for Strict with problems, else the warnings to return.
pub fn check(
    policy: FieldValidation,
    unknown: &[String],
    duplicates: &[String],
) -> Result<Vec<String>, ApiError> {
    let problems: Vec<String> = duplicates
        .iter()
        .map(|d| format!("duplicate field {d:?}"))
        .chain(unknown.iter().map(|u| format!("unknown field {u:?}")))
        .collect();
    match policy {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(problems),
        FieldValidation::Strict if problems.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            problems.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_pruned_fields_with_kubernetes_paths() {
        let input = json!({"spec": {"foo": 1, "containers": [{"name": "c", "bar": 2}], "x": null}, "metadata": {}});
        let typed = json!({"spec": {"containers": [{"name": "c"}]}, "metadata": {}});
        let mut found = unknown_fields(&input, &typed);
        found.sort();
        assert_eq!(found, vec!["spec.containers[0].bar", "spec.foo"]);
    }

    #[test]
    fn policies() {
        let unknown = vec!["spec.foo".to_owned()];
        let err = check(FieldValidation::Strict, &unknown, &[]).err();
        assert_eq!(
            err.as_ref().map(|e| e.message.as_str()),
            Some("strict decoding error: unknown field \"spec.foo\"")
        );
        assert_eq!(err.map(|e| e.code()), Some(400));
        let err = check(
            FieldValidation::Strict,
            &unknown,
            &["metadata.name".to_owned()],
        )
        .err();
        assert_eq!(
            err.map(|e| e.message),
            Some("strict decoding error: duplicate field \"metadata.name\", unknown field \"spec.foo\"".to_owned())
        );
        assert_eq!(
            check(FieldValidation::Warn, &unknown, &[]).ok(),
            Some(vec!["unknown field \"spec.foo\"".to_owned()])
        );
        assert_eq!(
            check(FieldValidation::Ignore, &unknown, &[]).ok(),
            Some(vec![])
        );
        assert!(FieldValidation::parse("strict").is_err());
    }
}
