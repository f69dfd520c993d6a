//! core/v1 Node.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy, status};
use crate::field::FieldError;
use crate::object::{array, get, str_or_empty};
use crate::patch::schema::ListStrategy;
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, none_if_empty, object_name};
use crate::typed::{TypedError, round_trip};

/// The `Node` resource.
pub static NODE: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[status("", "v1", "Node")],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &NodeStrategy,
};

/// The rules of [`NODE`].
#[derive(Debug)]
struct NodeStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    ("Status", "string", 0, "The status of the node"),
    ("Roles", "string", 0, "The roles of the node"),
    AGE,
    (
        "Version",
        "string",
        0,
        "Kubelet Version reported by the node.",
    ),
    (
        "Internal-IP",
        "string",
        1,
        "List of addresses reachable to the node. Queried from cloud provider, if available.",
    ),
    (
        "External-IP",
        "string",
        1,
        "List of addresses reachable to the node. Queried from cloud provider, if available.",
    ),
    (
        "OS-Image",
        "string",
        1,
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    (
        "Kernel-Version",
        "string",
        1,
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    (
        "Container-Runtime",
        "string",
        1,
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

impl Strategy for NodeStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Node>(value)
    }

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn keeps_status_on_create(&self) -> bool {
        true
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        let default = if field == "spec.unschedulable" {
            "false"
        } else {
            ""
        };
        crate::selector::field_string(obj, field, default)
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["status", "addresses"] => ListStrategy::MergeByKey("type"),
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        node_row(obj, now)
    }
}

fn node_row(node: &Value, now: Timestamp) -> Vec<Value> {
    let ready = array(node, &["status", "conditions"])
        .iter()
        .find(|c| str_or_empty(c, &["type"]) == "Ready")
        .map(|c| str_or_empty(c, &["status"]));
    let mut status = match ready {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if get(node, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = get(node, &["metadata", "labels"])
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned)
                        .or_else(|| {
                            (k == "kubernetes.io/role").then(|| v.as_str().unwrap_or("").to_owned())
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let address = |t: &str| {
        array(node, &["status", "addresses"])
            .iter()
            .find(|a| str_or_empty(a, &["type"]) == t)
            .map_or_else(
                || "<none>".to_owned(),
                |a| str_or_empty(a, &["address"]).to_owned(),
            )
    };
    let info = |k: &str| none_if_empty(str_or_empty(node, &["status", "nodeInfo", k]));
    vec![
        object_name(node),
        status.into(),
        none_if_empty(&roles.join(",")).into(),
        creation_age(node, now),
        str_or_empty(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}
