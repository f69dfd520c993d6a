//! authentication.k8s.io/v1 TokenReview: who does a bearer token authenticate as? Not stored: the API server answers each create with the authenticators' verdict in `status`.

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;

/// The `TokenReview` resource (create-only).
pub static TOKEN_REVIEW: ResourceInfo = ResourceInfo {
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenReview",
    plural: "tokenreviews",
    singular: "tokenreview",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &TokenReviewStrategy,
};

/// The rules of [`TOKEN_REVIEW`].
#[derive(Debug)]
struct TokenReviewStrategy;

impl Strategy for TokenReviewStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::authentication::v1::TokenReview>(value)
    }

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        // Upstream has no validation; the handler answers 400 "token is required
        // for TokenReview in authentication" when `spec.token` is empty.
        Vec::new()
    }

    /// Reviews are not stored and carry no name; metadata rules are the
    /// kind's own.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}
