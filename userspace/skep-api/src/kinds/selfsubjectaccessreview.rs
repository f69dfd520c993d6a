//! authorization.k8s.io/v1 SelfSubjectAccessReview: may the caller do something (`kubectl auth can-i`)? Not stored. Upstream's `ValidateSelfSubjectAccessReview`.

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;

/// The `SelfSubjectAccessReview` resource (create-only).
pub static SELF_SUBJECT_ACCESS_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    kind: "SelfSubjectAccessReview",
    plural: "selfsubjectaccessreviews",
    singular: "selfsubjectaccessreview",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &SelfSubjectAccessReviewStrategy,
};

/// The rules of [`SELF_SUBJECT_ACCESS_REVIEW`].
#[derive(Debug)]
struct SelfSubjectAccessReviewStrategy;

impl Strategy for SelfSubjectAccessReviewStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        crate::validation::review::validate_self_subject_access_review(obj)
    }

    /// Reviews are not stored and carry no name; metadata rules are the
    /// kind's own.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}
