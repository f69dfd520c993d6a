//! authorization.k8s.io/v1 LocalSubjectAccessReview: a SubjectAccessReview confined to one namespace. Not stored. Upstream's `ValidateLocalSubjectAccessReview`; the handler also answers 400 when the path has no namespace.

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;

/// The `LocalSubjectAccessReview` resource (create-only).
pub static LOCAL_SUBJECT_ACCESS_REVIEW: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    kind: "LocalSubjectAccessReview",
    plural: "localsubjectaccessreviews",
    singular: "localsubjectaccessreview",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &LocalSubjectAccessReviewStrategy,
};

/// The rules of [`LOCAL_SUBJECT_ACCESS_REVIEW`].
#[derive(Debug)]
struct LocalSubjectAccessReviewStrategy;

impl Strategy for LocalSubjectAccessReviewStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::authorization::v1::LocalSubjectAccessReview>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        crate::validation::review::validate_local_subject_access_review(obj)
    }

    /// Reviews are not stored and carry no name; metadata rules are the
    /// kind's own.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}
