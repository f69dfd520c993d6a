use serde_json::{Value, json};

use super::*;

use ObjectKind::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount};

fn pod(name: &str, node: &str, spec: Value) -> Value {
    let mut spec = spec;
    if !node.is_empty() {
        spec["nodeName"] = json!(node);
    }
    json!({
        "metadata": {"namespace": "ns", "name": name, "uid": format!("uid-{name}")},
        "spec": spec,
    })
}

fn secret_volume(secret: &str) -> Value {
    json!({"containers": [{"name": "c"}], "volumes": [{"name": "v", "secret": {"secretName": secret}}]})
}

fn pv(name: &str, claim: Option<&str>, source: Value) -> Value {
    let mut spec = source;
    if let Some(claim) = claim {
        spec["claimRef"] = json!({"namespace": "ns", "name": claim});
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

#[test]
fn bound_pod_reaches_its_node_and_nothing_else() {
    let mut g = Graph::new();
    g.upsert_pod(&pod("web", "n1", secret_volume("s")));
    assert!(g.reachable("n1", Pod, "ns", "web"));
    assert!(g.reachable("n1", Secret, "ns", "s"));
    assert!(!g.reachable("n2", Secret, "ns", "s"));
    assert!(!g.reachable("n1", Secret, "other", "s"));
    assert!(!g.reachable("n1", ConfigMap, "ns", "s"));
    assert_eq!(g.pod_node("ns", "web"), Some("n1"));
}

#[test]
fn unbound_pod_is_not_in_the_graph() {
    let mut g = Graph::new();
    g.upsert_pod(&pod("web", "", secret_volume("s")));
    assert!(!g.reachable("n1", Secret, "ns", "s"));
    assert_eq!(g.pod_node("ns", "web"), None);
}

#[test]
fn two_pods_sharing_a_secret_keep_it_until_the_last_goes() {
    let mut g = Graph::new();
    g.upsert_pod(&pod("a", "n1", secret_volume("shared")));
    g.upsert_pod(&pod("b", "n1", secret_volume("shared")));
    assert_eq!(g.count("n1", Secret, "ns", "shared"), 2);
    g.remove_pod("ns", "a");
    assert!(g.reachable("n1", Secret, "ns", "shared"));
    assert_eq!(g.count("n1", Secret, "ns", "shared"), 1);
    g.remove_pod("ns", "b");
    assert!(!g.reachable("n1", Secret, "ns", "shared"));
    // Removing again, or a pod never seen, changes nothing.
    g.remove_pod("ns", "b");
    g.remove_pod("ns", "never");
    assert_eq!(g.count("n1", Secret, "ns", "shared"), 0);
    assert!(
        g.reach.iter().all(HashMap::is_empty),
        "index left entries behind"
    );
}

#[test]
fn a_secret_named_twice_by_one_pod_counts_once() {
    let mut g = Graph::new();
    let spec = json!({
        "containers": [{"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                        "envFrom": [{"secretRef": {"name": "s"}}]}],
        "volumes": [{"name": "v", "secret": {"secretName": "s"}}],
    });
    g.upsert_pod(&pod("web", "n1", spec));
    assert_eq!(g.count("n1", Secret, "ns", "s"), 1);
    g.remove_pod("ns", "web");
    assert!(!g.reachable("n1", Secret, "ns", "s"));
}

#[test]
fn pods_on_two_nodes_sharing_a_secret() {
    let mut g = Graph::new();
    g.upsert_pod(&pod("a", "n1", secret_volume("shared")));
    g.upsert_pod(&pod("b", "n2", secret_volume("shared")));
    g.remove_pod("ns", "a");
    assert!(!g.reachable("n1", Secret, "ns", "shared"));
    assert!(g.reachable("n2", Secret, "ns", "shared"));
}

#[test]
fn a_moved_pod_takes_its_references_along() {
    let mut g = Graph::new();
    g.upsert_pod(&pod("web", "n1", secret_volume("s")));
    g.upsert_pod(&pod("web", "n2", secret_volume("s")));
    assert!(!g.reachable("n1", Secret, "ns", "s"));
    assert!(!g.reachable("n1", Pod, "ns", "web"));
    assert!(g.reachable("n2", Secret, "ns", "s"));
    assert_eq!(g.count("n2", Secret, "ns", "s"), 1);
    // Losing its node (not possible in Kubernetes, but handled) drops it.
    g.upsert_pod(&pod("web", "", secret_volume("s")));
    assert!(!g.reachable("n2", Secret, "ns", "s"));
}

#[test]
fn a_status_update_of_a_pod_changes_no_count() {
    let mut g = Graph::new();
    let mut p = pod("web", "n1", secret_volume("s"));
    g.upsert_pod(&p);
    p["status"] = json!({"phase": "Running"});
    g.upsert_pod(&p);
    assert_eq!(g.count("n1", Secret, "ns", "s"), 1);
    assert_eq!(g.count("n1", Pod, "ns", "web"), 1);
}

#[test]
fn an_added_ephemeral_container_brings_its_references() {
    let mut g = Graph::new();
    let mut p = pod("web", "n1", json!({"containers": [{"name": "c"}]}));
    g.upsert_pod(&p);
    p["spec"]["ephemeralContainers"] =
        json!([{"name": "debug", "envFrom": [{"configMapRef": {"name": "dbg"}}]}]);
    g.upsert_pod(&p);
    assert!(g.reachable("n1", ConfigMap, "ns", "dbg"));
}

#[test]
fn every_kind_of_pod_reference() {
    let mut g = Graph::new();
    let spec = json!({
        "serviceAccountName": "sa",
        "imagePullSecrets": [{"name": "pull"}, {"name": ""}],
        "initContainers": [{"name": "i", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "init-cm", "key": "k"}}}]}],
        "containers": [{"name": "c",
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "Q", "value": "plain"}],
            "envFrom": [{"secretRef": {"name": "envfrom-secret"}}, {"configMapRef": {"name": "envfrom-cm"}}]}],
        "volumes": [
            {"name": "proj", "projected": {"sources": [
                {"secret": {"name": "proj-secret"}},
                {"configMap": {"name": "proj-cm"}},
                {"serviceAccountToken": {"path": "token"}},
            ]}},
            {"name": "cm", "configMap": {"name": "vol-cm"}},
            {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-secret"}}},
            {"name": "rbd", "rbd": {"monitors": ["m"], "image": "i", "secretRef": {"name": "rbd-secret"}}},
            {"name": "azure", "azureFile": {"secretName": "azure-secret", "shareName": "s"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        ],
    });
    g.upsert_pod(&pod("web", "n1", spec));
    for s in [
        "pull",
        "env-secret",
        "envfrom-secret",
        "proj-secret",
        "csi-secret",
        "rbd-secret",
        "azure-secret",
    ] {
        assert!(g.reachable("n1", Secret, "ns", s), "secret {s}");
    }
    for c in ["init-cm", "envfrom-cm", "proj-cm", "vol-cm"] {
        assert!(g.reachable("n1", ConfigMap, "ns", c), "configmap {c}");
    }
    assert!(g.reachable("n1", ServiceAccount, "ns", "sa"));
    assert!(g.reachable("n1", PersistentVolumeClaim, "ns", "claim"));
    assert!(g.reachable("n1", PersistentVolumeClaim, "ns", "web-scratch"));
    assert!(!g.reachable("n1", Secret, "ns", ""));
    assert!(!g.reachable("n1", Secret, "ns", "plain"));
}

#[test]
fn a_mirror_pod_reaches_only_its_node() {
    let mut g = Graph::new();
    let mut p = pod("static", "n1", secret_volume("s"));
    p["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "hash"});
    p["spec"]["serviceAccountName"] = json!("sa");
    g.upsert_pod(&p);
    assert!(g.reachable("n1", Pod, "ns", "static"));
    assert!(!g.reachable("n1", Secret, "ns", "s"));
    assert!(!g.reachable("n1", ServiceAccount, "ns", "sa"));
}

fn claim_pod(name: &str, node: &str) -> Value {
    pod(
        name,
        node,
        json!({"containers": [{"name": "c"}], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "claim"}}]}),
    )
}

