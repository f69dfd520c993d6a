//! TokenRequest admission (`pkg/registry/core/serviceaccount/storage/
//! token.go`, `pkg/apis/authentication/validation`, v1 defaults): what the
//! API server does with `POST …/serviceaccounts/NAME/token` around the store
//! lookups, which stay with the caller.
//!
//! 1. [`prepare`] defaults and validates the spec and says which bound
//!    object to fetch;
//! 2. the caller fetches the service account and that object (its own
//!    NotFound errors);
//! 3. [`Prepared::admit`] checks the binding and computes the lifetime,
//!    giving a [`ClaimsRequest`](crate::ClaimsRequest) to sign.

use std::fmt;

use crate::claims::{BoundObject, ClaimsRequest, ObjectRef};

/// `expirationSeconds` when the request has none (`SetDefaults_TokenRequestSpec`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 60 * 60;
/// The shortest lifetime a request may ask for (`MinTokenAgeSec`).
pub const MIN_EXPIRATION_SECONDS: i64 = 10 * 60;
/// The longest lifetime a request may ask for.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The kubelet's lifetime for `kube-api-access` projected tokens; a pod-bound
/// request for exactly this is extended (`WarnOnlyBoundTokenExpirationSeconds`).
pub const WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS: i64 = 60 * 60 + 7;
/// The extended lifetime: one year (`ExpirationExtensionSeconds`).
pub const EXPIRATION_EXTENSION_SECONDS: i64 = 24 * 365 * 60 * 60;

/// `spec.boundObjectRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundObjectRef {
    /// `kind`.
    pub kind: String,
    /// `apiVersion`.
    pub api_version: String,
    /// `name`.
    pub name: String,
    /// `uid`; empty skips the UID check.
    pub uid: String,
}

/// `spec` of a TokenRequest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequestSpec {
    /// `audiences`; empty means the API audiences.
    pub audiences: Vec<String>,
    /// `expirationSeconds`; `None` means [`DEFAULT_EXPIRATION_SECONDS`].
    pub expiration_seconds: Option<i64>,
    /// `boundObjectRef`.
    pub bound_object_ref: Option<BoundObjectRef>,
}

