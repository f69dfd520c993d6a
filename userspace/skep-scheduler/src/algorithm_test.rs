use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::model::PodInfo;
use crate::testutil::*;

fn cluster(nodes: &[Node], pods: Vec<Pod>) -> Cache {
    let mut c = Cache::new();
    for n in nodes {
        c.upsert_node(n);
    }
    for p in pods {
        c.upsert_pod(Arc::new(PodInfo::new(p)));
    }
    c
}

fn schedule(cache: &Cache, pod: Pod) -> Result<String, FitError> {
    Algorithm::with_seed(100, 7)
        .schedule(cache, &PodInfo::new(pod))
        .map(|r| r.node)
}

fn message(cache: &Cache, pod: Pod) -> String {
    match schedule(cache, pod) {
        Ok(n) => panic!("expected no fit, got {n}"),
        Err(e) => e.message,
    }
}

#[test]
fn adaptive_percentage_matches_kube() {
    assert_eq!(num_feasible_nodes_to_find(50, 0), 50);
    assert_eq!(num_feasible_nodes_to_find(1000, 0), 420);
    assert_eq!(num_feasible_nodes_to_find(5000, 0), 500);
    assert_eq!(num_feasible_nodes_to_find(100_000, 0), 5000);
    assert_eq!(
        num_feasible_nodes_to_find(1000, 5),
        100,
        "at least 100 nodes"
    );
    assert_eq!(num_feasible_nodes_to_find(1000, 100), 1000);
}

#[test]
fn resources_fit_and_failure_message_format() {
    let nodes = [
        node("a", "1", "1Gi", &[("disk", "ssd")]),
        node("b", "1", "1Gi", &[("disk", "ssd")]),
        node("c", "4", "8Gi", &[("disk", "hdd")]),
        node("d", "4", "8Gi", &[("disk", "hdd")]),
        node("e", "4", "8Gi", &[("disk", "hdd")]),
    ];
    let c = cluster(&nodes, vec![]);
    let mut p = pod("p", "2", "100Mi");
    spec(&mut p).node_selector = Some(labels(&[("disk", "ssd")]));
    assert_eq!(
        message(&c, p),
        "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) didn't match Pod's node affinity/selector."
    );
    // Two reasons from one node are both counted.
    let msg = message(&c, pod("q", "8", "16Gi"));
    assert_eq!(
        msg,
        "0/5 nodes are available: 5 Insufficient cpu, 5 Insufficient memory."
    );
    // Requests count what is already on the node.
    let c = cluster(&nodes[..1], vec![bound_to(pod("old", "600m", ""), "a")]);
    assert!(schedule(&c, pod("p", "400m", "")).is_ok());
    assert_eq!(
        message(&c, pod("p", "500m", "")),
        "0/1 nodes are available: 1 Insufficient cpu."
    );
}

#[test]
fn too_many_pods_and_no_nodes() {
    let mut n = node("a", "4", "4Gi", &[]);
    n.status
        .as_mut()
        .and_then(|s| s.allocatable.as_mut())
        .map(|a| a.insert("pods".to_owned(), Quantity("1".to_owned())));
    let c = cluster(&[n], vec![bound_to(pod("x", "", ""), "a")]);
    assert_eq!(
        message(&c, pod("p", "", "")),
        "0/1 nodes are available: 1 Too many pods."
    );
    assert_eq!(
        message(&Cache::new(), pod("p", "", "")),
        "no nodes available to schedule pods"
    );
}

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

#[test]
fn node_selector_picks_the_labelled_node() {
    let c = cluster(
        &[
            node("a", "4", "4Gi", &[("zone", "z1")]),
            node("b", "4", "4Gi", &[("zone", "z2")]),
        ],
        vec![],
    );
    for i in 0..5 {
        let mut p = pod(&format!("p{i}"), "", "");
        spec(&mut p).node_selector = Some(labels(&[("zone", "z2")]));
        assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
    }
}

fn affinity_target(c: &Cache, terms: Vec<NodeSelectorTerm>) -> Result<String, FitError> {
    let mut p = pod("p", "", "");
    require_node_terms(&mut p, terms);
    schedule(c, p)
}

