//! core/v1 Pod: graceful deletion, its own QoS class and phase.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{ALL_VERBS, Strategy, status};
use crate::defaults::{array_mut, default_pod_spec};
use crate::delete::DeleteOptions;
use crate::field::{FieldError, FieldPath};
use crate::object::{array, default_field, ensure_object, get, get_i64, get_str, str_or_empty};
use crate::patch::schema::{ListStrategy, pod_spec_list_strategy, pod_spec_retains_keys};
use crate::registry::{ResourceInfo, Serving, Subresource};
use crate::table::{AGE, Column, NAME, age, creation_age, none_if_empty, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::pod;

/// The `Pod` resource.
pub static POD: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    verbs: ALL_VERBS,
    subresources: &[
        Subresource {
            name: "binding",
            group: "",
            version: "v1",
            kind: "Binding",
            verbs: &["create"],
        },
        Subresource {
            name: "exec",
            group: "",
            version: "v1",
            kind: "PodExecOptions",
            verbs: &["create", "get"],
        },
        Subresource {
            name: "log",
            group: "",
            version: "v1",
            kind: "Pod",
            verbs: &["get"],
        },
        status("", "v1", "Pod"),
    ],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &PodStrategy,
};

/// The rules of [`POD`].
#[derive(Debug)]
struct PodStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Ready",
        "string",
        0,
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    (
        "Status",
        "string",
        0,
        "The aggregate status of the containers in this pod.",
    ),
    (
        "Restarts",
        "string",
        0,
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    (
        "IP",
        "string",
        1,
        "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    (
        "Node",
        "string",
        1,
        "NodeName is a request to schedule this pod onto a specific node.",
    ),
    (
        "Nominated Node",
        "string",
        1,
        "nominatedNodeName is set only when this pod preempts other pods on the node.",
    ),
    (
        "Readiness Gates",
        "string",
        1,
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

impl Strategy for PodStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Pod>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        get(obj, &["spec"]).map_or_else(
            || {
                vec![FieldError::required(
                    &FieldPath::new("spec").child("containers"),
                    "",
                )]
            },
            |spec| pod::validate_pod_spec(spec, &FieldPath::new("spec")),
        )
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        pod::validate_pod_update(new, old)
    }

    fn defaults(&self, obj: &mut Value) {
        default_pod(obj);
    }

    fn initial_status(&self, obj: &mut Value) {
        let qos = crate::defaults::qos_class(obj);
        let status = ensure_object(obj, &["status"]);
        default_field(status, "phase", "Pending");
        default_field(status, "qosClass", qos);
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        let default = if field == "spec.hostNetwork" {
            "false"
        } else {
            ""
        };
        crate::selector::field_string(obj, field, default)
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["spec", rest @ ..] => pod_spec_list_strategy(rest),
            ["status", "podIPs" | "hostIPs"] => ListStrategy::MergeByKey("ip"),
            _ => ListStrategy::Replace,
        }
    }

    fn retains_keys(&self, path: &[&str]) -> bool {
        matches!(path, ["spec", rest @ ..] if pod_spec_retains_keys(rest))
    }

    /// `gracePeriodSeconds` or the pod's `terminationGracePeriodSeconds`; 0
    /// when unscheduled or finished.
    fn grace_period(&self, obj: &Value, opts: &DeleteOptions) -> i64 {
        let phase = str_or_empty(obj, &["status", "phase"]);
        if str_or_empty(obj, &["spec", "nodeName"]).is_empty()
            || phase == "Succeeded"
            || phase == "Failed"
        {
            return 0;
        }
        opts.grace_period_seconds
            .or_else(|| get_i64(obj, &["spec", "terminationGracePeriodSeconds"]))
            .unwrap_or(30)
    }

    /// A pod goes once its node has confirmed it stopped (grace period 0).
    fn ready_to_remove(&self, obj: &Value) -> bool {
        get_i64(obj, &["metadata", "deletionGracePeriodSeconds"]).unwrap_or(0) == 0
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        pod_row(obj, now)
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "follows kubectl's printPod step by step"
)]
fn pod_row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let total = array(pod, &["spec", "containers"]).len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<String> = None;
    let mut reason = str_or_empty(pod, &["status", "phase"]).to_owned();
    if let Some(r) = get_str(pod, &["status", "reason"]).filter(|r| !r.is_empty()) {
        r.clone_into(&mut reason);
    }
    if array(pod, &["status", "conditions"]).iter().any(|c| {
        str_or_empty(c, &["type"]) == "PodScheduled"
            && str_or_empty(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".into();
    }
    let mut note_restart = |c: &Value| {
        if let Some(t) = get_str(c, &["lastState", "terminated", "finishedAt"])
            && last_restart.as_deref().is_none_or(|l| t > l)
        {
            last_restart = Some(t.to_owned());
        }
    };
    let init_specs = array(pod, &["spec", "initContainers"]);
    let mut initializing = false;
    for (i, c) in array(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        restarts += get_i64(c, &["restartCount"]).unwrap_or(0);
        note_restart(c);
        let terminated = get(c, &["state", "terminated"]);
        let waiting_reason = str_or_empty(c, &["state", "waiting", "reason"]);
        let sidecar = init_specs
            .iter()
            .find(|s| s.get("name") == c.get("name"))
            .is_some_and(|s| str_or_empty(s, &["restartPolicy"]) == "Always");
        if terminated.is_some_and(|t| get_i64(t, &["exitCode"]) == Some(0)) {
            continue;
        }
        if sidecar && c.get("started").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = terminated {
            let r = str_or_empty(t, &["reason"]);
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if let Some(sig) = get_i64(t, &["signal"]).filter(|s| *s != 0) {
                format!("Init:Signal:{sig}")
            } else {
                format!("Init:ExitCode:{}", get_i64(t, &["exitCode"]).unwrap_or(0))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = array(pod, &["status", "conditions"]).iter().any(|c| {
        str_or_empty(c, &["type"]) == "Initialized" && str_or_empty(c, &["status"]) == "True"
    });
    if !initializing || initialized {
        let mut has_running = false;
        for c in array(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += get_i64(c, &["restartCount"]).unwrap_or(0);
            note_restart(c);
            let waiting = str_or_empty(c, &["state", "waiting", "reason"]);
            let terminated = get(c, &["state", "terminated"]);
            if !waiting.is_empty() {
                waiting.clone_into(&mut reason);
            } else if let Some(t) = terminated {
                let r = str_or_empty(t, &["reason"]);
                reason = if !r.is_empty() {
                    r.to_owned()
                } else if let Some(sig) = get_i64(t, &["signal"]).filter(|s| *s != 0) {
                    format!("Signal:{sig}")
                } else {
                    format!("ExitCode:{}", get_i64(t, &["exitCode"]).unwrap_or(0))
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && get(c, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = array(pod, &["status", "conditions"]).iter().any(|c| {
                str_or_empty(c, &["type"]) == "Ready" && str_or_empty(c, &["status"]) == "True"
            });
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    let phase = str_or_empty(pod, &["status", "phase"]);
    if get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null()) {
        if str_or_empty(pod, &["status", "reason"]) == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    let restarts = match last_restart {
        Some(t) => format!("{restarts} ({} ago)", age(Some(t.as_str()), now)),
        None => restarts.to_string(),
    };
    let gates = array(pod, &["spec", "readinessGates"]);
    let gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                array(pod, &["status", "conditions"]).iter().any(|c| {
                    c.get("type") == g.get("conditionType")
                        && str_or_empty(c, &["status"]) == "True"
                })
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        object_name(pod),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        creation_age(pod, now),
        none_if_empty(str_or_empty(pod, &["status", "podIP"])).into(),
        none_if_empty(str_or_empty(pod, &["spec", "nodeName"])).into(),
        none_if_empty(str_or_empty(pod, &["status", "nominatedNodeName"])).into(),
        gates.into(),
    ]
}

fn default_pod(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_pod_spec(spec);
    default_field(spec, "enableServiceLinks", true);
    // Priority and DefaultTolerationSeconds admission plugins.
    default_field(spec, "priority", 0);
    default_field(spec, "preemptionPolicy", "PreemptLowerPriority");
    // ServiceAccount admission (without the token volume).
    default_field(spec, "serviceAccountName", "default");
    let sa = spec.get("serviceAccountName").cloned().unwrap_or_default();
    default_field(spec, "serviceAccount", sa);
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(list) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let present = list.iter().any(|t| {
                (t.get("key").and_then(Value::as_str) == Some(key)
                    && matches!(
                        t.get("effect").and_then(Value::as_str),
                        Some("NoExecute") | None
                    ))
                    || (t.get("operator").and_then(Value::as_str) == Some("Exists")
                        && t.get("key").is_none())
            });
            if !present {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    // Requests default to limits.
    for key in ["containers", "initContainers"] {
        for c in array_mut(spec, key) {
            let resources = ensure_object(c, &["resources"]);
            if let Some(Value::Object(limits)) = resources.get("limits").cloned() {
                let requests = resources.entry("requests").or_insert_with(|| json!({}));
                if let Value::Object(requests) = requests {
                    for (k, v) in limits {
                        requests.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
}
