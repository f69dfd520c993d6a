//! Kubernetes `meta/v1 Status` errors: one [`ApiError`] that every operation
//! returns and the API server renders as the response body.

use serde_json::{Map, Value, json};

use crate::field::FieldError;

/// `metav1.StatusReason`: why a request failed, as kubectl reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusReason {
    /// 400: the request was malformed.
    BadRequest,
    /// 401: no valid credentials.
    Unauthorized,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: the object does not exist.
    NotFound,
    /// 405: the verb is not supported on this resource.
    MethodNotAllowed,
    /// 406: no media type in `Accept` can be served.
    NotAcceptable,
    /// 409: create of an object that exists.
    AlreadyExists,
    /// 409: stale resourceVersion or field-manager conflict.
    Conflict,
    /// 410: the requested resourceVersion is compacted.
    Expired,
    /// 410: the watch resourceVersion is too old.
    Gone,
    /// 413: the request body is too large.
    RequestEntityTooLarge,
    /// 415: the content type cannot be decoded.
    UnsupportedMediaType,
    /// 422: validation failed.
    Invalid,
    /// 500: server bug or store failure.
    InternalError,
    /// 503: the server (e.g. a Raft leader) is not available.
    ServiceUnavailable,
    /// 504: the operation timed out.
    Timeout,
}

impl StatusReason {
    /// The `reason` string in the Status body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::NotAcceptable => "NotAcceptable",
            Self::AlreadyExists => "AlreadyExists",
            Self::Conflict => "Conflict",
            Self::Expired => "Expired",
            Self::Gone => "Gone",
            Self::RequestEntityTooLarge => "RequestEntityTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::Invalid => "Invalid",
            Self::InternalError => "InternalError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Timeout => "Timeout",
        }
    }

    /// The HTTP status code Kubernetes uses for this reason.
    pub fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::NotAcceptable => 406,
            Self::AlreadyExists | Self::Conflict => 409,
            Self::Expired | Self::Gone => 410,
            Self::RequestEntityTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Invalid => 422,
            Self::InternalError => 500,
            Self::ServiceUnavailable => 503,
            Self::Timeout => 504,
        }
    }
}

/// One entry of `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// Machine-readable cause, e.g. `FieldValueInvalid`, `FieldManagerConflict`.
    pub reason: String,
    /// Human-readable description.
    pub message: String,
    /// Field path the cause applies to (`spec.replicas`), empty if none.
    pub field: String,
}

/// `details` of a Status: which object failed and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusDetails {
    /// Object name, if known.
    pub name: String,
    /// API group (empty for core).
    pub group: String,
    /// Resource plural (NotFound/AlreadyExists/Conflict) or Kind (Invalid).
    pub kind: String,
    /// Per-field causes.
    pub causes: Vec<StatusCause>,
    /// Seconds the client should wait before retrying, if any.
    pub retry_after_seconds: Option<u32>,
}

/// A failed API request, rendered as a Kubernetes `Status` by [`ApiError::to_status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Why it failed.
    pub reason: StatusReason,
    /// The message kubectl prints after "Error from server (Reason): ".
    pub message: String,
    /// Object and causes, when the error is about one object (boxed to keep `Result`s small).
    pub details: Option<Box<StatusDetails>>,
}

/// A resource as named in error messages: `configmaps`, `deployments.apps`.
fn qualified(group: &str, name: &str) -> String {
    if group.is_empty() {
        name.to_owned()
    } else {
        format!("{name}.{group}")
    }
}

impl ApiError {
    /// An error with a reason and message and no details.
    pub fn new(reason: StatusReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_object(
        reason: StatusReason,
        message: String,
        group: &str,
        kind: &str,
        name: &str,
    ) -> Self {
        Self {
            reason,
            message,
            details: Some(Box::new(StatusDetails {
                name: name.to_owned(),
                group: group.to_owned(),
                kind: kind.to_owned(),
                ..StatusDetails::default()
            })),
        }
    }

    /// 404: `configmaps "x" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", qualified(group, plural));
        Self::with_object(StatusReason::NotFound, message, group, plural, name)
    }

