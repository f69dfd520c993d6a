//! The node's own Node object: registration when the agent starts, then a
//! heartbeat every `heartbeat` that refreshes the Ready condition, the
//! capacity and addresses, on the newest copy the view holds (or the last
//! one written, before the view has it).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::agent::{AgentConfig, now};
use crate::api::NodeApi;
use crate::view::ViewReader;

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok()
}

fn disk_total(path: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks() * st.fragment_size())
}

/// The conditions a healthy node reports, with `now` as heartbeat.
fn conditions(now: Timestamp, old: Option<&[NodeCondition]>) -> Vec<NodeCondition> {
    let mk = |type_: &str, status: &str, reason: &str, message: &str| {
        let transition = old
            .and_then(|o| o.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(transition),
        }
    };
    vec![
        mk(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        mk(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        mk(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        mk(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// The Node this agent registers.
pub fn node_object(cfg: &AgentConfig, node_ip: Ipv4Addr) -> Node {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mem_kib = meminfo_total().unwrap_or(0);
    let disk = disk_total(&cfg.data_dir).unwrap_or(0);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let resources: std::collections::BTreeMap<String, Quantity> = [
        ("cpu", cpus.to_string()),
        ("memory", format!("{mem_kib}Ki")),
        ("pods", "110".to_owned()),
        ("ephemeral-storage", disk.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v)))
    .collect();
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", cfg.node_name.as_str()),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", arch),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: node_ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: cfg.node_name.clone(),
                },
            ]),
            conditions: Some(conditions(now(), None)),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(cfg.kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch.into(),
                operating_system: "linux".into(),
                kernel_version: kernel,
                os_image: "Debian GNU/Linux".into(),
                container_runtime_version: "runc://skep".into(),
                kubelet_version: format!("v1.32.0-skep.{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                machine_id: machine_id.clone(),
                system_uuid: machine_id,
                boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            }),
            ..NodeStatus::default()
        }),
    }
}

/// Registers the Node, then refreshes its status every `cfg.heartbeat`
/// until aborted. `view` brings the newest copy (its `resourceVersion` is
/// what a status write swaps on).
#[tracing::instrument(skip_all, fields(node = %cfg.node_name))]
pub async fn run(cfg: AgentConfig, node_ip: Ipv4Addr, api: Arc<dyn NodeApi>, view: ViewReader) {
    let name = cfg.node_name.clone();
    // The last copy written, for when the view has none yet.
    let mut written: Option<Node> = None;
    loop {
        let body = serde_json::to_vec(&node_object(&cfg, node_ip)).unwrap_or_default();
        match api.create_node(&name, body).await {
            Ok(obj) => {
                tracing::info!("node registered");
                written = serde_json::from_slice(&obj).ok();
                break;
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                tracing::info!("node already registered");
                break;
            }
            Err(err) => {
                tracing::warn!(%err, "failed to register node; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(cfg.heartbeat).await;
        }
        first = false;
        for _ in 0..5 {
            let current = view
                .node()
                .map(|n| Node::clone(&n))
                .or_else(|| written.clone());
            let Some(mut node) = current else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let fresh = node_object(&cfg, node_ip);
            let status = node.status.get_or_insert_default();
            let old = status.conditions.take();
            let fresh_status = fresh.status.unwrap_or_default();
            status.conditions = Some(conditions(now(), old.as_deref()));
            status.capacity = fresh_status.capacity;
            status.allocatable = fresh_status.allocatable;
            status.addresses = fresh_status.addresses;
            status.node_info = fresh_status.node_info;
            status.daemon_endpoints = fresh_status.daemon_endpoints;
            let body = serde_json::to_vec(&node).unwrap_or_default();
            match api.update_node_status(&name, body).await {
                Ok(obj) => {
                    written = serde_json::from_slice(&obj).ok();
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, "heartbeat write failed; retrying from the watched copy");
                    // A conflict: the watch brings the newer copy soon.
                    written = None;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_object_has_what_the_scheduler_needs() {
        let cfg = AgentConfig::new("n1", std::env::temp_dir(), "/nonexistent".into());
        let node = node_object(&cfg, Ipv4Addr::new(10, 0, 0, 1));
        let status = node.status.unwrap_or_default();
        let cap = status.capacity.unwrap_or_default();
        assert_eq!(cap.get("pods").map(|q| q.0.as_str()), Some("110"));
        assert!(
            cap.get("memory")
                .is_some_and(|q| q.0.ends_with("Ki") && q.0 != "0Ki")
        );
        assert!(cap.contains_key("cpu") && cap.contains_key("ephemeral-storage"));
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("kubernetes.io/hostname").map(String::as_str),
            Some("n1")
        );
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let conds = status.conditions.unwrap_or_default();
        let types: Vec<_> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let addrs = status.addresses.unwrap_or_default();
        assert_eq!(addrs[0].address, "10.0.0.1");
    }

    #[test]
    fn transition_times_survive_heartbeats() {
        let t0 = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let first = conditions(t0, None);
        let t1 = Timestamp::from_second(2_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let second = conditions(t1, Some(&first));
        let ready = second.iter().find(|c| c.type_ == "Ready");
        assert_eq!(
            ready.and_then(|c| c.last_transition_time.clone()),
            Some(Time(t0))
        );
        assert_eq!(
            ready.and_then(|c| c.last_heartbeat_time.clone()),
            Some(Time(t1))
        );
    }
}
