//! rbac.authorization.k8s.io/v1 ClusterRoleBinding: grants a ClusterRole to
//! subjects cluster-wide. Upstream's `ValidateClusterRoleBinding` (only a
//! ClusterRole, service accounts name their namespace) and its update rule
//! (`roleRef` is immutable).

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::rolebinding::binding_row;
use super::{ALL_VERBS, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;
use crate::validation::rbac;

/// The `ClusterRoleBinding` resource.
pub static CLUSTER_ROLE_BINDING: ResourceInfo = ResourceInfo {
    group: rbac::GROUP,
    version: "v1",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &ClusterRoleBindingStrategy,
};

/// The rules of [`CLUSTER_ROLE_BINDING`].
#[derive(Debug)]
struct ClusterRoleBindingStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Role",
        "string",
        0,
        "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
    ),
    AGE,
    ("Users", "string", 1, "Users in the clusterRoleBinding"),
    ("Groups", "string", 1, "Groups in the clusterRoleBinding"),
    (
        "ServiceAccounts",
        "string",
        1,
        "ServiceAccounts in the clusterRoleBinding",
    ),
];

impl Strategy for ClusterRoleBindingStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        rbac::validate_binding(obj, &["ClusterRole"], false)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        rbac::validate_role_ref_update(new, old)
    }

    fn name_rule(&self) -> Option<NameFn> {
        Some(rbac::rbac_name)
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        binding_row(obj, now)
    }
}
