//! authentication.k8s.io/v1 TokenRequest: only the object of the
//! `serviceaccounts/token` subresource (create-only, not stored). Upstream's
//! defaulting (`expirationSeconds` one hour) and `ValidateTokenRequest`.

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::object::ensure_object;
use crate::registry::{ResourceInfo, Serving, Subresource};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;
use crate::validation::review;

/// `expirationSeconds` when a request has none (`SetDefaults_TokenRequestSpec`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 60 * 60;

/// The `TokenRequest` object of `serviceaccounts/token`.
pub static TOKEN_REQUEST: ResourceInfo = ResourceInfo {
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    plural: "token",
    singular: "token",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &TokenRequestStrategy,
};

/// The `token` subresource of ServiceAccounts.
pub(crate) const TOKEN_SUBRESOURCE: Subresource = Subresource {
    name: "token",
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    verbs: CREATE_ONLY,
};

/// The rules of [`TOKEN_REQUEST`].
#[derive(Debug)]
struct TokenRequestStrategy;

impl Strategy for TokenRequestStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::authentication::v1::TokenRequest>(value)
    }

    fn defaults(&self, obj: &mut Value) {
        let spec = ensure_object(obj, &["spec"]);
        if spec.get("expirationSeconds").is_none_or(Value::is_null) {
            spec.insert(
                "expirationSeconds".into(),
                DEFAULT_EXPIRATION_SECONDS.into(),
            );
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        review::validate_token_request(obj)
    }

    /// The name is the ServiceAccount's, from the URL.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}
