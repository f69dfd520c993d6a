//! authorization.k8s.io/v1 SelfSubjectRulesReview: what may the caller do in `spec.namespace` (`kubectl auth can-i --list`)? Not stored.

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;

/// The `SelfSubjectRulesReview` resource (create-only).
pub static SELF_SUBJECT_RULES_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    kind: "SelfSubjectRulesReview",
    plural: "selfsubjectrulesreviews",
    singular: "selfsubjectrulesreview",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &SelfSubjectRulesReviewStrategy,
};

/// The rules of [`SELF_SUBJECT_RULES_REVIEW`].
#[derive(Debug)]
struct SelfSubjectRulesReviewStrategy;

impl Strategy for SelfSubjectRulesReviewStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::authorization::v1::SelfSubjectRulesReview>(value)
    }

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        // Upstream has no validation; the handler answers 400 "no namespace on
        // request" when `spec.namespace` is empty.
        Vec::new()
    }

    /// Reviews are not stored and carry no name; metadata rules are the
    /// kind's own.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}
