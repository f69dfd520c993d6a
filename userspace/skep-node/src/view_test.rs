use serde_json::{Value, json};
use tokio::sync::watch;

use super::*;

/// A synced writer for node `n1` and receivers of every concern's signal,
/// with the snapshot's wake-up already seen.
fn synced() -> (ViewWriter, Woken) {
    let mut writer = ViewWriter::new("n1");
    writer.begin_snapshot();
    assert!(writer.synced(1));
    let mut woken = Woken::new(&writer.reader());
    assert_eq!(woken.take(), Concern::ALL.to_vec());
    (writer, woken)
}

/// Every concern's receiver.
struct Woken(Vec<(Concern, watch::Receiver<u64>)>);

impl Woken {
    fn new(reader: &ViewReader) -> Self {
        Self(
            Concern::ALL
                .into_iter()
                .map(|c| (c, reader.changes(c)))
                .collect(),
        )
    }

    /// The concerns signalled since the last call.
    fn take(&mut self) -> Vec<Concern> {
        let mut out = Vec::new();
        for (concern, rx) in &mut self.0 {
            if rx.has_changed().unwrap_or(false) {
                out.push(*concern);
            }
            rx.borrow_and_update();
        }
        out
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn put(w: &mut ViewWriter, rev: u64, kind: &str, v: &Value) -> Applied {
    w.apply(rev, kind, false, &bytes(v))
}

fn del(w: &mut ViewWriter, rev: u64, kind: &str, v: &Value) -> Applied {
    w.apply(rev, kind, true, &bytes(v))
}

fn pod(rv: &str, labels: &Value, status: &Value) -> Value {
    json!({
        "metadata": {"name": "p", "namespace": "a", "uid": "u1", "resourceVersion": rv, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": status,
    })
}

fn running(ip: &str, restarts: i32) -> Value {
    json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": true,
            "restartCount": restarts}]})
}

#[test]
fn a_local_pods_own_status_echo_wakes_no_concern_but_is_stored() {
    let (mut w, mut woken) = synced();
    let reader = w.reader();
    let applied = put(
        &mut w,
        2,
        "Pod",
        &pod("2", &json!({"app": "x"}), &json!({})),
    );
    assert_eq!(applied.local_pod.as_deref(), Some("u1"));
    assert_eq!(woken.take(), [Concern::LocalPods]);

    // The worker's status writes come back down the stream.
    let applied = put(
        &mut w,
        3,
        "Pod",
        &pod("3", &json!({"app": "x"}), &running("10.244.1.5", 0)),
    );
    assert_eq!(applied.touched, Touched::NONE);
    assert_eq!(applied.local_pod.as_deref(), Some("u1"));
    put(
        &mut w,
        4,
        "Pod",
        &pod("4", &json!({"app": "x"}), &running("10.244.1.5", 1)),
    );
    assert_eq!(woken.take(), []);
    // Readers still see the newest copy (a status write names its version).
    let pods = reader.pods();
    let got = pods
        .get("u1")
        .and_then(|p| p.metadata.resource_version.clone());
    assert_eq!(got.as_deref(), Some("4"));

    // A label or an annotation is the worker's business (downward API).
    put(
        &mut w,
        5,
        "Pod",
        &pod("5", &json!({"app": "y"}), &running("10.244.1.5", 1)),
    );
    assert_eq!(woken.take(), [Concern::LocalPods]);
    del(
        &mut w,
        6,
        "Pod",
        &pod("6", &json!({"app": "y"}), &running("10.244.1.5", 1)),
    );
    assert_eq!(woken.take(), [Concern::LocalPods]);
    assert!(reader.pods().is_empty());
}

#[test]
fn only_a_change_of_a_pods_policy_facts_wakes_policy() {
    let (mut w, mut woken) = synced();
    let peer = |rv: &str, labels: &Value, status: &Value| {
        let mut p = pod(rv, labels, status);
        p["spec"]["nodeName"] = json!("n2");
        p
    };
    // Without an address policy cannot judge the pod yet.
    put(
        &mut w,
        2,
        "PodPeer",
        &peer("2", &json!({"app": "x"}), &json!({})),
    );
    assert_eq!(woken.take(), []);
    put(
        &mut w,
        3,
        "PodPeer",
        &peer("3", &json!({"app": "x"}), &running("10.244.2.5", 0)),
    );
    assert_eq!(woken.take(), [Concern::Policy]);
    // A restart, readiness, a new resourceVersion: no policy fact.
    put(
        &mut w,
        4,
        "PodPeer",
        &peer("4", &json!({"app": "x"}), &running("10.244.2.5", 3)),
    );
    assert_eq!(woken.take(), []);
    put(
        &mut w,
        5,
        "PodPeer",
        &peer("5", &json!({"app": "y"}), &running("10.244.2.5", 3)),
    );
    assert_eq!(woken.take(), [Concern::Policy]);
    let finished = json!({"phase": "Succeeded", "podIP": "10.244.2.5"});
    put(
        &mut w,
        6,
        "PodPeer",
        &peer("6", &json!({"app": "y"}), &finished),
    );
    assert_eq!(woken.take(), [Concern::Policy]);
    // Gone, but policy had already let it go.
    del(
        &mut w,
        7,
        "PodPeer",
        &peer("7", &json!({"app": "y"}), &finished),
    );
    assert_eq!(woken.take(), []);
    assert!(w.reader().snapshot().peer_pods.is_empty());
}

