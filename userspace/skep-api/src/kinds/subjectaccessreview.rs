//! authorization.k8s.io/v1 SubjectAccessReview: may a given user or group do something? Not stored: the API server answers each create with the authorizer's decision in `status`. Upstream's `ValidateSubjectAccessReview`.

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;

/// The `SubjectAccessReview` resource (create-only).
pub static SUBJECT_ACCESS_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    kind: "SubjectAccessReview",
    plural: "subjectaccessreviews",
    singular: "subjectaccessreview",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &SubjectAccessReviewStrategy,
};

/// The rules of [`SUBJECT_ACCESS_REVIEW`].
#[derive(Debug)]
struct SubjectAccessReviewStrategy;

impl Strategy for SubjectAccessReviewStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::authorization::v1::SubjectAccessReview>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        crate::validation::review::validate_subject_access_review(obj)
    }

    /// Reviews are not stored and carry no name; metadata rules are the
    /// kind's own.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}
