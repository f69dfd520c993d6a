//! Table-driven tests of the compiler against the upstream `NetworkPolicy`
//! e2e scenarios: namespaces x, y, z with pods a, b, c spread over three
//! nodes, probed all-pairs through [`crate::lookup::allows`] on every
//! node's compiled state, compared with a truth table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use crate::lookup::{allows, verdict};
use crate::{
    Identities, NamedPort, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PolicyPod, PolicyState, Verdict,
    compile,
};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const NODES: [&str; 3] = ["n0", "n1", "n2"];

/// The upstream test cluster: every pod serves 80 and 81 over TCP, UDP and
/// SCTP with upstream's port names (`serve-80-tcp` …).
struct Cluster {
    pods: Vec<PolicyPod>,
    namespaces: Vec<Namespace>,
    ids: BTreeMap<&'static str, Identities>,
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("bad test object: {e}"))
}

fn namespace(name: &str, labels: &Value) -> Namespace {
    from_json(json!({"metadata": {"name": name, "labels": labels}}))
}

/// A `NetworkPolicy` in `ns` with the given spec.
fn policy(ns: &str, name: &str, spec: &Value) -> NetworkPolicy {
    from_json(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "sctp",
    }
}

impl Cluster {
    fn upstream() -> Self {
        let mut pods = Vec::new();
        for (j, ns) in NAMESPACES.iter().enumerate() {
            for (i, name) in PODS.iter().enumerate() {
                let node = (i + j) % 3;
                let named_ports = [PROTO_TCP, PROTO_UDP, PROTO_SCTP]
                    .into_iter()
                    .flat_map(|proto| {
                        [80, 81].map(|port| NamedPort {
                            name: format!("serve-{port}-{}", proto_name(proto)),
                            protocol: proto,
                            port,
                        })
                    })
                    .collect();
                pods.push(PolicyPod {
                    namespace: (*ns).into(),
                    name: (*name).into(),
                    #[expect(clippy::cast_possible_truncation, reason = "small indexes")]
                    ip: Ipv4Addr::new(10, 244, node as u8, (10 * (j + 1) + i) as u8),
                    node: NODES[node].into(),
                    labels: BTreeMap::from([("pod".into(), (*name).into())]),
                    named_ports,
                });
            }
        }
        // Namespaces as the API server has them, except y: its
        // kubernetes.io/metadata.name label is left for the compiler to add.
        let namespaces = NAMESPACES
            .iter()
            .map(|&ns| {
                let labels = if ns == "y" {
                    json!({"ns": ns})
                } else {
                    json!({"ns": ns, "kubernetes.io/metadata.name": ns})
                };
                namespace(ns, &labels)
            })
            .collect();
        Self {
            pods,
            namespaces,
            ids: BTreeMap::new(),
        }
    }

    fn ip(&self, key: &str) -> Ipv4Addr {
        self.pods
            .iter()
            .find(|p| p.key() == key)
            .map_or_else(|| panic!("no pod {key}"), |p| p.ip)
    }

    fn pod_mut(&mut self, key: &str) -> &mut PolicyPod {
        self.pods
            .iter_mut()
            .find(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pod {key}"))
    }

    /// Every node's compiled state (ids kept per node across calls).
    fn states(&mut self, policies: &[NetworkPolicy]) -> Vec<PolicyState> {
        NODES
            .iter()
            .map(|&node| {
                let ids = self.ids.entry(node).or_default();
                compile(node, &self.pods, &self.namespaces, policies, ids)
            })
            .collect()
    }
}

/// Whether the cluster passes a new flow: every node's datapath agrees.
fn reach(states: &[PolicyState], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
    states.iter().all(|s| allows(s, src, dst, proto, port))
}

/// One probe of the truth table.
struct Probe<'a> {
    from: &'a str,
    to: &'a str,
    proto: u8,
    port: u16,
}

impl Probe<'_> {
    fn src_ns(&self) -> &str {
        &self.from[..1]
    }
    fn dst_ns(&self) -> &str {
        &self.to[..1]
    }
    fn loopback(&self) -> bool {
        self.from == self.to
    }
}

