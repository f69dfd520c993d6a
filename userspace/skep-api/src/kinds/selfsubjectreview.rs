//! authentication.k8s.io SelfSubjectReview: who am I (`kubectl auth
//! whoami`)? Not stored: the API server answers each create with the
//! caller's user info in `status`. Served at `v1` and, for older kubectl, at
//! `v1beta1`, whose shape is the same apart from `apiVersion`. Upstream has
//! no validation.

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;

/// The `SelfSubjectReview` resource at `authentication.k8s.io/v1` (preferred).
pub static SELF_SUBJECT_REVIEW: ResourceInfo = ResourceInfo {
    group: GROUP,
    version: "v1",
    kind: "SelfSubjectReview",
    plural: "selfsubjectreviews",
    singular: "selfsubjectreview",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &SelfSubjectReviewStrategy { version: "v1" },
};

/// The `SelfSubjectReview` resource at `authentication.k8s.io/v1beta1`.
pub static SELF_SUBJECT_REVIEW_V1BETA1: ResourceInfo = ResourceInfo {
    version: "v1beta1",
    strategy: &SelfSubjectReviewStrategy { version: "v1beta1" },
    ..SELF_SUBJECT_REVIEW
};

const GROUP: &str = "authentication.k8s.io";

/// The rules of [`SELF_SUBJECT_REVIEW`] and [`SELF_SUBJECT_REVIEW_V1BETA1`].
#[derive(Debug)]
struct SelfSubjectReviewStrategy {
    /// The version served, written back into `apiVersion`.
    version: &'static str,
}

impl Strategy for SelfSubjectReviewStrategy {
    /// Both versions decode through the v1 type, under v1's `apiVersion`.
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        type V1 = k8s_openapi::api::authentication::v1::SelfSubjectReview;
        let with_version = |value: &Value, version: &str| {
            let mut value = value.clone();
            if let Some(map) = value.as_object_mut()
                && map.contains_key("apiVersion")
            {
                map.insert("apiVersion".into(), format!("{GROUP}/{version}").into());
            }
            value
        };
        let typed = round_trip::<V1>(&with_version(value, "v1"))?;
        Ok(with_version(&typed, self.version))
    }

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Reviews are not stored and carry no name.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn v1beta1_keeps_its_api_version() {
        let sent = json!({"apiVersion": "authentication.k8s.io/v1beta1", "kind": "SelfSubjectReview", "metadata": {}, "extra": 1});
        let typed = SELF_SUBJECT_REVIEW_V1BETA1.typed_round_trip(&sent);
        assert_eq!(
            typed.ok(),
            Some(
                json!({"apiVersion": "authentication.k8s.io/v1beta1", "kind": "SelfSubjectReview", "metadata": {}})
            )
        );
    }
}