fn csi_pv(name: &str, claim: Option<&str>) -> Value {
    pv(
        name,
        claim,
        json!({"csi": {
            "driver": "d", "volumeHandle": "h",
            "nodeStageSecretRef": {"namespace": "secrets", "name": "stage"},
            "controllerPublishSecretRef": {"namespace": "secrets", "name": "controller"},
        }}),
    )
}

#[test]
fn a_volume_bound_to_a_mounted_claim_and_its_secrets() {
    let mut g = Graph::new();
    // Volume first, pod later.
    g.upsert_pv(&csi_pv("pv1", Some("claim")));
    assert!(!g.reachable("n1", PersistentVolume, "", "pv1"));
    g.upsert_pod(&claim_pod("web", "n1"));
    assert!(g.reachable("n1", PersistentVolume, "", "pv1"));
    assert!(g.reachable("n1", Secret, "secrets", "stage"));
    // Controller secrets are not the kubelet's.
    assert!(!g.reachable("n1", Secret, "secrets", "controller"));
    g.remove_pod("ns", "web");
    assert!(!g.reachable("n1", PersistentVolume, "", "pv1"));
    assert!(!g.reachable("n1", Secret, "secrets", "stage"));

    // Pod first, volume later, then the volume goes.
    let mut g = Graph::new();
    g.upsert_pod(&claim_pod("web", "n1"));
    g.upsert_pv(&csi_pv("pv1", Some("claim")));
    assert!(g.reachable("n1", PersistentVolume, "", "pv1"));
    g.remove_pv("pv1");
    assert!(!g.reachable("n1", PersistentVolume, "", "pv1"));
    assert!(!g.reachable("n1", Secret, "secrets", "stage"));
    assert!(g.reachable("n1", PersistentVolumeClaim, "ns", "claim"));
}