/// All-pairs probes on (proto, port) against `expect`; on a mismatch
/// prints the expected and observed matrices, like upstream's
/// reachability tables, and fails.
fn check(
    case: &str,
    cluster: &mut Cluster,
    policies: &[NetworkPolicy],
    probes: &[(u8, u16)],
    expect: &dyn Fn(&Probe) -> bool,
) {
    let states = cluster.states(policies);
    let keys: Vec<String> = cluster.pods.iter().map(PolicyPod::key).collect();
    let mut report = String::new();
    let mut wrong = 0;
    for &(proto, port) in probes {
        let mut table = format!(
            "{case}: {}/{port} (rows from, columns to; . allowed, X denied, ! wrong)\n      ",
            proto_name(proto)
        );
        for to in &keys {
            let _ = write!(table, "{to:>4}");
        }
        for from in &keys {
            let _ = write!(table, "\n  {from:>4}");
            for to in &keys {
                let probe = Probe {
                    from,
                    to,
                    proto,
                    port,
                };
                let want = expect(&probe);
                let got = reach(&states, cluster.ip(from), cluster.ip(to), proto, port);
                let mark = match (got, want == got) {
                    (_, false) => "!",
                    (true, true) => ".",
                    (false, true) => "X",
                };
                wrong += usize::from(want != got);
                let _ = write!(table, "{mark:>4}");
            }
        }
        report.push_str(&table);
        report.push('\n');
    }
    assert_eq!(
        wrong, 0,
        "{wrong} probes disagree with the truth table\n{report}"
    );
}

const TCP80: (u8, u16) = (PROTO_TCP, 80);
const TCP81: (u8, u16) = (PROTO_TCP, 81);
const UDP80: (u8, u16) = (PROTO_UDP, 80);
const UDP81: (u8, u16) = (PROTO_UDP, 81);
const SCTP80: (u8, u16) = (PROTO_SCTP, 80);
const SCTP81: (u8, u16) = (PROTO_SCTP, 81);
const ALL_PORTS: [(u8, u16); 6] = [TCP80, TCP81, UDP80, UDP81, SCTP80, SCTP81];

/// A scenario: policies and the truth table they must produce.
struct Case {
    name: &'static str,
    policies: Vec<NetworkPolicy>,
    expect: Box<dyn Fn(&Probe) -> bool>,
}

fn case(
    name: &'static str,
    policies: Vec<NetworkPolicy>,
    expect: impl Fn(&Probe) -> bool + 'static,
) -> Case {
    Case {
        name,
        policies,
        expect: Box::new(expect),
    }
}

