//! The cluster `bench policy` measures, as real Kubernetes objects: the same
//! Pods, Namespaces and `NetworkPolicies` feed skep's compiler and the
//! Calico-style renderer, so both enforce exactly the same thing.
//!
//! Every scenario has the same pods on the one node: `client`, `server`
//! and `control` in namespace `bench` (they have network namespaces, see
//! `topology.rs`), plus [`OTHER_PODS`] pods `bench/other-<i>` that exist
//! only as objects (no traffic reaches them, but both systems hold their
//! state: per-endpoint chains for Calico, endpoint and rule entries for
//! skep). They come as Deployments do: [`DEPLOYMENTS`] groups of replicas
//! sharing their labels (`app=svc-<d>`, `tier=t<d%4>`) and named ports.
//! (With a label unique to every pod, each pod is an identity of its own
//! and 1,000 of these policies compiled to more rules than skep's rules map
//! held when it was 262,144 entries: the selectors that pick a quarter of the pods by tier
//! multiply 250 identities by every port block.)
//! The scenarios differ only in their policies:
//!
//! - [`Scenario::NoPolicy`]: no policy at all.
//! - [`Scenario::Policies`]: `allow-client` (selects `app=server`, allows
//!   ingress from `app=client` on TCP 8080) plus N policies `other-<i>`,
//!   each selecting one group of other pods (`app=svc-<i % 100>`), with a mix of peers
//!   (podSelector, namespaceSelector, both in one peer, ipBlock with except)
//!   and ports (number, named, UDP range), half of them with an egress rule
//!   too.
//! - [`Scenario::Cidrs`]: one policy `allow-cidrs` selecting `app=server`
//!   with one ingress rule (TCP 8080) from N ipBlocks: the client's own /32
//!   at position N/2, the others disjoint /24, /28 and /32 blocks (in
//!   turns) in `100.64.0.0/10`, none containing a pod.
//!
//! `control` is never selected: it is the unpoliced path measured in turns
//! with the server in every run.

use std::net::Ipv4Addr;

use anyhow::Context as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use serde_json::{Value, json};

/// The node every pod is bound to.
pub const NODE: &str = "bench-node";
/// The namespace of the measured pods and of every policy.
pub const NAMESPACE: &str = "bench";
/// Namespaces besides [`NAMESPACE`] that namespaceSelectors pick from.
const OTHER_NAMESPACES: usize = 10;
/// Pods that exist only as objects.
pub const OTHER_PODS: usize = 1_000;
/// The groups (Deployments) the other pods come in.
pub const DEPLOYMENTS: usize = 100;
/// The port the server and control listen on (named `http` in their spec).
pub const PORT: u16 = crate::datapath::backend::PORT;

/// The client's address (in both topologies).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
/// The policed server's address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 12);
/// The never-policed control server's address.
pub const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 13);

/// What one measured row has in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// No `NetworkPolicy` at all.
    NoPolicy,
    /// `allow-client` plus this many policies selecting other pods.
    Policies(usize),
    /// One policy allowing the server's ingress from this many ipBlocks.
    Cidrs(usize),
}

impl Scenario {
    /// The row's label.
    pub fn label(self) -> String {
        match self {
            Self::NoPolicy => "no policy".to_owned(),
            Self::Policies(n) => format!("{n} policies (other pods)"),
            Self::Cidrs(n) => format!("1 policy, {n} ipBlocks"),
        }
    }
}

/// The whole cluster of one scenario.
pub struct Cluster {
    /// Every namespace.
    pub namespaces: Vec<Namespace>,
    /// Every pod (all bound to [`NODE`], with IPs).
    pub pods: Vec<Pod>,
    /// The scenario's policies.
    pub policies: Vec<NetworkPolicy>,
}

fn namespace(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {
        "ns": name,
        "kubernetes.io/metadata.name": name,
    }}})
}

fn pod(name: &str, ip: Ipv4Addr, labels: &Value, ports: &Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "bench", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

/// The address of other pod `i`: `10.244.(100 + i/250).(i%250 + 1)`.
fn other_ip(i: usize) -> Ipv4Addr {
    let hi = u8::try_from(100 + i / 250).unwrap_or(u8::MAX);
    let lo = u8::try_from(i % 250 + 1).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 244, hi, lo)
}

