//! apps/v1 ReplicaSet.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, SCALE_SUBRESOURCE, Strategy, status};
use crate::defaults::default_template;
use crate::field::FieldError;
use crate::object::{default_field, ensure_object, get_i64};
use crate::patch::schema::{ListStrategy, pod_spec_list_strategy, pod_spec_retains_keys};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{
    AGE, CONTAINERS, Column, IMAGES, NAME, creation_age, object_name, template_columns,
};
use crate::typed::{TypedError, round_trip};
use crate::validation::workload;

/// The `ReplicaSet` resource.
pub static REPLICA_SET: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    namespaced: true,
    short_names: &["rs"],
    categories: &["all"],
    verbs: ALL_VERBS,
    subresources: &[SCALE_SUBRESOURCE, status("apps", "v1", "ReplicaSet")],
    tracks_generation: true,
    serving: Serving::Stored,
    strategy: &ReplicaSetStrategy,
};

/// The rules of [`REPLICA_SET`].
#[derive(Debug)]
struct ReplicaSetStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Desired",
        "integer",
        0,
        "Replicas is the number of desired replicas.",
    ),
    (
        "Current",
        "integer",
        0,
        "Replicas is the most recently oberved number of replicas.",
    ),
    (
        "Ready",
        "integer",
        0,
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    (
        "Selector",
        "string",
        1,
        "Selector is a label query over pods that should match the replica count.",
    ),
];

impl Strategy for ReplicaSetStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::apps::v1::ReplicaSet>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        workload::validate_replicaset(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        workload::validate_selector_update(new, old)
    }

    fn normalize_typed(&self, sent: &Value, typed: &mut Value) {
        super::deployment::keep_nil_selector(sent, typed);
    }

    fn validate_status_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        workload::validate_replica_counts(new)
    }

    fn atomic(&self, path: &[&str]) -> bool {
        path == ["spec", "selector"]
    }

    fn defaults(&self, obj: &mut Value) {
        default_replicaset(obj);
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        let default = if field == "status.replicas" { "0" } else { "" };
        crate::selector::field_string(obj, field, default)
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["spec", "template", "spec", rest @ ..] => pod_spec_list_strategy(rest),
            _ => ListStrategy::Replace,
        }
    }

    fn retains_keys(&self, path: &[&str]) -> bool {
        matches!(path, ["spec", "template", "spec", rest @ ..] if pod_spec_retains_keys(rest))
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);
        let int = |path: &[&str]| Value::from(get_i64(obj, path).unwrap_or(0));

        let [containers, images, selector] = template_columns(obj);
        vec![
            name,
            int(&["spec", "replicas"]),
            int(&["status", "replicas"]),
            int(&["status", "readyReplicas"]),
            created,
            containers,
            images,
            selector,
        ]
    }
}

fn default_replicaset(obj: &mut Value) {
    default_template(obj);
    default_field(ensure_object(obj, &["spec"]), "replicas", 1);
}