/// The API server's token settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSettings {
    /// `--api-audiences` (by default the first `--service-account-issuer`).
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration` in seconds; 0 is unset.
    pub max_expiration_seconds: i64,
    /// `--service-account-extend-token-expiration` (upstream default true).
    pub extend_expiration: bool,
}

/// Why the settings are refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The max lifetime is out of range.
    #[error("the service-account-max-token-expiration must be between 1 hour and 2^32 seconds")]
    MaxExpiration,
}

impl TokenSettings {
    /// kube-apiserver's start-up check of the max lifetime.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let max = self.max_expiration_seconds;
        if max != 0 && !(3600..=MAX_EXPIRATION_SECONDS).contains(&max) {
            return Err(SettingsError::MaxExpiration);
        }
        Ok(())
    }
}

/// One field error (`field.Error` of type Invalid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The path, e.g. `spec.expirationSeconds`.
    pub field: String,
    /// The value as Go's `%v` prints it.
    pub value: String,
    /// The message.
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: Invalid value: {}: {}",
            self.field, self.value, self.detail
        )
    }
}

/// A refused TokenRequest; each variant maps to a Status reason and code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// 422 Invalid.
    #[error("TokenRequest.authentication.k8s.io {name:?} is invalid: {}", join_field_errors(.errors))]
    Invalid {
        /// The name in the Status (empty for spec validation, as upstream).
        name: String,
        /// The causes.
        errors: Vec<FieldError>,
    },
    /// 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
    /// 409 Conflict (`errors.NewConflict`).
    #[error("Operation cannot be fulfilled on {kind} {name:?}: {message}")]
    Conflict {
        /// The bound object's kind, used as the resource.
        kind: String,
        /// Its name.
        name: String,
        /// The cause.
        message: String,
    },
}

fn join_field_errors(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let all: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("[{}]", all.join(", "))
        }
    }
}

/// The kind of object a token is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    /// A Pod in the request's namespace.
    Pod,
    /// A Secret in the request's namespace.
    Secret,
    /// A Node.
    Node,
}

/// The object the caller must fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundTarget {
    /// Its kind.
    pub kind: BoundKind,
    /// Its name.
    pub name: String,
    /// The UID the request expects, or empty.
    pub uid: String,
}

/// A defaulted, validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The (defaulted) audiences.
    pub audiences: Vec<String>,
    /// The (defaulted) lifetime asked for.
    pub expiration_seconds: i64,
    /// What to fetch, if the request binds the token.
    pub target: Option<BoundTarget>,
}

/// Checks the request's `metadata.name`/`metadata.namespace` against the
/// URL's, as `TokenREST.Create` does first (empty body values pass).
pub fn check_metadata(
    url_name: &str,
    url_namespace: &str,
    body_name: &str,
    body_namespace: &str,
) -> Result<(), RequestError> {
    let invalid = |field: &str, value: &str, detail: &str| RequestError::Invalid {
        name: url_name.to_owned(),
        errors: vec![FieldError {
            field: field.to_owned(),
            value: format!("{value:?}"),
            detail: detail.to_owned(),
        }],
    };
    if !body_name.is_empty() && body_name != url_name {
        return Err(invalid(
            "metadata.name",
            body_name,
            "must match the service account name if specified",
        ));
    }
    if !body_namespace.is_empty() && body_namespace != url_namespace {
        return Err(invalid(
            "metadata.namespace",
            body_namespace,
            "must match the service account namespace if specified",
        ));
    }
    Ok(())
}

/// Defaults (`expirationSeconds` 3600, audiences = API audiences), validates
/// (`ValidateTokenRequest`) and classifies the bound object.
pub fn prepare(
    spec: &TokenRequestSpec,
    settings: &TokenSettings,
) -> Result<Prepared, RequestError> {
    let audiences = if spec.audiences.is_empty() {
        settings.api_audiences.clone()
    } else {
        spec.audiences.clone()
    };
    let exp = spec
        .expiration_seconds
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let mut errors = Vec::new();
    let invalid = |detail: &str| FieldError {
        field: "spec.expirationSeconds".to_owned(),
        value: exp.to_string(),
        detail: detail.to_owned(),
    };
    if exp < MIN_EXPIRATION_SECONDS {
        errors.push(invalid("may not specify a duration less than 10 minutes"));
    }
    if exp > MAX_EXPIRATION_SECONDS {
        errors.push(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if !errors.is_empty() {
        return Err(RequestError::Invalid {
            name: String::new(),
            errors,
        });
    }

    let target = spec
        .bound_object_ref
        .as_ref()
        .map(|r| {
            let (group, version) = match r.api_version.split_once('/') {
                Some((group, version)) => (group, version),
                None => ("", r.api_version.as_str()),
            };
            let kind = match (group, r.kind.as_str()) {
                ("", "Pod") => BoundKind::Pod,
                ("", "Secret") => BoundKind::Secret,
                ("", "Node") => BoundKind::Node,
                _ => {
                    return Err(RequestError::BadRequest(format!(
                        "cannot bind token to object of type {group}/{version}, Kind={}",
                        r.kind
                    )));
                }
            };
            Ok(BoundTarget {
                kind,
                name: r.name.clone(),
                uid: r.uid.clone(),
            })
        })
        .transpose()?;
    Ok(Prepared {
        audiences,
        expiration_seconds: exp,
        target,
    })
}

/// The fetched bound object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchedObject {
    /// The pod, its `spec.serviceAccountName`, and its node (name, and the
    /// Node's UID if the Node object exists) when it is scheduled.
    Pod {
        /// Name and UID.
        pod: ObjectRef,
        /// `spec.serviceAccountName`.
        service_account_name: String,
        /// `spec.nodeName` and that Node's UID (empty if not found).
        node: Option<ObjectRef>,
    },
    /// The secret.
    Secret(ObjectRef),
    /// The node.
    Node(ObjectRef),
}

/// An admitted request: sign [`Admitted::claims`] and answer with
/// [`Admitted::status_expiration_seconds`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The claims to sign.
    pub claims: ClaimsRequest,
    /// `status.expirationTimestamp = now + this`: the (clamped) requested
    /// lifetime, not the extended one, as upstream reports it.
    pub status_expiration_seconds: i64,
    /// Warnings for the response (`requested expiration of … shortened`).
    pub warnings: Vec<String>,
}

impl Prepared {
    /// Checks the fetched object against the request, clamps the lifetime to
    /// the max, and extends a kubelet's pod-bound 3607 s request for the API
    /// audiences to a year with `warnafter` at the requested expiry.
    pub fn admit(
        self,
        namespace: &str,
        service_account: ObjectRef,
        fetched: Option<FetchedObject>,
        settings: &TokenSettings,
        now: i64,
    ) -> Result<Admitted, RequestError> {
        let bound = match (&self.target, fetched) {
            (None, _) => None,
            (Some(target), fetched) => Some(bind(target, &service_account.name, fetched)?),
        };

        let mut warnings = Vec::new();
        let mut requested = self.expiration_seconds;
        let max = settings.max_expiration_seconds;
        if max > 0 && requested > max {
            warnings.push(format!(
                "requested expiration of {requested} seconds shortened to {max} seconds"
            ));
            requested = max;
        }

        let (mut expiration, mut warn_after) = (requested, 0);
        let pod_bound = matches!(bound, Some(BoundObject::Pod { .. }));
        let api_audiences = self
            .audiences
            .iter()
            .all(|a| settings.api_audiences.contains(a));
        if settings.extend_expiration
            && pod_bound
            && requested == WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS
            && api_audiences
        {
            warn_after = requested;
            expiration = EXPIRATION_EXTENSION_SECONDS;
        }

        Ok(Admitted {
            claims: ClaimsRequest {
                namespace: namespace.to_owned(),
                service_account,
                bound,
                audiences: self.audiences,
                expiration_seconds: expiration,
                warn_after_seconds: warn_after,
                now,
                jti: crate::claims::new_jti(),
            },
            status_expiration_seconds: requested,
            warnings,
        })
    }
}

fn bind(
    target: &BoundTarget,
    service_account_name: &str,
    fetched: Option<FetchedObject>,
) -> Result<BoundObject, RequestError> {
    let mismatch = || {
        RequestError::BadRequest(format!(
            "bound object {} does not match the fetched object",
            target.name
        ))
    };
    let (kind, uid, bound) = match (target.kind, fetched.ok_or_else(mismatch)?) {
        (
            BoundKind::Pod,
            FetchedObject::Pod {
                pod,
                service_account_name: pod_sa,
                node,
            },
        ) => {
            if pod_sa != service_account_name {
                return Err(RequestError::BadRequest(format!(
                    "cannot bind token for serviceaccount {service_account_name:?} to pod running with different serviceaccount name."
                )));
            }
            ("Pod", pod.uid.clone(), BoundObject::Pod { pod, node })
        }
        (BoundKind::Secret, FetchedObject::Secret(secret)) => {
            ("Secret", secret.uid.clone(), BoundObject::Secret(secret))
        }
        (BoundKind::Node, FetchedObject::Node(node)) => {
            ("Node", node.uid.clone(), BoundObject::Node(node))
        }
        _ => return Err(mismatch()),
    };
    if !target.uid.is_empty() && target.uid != uid {
        return Err(RequestError::Conflict {
            kind: kind.to_owned(),
            name: target.name.clone(),
            message: format!(
                "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                target.uid
            ),
        });
    }
    Ok(bound)
}

#[cfg(test)]
#[path = "request_test.rs"]
mod tests;