#[test]
fn node_affinity_operators() {
    let c = cluster(
        &[
            node("a", "4", "4Gi", &[("gen", "3"), ("gpu", "yes")]),
            node("b", "4", "4Gi", &[("gen", "5")]),
        ],
        vec![],
    );
    let one = |r| affinity_target(&c, vec![expr_term(vec![r])]).ok();
    assert_eq!(
        one(req("gpu", "In", &["yes", "maybe"])).as_deref(),
        Some("a")
    );
    assert_eq!(one(req("gpu", "NotIn", &["yes"])).as_deref(), Some("b"));
    assert_eq!(one(req("gpu", "Exists", &[])).as_deref(), Some("a"));
    assert_eq!(one(req("gpu", "DoesNotExist", &[])).as_deref(), Some("b"));
    assert_eq!(one(req("gen", "Gt", &["4"])).as_deref(), Some("b"));
    assert_eq!(one(req("gen", "Lt", &["4"])).as_deref(), Some("a"));
    assert_eq!(one(req("gen", "Gt", &["9"])), None);
    assert_eq!(
        one(req("gen", "Gt", &["x"])),
        None,
        "invalid Gt matches nothing"
    );
    // Expressions in a term are ANDed, terms ORed.
    let both = vec![req("gen", "Gt", &["1"]), req("gpu", "DoesNotExist", &[])];
    assert_eq!(
        affinity_target(&c, vec![expr_term(both)]).ok().as_deref(),
        Some("b")
    );
    let r = affinity_target(
        &c,
        vec![
            expr_term(vec![req("gen", "In", &["7"])]),
            expr_term(vec![req("gen", "In", &["3"])]),
        ],
    );
    assert_eq!(r.ok().as_deref(), Some("a"));
    // An empty term matches nothing.
    let r = affinity_target(&c, vec![NodeSelectorTerm::default()]);
    assert_eq!(
        r.err().map(|e| e.message).as_deref(),
        Some("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")
    );
    // matchFields on metadata.name.
    let r = affinity_target(
        &c,
        vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["b"])]),
        }],
    );
    assert_eq!(r.ok().as_deref(), Some("b"));
}

#[test]
fn taints_and_tolerations() {
    let mut a = node("a", "4", "4Gi", &[]);
    taint(&mut a, "dedicated", "gpu", "NoSchedule");
    let mut b = node("b", "4", "4Gi", &[]);
    taint(
        &mut b,
        "node-role.kubernetes.io/control-plane",
        "",
        "NoExecute",
    );
    let c = cluster(&[a, b], vec![]);
    assert_eq!(
        message(&c, pod("p", "", "")),
        "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
         1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }."
    );
    let mut p = pod("p", "", "");
    tolerate(&mut p, "dedicated", "Equal", "gpu", "NoSchedule");
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("a"));
    let mut p = pod("p", "", "");
    tolerate(&mut p, "dedicated", "Equal", "cpu", "NoSchedule");
    assert!(schedule(&c, p).is_err(), "wrong value does not tolerate");
    let mut p = pod("p", "", "");
    tolerate(
        &mut p,
        "node-role.kubernetes.io/control-plane",
        "Exists",
        "",
        "",
    );
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
    let mut p = pod("p", "", "");
    tolerate(&mut p, "", "Exists", "", "");
    assert!(
        schedule(&c, p).is_ok(),
        "empty key with Exists tolerates all"
    );
}

#[test]
fn prefer_no_schedule_is_avoided_not_forbidden() {
    let mut a = node("a", "4", "4Gi", &[]);
    taint(&mut a, "spot", "true", "PreferNoSchedule");
    let c = cluster(&[a.clone(), node("b", "4", "4Gi", &[])], vec![]);
    for i in 0..10 {
        assert_eq!(
            schedule(&c, pod(&format!("p{i}"), "", "")).ok().as_deref(),
            Some("b")
        );
    }
    let c = cluster(&[a], vec![]);
    assert_eq!(schedule(&c, pod("p", "", "")).ok().as_deref(), Some("a"));
}

