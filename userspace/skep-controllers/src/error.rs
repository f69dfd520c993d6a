//! Errors of the control loops.

use skep_api::{ApiError, StatusReason};

/// A control loop step that failed; the work queue retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An API call failed.
    #[error("failed to {action} {object}")]
    Api {
        /// What was being done (`create pod`, `update status of`).
        action: &'static str,
        /// `namespace/name` (or a name) of the object.
        object: String,
        /// The API's answer.
        #[source]
        source: ApiError,
    },
    /// A legacy token could not be signed.
    #[error("failed to sign a token for {object}")]
    Sign {
        /// `namespace/name` of the secret.
        object: String,
        /// Why.
        #[source]
        source: skep_tokens::SignError,
    },
    /// An object could not be converted between JSON and its typed form.
    #[error("failed to convert {object}")]
    Convert {
        /// The object.
        object: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl ControllerError {
    /// Wraps an API error with what was being done.
    pub fn api(action: &'static str, object: impl Into<String>, source: ApiError) -> Self {
        Self::Api {
            action,
            object: object.into(),
            source,
        }
    }

    /// Whether the failure is a stale read (`Conflict`): retried at once.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { source, .. } if source.reason == StatusReason::Conflict)
    }
}

/// Whether an API error says the object is not there.
pub fn is_not_found(err: &ApiError) -> bool {
    err.reason == StatusReason::NotFound
}
