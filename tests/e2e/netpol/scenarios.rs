//! The scenarios, each named after the upstream `netpol` test it mirrors
//! (same policies, same expected tables, over all nine pods); the few skep
//! adds where upstream has none (endPort ranges, ipBlock on ingress, union
//! with one policy deleted) say so in their names.
//!
//! Policies are written as the YAML body of their `spec` (see [`spec`]);
//! namespace names are quoted there (YAML 1.1 reads a bare `y` as `true`).

use anyhow::Context as _;

use super::Suite;
use super::model::Proto;
use super::reach::{ANY, in_ns, pod};

/// One scenario: a name and the steps.
pub struct Scenario {
    /// Upstream's test name (or skep's, for additions).
    pub name: &'static str,
    /// Creates policies and validates; the runner cleans up after it.
    pub run: fn(&Suite) -> anyhow::Result<()>,
}

/// A policy spec body from its fields, one per line.
fn spec(fields: &[&str]) -> String {
    let mut out = String::new();
    for f in fields {
        out.push_str("  ");
        out.push_str(f);
        out.push('\n');
    }
    out
}

const TCP: Proto = Proto::Tcp;
const UDP: Proto = Proto::Udp;
const SCTP: Proto = Proto::Sctp;

/// Every scenario, in run order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "should support a 'default-deny-ingress' policy",
        run: default_deny_ingress,
    },
    Scenario {
        name: "should support a 'default-deny-all' policy",
        run: default_deny_all,
    },
    Scenario {
        name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
        run: from_same_ns_by_pod,
    },
    Scenario {
        name: "should enforce policy to allow ingress traffic for a target",
        run: ingress_for_target,
    },
    Scenario {
        name: "should enforce policy to allow ingress traffic from pods in all namespaces",
        run: from_all_namespaces,
    },
    Scenario {
        name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
        run: from_other_ns,
    },
    Scenario {
        name: "should enforce policy based on PodSelector with MatchExpressions",
        run: pod_match_expressions,
    },
    Scenario {
        name: "should enforce policy based on NamespaceSelector with MatchExpressions",
        run: ns_match_expressions,
    },
    Scenario {
        name: "should enforce policy based on PodSelector or NamespaceSelector",
        run: pod_or_ns,
    },
    Scenario {
        name: "should enforce policy based on PodSelector and NamespaceSelector",
        run: pod_and_ns,
    },
    Scenario {
        name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
        run: multiple_pod_and_ns,
    },
    Scenario {
        name: "should enforce policy based on any PodSelectors",
        run: any_pod_selectors,
    },
    Scenario {
        name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        run: from_pod_in_other_ns,
    },
    Scenario {
        name: "should enforce policy based on Ports",
        run: by_ports,
    },
    Scenario {
        name: "should enforce multiple, stacked policies with overlapping podSelectors",
        run: stacked,
    },
    Scenario {
        name: "should support allow-all policy",
        run: allow_all,
    },
    Scenario {
        name: "should allow ingress access on one named port",
        run: named_port_ingress,
    },
    Scenario {
        name: "should allow ingress access from namespace on one named port",
        run: named_port_from_ns,
    },
    Scenario {
        name: "should allow egress access on one named port",
        run: named_port_egress,
    },
    Scenario {
        name: "should enforce updated policy",
        run: updated_policy,
    },
    Scenario {
        name: "should allow ingress access from updated namespace",
        run: updated_namespace,
    },
    Scenario {
        name: "should allow ingress access from updated pod",
        run: updated_pod,
    },
    Scenario {
        name: "should deny ingress from pods on other namespaces",
        run: deny_other_namespaces,
    },
    Scenario {
        name: "should deny ingress access to updated pod",
        run: deny_updated_pod,
    },
    Scenario {
        name: "should deny egress from pods based on PodSelector",
        run: deny_egress_pod,
    },
    Scenario {
        name: "should deny egress from all pods in a namespace",
        run: deny_egress_ns,
    },
    Scenario {
        name: "should work with Ingress, Egress specified together",
        run: ingress_and_egress,
    },
    Scenario {
        name: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
        run: client_side_egress_deny,
    },
    Scenario {
        name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
        run: egress_to_other_ns_pod,
    },
    Scenario {
        name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
        run: by_protocol,
    },
    Scenario {
        name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
        run: ingress_allow_all_precedence,
    },
    Scenario {
        name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
        run: egress_allow_all_precedence,
    },
    Scenario {
        name: "should stop enforcing policies after they are deleted",
        run: deleted,
    },
    Scenario {
        name: "should allow egress access to server in CIDR block",
        run: egress_cidr,
    },
    Scenario {
        name: "should enforce except clause while egress access to server in CIDR block",
        run: egress_cidr_except,
    },
    Scenario {
        name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        run: cidr_except_overlap,
    },
    Scenario {
        name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
        run: independent_directions,
    },
    Scenario {
        name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
        run: sctp_not_tcp,
    },
    Scenario {
        name: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
        run: sctp_isolates,
    },
    Scenario {
        name: "should not allow access by TCP when a policy specifies only UDP",
        run: udp_not_tcp,
    },
    Scenario {
        name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
        run: default_ns_label,
    },
    Scenario {
        name: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
        run: default_ns_label_expressions,
    },
    Scenario {
        name: "UDP: should support a 'default-deny-ingress' policy",
        run: |s| default_deny_ingress_on(s, UDP),
    },
    Scenario {
        name: "UDP: should enforce policy based on Ports",
        run: |s| ports_on(s, UDP),
    },
    Scenario {
        name: "UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        run: |s| pod_in_other_ns_on(s, UDP),
    },
    Scenario {
        name: "SCTP: should support a 'default-deny-ingress' policy",
        run: |s| default_deny_ingress_on(s, SCTP),
    },
    Scenario {
        name: "SCTP: should enforce policy based on Ports",
        run: |s| ports_on(s, SCTP),
    },
    Scenario {
        name: "SCTP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        run: |s| pod_in_other_ns_on(s, SCTP),
    },
    Scenario {
        name: "skep: ingress port range (endPort) from a namespace",
        run: ingress_port_range,
    },
    Scenario {
        name: "skep: egress port range (endPort) on one protocol",
        run: egress_port_range,
    },
    Scenario {
        name: "skep: ingress ipBlock with except (pod IPs)",
        run: ingress_cidr_except,
    },
    Scenario {
        name: "skep: policies combine as a union, and deleting one leaves the other",
        run: union_then_delete_one,
    },
];