#[test]
fn unschedulable_node_and_its_toleration() {
    let mut a = node("a", "4", "4Gi", &[]);
    a.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
    let c = cluster(&[a], vec![]);
    assert_eq!(
        message(&c, pod("p", "", "")),
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
    let mut p = pod("p", "", "");
    tolerate(
        &mut p,
        "node.kubernetes.io/unschedulable",
        "Exists",
        "",
        "NoSchedule",
    );
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("a"));
}

#[test]
fn node_name_restricts_to_that_node() {
    let c = cluster(
        &[node("a", "4", "4Gi", &[]), node("b", "4", "4Gi", &[])],
        vec![],
    );
    let mut p = pod("p", "", "");
    spec(&mut p).node_name = Some("b".to_owned());
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
    let mut p = pod("p", "", "");
    spec(&mut p).node_name = Some("zz".to_owned());
    assert_eq!(
        message(&c, p),
        "0/2 nodes are available: 2 node(s) didn't match the requested node name."
    );
}

fn two_nodes_one_web() -> Cache {
    cluster(
        &[node("a", "4", "4Gi", &[]), node("b", "4", "4Gi", &[])],
        vec![bound_to(
            with_labels(pod("web-0", "", ""), &[("app", "web")]),
            "a",
        )],
    )
}

#[test]
fn required_anti_affinity_by_hostname() {
    let c = two_nodes_one_web();
    for _ in 0..5 {
        let mut p = with_labels(pod("web-1", "", ""), &[("app", "web")]);
        require_anti_affinity(
            &mut p,
            pod_term(&[("app", "web")], "kubernetes.io/hostname"),
        );
        assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
    }
    // With the only other node full, the message says why.
    let c = cluster(
        &[node("a", "4", "4Gi", &[]), node("b", "1", "1Gi", &[])],
        vec![bound_to(
            with_labels(pod("web-0", "", ""), &[("app", "web")]),
            "a",
        )],
    );
    let mut p = pod("web-1", "2", "");
    require_anti_affinity(
        &mut p,
        pod_term(&[("app", "web")], "kubernetes.io/hostname"),
    );
    assert_eq!(
        message(&c, p),
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match pod anti-affinity rules."
    );
}

#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    let mut guard = with_labels(pod("guard", "", ""), &[("app", "guard")]);
    require_anti_affinity(&mut guard, pod_term(&[("app", "db")], "zone"));
    let c = cluster(
        &[
            node("a", "4", "4Gi", &[("zone", "z1")]),
            node("a2", "4", "4Gi", &[("zone", "z1")]),
            node("b", "4", "4Gi", &[("zone", "z2")]),
        ],
        vec![bound_to(guard, "a")],
    );
    for _ in 0..5 {
        let p = with_labels(pod("db", "", ""), &[("app", "db")]);
        assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
    }
    let mut p = with_labels(pod("db", "", ""), &[("app", "db")]);
    spec(&mut p).node_selector = Some(labels(&[("zone", "z1")]));
    assert_eq!(
        message(&c, p),
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         2 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    // Other namespaces are not affected by the guard's (own-namespace) term.
    let p = in_namespace(with_labels(pod("db", "", ""), &[("app", "db")]), "other");
    let info = PodInfo::new(p);
    let pre = PreFilter::new(&c, &info);
    let a = c.node_by_name("a").map(|a| pre.filter(a));
    assert_eq!(a, Some(Ok(())));
}

#[test]
fn required_affinity_by_zone_and_first_pod_rule() {
    let nodes = [
        node("a", "4", "4Gi", &[("zone", "z1")]),
        node("b", "4", "4Gi", &[("zone", "z2")]),
        node("c", "4", "4Gi", &[("zone", "z2")]),
        node("nozone", "4", "4Gi", &[]),
    ];
    let cache_pod = bound_to(with_labels(pod("cache", "", ""), &[("app", "cache")]), "b");
    let c = cluster(&nodes, vec![cache_pod]);
    for _ in 0..10 {
        let mut p = pod("app", "", "");
        require_affinity(&mut p, pod_term(&[("app", "cache")], "zone"));
        let n = schedule(&c, p).ok();
        assert!(matches!(n.as_deref(), Some("b" | "c")), "{n:?}");
    }
    // No pod matches anywhere: fails, unless the pod matches its own term.
    let c = cluster(&nodes, vec![]);
    let mut p = pod("app", "", "");
    require_affinity(&mut p, pod_term(&[("app", "cache")], "zone"));
    assert_eq!(
        message(&c, p),
        "0/4 nodes are available: 4 node(s) didn't match pod affinity rules."
    );
    let mut p = with_labels(pod("cache-0", "", ""), &[("app", "cache")]);
    require_affinity(&mut p, pod_term(&[("app", "cache")], "zone"));
    let n = schedule(&c, p).ok();
    assert!(
        matches!(n.as_deref(), Some("a" | "b" | "c")),
        "needs the zone label: {n:?}"
    );
}

