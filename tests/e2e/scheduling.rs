//! The scheduler as kubectl users see it, on hollow nodes: pods land where
//! their nodeSelector, node affinity, anti-affinity, tolerations and
//! requests allow; a pod that fits nowhere stays Pending with a
//! FailedScheduling event saying why (`kubectl describe pod`), and is
//! scheduled once the cluster changes so that it fits.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use skep_e2e::cluster::str_at;
use skep_e2e::hollow::{HollowCluster, HollowNode};

const LONG: Duration = Duration::from_mins(1);
const NS: &str = "sched";

/// A pod `name` with `spec` lines (indented two spaces) and one container.
fn pod(name: &str, spec: &str) -> String {
    pod_requesting(name, spec, "{}")
}

/// [`pod`] whose container requests `requests` (a YAML map).
fn pod_requesting(name: &str, spec: &str, requests: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}\nspec:\n{spec}  containers:\n  - {{name: app, image: registry.example/app:v1, resources: {{requests: {requests}}}}}\n"
    )
}

/// Waits until pod `name` is bound; returns its node.
fn scheduled(cluster: &HollowCluster, name: &str) -> anyhow::Result<String> {
    cluster.wait_for(&format!("pod {name} scheduled"), LONG, || {
        let node = cluster.server.kubectl_ok(&[
            "get",
            "pod",
            name,
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.nodeName}",
        ])?;
        Ok(Some(node).filter(|n| !n.is_empty()))
    })
}

/// Waits until `kubectl describe pod` shows a FailedScheduling event with
/// every one of `why`; checks the pod is still Pending and unbound.
fn unschedulable(cluster: &HollowCluster, name: &str, why: &[&str]) -> anyhow::Result<()> {
    let mut last = String::new();
    let described = cluster
        .wait_for(
            &format!("FailedScheduling of {name} saying {why:?}"),
            LONG,
            || {
                let out = cluster
                    .server
                    .kubectl_ok(&["describe", "pod", name, "-n", NS])?;
                let shown = out
                    .lines()
                    .any(|l| l.contains("FailedScheduling") && why.iter().all(|w| l.contains(w)));
                last.clone_from(&out);
                Ok(shown.then_some(out))
            },
        )
        .with_context(|| format!("last kubectl describe pod {name}:\n{last}"))?;
    let pod = cluster.server.json(&["get", "pod", name, "-n", NS])?;
    assert_eq!(str_at(&pod, &["spec", "nodeName"]), "", "{described}");
    assert_eq!(str_at(&pod, &["status", "phase"]), "Pending", "{described}");
    assert!(
        described.contains("PodScheduled") && described.contains("False"),
        "PodScheduled=False missing:\n{described}"
    );
    Ok(())
}

#[test]
fn scheduler_places_pods_and_explains_failures() -> anyhow::Result<()> {
    let cluster = HollowCluster::start(&[
        HollowNode::new("zone-a")
            .label("zone", "a")
            .label("disk", "ssd"),
        HollowNode::new("zone-b")
            .label("zone", "b")
            .taint("dedicated", "gpu", "NoSchedule"),
        HollowNode::new("zone-c")
            .label("zone", "c")
            .resources("2", "4Gi"),
    ])?;
    let server = &cluster.server;
    server.create_namespace(NS)?;

    // nodeSelector, with the Scheduled event kubectl describe shows.
    server.apply(&pod("ssd", "  nodeSelector: {disk: ssd}\n"))?;
    assert_eq!(scheduled(&cluster, "ssd")?, "zone-a");
    let described = server.kubectl_ok(&["describe", "pod", "ssd", "-n", NS])?;
    assert!(
        described.lines().any(|l| l.contains("Scheduled")
            && l.contains("default-scheduler")
            && l.contains("Successfully assigned sched/ssd to zone-a")),
        "{described}"
    );

    // Required node affinity.
    server.apply(&pod(
        "pinned",
        "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: zone, operator: In, values: [c]}\n",
    ))?;
    assert_eq!(scheduled(&cluster, "pinned")?, "zone-c");

    // A tolerated taint; an untolerated one keeps the pod out.
    server.apply(&pod(
        "gpu",
        "  nodeSelector: {zone: b}\n  tolerations:\n  - {key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}\n",
    ))?;
    assert_eq!(scheduled(&cluster, "gpu")?, "zone-b");
    server.apply(&pod("intolerant", "  nodeSelector: {zone: b}\n"))?;
    unschedulable(
        &cluster,
        "intolerant",
        &[
            "0/3 nodes are available",
            "1 node(s) had untolerated taint {dedicated: gpu}",
            "2 node(s) didn't match Pod's node affinity/selector",
        ],
    )?;

    anti_affinity_spreads_one_per_node(&cluster)?;
    cordon_and_resources(&cluster)?;

    // Removing the taint (a node update) lets the waiting pod in.
    server.kubectl_ok(&["taint", "node", "zone-b", "dedicated=gpu:NoSchedule-"])?;
    assert_eq!(scheduled(&cluster, "intolerant")?, "zone-b");
    Ok(())
}