fn default_deny_ingress(s: &Suite) -> anyhow::Result<()> {
    default_deny_ingress_on(s, TCP)
}

fn default_deny_ingress_on(s: &Suite, proto: Proto) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-ingress",
        &spec(&["podSelector: {}", "policyTypes: [Ingress]", "ingress: []"]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, in_ns("x"), false);
    s.validate(80, proto, &r)
}

fn default_deny_all(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-all",
        &spec(&[
            "podSelector: {}",
            "policyTypes: [Ingress, Egress]",
            "ingress: []",
            "egress: []",
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, in_ns("x"), false)
        .expect_peer(in_ns("x"), ANY, false);
    s.validate(80, TCP, &r)
}

/// x/a allows ingress only from `from` (a list of peers, YAML).
fn x_a_ingress_from(s: &Suite, name: &str, from: &str) -> anyhow::Result<()> {
    s.create(
        "x",
        name,
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Ingress]",
            &format!("ingress: [{{from: {from}}}]"),
        ]),
    )
}

fn from_same_ns_by_pod(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "x-a-allows-x-b",
        "[{podSelector: {matchLabels: {pod: b}}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    s.validate(80, TCP, &r)
}

fn ingress_for_target(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-all",
        &spec(&["podSelector: {}", "policyTypes: [Ingress]", "ingress: []"]),
    )?;
    x_a_ingress_from(
        s,
        "allow-all-to-a",
        "[{podSelector: {}, namespaceSelector: {}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, in_ns("x"), false)
        .expect_all_ingress("x/a", true);
    s.validate(80, TCP, &r)
}

fn from_all_namespaces(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-from-another-ns",
        "[{namespaceSelector: {matchLabels: {}}}]",
    )?;
    s.validate(80, TCP, &s.reach(true))
}

/// Only namespace y reaches x/a.
fn only_y_to_x_a(s: &Suite, port: u16, proto: Proto) -> anyhow::Result<()> {
    let mut r = s.reach(true);
    r.expect_peer(in_ns("x"), pod("x", "a"), false)
        .expect_peer(in_ns("z"), pod("x", "a"), false);
    s.validate(port, proto, &r)
}