#[test]
fn affinity_term_namespaces() {
    let c = cluster(
        &[node("a", "4", "4Gi", &[]), node("b", "4", "4Gi", &[])],
        vec![bound_to(
            in_namespace(with_labels(pod("w", "", ""), &[("app", "web")]), "prod"),
            "a",
        )],
    );
    // Own namespace (default) has no web pod: both nodes are fine.
    let mut p = pod("p", "", "");
    require_affinity(
        &mut p,
        pod_term(&[("app", "web")], "kubernetes.io/hostname"),
    );
    assert!(schedule(&c, p).is_err());
    let mut term = pod_term(&[("app", "web")], "kubernetes.io/hostname");
    term.namespaces = Some(vec!["prod".to_owned()]);
    let mut p = pod("p", "", "");
    require_affinity(&mut p, term.clone());
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("a"));
    // Empty namespaceSelector: all namespaces.
    term.namespaces = None;
    term.namespace_selector = Some(LabelSelector::default());
    let mut p = pod("p", "", "");
    require_anti_affinity(&mut p, term);
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
}

#[test]
fn preferred_node_affinity_wins_over_balance() {
    let c = cluster(
        &[
            node("a", "4", "4Gi", &[("zone", "z1")]),
            node("b", "4", "4Gi", &[("zone", "z2")]),
        ],
        vec![bound_to(pod("busy", "1", "1Gi"), "b")],
    );
    let mut p = pod("p", "", "");
    prefer_node(&mut p, 80, vec![req("zone", "In", &["z2"])]);
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
}

#[test]
fn preferred_pod_affinity_and_anti_affinity() {
    let c = cluster(
        &[
            node("a", "8", "8Gi", &[]),
            node("b", "8", "8Gi", &[]),
            node("c", "8", "8Gi", &[]),
        ],
        vec![bound_to(
            with_labels(pod("cache", "1", ""), &[("app", "cache")]),
            "b",
        )],
    );
    for _ in 0..5 {
        let mut p = pod("p", "", "");
        prefer_affinity(
            &mut p,
            100,
            pod_term(&[("app", "cache")], "kubernetes.io/hostname"),
        );
        assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
    }
    let mut p = pod("p", "", "");
    prefer_anti_affinity(
        &mut p,
        100,
        pod_term(&[("app", "cache")], "kubernetes.io/hostname"),
    );
    assert_ne!(schedule(&c, p).ok().as_deref(), Some("b"));
}

#[test]
fn existing_preferred_affinity_attracts_matching_pods() {
    let mut lover = pod("lover", "1", "");
    prefer_affinity(
        &mut lover,
        100,
        pod_term(&[("app", "x")], "kubernetes.io/hostname"),
    );
    let c = cluster(
        &[node("a", "8", "8Gi", &[]), node("b", "8", "8Gi", &[])],
        vec![bound_to(lover, "a")],
    );
    let p = with_labels(pod("x", "", ""), &[("app", "x")]);
    assert_eq!(schedule(&c, p).ok().as_deref(), Some("a"));
}

#[test]
fn default_spreading_puts_six_replicas_two_per_node() {
    let mut c = cluster(
        &[
            node("a", "64", "256Gi", &[]),
            node("b", "64", "256Gi", &[]),
            node("c", "64", "256Gi", &[]),
        ],
        vec![],
    );
    let mut algo = Algorithm::with_seed(0, 3);
    for i in 0..6 {
        let p = Arc::new(PodInfo::new(owned_by(
            pod(&format!("r{i}"), "", ""),
            "rs-1",
        )));
        let node = algo.schedule(&c, &p).map(|r| r.node);
        let node = node.unwrap_or_else(|e| panic!("{e}"));
        c.assume(p, &node).unwrap_or_else(|e| panic!("{e}"));
    }
    let counts: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|n| c.node_by_name(n).map_or(0, |n| n.pods.len()))
        .collect();
    assert_eq!(counts, vec![2, 2, 2]);
}