#[expect(clippy::too_many_lines, reason = "one table of upstream scenarios")]
fn upstream_cases() -> Vec<Case> {
    let deny_ingress_x = || {
        policy(
            "x",
            "deny-ingress",
            &json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )
    };
    vec![
        case("no policy", vec![], |_| true),
        case("default deny ingress", vec![deny_ingress_x()], |p| {
            p.loopback() || p.dst_ns() != "x"
        }),
        case(
            "default deny egress",
            vec![policy(
                "x",
                "deny-egress",
                &json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            |p| p.loopback() || p.src_ns() != "x",
        ),
        case(
            "no policyTypes and an empty egress list: ingress only",
            vec![policy(
                "x",
                "deny",
                &json!({"podSelector": {}, "egress": []}),
            )],
            |p| p.loopback() || p.dst_ns() != "x",
        ),
        case(
            "no policyTypes with egress rules: ingress and egress both isolated",
            vec![policy(
                "x",
                "both",
                &json!({"podSelector": {}, "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            |p| p.loopback() || (p.dst_ns() != "x" && (p.src_ns() != "x" || p.dst_ns() == "y")),
        ),
        case(
            "an unknown selector operator selects nothing",
            vec![policy(
                "x",
                "bad-op",
                &json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Gt", "values": ["1"]}]}}),
            )],
            |_| true,
        ),
        case(
            "allow all ingress over a default deny",
            vec![
                deny_ingress_x(),
                policy(
                    "x",
                    "allow-all",
                    &json!({"podSelector": {}, "ingress": [{}]}),
                ),
            ],
            |_| true,
        ),
        case(
            "allow all egress with an empty `to`",
            vec![policy(
                "x",
                "allow-all",
                &json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": []}]}),
            )],
            |_| true,
        ),
        case(
            "allow from the same namespace",
            vec![policy(
                "x",
                "same-ns",
                &json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
            )],
            |p| p.loopback() || p.dst_ns() != "x" || p.src_ns() == "x",
        ),
        case(
            "allow to x/a from other namespaces by label (NotIn x)",
            vec![policy(
                "x",
                "other-ns",
                &json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                        {"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]}]
                }),
            )],
            |p| p.loopback() || p.to != "x/a" || p.src_ns() != "x",
        ),
        case(
            "allow from namespace y by kubernetes.io/metadata.name (added when missing)",
            vec![policy(
                "x",
                "by-name",
                &json!({
                    "podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]
                }),
            )],
            |p| p.loopback() || p.dst_ns() != "x" || p.src_ns() == "y",
        ),
        case(
            "pod and namespace selector in one peer (intersection)",
            vec![policy(
                "x",
                "one-peer",
                &json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{
                        "namespaceSelector": {"matchLabels": {"ns": "y"}},
                        "podSelector": {"matchLabels": {"pod": "b"}}
                    }]}]
                }),
            )],
            |p| p.loopback() || p.to != "x/a" || p.from == "y/b",
        ),
        case(
            "pod and namespace selector in two peers (union)",
            vec![policy(
                "x",
                "two-peers",
                &json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                        {"podSelector": {"matchLabels": {"pod": "b"}}}
                    ]}]
                }),
            )],
            |p| p.loopback() || p.to != "x/a" || p.src_ns() == "y" || p.from == "x/b",
        ),
        case(
            "any pod of any namespace: empty namespaceSelector with a podSelector (Exists/DoesNotExist)",
            vec![policy(
                "x",
                "any-ns",
                &json!({
                    "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
                    "ingress": [{"from": [{
                        "namespaceSelector": {},
                        "podSelector": {"matchExpressions": [
                            {"key": "pod", "operator": "In", "values": ["b", "c"]},
                            {"key": "missing", "operator": "DoesNotExist"}]}
                    }]}]
                }),
            )],
            |p| {
                p.loopback()
                    || p.dst_ns() != "x"
                    || p.from.ends_with("/b")
                    || p.from.ends_with("/c")
            },
        ),
        case(
            "ingress on a named port (resolved on the selected pod)",
            vec![policy(
                "x",
                "named-in",
                &json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"ports": [{"port": "serve-81-tcp"}, {"port": "serve-80-udp", "protocol": "UDP"}]}]
                }),
            )],
            |p| {
                p.loopback()
                    || p.to != "x/a"
                    || (p.proto, p.port) == TCP81
                    || (p.proto, p.port) == UDP80
            },
        ),
        case(
            "egress on a named port (resolved per destination pod)",
            vec![policy(
                "x",
                "named-out",
                &json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]},
                               {"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                                "ports": [{"port": "serve-81-sctp", "protocol": "SCTP"}]}]
                }),
            )],
            |p| {
                p.loopback()
                    || p.from != "x/a"
                    || (p.proto, p.port) == TCP80
                    || ((p.proto, p.port) == SCTP81 && p.dst_ns() == "z")
            },
        ),
        case(
            "a named port nobody has allows nothing (not everything)",
            vec![policy(
                "x",
                "named-none",
                &json!({
                    "podSelector": {}, "ingress": [{"ports": [{"port": "serve-99-tcp"}]}]
                }),
            )],
            |p| p.loopback() || p.dst_ns() != "x",
        ),
        case(
            "port range 80-81 over TCP only",
            vec![policy(
                "x",
                "range",
                &json!({
                    "podSelector": {},
                    "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]
                }),
            )],
            |p| p.loopback() || p.dst_ns() != "x" || p.proto == PROTO_TCP,
        ),
        case(
            "port range 81-90 excludes 80",
            vec![policy(
                "x",
                "range",
                &json!({
                    "podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 90}]}]
                }),
            )],
            |p| p.loopback() || p.dst_ns() != "x" || (p.proto, p.port) == TCP81,
        ),
        case(
            "UDP and SCTP by protocol without a port",
            vec![policy(
                "x",
                "udp-sctp",
                &json!({
                    "podSelector": {},
                    "ingress": [{"ports": [{"protocol": "UDP"}, {"protocol": "SCTP", "port": 80}]}]
                }),
            )],
            |p| {
                p.loopback()
                    || p.dst_ns() != "x"
                    || p.proto == PROTO_UDP
                    || (p.proto, p.port) == SCTP80
            },
        ),
        case(
            "multiple policies union (from y, from z, and TCP 81 from anyone)",
            vec![
                policy(
                    "x",
                    "from-y",
                    &json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
                ),
                policy(
                    "x",
                    "from-z",
                    &json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
                ),
                policy(
                    "x",
                    "tcp-81",
                    &json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
                ),
            ],
            |p| {
                p.loopback()
                    || p.dst_ns() != "x"
                    || p.src_ns() != "x" && p.to == "x/a"
                    || (p.proto, p.port) == TCP81
            },
        ),
        case(
            "egress to a service's backends (pod=b anywhere; the datapath judges the backend)",
            vec![policy(
                "x",
                "to-b",
                &json!({
                    "podSelector": {}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]
                }),
            )],
            |p| p.loopback() || p.src_ns() != "x" || p.to.ends_with("/b"),
        ),
        case(
            "ingress and egress isolation together across nodes",
            vec![
                policy(
                    "x",
                    "a-out-to-y",
                    &json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
                ),
                policy(
                    "y",
                    "in-from-x",
                    &json!({"podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}),
                ),
            ],
            |p| {
                let out_ok = p.from != "x/a" || p.dst_ns() == "y";
                let in_ok = p.dst_ns() != "y" || p.src_ns() == "x";
                p.loopback() || (out_ok && in_ok)
            },
        ),
    ]
}

