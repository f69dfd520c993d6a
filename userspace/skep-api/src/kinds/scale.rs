//! autoscaling/v1 Scale: only the object of `scale` subresources.

use serde_json::Value;

use super::{STATUS_VERBS, Strategy};
use crate::field::{FieldError, FieldPath};
use crate::object::get_i64;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;

/// The `Scale` resource.
pub static SCALE: ResourceInfo = ResourceInfo {
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    plural: "scale",
    singular: "scale",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: STATUS_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &ScaleStrategy,
};

/// The rules of [`SCALE`].
#[derive(Debug)]
struct ScaleStrategy;

impl Strategy for ScaleStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::autoscaling::v1::Scale>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        match get_i64(obj, &["spec", "replicas"]) {
            Some(r) if r < 0 => vec![FieldError::invalid(
                &FieldPath::new("spec").child("replicas"),
                r,
                "must be greater than or equal to 0",
            )],
            _ => Vec::new(),
        }
    }

    /// A Scale is a view of another object, with no metadata of its own.
    fn name_rule(&self) -> Option<NameFn> {
        None
    }
}