fn from_other_ns(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-client-a-via-ns-selector",
        "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}]",
    )?;
    only_y_to_x_a(s, 80, TCP)
}

fn pod_match_expressions(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "x-a-allows-x-b",
        "[{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    s.validate(80, TCP, &r)
}

fn ns_match_expressions(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-ns-y-match-selector",
        "[{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: ['y']}]}}]",
    )?;
    only_y_to_x_a(s, 80, TCP)
}

const NOT_IN_X: &str =
    "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ['x']}]}";

fn pod_or_ns(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-ns-y-match-selector",
        &format!(
            "[{{namespaceSelector: {NOT_IN_X}}}, {{podSelector: {{matchLabels: {{pod: b}}}}}}]"
        ),
    )?;
    let mut r = s.reach(true);
    r.expect("x/a", "x/a", false).expect("x/c", "x/a", false);
    s.validate(80, TCP, &r)
}

fn pod_and_ns(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-ns-y-podselector-and-nsselector",
        &format!("[{{namespaceSelector: {NOT_IN_X}, podSelector: {{matchLabels: {{pod: b}}}}}}]"),
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false)
        .expect("y/b", "x/a", true)
        .expect("z/b", "x/a", true);
    s.validate(80, TCP, &r)
}

fn multiple_pod_and_ns(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-ns-y-z-pod-b-c",
        &format!(
            "[{{namespaceSelector: {NOT_IN_X}, podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}}}]"
        ),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(in_ns("x"), pod("x", "a"), false)
        .expect("y/a", "x/a", false)
        .expect("z/a", "x/a", false);
    s.validate(80, TCP, &r)
}

fn any_pod_selectors(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-ns-x-pod-b-c",
        "[{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect("x/c", "x/a", true);
    s.validate(80, TCP, &r)
}

fn from_pod_in_other_ns(s: &Suite) -> anyhow::Result<()> {
    pod_in_other_ns_on(s, TCP)
}

fn pod_in_other_ns_on(s: &Suite, proto: Proto) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}, podSelector: {matchLabels: {pod: a}}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false)
        .expect("y/a", "x/a", true);
    s.validate(80, proto, &r)
}

/// x/a allows namespace y on `port` of `proto` only.
fn x_a_from_y_on(s: &Suite, name: &str, port: &str, proto: Proto) -> anyhow::Result<()> {
    s.create(
        "x",
        name,
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Ingress]",
            &format!(
                "ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: 'y'}}}}}}], ports: [{{port: {port}, protocol: {}}}]}}]",
                proto.upper()
            ),
        ]),
    )
}

fn by_ports(s: &Suite) -> anyhow::Result<()> {
    ports_on(s, TCP)
}

fn ports_on(s: &Suite, proto: Proto) -> anyhow::Result<()> {
    x_a_from_y_on(s, "allow-client-a-via-ns-selector", "81", proto)?;
    only_y_to_x_a(s, 81, proto)
}

fn stacked(s: &Suite) -> anyhow::Result<()> {
    x_a_from_y_on(s, "allow-client-a-via-ns-selector", "81", TCP)?;
    only_y_to_x_a(s, 81, TCP)?;
    let mut deny = s.reach(true);
    deny.expect_all_ingress("x/a", false);
    s.validate(80, TCP, &deny)?;
    x_a_from_y_on(s, "allow-client-a-via-ns-selector-80", "80", TCP)?;
    only_y_to_x_a(s, 80, TCP)
}

fn allow_all(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-all",
        &spec(&["podSelector: {}", "policyTypes: [Ingress]", "ingress: [{}]"]),
    )?;
    s.validate(80, TCP, &s.reach(true))?;
    s.validate(81, TCP, &s.reach(true))
}

fn named_port_ingress(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-all",
        &spec(&[
            "podSelector: {}",
            "policyTypes: [Ingress]",
            "ingress: [{ports: [{port: serve-81-tcp}]}]",
        ]),
    )?;
    s.validate(81, TCP, &s.reach(true))?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, in_ns("x"), false);
    s.validate(80, TCP, &r)
}

fn named_port_from_ns(s: &Suite) -> anyhow::Result<()> {
    x_a_from_y_on(s, "allow-client-a-via-ns-selector-80", "serve-80-tcp", TCP)?;
    only_y_to_x_a(s, 80, TCP)?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(81, TCP, &r)
}