#[test]
fn upstream_scenarios_match_their_truth_tables() {
    let mut cluster = Cluster::upstream();
    for c in upstream_cases() {
        check(c.name, &mut cluster, &c.policies, &ALL_PORTS, &*c.expect);
    }
}

#[test]
fn ip_block_with_except_on_pod_ips() {
    // Upstream: "should enforce except clause while egress access to server
    // in CIDR block": x/a may reach x/b's /24 except x/b itself.
    let mut cluster = Cluster::upstream();
    let server = cluster.ip("x/b");
    let block = crate::Cidr::new(server, 24);
    let policies = [policy(
        "x",
        "except",
        &json!({
            "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": format!("{block}"), "except": [format!("{server}/32")]}}]}]
        }),
    )];
    let ips: BTreeMap<String, Ipv4Addr> = cluster.pods.iter().map(|p| (p.key(), p.ip)).collect();
    check(
        "ipBlock except",
        &mut cluster,
        &policies,
        &[TCP80, UDP81],
        &|p| p.loopback() || p.from != "x/a" || (block.contains(ips[p.to]) && p.to != "x/b"),
    );
    // Ingress from a node's pod /24: the pods on node n1 only.
    let n1 = crate::Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24);
    let policies = [policy(
        "y",
        "from-n1",
        &json!({
            "podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.0/24"}}]}]
        }),
    )];
    check("ipBlock ingress", &mut cluster, &policies, &[TCP81], &|p| {
        p.loopback() || p.dst_ns() != "y" || n1.contains(ips[p.from])
    });
}

/// A deterministic address stream (xorshift), for brute-force checks.
fn addresses(seed: u32, n: usize) -> impl Iterator<Item = Ipv4Addr> {
    let mut x = seed;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    })
    .take(n)
    .map(Ipv4Addr::from)
}

#[test]
fn ip_block_except_is_exact_with_nested_cidrs_from_other_policies() {
    let mut cluster = Cluster::upstream();
    // x/a: egress to 10.0.0.0/8 except 10.1.0.0/16 and 10.244.0.0/16.
    // Every x pod: more CIDRs nesting inside those, so the
    // ipcache's longest match for many addresses is a CIDR x/a never named.
    let policies = [
        policy(
            "x",
            "a-out",
            &json!({
                "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.244.0.0/16"]}}]}]
            }),
        ),
        policy(
            "x",
            "all-out",
            &json!({
                "podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [
                    {"ipBlock": {"cidr": "10.1.2.0/24"}}, {"ipBlock": {"cidr": "10.2.0.0/16"}},
                    {"ipBlock": {"cidr": "10.244.0.0/24"}}, {"ipBlock": {"cidr": "10.128.0.0/9", "except": ["10.128.0.0/10"]}}
                ]}],
            }),
        ),
    ];
    let states = cluster.states(&policies);
    let src = cluster.ip("x/a");
    let inside = |s: &str, a: Ipv4Addr| s.parse::<crate::Cidr>().is_ok_and(|c| c.contains(a));
    let want = |a: Ipv4Addr| {
        let a_rule =
            inside("10.0.0.0/8", a) && !inside("10.1.0.0/16", a) && !inside("10.244.0.0/16", a);
        let all_rule = ["10.1.2.0/24", "10.2.0.0/16", "10.244.0.0/24"]
            .iter()
            .any(|c| inside(c, a))
            || (inside("10.128.0.0/9", a) && !inside("10.128.0.0/10", a));
        a == src || a_rule || all_rule
    };
    // Random addresses inside 10/8, the cluster's pods, and a few outside.
    let mut probes: Vec<Ipv4Addr> = addresses(0x1234_5678, 20_000)
        .map(|a| Ipv4Addr::from(u32::from(a) & 0x00ff_ffff | 0x0a00_0000))
        .collect();
    probes.extend(cluster.pods.iter().map(|p| p.ip));
    probes.extend(addresses(7, 1000));
    probes.extend(
        [
            "10.1.2.5",
            "10.1.3.5",
            "10.2.3.4",
            "10.3.0.1",
            "11.0.0.1",
            "10.150.0.1",
            "10.100.0.1",
        ]
        .map(|s| s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED)),
    );
    for dst in probes {
        assert_eq!(
            reach(&states, src, dst, PROTO_TCP, 80),
            want(dst),
            "x/a -> {dst}"
        );
    }
}

