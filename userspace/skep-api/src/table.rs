//! Server-side printing: `meta.k8s.io/v1 Table` with the columns
//! kube-apiserver prints per kind (`pkg/printers/internalversion/printers.go`).

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::admission::selector_string;
use crate::object::{array, get, get_i64, get_str, str_or_empty};
use crate::registry::{Kind, ResourceInfo};

/// `?includeObject=` for Table rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No `object` in rows.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parse the query value (empty means `Metadata`).
    pub fn parse(s: &str) -> Self {
        match s {
            "None" => Self::None,
            "Object" => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// One column: name, type, priority (0 default, 1 wide), description.
type Column = (&'static str, &'static str, u8, &'static str);

const NAME: Column = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

#[expect(
    clippy::too_many_lines,
    reason = "one flat table of columns per kind reads best"
)]
fn columns(kind: Kind) -> Vec<Column> {
    let mut cols = match kind {
        Kind::Pod => vec![
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
        ],
        Kind::Deployment => vec![
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
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            (
                "Selector",
                "string",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        Kind::ReplicaSet => vec![
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
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            (
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        Kind::Service => vec![
            NAME,
            (
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            (
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            (
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            (
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            (
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Kind::ConfigMap => vec![
            NAME,
            ("Data", "string", 0, "Data contains the configuration data."),
            AGE,
        ],
        Kind::Secret => vec![
            NAME,
            ("Type", "string", 0, "The type of the secret"),
            (
                "Data",
                "string",
                0,
                "The number of entries in the secret's data",
            ),
            AGE,
        ],
        Kind::Namespace => vec![
            NAME,
            ("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        Kind::Node => vec![
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
        ],
        Kind::Endpoints => vec![
            NAME,
            (
                "Endpoints",
                "string",
                0,
                "Endpoints is the list of endpoints in the object.",
            ),
            AGE,
        ],
        Kind::EndpointSlice => vec![
            NAME,
            (
                "AddressType",
                "string",
                0,
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            (
                "Ports",
                "string",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            (
                "Endpoints",
                "string",
                0,
                "endpoints is a list of unique endpoints in this slice.",
            ),
            AGE,
        ],
        Kind::Event => vec![
            (
                "Last Seen",
                "string",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            (
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            (
                "Reason",
                "string",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            (
                "Object",
                "string",
                0,
                "The object that this event is about.",
            ),
            (
                "Subobject",
                "string",
                1,
                "The subobject that this event is about.",
            ),
            ("Source", "string", 1, "The component reporting this event."),
            (
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            (
                "First Seen",
                "string",
                1,
                "The time at which the event was first recorded.",
            ),
            (
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
            ),
            (
                "Name",
                "string",
                1,
                "Name must be unique within a namespace.",
            ),
        ],
        Kind::PersistentVolume => vec![
            NAME,
            (
                "Capacity",
                "string",
                0,
                "capacity is the description of the persistent volume's resources and capacity.",
            ),
            (
                "Access Modes",
                "string",
                0,
                "accessModes contains all ways the volume can be mounted.",
            ),
            (
                "Reclaim Policy",
                "string",
                0,
                "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
            ),
            (
                "Status",
                "string",
                0,
                "phase indicates if a volume is available, bound to a claim, or released by a claim.",
            ),
            (
                "Claim",
                "string",
                0,
                "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
            ),
            (
                "StorageClass",
                "string",
                0,
                "storageClassName is the name of StorageClass to which this persistent volume belongs.",
            ),
            (
                "VolumeAttributesClass",
                "string",
                0,
                "Name of VolumeAttributesClass to which this persistent volume belongs.",
            ),
            (
                "Reason",
                "string",
                0,
                "reason is a brief CamelCase string that describes any failure.",
            ),
            AGE,
            (
                "VolumeMode",
                "string",
                1,
                "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
            ),
        ],
        Kind::PersistentVolumeClaim => vec![
            NAME,
            (
                "Status",
                "string",
                0,
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            (
                "Volume",
                "string",
                0,
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            (
                "Capacity",
                "string",
                0,
                "capacity represents the actual resources of the underlying volume.",
            ),
            (
                "Access Modes",
                "string",
                0,
                "accessModes contains the desired access modes the volume should have.",
            ),
            (
                "StorageClass",
                "string",
                0,
                "storageClassName is the name of the StorageClass required by the claim.",
            ),
            (
                "VolumeAttributesClass",
                "string",
                0,
                "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.",
            ),
            AGE,
            (
                "VolumeMode",
                "string",
                1,
                "volumeMode defines what type of volume is required by the claim.",
            ),
        ],
        Kind::NetworkPolicy => vec![
            NAME,
            (
                "Pod-Selector",
                "string",
                0,
                "podSelector selects the pods to which this NetworkPolicy object applies.",
            ),
            AGE,
        ],
        Kind::Binding | Kind::Scale => vec![NAME, AGE],
    };
    cols.retain(|c| !c.0.is_empty());
    cols
}

/// kubectl's `HumanDuration` for an age in seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: the age of an RFC 3339 timestamp, `<unknown>` if unset.
pub fn age(timestamp: Option<&str>, now: Timestamp) -> String {
    match timestamp.and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_owned()
    }
}

fn creation_age(obj: &Value, now: Timestamp) -> Value {
    age(get_str(obj, &["metadata", "creationTimestamp"]), now).into()
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

fn object_name(obj: &Value) -> Value {
    str_or_empty(obj, &["metadata", "name"]).into()
}

fn template_columns(obj: &Value) -> [Value; 3] {
    let containers = array(obj, &["spec", "template", "spec", "containers"]);
    let join = |key: &str| {
        containers
            .iter()
            .map(|c| str_or_empty(c, &[key]))
            .collect::<Vec<_>>()
            .join(",")
    };
    let selector = get(obj, &["spec", "selector"])
        .map(selector_string)
        .unwrap_or_default();
    [
        join("name").into(),
        join("image").into(),
        none_if_empty(&selector).into(),
    ]
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = array(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_or_empty(svc, &["spec", "type"]) {
        "ExternalName" => str_or_empty(svc, &["spec", "externalName"]).to_owned(),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = array(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                })
                .collect();
            ips.extend(external);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ if !external.is_empty() => external.join(","),
        _ => "<none>".into(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = array(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = get_i64(p, &["port"]).unwrap_or(0);
            let proto = get_str(p, &["protocol"]).unwrap_or("TCP");
            match get_i64(p, &["nodePort"]).filter(|n| *n != 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    none_if_empty(&ports.join(","))
}

fn map_selector(sel: Option<&Value>) -> String {
    let parts: Vec<String> = sel
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    none_if_empty(&parts.join(","))
}

fn list_endpoints(addrs: &[String]) -> String {
    if addrs.is_empty() {
        return "<none>".into();
    }
    let shown = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if addrs.len() > 3 {
        format!("{shown} + {} more...", addrs.len() - 3)
    } else {
        shown
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

fn access_modes(modes: &[Value]) -> String {
    modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn event_row(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = get_str(ev, &["firstTimestamp"]).or_else(|| get_str(ev, &["eventTime"]));
    let last = get_str(ev, &["series", "lastObservedTime"])
        .or_else(|| get_str(ev, &["lastTimestamp"]))
        .or(first);
    let kind = str_or_empty(ev, &["involvedObject", "kind"]).to_lowercase();
    let source = {
        let c = str_or_empty(ev, &["source", "component"]);
        let h = str_or_empty(ev, &["source", "host"]);
        let c = if c.is_empty() {
            str_or_empty(ev, &["reportingComponent"])
        } else {
            c
        };
        if h.is_empty() {
            c.to_owned()
        } else {
            format!("{c}, {h}")
        }
    };
    let count = get_i64(ev, &["series", "count"])
        .or_else(|| get_i64(ev, &["count"]))
        .unwrap_or(1);
    vec![
        age(last, now).into(),
        str_or_empty(ev, &["type"]).into(),
        str_or_empty(ev, &["reason"]).into(),
        format!("{kind}/{}", str_or_empty(ev, &["involvedObject", "name"])).into(),
        str_or_empty(ev, &["involvedObject", "fieldPath"]).into(),
        source.into(),
        str_or_empty(ev, &["message"]).trim().into(),
        age(first, now).into(),
        count.to_string().into(),
        object_name(ev),
    ]
}

/// The cells of one row for `obj`, all columns (wide included).
#[expect(clippy::too_many_lines, reason = "one match arm per kind")]
pub fn row_cells(kind: Kind, obj: &Value, now: Timestamp) -> Vec<Value> {
    let name = object_name(obj);
    let created = creation_age(obj, now);
    let int = |path: &[&str]| Value::from(get_i64(obj, path).unwrap_or(0));
    match kind {
        Kind::Pod => pod_row(obj, now),
        Kind::Node => node_row(obj, now),
        Kind::Event => event_row(obj, now),
        Kind::Deployment => {
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
        Kind::ReplicaSet => {
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
        Kind::Service => vec![
            name,
            str_or_empty(obj, &["spec", "type"]).into(),
            none_if_empty(str_or_empty(obj, &["spec", "clusterIP"])).into(),
            service_external_ip(obj).into(),
            service_ports(obj).into(),
            created,
            map_selector(get(obj, &["spec", "selector"])).into(),
        ],
        Kind::ConfigMap => {
            let count = ["data", "binaryData"]
                .iter()
                .filter_map(|k| obj.get(*k).and_then(Value::as_object))
                .map(serde_json::Map::len)
                .sum::<usize>();
            vec![name, count.into(), created]
        }
        Kind::Secret => {
            let count = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len);
            vec![
                name,
                str_or_empty(obj, &["type"]).into(),
                count.into(),
                created,
            ]
        }
        Kind::Namespace => vec![
            name,
            str_or_empty(obj, &["status", "phase"]).into(),
            created,
        ],
        Kind::Endpoints => {
            let mut addrs = Vec::new();
            for subset in array(obj, &["subsets"]) {
                for addr in array(subset, &["addresses"]) {
                    let ip = str_or_empty(addr, &["ip"]);
                    let ports = array(subset, &["ports"]);
                    if ports.is_empty() {
                        addrs.push(ip.to_owned());
                    }
                    for p in ports {
                        addrs.push(format!("{ip}:{}", get_i64(p, &["port"]).unwrap_or(0)));
                    }
                }
            }
            vec![name, list_endpoints(&addrs).into(), created]
        }
        Kind::EndpointSlice => {
            let ports: Vec<String> = array(obj, &["ports"])
                .iter()
                .map(|p| {
                    get_i64(p, &["port"]).map_or_else(|| "<unset>".to_owned(), |n| n.to_string())
                })
                .collect();
            let addrs: Vec<String> = array(obj, &["endpoints"])
                .iter()
                .flat_map(|e| {
                    array(e, &["addresses"])
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            let ports = if ports.is_empty() {
                "<unset>".to_owned()
            } else {
                ports.join(",")
            };
            vec![
                name,
                str_or_empty(obj, &["addressType"]).into(),
                ports.into(),
                list_endpoints(&addrs).into(),
                created,
            ]
        }
        Kind::PersistentVolume => {
            let claim = get(obj, &["spec", "claimRef"]).map_or_else(String::new, |c| {
                format!(
                    "{}/{}",
                    str_or_empty(c, &["namespace"]),
                    str_or_empty(c, &["name"])
                )
            });
            vec![
                name,
                str_or_empty(obj, &["spec", "capacity", "storage"]).into(),
                access_modes(array(obj, &["spec", "accessModes"])).into(),
                str_or_empty(obj, &["spec", "persistentVolumeReclaimPolicy"]).into(),
                str_or_empty(obj, &["status", "phase"]).into(),
                claim.into(),
                str_or_empty(obj, &["spec", "storageClassName"]).into(),
                get_str(obj, &["spec", "volumeAttributesClassName"])
                    .unwrap_or("<unset>")
                    .into(),
                str_or_empty(obj, &["status", "reason"]).into(),
                created,
                str_or_empty(obj, &["spec", "volumeMode"]).into(),
            ]
        }
        Kind::PersistentVolumeClaim => {
            let bound = !str_or_empty(obj, &["spec", "volumeName"]).is_empty();
            let (capacity, modes) = if bound {
                (
                    str_or_empty(obj, &["status", "capacity", "storage"]).to_owned(),
                    access_modes(array(obj, &["status", "accessModes"])),
                )
            } else {
                (String::new(), String::new())
            };
            vec![
                name,
                str_or_empty(obj, &["status", "phase"]).into(),
                str_or_empty(obj, &["spec", "volumeName"]).into(),
                capacity.into(),
                modes.into(),
                str_or_empty(obj, &["spec", "storageClassName"]).into(),
                get_str(obj, &["spec", "volumeAttributesClassName"])
                    .unwrap_or("<unset>")
                    .into(),
                created,
                str_or_empty(obj, &["spec", "volumeMode"]).into(),
            ]
        }
        Kind::NetworkPolicy => {
            let sel = get(obj, &["spec", "podSelector"])
                .map(selector_string)
                .unwrap_or_default();
            vec![name, none_if_empty(&sel).into(), created]
        }
        Kind::Binding | Kind::Scale => vec![name, created],
    }
}

/// The `columnDefinitions` for a kind.
pub fn column_definitions(kind: Kind) -> Vec<Value> {
    columns(kind)
        .into_iter()
        .map(|(name, ty, priority, description)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// `PartialObjectMetadata` of an object, as a Table row's default `object`.
pub fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A `meta.k8s.io/v1 Table` for objects of `info` (one or a list's items).
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_meta: &crate::object::ListMeta,
    include: IncludeObject,
    now: Timestamp,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = json!({"cells": row_cells(info.id, obj, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_object_metadata(obj),
                IncludeObject::Object => row["object"] = obj.clone(),
            }
            row
        })
        .collect();
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "resourceVersion".into(),
        list_meta.resource_version.to_string().into(),
    );
    if let Some(c) = &list_meta.continue_token {
        metadata.insert("continue".into(), c.clone().into());
    }
    if let Some(n) = list_meta.remaining_item_count {
        metadata.insert("remainingItemCount".into(), n.into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(info.id),
        "rows": rows,
    })
}

#[cfg(test)]
#[path = "table_test.rs"]
mod tests;