/// Required pod anti-affinity by hostname: one replica per node, and the
/// one too many waits.
fn anti_affinity_spreads_one_per_node(cluster: &HollowCluster) -> anyhow::Result<()> {
    let server = &cluster.server;
    let deployment = |replicas: u32| {
        format!(
            r"apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: spread}}
  template:
    metadata:
      labels: {{app: spread}}
    spec:
      tolerations:
      - {{key: dedicated, operator: Exists}}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {{app: spread}}
            topologyKey: kubernetes.io/hostname
      containers:
      - {{name: app, image: registry.example/spread:v1}}
"
        )
    };
    server.apply(&deployment(3))?;
    let nodes = cluster.wait_for("3 spread pods on 3 nodes", LONG, || {
        let pods = server.active_pods(NS, "app=spread")?;
        let nodes: BTreeSet<String> = pods
            .iter()
            .map(|p| str_at(p, &["spec", "nodeName"]).to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        Ok((pods.len() == 3 && nodes.len() == 3).then_some(nodes))
    })?;
    assert_eq!(
        nodes,
        ["zone-a", "zone-b", "zone-c"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
    server.kubectl_ok(&["scale", "deployment", "spread", "-n", NS, "--replicas=4"])?;
    let extra = cluster.wait_for("a fourth spread pod", LONG, || {
        let pods = server.active_pods(NS, "app=spread")?;
        Ok(pods
            .iter()
            .find(|p| str_at(p, &["spec", "nodeName"]).is_empty())
            .map(|p| str_at(p, &["metadata", "name"]).to_owned()))
    })?;
    unschedulable(
        cluster,
        &extra,
        // kube-scheduler names the existing pods' rule or the pod's own
        // (the same here), depending on its version's order of checks.
        &[
            "0/3 nodes are available: 3 node(s) didn't",
            "anti-affinity rules",
        ],
    )?;
    server.kubectl_ok(&["scale", "deployment", "spread", "-n", NS, "--replicas=3"])?;
    cluster.wait_for("the waiting replica removed", LONG, || {
        let pods = server.active_pods(NS, "app=spread")?;
        Ok((pods.len() == 3
            && pods
                .iter()
                .all(|p| !str_at(p, &["spec", "nodeName"]).is_empty()))
        .then_some(()))
    })?;
    Ok(())
}

/// A cordoned node takes nothing new until uncordoned; a pod asking for
/// more CPU than any fitting node has waits for a node that has it.
fn cordon_and_resources(cluster: &HollowCluster) -> anyhow::Result<()> {
    let server = &cluster.server;
    server.kubectl_ok(&["cordon", "zone-a"])?;
    server.apply(&pod("ssd2", "  nodeSelector: {disk: ssd}\n"))?;
    unschedulable(
        cluster,
        "ssd2",
        &["0/3 nodes are available", "1 node(s) were unschedulable"],
    )?;
    server.kubectl_ok(&["uncordon", "zone-a"])?;
    assert_eq!(scheduled(cluster, "ssd2")?, "zone-a");

    server.apply(&pod_requesting(
        "big",
        "  nodeSelector: {zone: c}\n",
        "{cpu: \"3\"}",
    ))?;
    unschedulable(cluster, "big", &["1 Insufficient cpu"])?;
    cluster.add(
        &HollowNode::new("zone-c2")
            .label("zone", "c")
            .resources("8", "16Gi"),
    )?;
    assert_eq!(scheduled(cluster, "big")?, "zone-c2");
    let described = server.kubectl_ok(&["describe", "pod", "big", "-n", NS])?;
    for event in [
        "FailedScheduling",
        "Successfully assigned sched/big to zone-c2",
    ] {
        assert!(described.contains(event), "{event} missing:\n{described}");
    }
    Ok(())
}