#[test]
fn policy_update_and_delete_take_effect_and_release_ids() {
    let mut cluster = Cluster::upstream();
    let from_y = policy(
        "x",
        "p",
        &json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    check(
        "create",
        &mut cluster,
        std::slice::from_ref(&from_y),
        &[TCP80],
        &|p| p.loopback() || p.dst_ns() != "x" || p.src_ns() == "y",
    );
    let from_z = policy(
        "x",
        "p",
        &json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
    );
    check("update", &mut cluster, &[from_z], &[TCP80], &|p| {
        p.loopback() || p.dst_ns() != "x" || p.src_ns() == "z"
    });
    check("delete", &mut cluster, &[], &[TCP80], &|_| true);
    for (node, ids) in &cluster.ids {
        // Pods keep identities (the ipcache names every pod); the policy is gone.
        assert_eq!(ids.counts(), (9, 0, 0), "{node}");
    }
    let states = cluster.states(&[]);
    assert!(
        states
            .iter()
            .all(|s| s.endpoints.is_empty() && s.rules.is_empty() && s.policy_names.is_empty())
    );
}

#[test]
fn label_changes_of_pods_and_namespaces_take_effect() {
    let mut cluster = Cluster::upstream();
    let policies = [policy(
        "x",
        "from-b-in-y",
        &json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                   "podSelector": {"matchLabels": {"pod": "b"}}}]}]
        }),
    )];
    let before = cluster.states(&policies);
    check("before", &mut cluster, &policies, &[TCP80], &|p| {
        p.loopback() || p.to != "x/a" || p.from == "y/b"
    });
    // z/b's namespace gains ns=y: z/b is allowed too.
    cluster.namespaces[2] = namespace("z", &json!({"ns": "y"}));
    check(
        "namespace relabelled",
        &mut cluster,
        &policies,
        &[TCP80],
        &|p| p.loopback() || p.to != "x/a" || p.from == "y/b" || p.from == "z/b",
    );
    cluster.namespaces[2] = namespace("z", &json!({"ns": "z"}));
    // y/b loses pod=b, y/c gains it.
    cluster
        .pod_mut("y/b")
        .labels
        .insert("pod".into(), "bb".into());
    cluster
        .pod_mut("y/c")
        .labels
        .insert("pod".into(), "b".into());
    check("pods relabelled", &mut cluster, &policies, &[TCP80], &|p| {
        p.loopback() || p.to != "x/a" || p.from == "y/c"
    });
    // x/a loses pod=a: not selected any more, so not isolated.
    cluster
        .pod_mut("x/a")
        .labels
        .insert("pod".into(), "aa".into());
    check(
        "selected pod relabelled",
        &mut cluster,
        &policies,
        &[TCP80],
        &|_| true,
    );
    // Back to the start: the same state as before, ids and all.
    for key in ["y/b", "x/a"] {
        let name = &key[2..];
        cluster
            .pod_mut(key)
            .labels
            .insert("pod".into(), name.into());
    }
    cluster
        .pod_mut("y/c")
        .labels
        .insert("pod".into(), "c".into());
    // (The relabelled identities were released, so the restored pods may
    // get new ids; what must hold is the same meaning and the same shape.)
    let after = cluster.states(&policies);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.endpoints.len(), a.endpoints.len());
        assert_eq!(b.rules.len(), a.rules.len());
        assert_eq!(b.ipcache.len(), a.ipcache.len());
    }
}