    /// 409: `configmaps "x" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", qualified(group, plural));
        Self::with_object(StatusReason::AlreadyExists, message, group, plural, name)
    }

    /// 409: an update with a stale `metadata.resourceVersion`.
    pub fn conflict_modified(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409: `Operation cannot be fulfilled on configmaps "x": <why>`.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(group, plural)
        );
        Self::with_object(StatusReason::Conflict, message, group, plural, name)
    }

    /// 422: `ConfigMap "x" is invalid: data: Too long: …` with one cause per field error.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let joined = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let message = format!("{} \"{name}\" is invalid: {joined}", qualified(group, kind));
        let mut err = Self::with_object(StatusReason::Invalid, message, group, kind, name);
        if let Some(details) = err.details.as_mut() {
            details.causes = errors.iter().map(FieldError::to_cause).collect();
        }
        err
    }

    /// 400 with the given message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusReason::BadRequest, message)
    }

    /// 405: `the server does not allow this method on the requested resource`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusReason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 Expired: a list/watch `resourceVersion` older than the compaction point.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusReason::Expired, message)
    }

    /// 410 Gone: `too old resource version: <requested> (<oldest>)`, as watches report it.
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            StatusReason::Gone,
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 for a body or patch content type the server cannot handle.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusReason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
        )
    }

    /// 413: `Request entity too large: limit is 3145728`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusReason::RequestEntityTooLarge,
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 403: `<user> cannot <verb> resource "<plural>" …`; the caller composes the message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusReason::Forbidden, message)
    }

    /// 401: `Unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(StatusReason::Unauthorized, "Unauthorized")
    }

    /// 500: `Internal error occurred: <why>`.
    pub fn internal(why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusReason::InternalError,
            format!("Internal error occurred: {why}"),
        )
    }

    /// 503 with the given message (e.g. no Raft leader).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusReason::ServiceUnavailable, message)
    }

    /// The HTTP status code to answer with.
    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// The `meta/v1 Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code(),
        });
        if let Some(d) = &self.details {
            let mut details = Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), d.name.clone().into());
            }
            if !d.group.is_empty() {
                details.insert("group".into(), d.group.clone().into());
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), d.kind.clone().into());
            }
            if !d.causes.is_empty() {
                let causes = d
                    .causes
                    .iter()
                    .map(|c| {
                        let mut cause = Map::new();
                        cause.insert("reason".into(), c.reason.clone().into());
                        cause.insert("message".into(), c.message.clone().into());
                        if !c.field.is_empty() {
                            cause.insert("field".into(), c.field.clone().into());
                        }
                        Value::Object(cause)
                    })
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            if let Some(secs) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), secs.into());
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The `Status` body of a successful delete of a collection or with `propagationPolicy`
/// responses that return no object: `{"kind":"Status","status":"Success",…}`.
pub fn success_status(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), name.into());
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    details.insert("kind".into(), kind.into());
    if !uid.is_empty() {
        details.insert("uid".into(), uid.into());
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::{FieldError, FieldPath};

    #[test]
    fn not_found_matches_kube_apiserver() {
        let err = ApiError::not_found("", "configmaps", "x");
        assert_eq!(
            err.to_status(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"configmaps \"x\" not found","reason":"NotFound",
                   "details":{"name":"x","kind":"configmaps"},"code":404})
        );
        let err = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" not found");
        assert_eq!(err.to_status()["details"]["group"], "apps");
    }

    #[test]
    fn conflict_message_is_kubectls() {
        let err = ApiError::conflict_modified("", "configmaps", "x");
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.message,
            "Operation cannot be fulfilled on configmaps \"x\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn invalid_lists_causes() {
        let errs = vec![
            FieldError::too_long(&FieldPath::new("data"), 1_048_576),
            FieldError::required(&FieldPath::new("spec").child("selector"), ""),
        ];
        let err = ApiError::invalid("", "ConfigMap", "x", &errs[..1]);
        assert_eq!(
            err.message,
            "ConfigMap \"x\" is invalid: data: Too long: must have at most 1048576 bytes"
        );
        let status = ApiError::invalid("apps", "Deployment", "d", &errs).to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["message"],
            "Deployment.apps \"d\" is invalid: [data: Too long: must have at most 1048576 bytes, spec.selector: Required value]"
        );
        assert_eq!(
            status["details"]["causes"][1],
            json!({"reason":"FieldValueRequired","message":"Required value","field":"spec.selector"})
        );
    }
}
