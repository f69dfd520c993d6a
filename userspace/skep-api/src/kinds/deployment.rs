//! apps/v1 Deployment.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{ALL_VERBS, SCALE_SUBRESOURCE, Strategy, status};
use crate::defaults::{as_map, default_template};
use crate::field::FieldError;
use crate::object::{default_field, ensure_object, get, get_i64};
use crate::patch::schema::{ListStrategy, pod_spec_list_strategy, pod_spec_retains_keys};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{
    AGE, CONTAINERS, Column, IMAGES, NAME, creation_age, object_name, template_columns,
};
use crate::typed::{TypedError, round_trip};
use crate::validation::workload;

/// The `Deployment` resource.
pub static DEPLOYMENT: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    namespaced: true,
    short_names: &["deploy"],
    categories: &["all"],
    verbs: ALL_VERBS,
    subresources: &[SCALE_SUBRESOURCE, status("apps", "v1", "Deployment")],
    tracks_generation: true,
    serving: Serving::Stored,
    strategy: &DeploymentStrategy,
};

/// The rules of [`DEPLOYMENT`].
#[derive(Debug)]
struct DeploymentStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    ("Ready", "string", 0, "Number of the pod with ready state"),
    (
        "Up-to-date",
        "string",
        0,
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    (
        "Available",
        "string",
        0,
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    (
        "Selector",
        "string",
        1,
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
    ),
];

impl Strategy for DeploymentStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::apps::v1::Deployment>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        workload::validate_deployment(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        workload::validate_selector_update(new, old)
    }

    fn normalize_typed(&self, sent: &Value, typed: &mut Value) {
        keep_nil_selector(sent, typed);
    }

    fn validate_status_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        workload::validate_replica_counts(new)
    }

    fn atomic(&self, path: &[&str]) -> bool {
        path == ["spec", "selector"]
    }

    fn defaults(&self, obj: &mut Value) {
        default_deployment(obj);
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["spec", "template", "spec", rest @ ..] => pod_spec_list_strategy(rest),
            _ => ListStrategy::Replace,
        }
    }

    fn retains_keys(&self, path: &[&str]) -> bool {
        match path {
            ["spec", "strategy"] => true,
            ["spec", "template", "spec", rest @ ..] => pod_spec_retains_keys(rest),
            _ => false,
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);
        let int = |path: &[&str]| Value::from(get_i64(obj, path).unwrap_or(0));

        let [containers, images, selector] = template_columns(obj);
        let desired = get_i64(obj, &["spec", "replicas"]).unwrap_or(0);
        let ready = get_i64(obj, &["status", "readyReplicas"]).unwrap_or(0);
        vec![
            name,
            format!("{ready}/{desired}").into(),
            int(&["status", "updatedReplicas"]),
            int(&["status", "availableReplicas"]),
            created,
            containers,
            images,
            selector,
        ]
    }
}

fn default_deployment(obj: &mut Value) {
    default_template(obj);
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "replicas", 1);
    default_field(spec, "revisionHistoryLimit", 10);
    default_field(spec, "progressDeadlineSeconds", 600);
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    let strategy = as_map(strategy);
    default_field(strategy, "type", "RollingUpdate");
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
        let rolling = as_map(rolling);
        default_field(rolling, "maxUnavailable", "25%");
        default_field(rolling, "maxSurge", "25%");
    }
}

/// Go's `*LabelSelector` is nil when absent; k8s-openapi's is a default `{}`:
/// drop it again when the client sent none (Deployment and ReplicaSet).
pub(super) fn keep_nil_selector(sent: &Value, typed: &mut Value) {
    if get(sent, &["spec", "selector"]).is_none_or(Value::is_null)
        && let Some(Value::Object(spec)) = typed.get_mut("spec")
    {
        spec.remove("selector");
    }
}