#[test]
fn heartbeats_move_no_route_but_keep_the_own_copy_fresh() {
    let (mut w, mut woken) = synced();
    let reader = w.reader();
    let node = |name: &str, rv: &str, cidr: &str, beat: &str| {
        json!({"metadata": {"name": name, "resourceVersion": rv},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.2"}],
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": beat}]}})
    };
    put(
        &mut w,
        2,
        "Node",
        &node("n1", "2", "10.244.1.0/24", "2024-01-01T00:00:00Z"),
    );
    put(
        &mut w,
        3,
        "Node",
        &node("n2", "3", "10.244.2.0/24", "2024-01-01T00:00:00Z"),
    );
    assert_eq!(woken.take(), [Concern::Nodes]);
    put(
        &mut w,
        4,
        "Node",
        &node("n1", "4", "10.244.1.0/24", "2024-01-01T00:00:10Z"),
    );
    put(
        &mut w,
        5,
        "Node",
        &node("n2", "5", "10.244.2.0/24", "2024-01-01T00:00:10Z"),
    );
    assert_eq!(woken.take(), []);
    let own = reader.node();
    assert_eq!(
        own.and_then(|n| n.metadata.resource_version.clone())
            .as_deref(),
        Some("4")
    );
    put(
        &mut w,
        6,
        "Node",
        &node("n2", "6", "10.244.9.0/24", "2024-01-01T00:00:10Z"),
    );
    assert_eq!(woken.take(), [Concern::Nodes]);
    del(
        &mut w,
        7,
        "Node",
        &node("n2", "7", "10.244.9.0/24", "2024-01-01T00:00:10Z"),
    );
    assert_eq!(woken.take(), [Concern::Nodes]);
    assert_eq!(reader.snapshot().nodes.keys().collect::<Vec<_>>(), ["n1"]);
    assert!(reader.node().is_some());
}

#[test]
fn each_cluster_kind_wakes_its_own_concern_and_only_on_what_it_reads() {
    let (mut w, mut woken) = synced();
    let svc = |rv: &str, port: i32, status: &Value| {
        json!({"metadata": {"name": "web", "namespace": "a", "resourceVersion": rv},
            "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": port}]}, "status": status})
    };
    put(&mut w, 2, "Service", &svc("2", 80, &json!({})));
    assert_eq!(woken.take(), [Concern::Services]);
    put(
        &mut w,
        3,
        "Service",
        &svc("3", 80, &json!({"loadBalancer": {}})),
    );
    assert_eq!(woken.take(), []);
    put(&mut w, 4, "Service", &svc("4", 81, &json!({})));
    assert_eq!(woken.take(), [Concern::Services]);

    let slice = |rv: &str, ip: &str| {
        json!({"metadata": {"name": "web-x", "namespace": "a", "resourceVersion": rv,
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip]}]})
    };
    put(&mut w, 5, "EndpointSlice", &slice("5", "10.244.1.5"));
    assert_eq!(woken.take(), [Concern::Services]);
    put(&mut w, 6, "EndpointSlice", &slice("6", "10.244.1.5"));
    assert_eq!(woken.take(), []);
    put(&mut w, 7, "EndpointSlice", &slice("7", "10.244.1.6"));
    assert_eq!(woken.take(), [Concern::Services]);

    let ns = |rv: &str, labels: &Value, phase: &str| {
        json!({"metadata": {"name": "a", "resourceVersion": rv, "labels": labels},
            "status": {"phase": phase}})
    };
    put(
        &mut w,
        8,
        "Namespace",
        &ns("8", &json!({"t": "1"}), "Active"),
    );
    assert_eq!(woken.take(), [Concern::Policy]);
    put(
        &mut w,
        9,
        "Namespace",
        &ns("9", &json!({"t": "1"}), "Terminating"),
    );
    assert_eq!(woken.take(), []);
    put(
        &mut w,
        10,
        "Namespace",
        &ns("10", &json!({"t": "2"}), "Terminating"),
    );
    assert_eq!(woken.take(), [Concern::Policy]);

    let np = json!({"metadata": {"name": "deny", "namespace": "a"}, "spec": {"podSelector": {}}});
    put(&mut w, 11, "NetworkPolicy", &np);
    assert_eq!(woken.take(), [Concern::Policy]);
    del(&mut w, 12, "NetworkPolicy", &np);
    assert_eq!(woken.take(), [Concern::Policy]);
    // Deleting what is not there changes nothing.
    del(&mut w, 13, "NetworkPolicy", &np);
    assert_eq!(woken.take(), []);

    let cm = |rv: &str, v: &str| json!({"metadata": {"name": "c", "namespace": "a", "resourceVersion": rv}, "data": {"k": v}});
    put(&mut w, 14, "ConfigMap", &cm("14", "v"));
    assert_eq!(woken.take(), [Concern::Sources]);
    put(&mut w, 15, "ConfigMap", &cm("15", "v"));
    assert_eq!(woken.take(), []);
    put(&mut w, 16, "ConfigMap", &cm("16", "w"));
    assert_eq!(woken.take(), [Concern::Sources]);

    // What does not parse, or is of no kind the view keeps, changes nothing.
    assert_eq!(
        w.apply(17, "Service", false, b"not json"),
        Applied::default()
    );
    put(&mut w, 18, "Lease", &json!({"metadata": {"name": "x"}}));
    assert_eq!(woken.take(), []);
}