#[test]
fn recompiling_the_same_cluster_gives_the_same_state_and_ids() {
    let mut cluster = Cluster::upstream();
    let cases = upstream_cases();
    let all: Vec<NetworkPolicy> = cases.into_iter().flat_map(|c| c.policies).collect();
    let first = cluster.states(&all);
    let second = cluster.states(&all);
    assert_eq!(first, second);
    // And from persisted identities, as after an agent restart.
    let restored: BTreeMap<&str, Identities> = cluster
        .ids
        .iter()
        .map(|(&n, ids)| {
            let json = serde_json::to_string(ids).unwrap_or_else(|e| panic!("{e}"));
            (
                n,
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .collect();
    cluster.ids = restored;
    assert_eq!(cluster.states(&all), first);
    assert!(
        first
            .iter()
            .all(|s| !s.rules.is_empty() && !s.endpoints.is_empty())
    );
}

#[test]
fn one_label_change_is_a_small_diff() {
    let mut cluster = Cluster::upstream();
    let policies = [
        policy(
            "x",
            "from-b",
            &json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
        ),
        policy("y", "deny", &json!({"podSelector": {}})),
    ];
    let before = cluster.states(&policies);
    // z/c becomes a pod=b of its own shape (pod=b alone would merge it
    // into z/b's identity: then no rule changes at all).
    let zc = cluster.pod_mut("z/c");
    zc.labels.insert("pod".into(), "b".into());
    zc.labels.insert("shape".into(), "new".into());
    let after = cluster.states(&policies);
    for (node, (b, a)) in NODES.iter().zip(before.iter().zip(&after)) {
        let diff = b.diff(a);
        // z/c's /32 moves to a new identity (1 ipcache upsert); nodes with
        // x pods gain rules for it (one per local x identity).
        let local_x = cluster
            .pods
            .iter()
            .filter(|p| p.node == *node && p.namespace == "x")
            .count();
        assert_eq!(diff.ipcache.len(), 1, "{node}: {diff:?}");
        assert_eq!(diff.rules.upserts.len(), local_x, "{node}: {diff:?}");
        assert_eq!(diff.len(), 1 + local_x, "{node}: {diff:?}");
        assert!(a.diff(a).is_empty());
    }
}

#[test]
fn a_thousand_policies_selecting_other_pods_leave_local_rules_alone() {
    let mut cluster = Cluster::upstream();
    let base = [policy(
        "x",
        "from-y",
        &json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )];
    let before = cluster.states(&base);
    let mut policies = base.to_vec();
    policies.extend((0..1000).map(|i| {
        policy("x", &format!("other-{i}"), &json!({
            "podSelector": {"matchLabels": {"pod": format!("other-{i}")}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 8000 + i}]}]
        }))
    }));
    let start = std::time::Instant::now();
    let after = cluster.states(&policies);
    println!("3 nodes x 1,001 policies compiled in {:?}", start.elapsed());
    assert_eq!(before, after, "policies selecting no pod change nothing");
    for ids in cluster.ids.values() {
        assert_eq!(
            ids.counts().2,
            1,
            "ids only for policies that select a local pod"
        );
    }
}

