//! Field paths and field errors, formatted like `k8s.io/apimachinery/pkg/util/validation/field`.

use std::fmt;

use serde_json::Value;

use crate::status::StatusCause;

/// A path to a field: `spec.containers[0].image`, `metadata.labels[app]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// A root path with one field name.
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The path of a child field.
    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list element.
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry.
    #[must_use]
    pub fn key(&self, k: &str) -> Self {
        Self(format!("{}[{k}]", self.0))
    }

    /// The path as Kubernetes prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `field.ErrorType`: the kind of a field error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    /// `Not found`.
    NotFound,
    /// `Required value`.
    Required,
    /// `Duplicate value`.
    Duplicate,
    /// `Invalid value`.
    Invalid,
    /// `Unsupported value`.
    NotSupported,
    /// `Forbidden`.
    Forbidden,
    /// `Too long`.
    TooLong,
    /// `Too many`.
    TooMany,
    /// `Internal error`.
    Internal,
}

impl FieldErrorType {
    /// The text Kubernetes prints for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Internal => "Internal error",
        }
    }

    /// The `details.causes[].reason` string.
    pub fn cause_reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
        }
    }
}

/// One validation failure on one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// What is wrong.
    pub kind: FieldErrorType,
    /// Where.
    pub field: FieldPath,
    /// The offending value as Kubernetes prints it (`"x"`, `-1`), `None` omits it.
    pub value: Option<String>,
    /// Explanation after the value.
    pub detail: String,
}

impl FieldError {
    fn build(
        kind: FieldErrorType,
        field: &FieldPath,
        value: Option<&Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.clone(),
            value: value.map(render_value),
            detail: detail.into(),
        }
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: &FieldPath, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::build(FieldErrorType::Invalid, field, Some(&value.into()), detail)
    }

    /// `Invalid value: <rendered>: <detail>` with the value already rendered
    /// (Go's `%#v` of structs and maps, e.g. `map[string]string{"app":"x"}`).
    pub fn invalid_raw(
        field: &FieldPath,
        rendered: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let mut err = Self::build(FieldErrorType::Invalid, field, None, detail);
        err.value = Some(rendered.into());
        err
    }

    /// `Required value[: <detail>]`.
    pub fn required(field: &FieldPath, detail: impl Into<String>) -> Self {
        Self::build(FieldErrorType::Required, field, None, detail)
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: &FieldPath, detail: impl Into<String>) -> Self {
        Self::build(FieldErrorType::Forbidden, field, None, detail)
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: &FieldPath, value: impl Into<Value>) -> Self {
        Self::build(FieldErrorType::Duplicate, field, Some(&value.into()), "")
    }

    /// `Not found: <value>`.
    pub fn not_found(field: &FieldPath, value: impl Into<Value>) -> Self {
        Self::build(FieldErrorType::NotFound, field, Some(&value.into()), "")
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: &FieldPath, value: impl Into<Value>, valid: &[&str]) -> Self {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = valid.iter().map(|v| format!("{v:?}")).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::build(
            FieldErrorType::NotSupported,
            field,
            Some(&value.into()),
            detail,
        )
    }

    /// `Too long: must have at most <max> bytes`.
    pub fn too_long(field: &FieldPath, max: usize) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        Self::build(
            FieldErrorType::TooLong,
            field,
            None,
            format!("must have at most {max} {unit}"),
        )
    }

    /// `Too many: <actual>: must have at most <max> items`.
    pub fn too_many(field: &FieldPath, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Self::build(
            FieldErrorType::TooMany,
            field,
            Some(&actual.into()),
            format!("must have at most {max} {unit}"),
        )
    }

    /// The part after `<field>: ` (Go's `ErrorBody`).
    pub fn body(&self) -> String {
        let mut s = match (&self.kind, &self.value) {
            (
                FieldErrorType::Required
                | FieldErrorType::Forbidden
                | FieldErrorType::TooLong
                | FieldErrorType::Internal,
                _,
            )
            | (_, None) => self.kind.as_str().to_owned(),
            (_, Some(v)) => format!("{}: {v}", self.kind.as_str()),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// The `details.causes[]` entry for this error.
    pub fn to_cause(&self) -> StatusCause {
        StatusCause {
            reason: self.kind.cause_reason().to_owned(),
            message: self.body(),
            field: self.field.to_string(),
        }
    }
}

/// Render a bad value like Go's `%v`/`%q`: strings quoted, numbers and bools bare.
pub fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".to_owned(),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let entries: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", render_value(v)))
                .collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let items: Vec<String> = a.iter().map(render_value).collect();
            format!("[]string{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let p = FieldPath::new("spec")
            .child("containers")
            .index(0)
            .child("image");
        assert_eq!(p.as_str(), "spec.containers[0].image");
        assert_eq!(
            FieldError::required(&p, "").to_string(),
            "spec.containers[0].image: Required value"
        );
        let p = FieldPath::new("spec").child("restartPolicy");
        assert_eq!(
            FieldError::not_supported(&p, "Sometimes", &["Always", "Never", "OnFailure"])
                .to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\""
        );
        let p = FieldPath::new("spec").child("replicas");
        assert_eq!(
            FieldError::invalid(&p, -1, "must be greater than or equal to 0").to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            FieldPath::new("metadata")
                .child("labels")
                .key("a b")
                .as_str(),
            "metadata.labels[a b]"
        );
    }
}