fn named_port_egress(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-egress",
        &spec(&[
            "podSelector: {}",
            "policyTypes: [Egress]",
            "egress: [{ports: [{port: serve-80-tcp}]}]",
        ]),
    )?;
    s.validate(80, TCP, &s.reach(true))?;
    let mut r = s.reach(true);
    r.expect_peer(in_ns("x"), ANY, false);
    s.validate(81, TCP, &r)
}

fn updated_policy(s: &Suite) -> anyhow::Result<()> {
    let name = "allow-all-mutate-to-deny-all";
    s.create(
        "x",
        name,
        &spec(&["podSelector: {}", "policyTypes: [Ingress]", "ingress: [{}]"]),
    )?;
    s.validate(81, TCP, &s.reach(true))?;
    s.update(
        "x",
        name,
        &spec(&["podSelector: {}", "policyTypes: [Ingress]", "ingress: []"]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, in_ns("x"), false);
    s.validate(81, TCP, &r)
}

fn updated_namespace(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-client-a-via-ns-selector",
        "[{namespaceSelector: {matchLabels: {ns2: updated}}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(80, TCP, &r)?;
    s.label_ns("y", "ns2=updated")?;
    r.expect_peer(in_ns("y"), ANY, true);
    s.validate(80, TCP, &r)
}

fn updated_pod(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-client-a-via-pod-selector",
        "[{podSelector: {matchLabels: {pod: b, pod2: updated}}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(80, TCP, &r)?;
    s.label_pod("x", "b", "pod2=updated")?;
    r.expect("x/b", "x/a", true);
    s.validate(80, TCP, &r)
}

fn deny_other_namespaces(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-empty-policy",
        &spec(&[
            "podSelector: {}",
            "ingress: [{from: [{podSelector: {matchLabels: {}}}]}]",
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(in_ns("y"), in_ns("x"), false)
        .expect_peer(in_ns("z"), in_ns("x"), false);
    s.validate(80, TCP, &r)
}

fn deny_updated_pod(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-ingress-via-label-selector",
        &spec(&[
            "podSelector: {matchLabels: {target: isolated}}",
            "policyTypes: [Ingress]",
            "ingress: []",
        ]),
    )?;
    s.validate(80, TCP, &s.reach(true))?;
    s.label_pod("x", "a", "target=isolated")?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(80, TCP, &r)
}

fn deny_egress_pod(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-egress-pod-a",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress]",
            "egress: []",
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_all_egress("x/a", false);
    s.validate(80, TCP, &r)
}

fn deny_egress_ns(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-egress-ns-x",
        &spec(&["podSelector: {}", "policyTypes: [Egress]", "egress: []"]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(in_ns("x"), ANY, false);
    s.validate(80, TCP, &r)
}

fn ingress_and_egress(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-client-a-via-pod-selector",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress, Ingress]",
            "ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
            "egress: [{ports: [{port: 80}]}]",
        ]),
    )?;
    let mut r80 = s.reach(true);
    r80.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    s.validate(80, TCP, &r80)?;
    let mut r81 = s.reach(true);
    r81.expect_all_ingress("x/a", false)
        .expect_all_egress("x/a", false)
        .expect("x/b", "x/a", true);
    s.validate(81, TCP, &r81)
}

const NS_X_POD_A: &str = "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'x'}}, podSelector: {matchLabels: {pod: a}}}";
const NS_Y_POD_A: &str = "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}, podSelector: {matchLabels: {pod: a}}}";

fn client_side_egress_deny(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-to-ns-y-pod-a",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress]",
            &format!("egress: [{{to: [{NS_Y_POD_A}]}}]"),
        ]),
    )?;
    for (name, target) in [
        ("allow-from-xa-on-ya-match-selector", "a"),
        ("allow-from-xa-on-yb-match-selector", "b"),
    ] {
        s.create(
            "y",
            name,
            &spec(&[
                &format!("podSelector: {{matchLabels: {{pod: {target}}}}}"),
                "policyTypes: [Ingress]",
                &format!("ingress: [{{from: [{NS_X_POD_A}]}}]"),
            ]),
        )?;
    }
    let mut r = s.reach(true);
    r.expect_peer(pod("x", "a"), ANY, false)
        .expect_peer(ANY, pod("y", "a"), false)
        .expect_peer(pod("x", "a"), pod("y", "a"), true)
        .expect_peer(ANY, pod("y", "b"), false);
    s.validate(80, TCP, &r)
}