fn pods() -> Vec<Value> {
    let http = json!([{"name": "http", "containerPort": PORT, "protocol": "TCP"}]);
    let mut pods = vec![
        pod("client", CLIENT_IP, &json!({"app": "client"}), &json!([])),
        pod("server", SERVER_IP, &json!({"app": "server"}), &http),
        pod("control", CONTROL_IP, &json!({"app": "control"}), &http),
    ];
    for i in 0..OTHER_PODS {
        let d = i % DEPLOYMENTS;
        pods.push(pod(
            &format!("other-{i}"),
            other_ip(i),
            &json!({"app": format!("svc-{d}"), "tier": format!("t{}", d % 4)}),
            &json!([
                {"name": "metrics", "containerPort": 9000 + d % 50, "protocol": "TCP"},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            ]),
        ));
    }
    pods
}

fn policy(name: &str, spec: &Value) -> Value {
    json!({"metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
}

/// `other-<i>`: selects `app=svc-<i % 100>`; peers and ports vary with `i`.
fn other_policy(i: usize) -> Value {
    let peer = match i % 4 {
        0 => {
            json!({"podSelector": {"matchLabels": {"app": format!("svc-{}", (i + 1) % DEPLOYMENTS)}}})
        }
        1 => {
            json!({"namespaceSelector": {"matchLabels": {"ns": format!("other-{}", i % OTHER_NAMESPACES)}}})
        }
        2 => json!({
            "namespaceSelector": {"matchLabels": {"ns": NAMESPACE}},
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": [format!("t{}", i % 3)]}]},
        }),
        _ => json!({"ipBlock": {
            "cidr": format!("172.16.{}.0/24", i % 256),
            "except": [format!("172.16.{}.128/28", i % 256)],
        }}),
    };
    let port = match i % 3 {
        0 => json!({"protocol": "TCP", "port": 80 + i % 100}),
        1 => json!({"protocol": "TCP", "port": "metrics"}),
        _ => {
            json!({"protocol": "UDP", "port": 30_000 + i % 1_000, "endPort": 30_000 + i % 1_000 + 99})
        }
    };
    let mut spec = json!({
        "podSelector": {"matchLabels": {"app": format!("svc-{}", i % DEPLOYMENTS)}},
        "ingress": [{"from": [peer], "ports": [port]}],
        "policyTypes": ["Ingress"],
    });
    if i % 2 == 1 {
        spec["egress"] = json!([{
            "to": [{"podSelector": {"matchLabels": {"tier": format!("t{}", (i + 1) % 4)}}}],
            "ports": [{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": 443}],
        }]);
        spec["policyTypes"] = json!(["Ingress", "Egress"]);
    }
    policy(&format!("other-{i}"), &spec)
}

/// The ipBlock `i` of `n` (see the module doc).
fn cidr(i: usize, n: usize) -> String {
    if i == n / 2 {
        return format!("{CLIENT_IP}/32");
    }
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + u32::try_from(i).unwrap_or(0) * 256;
    let len = [24, 28, 32][i % 3];
    format!("{}/{len}", Ipv4Addr::from(base))
}

fn policies(scenario: Scenario) -> Vec<Value> {
    let allow_client = policy(
        "allow-client",
        &json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"protocol": "TCP", "port": PORT}]}],
            "policyTypes": ["Ingress"],
        }),
    );
    match scenario {
        Scenario::NoPolicy => Vec::new(),
        Scenario::Policies(n) => std::iter::once(allow_client)
            .chain((0..n).map(other_policy))
            .collect(),
        Scenario::Cidrs(n) => {
            let blocks: Vec<Value> = (0..n)
                .map(|i| json!({"ipBlock": {"cidr": cidr(i, n)}}))
                .collect();
            vec![policy(
                "allow-cidrs",
                &json!({
                    "podSelector": {"matchLabels": {"app": "server"}},
                    "ingress": [{"from": blocks, "ports": [{"protocol": "TCP", "port": PORT}]}],
                    "policyTypes": ["Ingress"],
                }),
            )]
        }
    }
}

/// The cluster of `scenario`.
pub fn cluster(scenario: Scenario) -> anyhow::Result<Cluster> {
    let mut namespaces = vec![namespace(NAMESPACE)];
    namespaces.extend((0..OTHER_NAMESPACES).map(|i| namespace(&format!("other-{i}"))));
    Ok(Cluster {
        namespaces: parse(namespaces, "namespaces")?,
        pods: parse(pods(), "pods")?,
        policies: parse(policies(scenario), "policies")?,
    })
}

/// Objects of type `T` from their JSON.
fn parse<T: k8s_openapi::serde::de::DeserializeOwned>(
    values: Vec<Value>,
    what: &str,
) -> anyhow::Result<Vec<T>> {
    values
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the bench's {what} do not parse"))
}