#[test]
fn a_claim_shared_by_two_pods_keeps_its_volume_counted_once() {
    let mut g = Graph::new();
    g.upsert_pv(&csi_pv("pv1", Some("claim")));
    g.upsert_pod(&claim_pod("a", "n1"));
    g.upsert_pod(&claim_pod("b", "n1"));
    assert_eq!(g.count("n1", PersistentVolumeClaim, "ns", "claim"), 2);
    assert_eq!(g.count("n1", PersistentVolume, "", "pv1"), 1);
    g.remove_pod("ns", "a");
    assert!(g.reachable("n1", PersistentVolume, "", "pv1"));
    g.remove_pod("ns", "b");
    assert!(!g.reachable("n1", PersistentVolume, "", "pv1"));
    g.remove_pv("pv1");
    assert!(
        g.reach.iter().all(HashMap::is_empty),
        "index left entries behind"
    );
    assert!(g.pvs_by_claim.is_empty());
}

#[test]
fn a_volume_secret_also_named_by_a_pod_survives_either_going() {
    let mut g = Graph::new();
    let spec = json!({"containers": [{"name": "c"}], "volumes": [
        {"name": "d", "persistentVolumeClaim": {"claimName": "claim"}},
        {"name": "s", "secret": {"secretName": "stage"}},
    ]});
    let mut p = pod("web", "n1", spec);
    p["metadata"]["namespace"] = json!("ns");
    g.upsert_pod(&p);
    g.upsert_pv(&pv(
        "pv1",
        Some("claim"),
        json!({"csi": {"driver": "d", "volumeHandle": "h", "nodePublishSecretRef": {"namespace": "ns", "name": "stage"}}}),
    ));
    assert_eq!(g.count("n1", Secret, "ns", "stage"), 2);
    g.remove_pv("pv1");
    assert!(g.reachable("n1", Secret, "ns", "stage"));
}

#[test]
fn a_volume_rebound_to_another_claim_moves_with_it() {
    let mut g = Graph::new();
    g.upsert_pod(&claim_pod("web", "n1"));
    g.upsert_pv(&csi_pv("pv1", Some("claim")));
    g.upsert_pv(&csi_pv("pv1", Some("other")));
    assert!(!g.reachable("n1", PersistentVolume, "", "pv1"));
    assert!(!g.reachable("n1", Secret, "secrets", "stage"));
    // Unbound volumes are not in the graph.
    g.upsert_pv(&csi_pv("pv1", None));
    assert!(g.pvs.is_empty());
}

#[test]
fn in_tree_volume_secrets_default_to_the_claims_namespace() {
    let mut g = Graph::new();
    g.upsert_pod(&claim_pod("web", "n1"));
    g.upsert_pv(&pv(
        "rbd",
        Some("claim"),
        json!({"rbd": {"monitors": ["m"], "image": "i", "secretRef": {"name": "ceph"}}}),
    ));
    assert!(g.reachable("n1", Secret, "ns", "ceph"));
    g.upsert_pv(&pv(
        "rbd",
        Some("claim"),
        json!({"rbd": {"monitors": ["m"], "image": "i", "secretRef": {"name": "ceph", "namespace": "store"}}}),
    ));
    assert!(!g.reachable("n1", Secret, "ns", "ceph"));
    assert!(g.reachable("n1", Secret, "store", "ceph"));
    g.upsert_pv(&pv(
        "az",
        Some("claim"),
        json!({"azureFile": {"secretName": "az", "shareName": "s"}}),
    ));
    assert!(g.reachable("n1", Secret, "ns", "az"));
}