/// Also the "egress to a Service's backends" check: every step probes by
/// Service IP too, and x/a reaches `s-y-a` only because its backend is y/a.
fn egress_to_other_ns_pod(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-to-ns-y-pod-a",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress]",
            &format!("egress: [{{to: [{NS_Y_POD_A}]}}]"),
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_all_egress("x/a", false).expect("x/a", "y/a", true);
    s.validate(80, TCP, &r)
}

fn by_protocol(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-ingress-by-proto",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Ingress]",
            "ingress: [{ports: [{protocol: TCP}]}]",
        ]),
    )?;
    s.validate(80, TCP, &s.reach(true))?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, pod("x", "a"), false);
    s.validate(80, UDP, &r)
}

fn ingress_allow_all_precedence(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-ingress-port-80",
        &spec(&[
            "podSelector: {}",
            "policyTypes: [Ingress]",
            "ingress: [{ports: [{port: 80}]}]",
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, in_ns("x"), false);
    s.validate(81, TCP, &r)?;
    s.create(
        "x",
        "allow-ingress",
        &spec(&["podSelector: {}", "policyTypes: [Ingress]", "ingress: [{}]"]),
    )?;
    s.validate(81, TCP, &s.reach(true))
}

fn egress_allow_all_precedence(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-egress-port-80",
        &spec(&[
            "podSelector: {}",
            "policyTypes: [Egress]",
            "egress: [{ports: [{port: 80}]}]",
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(in_ns("x"), ANY, false);
    s.validate(81, TCP, &r)?;
    s.create(
        "x",
        "allow-egress",
        &spec(&["podSelector: {}", "policyTypes: [Egress]", "egress: [{}]"]),
    )?;
    s.validate(81, TCP, &s.reach(true))
}

fn deleted(s: &Suite) -> anyhow::Result<()> {
    default_deny_all(s)?;
    for ns in ["x", "y", "z"] {
        s.lab
            .kubectl_ok(&["delete", "networkpolicy", "--all", "-n", ns])?;
    }
    s.validate(80, TCP, &s.reach(true))
}

/// x/a may send only to `to` (one ipBlock, YAML).
fn x_a_egress_to_block(s: &Suite, block: &str, replace: bool) -> anyhow::Result<()> {
    s.policy(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress]",
            &format!("egress: [{{to: [{{ipBlock: {block}}}]}}]"),
        ]),
        replace,
    )
}

/// Upstream's `makeLargeCIDRForIP`: the /4 holding `ip`.
fn large_cidr(ip: std::net::Ipv4Addr) -> String {
    let base = u32::from(ip) & 0xf000_0000;
    format!("{}/4", std::net::Ipv4Addr::from(base))
}

fn egress_cidr(s: &Suite) -> anyhow::Result<()> {
    let ip = s.ip("y/b")?;
    x_a_egress_to_block(s, &format!("{{cidr: {ip}/32}}"), false)?;
    let mut r = s.reach(true);
    r.expect_all_egress("x/a", false).expect("x/a", "y/b", true);
    s.validate(80, TCP, &r)
}

fn egress_cidr_except(s: &Suite) -> anyhow::Result<()> {
    let ip = s.ip("x/b")?;
    x_a_egress_to_block(
        s,
        &format!("{{cidr: {}, except: [{ip}/32]}}", large_cidr(ip)),
        false,
    )?;
    let mut r = s.reach(true);
    r.expect("x/a", "x/b", false);
    s.validate(80, TCP, &r)
}

fn cidr_except_overlap(s: &Suite) -> anyhow::Result<()> {
    egress_cidr_except(s)?;
    let ip = s.ip("x/b")?;
    x_a_egress_to_block(s, &format!("{{cidr: {ip}/32}}"), true)?;
    let mut r = s.reach(true);
    r.expect_all_egress("x/a", false).expect("x/a", "x/b", true);
    s.validate(80, TCP, &r)
}

fn independent_directions(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-egress-for-target",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress]",
            "egress: [{}]",
        ]),
    )?;
    s.validate(80, TCP, &s.reach(true))?;
    s.create(
        "x",
        "deny-ingress-via-label-selector",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Ingress]",
            "ingress: []",
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(80, TCP, &r)
}

