//! rbac.authorization.k8s.io/v1 Role: namespaced policy rules. Upstream's
//! `ValidateRole`: path-segment names and policy rules with no non-resource
//! URLs; printed by the default table convertor (Name, Created At).

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::table::{CREATED_AT, Column, NAME, created_at, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;
use crate::validation::rbac;

/// The `Role` resource.
pub static ROLE: ResourceInfo = ResourceInfo {
    group: rbac::GROUP,
    version: "v1",
    kind: "Role",
    plural: "roles",
    singular: "role",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &RoleStrategy,
};

/// The rules of [`ROLE`].
#[derive(Debug)]
struct RoleStrategy;

/// The columns of the default table convertor, which RBAC roles use.
pub(super) const ROLE_COLUMNS: &[Column] = &[NAME, CREATED_AT];

impl Strategy for RoleStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::rbac::v1::Role>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        rbac::validate_rules(obj, true)
    }

    fn name_rule(&self) -> Option<NameFn> {
        Some(rbac::rbac_name)
    }

    fn columns(&self) -> &'static [Column] {
        ROLE_COLUMNS
    }

    fn row(&self, obj: &Value, _now: Timestamp) -> Vec<Value> {
        vec![object_name(obj), created_at(obj)]
    }
}