#[test]
fn ten_thousand_ip_block_cidrs_compile_to_as_many_entries() {
    let mut cluster = Cluster::upstream();
    let peers: Vec<Value> = (0..10_000u32)
        .map(|i| json!({"ipBlock": {"cidr": format!("{}/24", Ipv4Addr::from(0x1400_0000 + (i << 8)))}}))
        .collect();
    let policies = [policy(
        "x",
        "cidrs",
        &json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": peers}]}),
    )];
    let start = std::time::Instant::now();
    let states = cluster.states(&policies);
    println!(
        "3 nodes x one policy of 10,000 CIDRs compiled in {:?}",
        start.elapsed()
    );
    let owner = cluster
        .pods
        .iter()
        .find(|p| p.key() == "x/a")
        .map_or("", |p| p.node.as_str());
    for (node, s) in NODES.iter().zip(&states) {
        if *node == owner {
            assert_eq!(s.ipcache.len(), 10_000 + 9, "{node}");
            assert_eq!(s.rules.len(), 10_000, "{node}");
            assert_eq!(s.endpoints.len(), 1, "{node}");
        } else {
            assert_eq!(
                (s.ipcache.len(), s.rules.len()),
                (9, 0),
                "{node}: CIDRs only where they matter"
            );
        }
    }
    let xa = cluster.ip("x/a");
    let inside = Ipv4Addr::new(20, 0, 7, 9);
    let outside = Ipv4Addr::new(20, 39, 17, 1); // 20.0.0.0 + 10,000 /24s = 20.39.16.0
    assert!(reach(&states, inside, xa, PROTO_TCP, 80));
    assert!(!reach(&states, outside, xa, PROTO_TCP, 80));
    assert!(!reach(&states, cluster.ip("y/b"), xa, PROTO_TCP, 80));
}

#[test]
fn verdicts_name_the_allowing_policy_and_only_local_isolated_pods_are_endpoints() {
    let mut cluster = Cluster::upstream();
    let policies = [
        policy("x", "deny", &json!({"podSelector": {}})),
        policy(
            "x",
            "allow-81",
            &json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
        ),
    ];
    let states = cluster.states(&policies);
    let (xa, yb) = (cluster.ip("x/a"), cluster.ip("y/b"));
    let node = NODES
        .iter()
        .position(|n| cluster.pods.iter().any(|p| p.ip == xa && p.node == *n))
        .unwrap_or(0);
    let s = &states[node];
    let allowing = s
        .policy_names
        .iter()
        .find(|(_, n)| *n == "x/allow-81")
        .map(|(&id, _)| id);
    let ingress = skep_ebpf_common::Direction::Ingress;
    assert_eq!(
        verdict(s, xa, yb, ingress, PROTO_TCP, 81),
        Verdict::Allowed(allowing.unwrap_or(0))
    );
    assert_eq!(verdict(s, xa, yb, ingress, PROTO_TCP, 80), Verdict::Denied);
    assert_eq!(
        verdict(
            s,
            xa,
            yb,
            skep_ebpf_common::Direction::Egress,
            PROTO_TCP,
            80
        ),
        Verdict::NotIsolated
    );
    let local_x: BTreeSet<Ipv4Addr> = cluster
        .pods
        .iter()
        .filter(|p| p.node == NODES[node] && p.namespace == "x")
        .map(|p| p.ip)
        .collect();
    assert_eq!(
        s.endpoints.keys().copied().collect::<BTreeSet<_>>(),
        local_x
    );
    assert_eq!(s.peer_names.len(), 9);
    assert_eq!(s.peer_names.get(&yb).map(String::as_str), Some("y/b"));
}

#[test]
fn named_ports_resolve_on_the_destination_pod_in_both_directions() {
    // "http" is 8080 on y's pods, 9090 on z's, absent on x's.
    let mut cluster = Cluster::upstream();
    for pod in &mut cluster.pods {
        let port = match pod.namespace.as_str() {
            "y" => 8080,
            "z" => 9090,
            _ => continue,
        };
        pod.named_ports.insert(NamedPort {
            name: "http".into(),
            protocol: PROTO_TCP,
            port,
        });
    }
    let port_of = |key: &str| match &key[..1] {
        "y" => Some(8080),
        "z" => Some(9090),
        _ => None,
    };
    let probes = [
        (PROTO_TCP, 80),
        (PROTO_TCP, 8080),
        (PROTO_TCP, 9090),
        (PROTO_UDP, 8080),
    ];
    let egress = [policy(
        "x",
        "out-http",
        &json!({
            "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": "http"}]}]
        }),
    )];
    check("egress named port", &mut cluster, &egress, &probes, &|p| {
        p.loopback() || p.from != "x/a" || (p.proto == PROTO_TCP && port_of(p.to) == Some(p.port))
    });
    let ingress = [
        policy(
            "y",
            "in-http",
            &json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
        ),
        policy(
            "z",
            "in-http",
            &json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
        ),
    ];
    check(
        "ingress named port",
        &mut cluster,
        &ingress,
        &probes,
        &|p| {
            p.loopback()
                || p.dst_ns() == "x"
                || (p.proto == PROTO_TCP && port_of(p.to) == Some(p.port))
        },
    );
}
