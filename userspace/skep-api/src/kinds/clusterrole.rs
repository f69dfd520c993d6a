//! rbac.authorization.k8s.io/v1 ClusterRole: cluster-wide policy rules,
//! optionally aggregated from other ClusterRoles by label. Upstream's
//! `ValidateClusterRole`: path-segment names, policy rules (non-resource
//! URLs allowed) and aggregation selectors.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::role::ROLE_COLUMNS;
use super::{ALL_VERBS, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::table::{Column, created_at, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;
use crate::validation::rbac;

/// The `ClusterRole` resource.
pub static CLUSTER_ROLE: ResourceInfo = ResourceInfo {
    group: rbac::GROUP,
    version: "v1",
    kind: "ClusterRole",
    plural: "clusterroles",
    singular: "clusterrole",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &ClusterRoleStrategy,
};

/// The rules of [`CLUSTER_ROLE`].
#[derive(Debug)]
struct ClusterRoleStrategy;

impl Strategy for ClusterRoleStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::rbac::v1::ClusterRole>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = rbac::validate_rules(obj, false);
        errs.extend(rbac::validate_aggregation_rule(obj));
        errs
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
