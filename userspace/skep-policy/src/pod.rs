//! The policy facts of a pod: what the compiler needs to know about it, and
//! nothing more (so node sync can carry them to every node cheaply).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;

/// The IP protocol number of a Kubernetes protocol name (`TCP`, `UDP`,
/// `SCTP`); `None` (absent) means TCP, as the API server defaults it.
/// An unknown name gives `None`.
#[must_use]
pub fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(PROTO_TCP),
        "UDP" => Some(PROTO_UDP),
        "SCTP" => Some(PROTO_SCTP),
        _ => None,
    }
}

/// A named container port: what a `NetworkPolicyPort` with a string `port`
/// resolves against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    /// The port's name (`containers[].ports[].name`).
    pub name: String,
    /// IP protocol number (6, 17, 132).
    pub protocol: u8,
    /// The container port.
    pub port: u16,
}

/// A pod as the policy compiler sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// The node it is bound to (`spec.nodeName`; empty if unbound).
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its containers' named ports.
    pub named_ports: BTreeSet<NamedPort>,
}

impl PolicyPod {
    /// The policy facts of a pod; `None` for a pod that policy does not
    /// judge or cannot name: without an IPv4 address yet (`status.podIPs`,
    /// else `status.podIP`), on the host network (its address is the
    /// node's), or finished (`Succeeded`/`Failed`: its address may already
    /// belong to a new pod).
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network) == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let ip = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref())
            .find_map(|s| s.parse::<Ipv4Addr>().ok())?;
        let named_ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone().filter(|n| !n.is_empty())?,
                    protocol: protocol_number(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect();
        Some(Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            ip,
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            named_ports,
        })
    }

    /// `namespace/name`, as flows and the names map show it.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("bad test pod: {e}"))
    }

    #[test]
    fn from_pod_takes_ipv4_labels_node_and_named_ports() {
        let p = pod(json!({
            "metadata": {"namespace": "x", "name": "a", "labels": {"pod": "a"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "serve-80-tcp", "containerPort": 80},
                {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
                {"containerPort": 82}
            ]}]},
            "status": {"podIPs": [{"ip": "fd00::1"}, {"ip": "10.244.1.5"}], "phase": "Running"}
        }));
        let got = PolicyPod::from_pod(&p);
        let want = PolicyPod {
            namespace: "x".into(),
            name: "a".into(),
            ip: Ipv4Addr::new(10, 244, 1, 5),
            node: "n1".into(),
            labels: BTreeMap::from([("pod".into(), "a".into())]),
            named_ports: BTreeSet::from([
                NamedPort {
                    name: "serve-80-tcp".into(),
                    protocol: PROTO_TCP,
                    port: 80,
                },
                NamedPort {
                    name: "serve-81-udp".into(),
                    protocol: PROTO_UDP,
                    port: 81,
                },
            ]),
        };
        assert_eq!(got, Some(want));
    }

    #[test]
    fn from_pod_skips_pods_policy_does_not_judge() {
        let no_ip =
            pod(json!({"metadata": {"name": "a"}, "spec": {"containers": []}, "status": {}}));
        assert_eq!(PolicyPod::from_pod(&no_ip), None);
        let host = pod(json!({
            "metadata": {"name": "a"}, "spec": {"hostNetwork": true, "containers": []},
            "status": {"podIP": "10.0.0.1"}
        }));
        assert_eq!(PolicyPod::from_pod(&host), None);
        let done = pod(json!({
            "metadata": {"name": "a"}, "spec": {"containers": []},
            "status": {"podIP": "10.244.0.9", "phase": "Succeeded"}
        }));
        assert_eq!(PolicyPod::from_pod(&done), None);
        let legacy = pod(json!({
            "metadata": {"name": "a"}, "spec": {"containers": []},
            "status": {"podIP": "10.244.0.9"}
        }));
        assert_eq!(
            PolicyPod::from_pod(&legacy).map(|p| p.ip),
            Some(Ipv4Addr::new(10, 244, 0, 9))
        );
    }
}