#[test]
fn a_snapshot_is_swapped_in_whole_and_wakes_everything_a_resume_nothing() {
    let mut w = ViewWriter::new("n1");
    let reader = w.reader();
    let mut woken = Woken::new(&reader);
    assert!(!reader.is_ready());
    w.begin_snapshot();
    let applied = put(&mut w, 5, "Pod", &pod("5", &json!({}), &json!({})));
    assert_eq!(applied, Applied::default());
    assert!(reader.pods().is_empty(), "a half snapshot is not shown");
    assert_eq!(woken.take(), []);
    assert!(w.synced(5));
    assert!(reader.is_ready());
    assert!(reader.pods().contains_key("u1"));
    assert_eq!(woken.take(), Concern::ALL.to_vec());
    assert_eq!(*reader.changes(Concern::Policy).borrow(), 5);
    // A resumed stream's Synced: every event already said what it moved.
    assert!(!w.synced(9));
    assert_eq!(woken.take(), []);
}

#[test]
fn snapshots_share_objects_and_the_writer_copies_a_map_only_when_one_is_held() {
    let (mut w, _woken) = synced();
    let reader = w.reader();
    let svc = |name: &str| json!({"metadata": {"name": name, "namespace": "a"}, "spec": {"ports": [{"port": 80}]}});
    put(&mut w, 2, "Service", &svc("one"));
    let map_before = Arc::as_ptr(&reader.snapshot().services);
    put(&mut w, 3, "Service", &svc("two"));
    // No snapshot was held: the map was written in place.
    assert_eq!(Arc::as_ptr(&reader.snapshot().services), map_before);

    let held = reader.snapshot();
    put(&mut w, 4, "Service", &svc("three"));
    let now = reader.snapshot();
    assert_eq!(held.services.len(), 2, "a snapshot does not move");
    assert_eq!(now.services.len(), 3);
    let key = ("a".to_owned(), "one".to_owned());
    let (Some(a), Some(b)) = (held.services.get(&key), now.services.get(&key)) else {
        panic!("service one missing");
    };
    assert!(Arc::ptr_eq(a, b), "the copy shares the objects");
    // Maps of other kinds were not copied at all.
    assert!(Arc::ptr_eq(&held.pods, &now.pods));
}

#[test]
fn the_own_node_is_kept_apart_and_sources_are_per_namespace() {
    let mut view = View::default();
    let n1 = br#"{"metadata":{"name":"n1"},"spec":{"podCIDR":"10.244.1.0/24"}}"#;
    let n2 = br#"{"metadata":{"name":"n2"},"spec":{"podCIDR":"10.244.2.0/24"}}"#;
    view.apply("n1", "Node", false, n1);
    view.apply("n1", "Node", false, n2);
    assert_eq!(
        view.node.as_ref().and_then(|n| n.metadata.name.as_deref()),
        Some("n1")
    );
    assert_eq!(view.nodes.len(), 2);

    view.apply(
        "n1",
        "ConfigMap",
        false,
        br#"{"metadata":{"name":"c","namespace":"a"},"data":{"k":"v"}}"#,
    );
    view.apply(
        "n1",
        "ConfigMap",
        false,
        br#"{"metadata":{"name":"c","namespace":"b"}}"#,
    );
    view.apply(
        "n1",
        "PersistentVolumeClaim",
        false,
        br#"{"metadata":{"name":"data","namespace":"a"},"spec":{"volumeName":"pv1"}}"#,
    );
    view.apply(
        "n1",
        "PersistentVolume",
        false,
        br#"{"metadata":{"name":"pv1"},"spec":{"hostPath":{"path":"/srv"}}}"#,
    );
    assert_eq!(view.sources("a").config_maps.len(), 1);
    assert_eq!(view.sources("a").claims.len(), 1);
    assert!(view.sources("b").claims.is_empty());
    assert!(view.sources("a").volumes.contains_key("pv1"));
    let applied = view.apply(
        "n1",
        "PersistentVolume",
        true,
        br#"{"metadata":{"name":"pv1"}}"#,
    );
    assert!(applied.touched.contains(Concern::Sources));
    assert!(view.volumes.is_empty());
}
