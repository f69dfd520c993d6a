//! core/v1 Binding (create-only; also `pods/binding`).

use serde_json::Value;

use super::{CREATE_ONLY, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::typed::{TypedError, round_trip};
use crate::validation::network;

/// The `Binding` resource.
pub static BINDING: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Binding",
    plural: "bindings",
    singular: "binding",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: CREATE_ONLY,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::CreateOnly,
    strategy: &BindingStrategy,
};

/// The rules of [`BINDING`].
#[derive(Debug)]
struct BindingStrategy;

impl Strategy for BindingStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Binding>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        network::validate_binding(obj)
    }
}