#[test]
fn sampling_rotates_and_stops_at_the_wanted_count() {
    let nodes: Vec<Node> = (0..1000)
        .map(|i| node(&format!("n{i}"), "4", "4Gi", &[]))
        .collect();
    let c = cluster(&nodes, vec![]);
    let mut algo = Algorithm::with_seed(0, 1);
    let r1 = algo.schedule(&c, &PodInfo::new(pod("p", "", ""))).ok();
    assert_eq!(
        r1.as_ref().map(|r| (r.evaluated, r.feasible)),
        Some((420, 420))
    );
    let r2 = algo.schedule(&c, &PodInfo::new(pod("q", "", ""))).ok();
    // The second pod starts where the first stopped: another window.
    let idx = |r: &Option<ScheduleResult>| {
        r.as_ref()
            .and_then(|r| r.node[1..].parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    };
    assert!(idx(&r1) < 420, "{r1:?}");
    assert!((420..840).contains(&idx(&r2)), "{r2:?}");
}

#[test]
fn topology_spread_do_not_schedule_respects_max_skew() {
    let nodes = [
        node("a1", "8", "8Gi", &[("zone", "z1")]),
        node("a2", "8", "8Gi", &[("zone", "z1")]),
        node("b1", "8", "8Gi", &[("zone", "z2")]),
        node("nolabel", "8", "8Gi", &[]),
    ];
    let web = |n: &str, node: &str| bound_to(with_labels(pod(n, "", ""), &[("app", "web")]), node);
    // z1 has 2 web pods, z2 has 0: with maxSkew 1 only z2 is allowed.
    let c = cluster(&nodes, vec![web("w0", "a1"), web("w1", "a2")]);
    let mut p = with_labels(pod("w2", "", ""), &[("app", "web")]);
    spread(&mut p, "zone", 1, true, &[("app", "web")]);
    for _ in 0..5 {
        assert_eq!(schedule(&c, p.clone()).ok().as_deref(), Some("b1"));
    }
    // maxSkew 3 lets z1 take one more.
    let mut q = with_labels(pod("w2", "", ""), &[("app", "web")]);
    spread(&mut q, "zone", 3, true, &[("app", "web")]);
    spec(&mut q).node_selector = Some(labels(&[("zone", "z1")]));
    assert!(schedule(&c, q).is_ok());
    // With z2 full, nothing fits; the message counts each reason.
    let mut small = nodes.clone();
    small[2] = node("b1", "500m", "8Gi", &[("zone", "z2")]);
    let c = cluster(&small, vec![web("w0", "a1"), web("w1", "a2")]);
    let mut p = with_labels(pod("w2", "1", ""), &[("app", "web")]);
    spread(&mut p, "zone", 1, true, &[("app", "web")]);
    assert_eq!(
        message(&c, p),
        "0/4 nodes are available: 1 Insufficient cpu, \
         1 node(s) didn't match pod topology spread constraints (missing required label), \
         2 node(s) didn't match pod topology spread constraints."
    );
}

#[test]
fn topology_spread_schedule_anyway_prefers_emptier_domains() {
    let nodes = [
        node("a", "8", "8Gi", &[("zone", "z1")]),
        node("b", "8", "8Gi", &[("zone", "z2")]),
    ];
    let web = |n: &str| bound_to(with_labels(pod(n, "", ""), &[("app", "web")]), "a");
    let c = cluster(&nodes, vec![web("w0"), web("w1"), web("w2")]);
    for _ in 0..5 {
        let mut p = with_labels(pod("w3", "", ""), &[("app", "web")]);
        spread(&mut p, "zone", 1, false, &[("app", "web")]);
        assert_eq!(schedule(&c, p).ok().as_deref(), Some("b"));
    }
}