/// x/a allows only `proto` on `port`, from anywhere.
fn x_a_only(s: &Suite, name: &str, port: u16, proto: Proto) -> anyhow::Result<()> {
    s.create(
        "x",
        name,
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Ingress]",
            &format!(
                "ingress: [{{ports: [{{port: {port}, protocol: {}}}]}}]",
                proto.upper()
            ),
        ]),
    )
}

fn sctp_not_tcp(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "deny-ingress",
        &spec(&["podSelector: {}", "policyTypes: [Ingress]", "ingress: []"]),
    )?;
    x_a_only(s, "allow-only-sctp-ingress-on-port-81", 81, SCTP)?;
    let mut r = s.reach(true);
    r.expect_peer(ANY, in_ns("x"), false);
    s.validate(81, TCP, &r)?;
    // skep: nor as UDP.
    s.validate(81, UDP, &r)
}

fn sctp_isolates(s: &Suite) -> anyhow::Result<()> {
    x_a_only(s, "allow-only-sctp-ingress-on-port-80", 80, SCTP)?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(81, TCP, &r)?;
    // skep: the port SCTP names is closed to TCP and UDP too.
    s.validate(80, TCP, &r)?;
    s.validate(80, UDP, &r)
}

fn udp_not_tcp(s: &Suite) -> anyhow::Result<()> {
    x_a_only(s, "allow-only-udp-ingress-on-port-81", 81, UDP)?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(81, TCP, &r)?;
    // skep: and UDP on that port is allowed.
    s.validate(81, UDP, &s.reach(true))
}

fn default_ns_label(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(
        s,
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}}]",
    )?;
    only_y_to_x_a(s, 80, TCP)
}

fn default_ns_label_expressions(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress]",
            "egress: [{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ['y']}]}}]}]",
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect_peer(pod("x", "a"), in_ns("y"), false);
    s.validate(80, TCP, &r)
}

fn ingress_port_range(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-y-on-81-to-85",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Ingress]",
            "ingress: [{from: [{namespaceSelector: {matchLabels: {ns: 'y'}}}], ports: [{protocol: TCP, port: 81, endPort: 85}]}]",
        ]),
    )?;
    only_y_to_x_a(s, 81, TCP)?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false);
    s.validate(80, TCP, &r)?;
    s.validate(81, UDP, &r)
}

fn egress_port_range(s: &Suite) -> anyhow::Result<()> {
    s.create(
        "x",
        "allow-udp-70-to-80",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Egress]",
            "egress: [{ports: [{protocol: UDP, port: 70, endPort: 80}]}]",
        ]),
    )?;
    s.validate(80, UDP, &s.reach(true))?;
    let mut r = s.reach(true);
    r.expect_all_egress("x/a", false);
    s.validate(81, UDP, &r)?;
    s.validate(80, TCP, &r)
}

fn ingress_cidr_except(s: &Suite) -> anyhow::Result<()> {
    let ip = s.ip("y/b")?;
    s.create(
        "x",
        "allow-cidr-except-y-b",
        &spec(&[
            "podSelector: {matchLabels: {pod: a}}",
            "policyTypes: [Ingress]",
            &format!(
                "ingress: [{{from: [{{ipBlock: {{cidr: {}, except: [{ip}/32]}}}}]}}]",
                large_cidr(ip)
            ),
        ]),
    )?;
    let mut r = s.reach(true);
    r.expect("y/b", "x/a", false);
    s.validate(80, TCP, &r)
}

fn union_then_delete_one(s: &Suite) -> anyhow::Result<()> {
    x_a_ingress_from(s, "allow-x-b", "[{podSelector: {matchLabels: {pod: b}}}]")?;
    x_a_ingress_from(
        s,
        "allow-ns-z",
        "[{namespaceSelector: {matchLabels: {ns: 'z'}}}]",
    )?;
    let mut r = s.reach(true);
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect_peer(in_ns("z"), pod("x", "a"), true);
    s.validate(80, UDP, &r)?;
    s.lab
        .kubectl_ok(&["delete", "networkpolicy", "-n", "x", "allow-x-b"])
        .context("delete one of the two")?;
    r.expect("x/b", "x/a", false);
    s.validate(80, UDP, &r)
}
