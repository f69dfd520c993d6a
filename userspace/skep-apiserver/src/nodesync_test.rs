//! Node sync end to end in-process: a real store, the real TLS server, and
//! tonic clients holding node certificates.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use skep_api::{decode::Decoded, registry};
use skep_objects::{Objects, WriteOptions};
use skep_proto::{
    NodeCredentials,
    v1::{Review, WatchEvent, WatchRequest, WriteRequest, watch_event::Type, write_request::Op},
};
use skep_store::{Store, StoreConfig};
use tonic::Streaming;

use crate::{ApiServer, ApiServerConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Cluster {
    objects: Objects,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Result<(Cluster, ApiServer)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::single(dir.path().join("store"))).await?;
    let objects = Objects::new(store.clone());
    let server = ApiServer::bind(
        &ApiServerConfig {
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse()?,
            server_names: Vec::new(),
            service_ranges: crate::ServiceRanges::default(),
            ..ApiServerConfig::default()
        },
        store,
    )
    .await?;
    Ok((
        Cluster {
            objects,
            stop: None,
            _dir: dir,
        },
        server,
    ))
}

impl Cluster {
    fn serve(&mut self, server: ApiServer) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stop = Some(tx);
        tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
    }

    async fn create(&self, obj: Value) -> Result<Value> {
        let info = registry::by_kind(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )
        .ok_or("unknown kind")?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let body = Decoded {
            value: obj,
            duplicates: Vec::new(),
        };
        Ok(self
            .objects
            .create(info, &ns, body, &WriteOptions::by("test"))
            .await?
            .object)
    }
}

impl Cluster {
    /// Replaces core/v1 object `kind` `ns/name` with what `f` makes of it.
    async fn change(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value> {
        self.change_sub(kind, ns, name, "", f).await
    }

    /// [`Self::change`] through `subresource` ("status").
    async fn change_sub(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        subresource: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value> {
        let info = registry::by_kind("v1", kind).ok_or("unknown kind")?;
        let old = self.objects.get(info, ns, name).await?;
        let mut new = old.clone();
        f(&mut new);
        let body = Decoded {
            value: new,
            duplicates: Vec::new(),
        };
        Ok(self
            .objects
            .replace(info, subresource, &old, body, &WriteOptions::by("test"))
            .await?
            .object)
    }
}

fn pod(name: &str, node: Option<&str>, configmap: &str, secret: &str) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": configmap, "key": "a"}}}]}],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}],
        },
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

fn named(kind: &str, name: &str) -> Value {
    let (api_version, extra) = match kind {
        "Service" => ("v1", json!({"spec": {"ports": [{"port": 80}]}})),
        "Secret" => ("v1", json!({"data": {"a": "MQ=="}})),
        _ => ("v1", json!({"data": {"a": "1"}})),
    };
    let mut obj = json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": "default"}});
    if let (Some(obj), Some(extra)) = (obj.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    obj
}

/// (type, kind, name) of an event.
fn describe(e: &WatchEvent) -> (Type, String, String) {
    let obj: Value = serde_json::from_slice(&e.object).unwrap_or_default();
    (
        Type::try_from(e.r#type).unwrap_or(Type::Bookmark),
        e.kind.clone(),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn next(stream: &mut Streaming<WatchEvent>) -> Result<WatchEvent> {
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await??
            .ok_or("stream ended")?;
        if event.r#type != i32::from(Type::Bookmark) {
            return Ok(event);
        }
    }
}

/// The (kind, name)s of a fresh stream's snapshot, namespaces aside, and
/// the revision it is complete at.
async fn snapshot(stream: &mut Streaming<WatchEvent>) -> Result<(BTreeSet<(String, String)>, u64)> {
    let mut snapshot = BTreeSet::new();
    loop {
        let event = next(stream).await?;
        if event.r#type == i32::from(Type::Synced) {
            return Ok((snapshot, event.revision));
        }
        let (t, kind, name) = describe(&event);
        assert_eq!(t, Type::Added);
        if kind != "Namespace" {
            snapshot.insert((kind, name));
        }
    }
}

/// An event as [`describe`] gives it.
fn ev(t: Type, kind: &str, name: &str) -> (Type, String, String) {
    (t, kind.to_owned(), name.to_owned())
}

/// The next `n` events, described.
async fn collect(
    stream: &mut Streaming<WatchEvent>,
    n: usize,
) -> Result<BTreeSet<(Type, String, String)>> {
    let mut got = BTreeSet::new();
    for _ in 0..n {
        got.insert(describe(&next(stream).await?));
    }
    Ok(got)
}

/// What the API server creates itself; every node gets every Service and
/// `EndpointSlice`.
const BUILT_IN: [(&str, &str); 3] = [
    ("Service", "kubernetes"),
    ("Service", "kube-dns"),
    ("EndpointSlice", "kubernetes"),
];

#[tokio::test]
async fn a_node_receives_exactly_what_concerns_it_and_resumes() -> Result<()> {
    let (mut cluster, server) = start().await?;
    let node_a = NodeCredentials::from_kubeconfig(&server.node_kubeconfig("node-a")?)?;
    cluster.serve(server);
    for (kind, name) in [
        ("ConfigMap", "cm-a"),
        ("Secret", "secret-a"),
        ("ConfigMap", "cm-other"),
        ("Secret", "secret-other"),
        ("Service", "web"),
    ] {
        cluster.create(named(kind, name)).await?;
    }
    cluster
        .create(pod("pod-a", Some("node-a"), "cm-a", "secret-a"))
        .await?;
    cluster
        .create(pod("pod-b", Some("node-b"), "cm-other", "secret-other"))
        .await?;
    cluster
        .create(pod("pod-pending", None, "cm-other", "secret-other"))
        .await?;

    let mut client = node_a.client()?;
    let mut stream = client
        .watch(WatchRequest {
            node_name: "node-a".into(),
            from_revision: 0,
        })
        .await?
        .into_inner();
    let (snapshot, synced_at) = snapshot(&mut stream).await?;
    // Every pod's policy facts come too, its own pods' in full.
    let expected: BTreeSet<(String, String)> = [
        ("ConfigMap", "cm-a"),
        ("Pod", "pod-a"),
        ("PodPeer", "pod-a"),
        ("PodPeer", "pod-b"),
        ("PodPeer", "pod-pending"),
        ("Secret", "secret-a"),
        ("Service", "web"),
    ]
    .iter()
    .chain(&BUILT_IN)
    .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
    .collect();
    assert_eq!(snapshot, expected);
    assert!(synced_at > 0);

    // The pending pod is bound here: it arrives with what it references.
    let binding = Decoded {
        value: json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "pod-pending", "namespace": "default"},
            "target": {"kind": "Node", "name": "node-a"}}),
        duplicates: Vec::new(),
    };
    cluster
        .objects
        .bind(
            "default",
            "pod-pending",
            &binding,
            skep_api::admission::now(),
        )
        .await?;
    let got = collect(&mut stream, 4).await?;
    assert_eq!(
        got,
        [
            (Type::Added, "Pod".to_owned(), "pod-pending".to_owned()),
            (Type::Added, "ConfigMap".to_owned(), "cm-other".to_owned()),
            (Type::Added, "Secret".to_owned(), "secret-other".to_owned()),
            ev(Type::Modified, "PodPeer", "pod-pending"),
        ]
        .into_iter()
        .collect()
    );
    let last = next_revision_after_write(&cluster, &mut stream).await?;

    // The node removes its stopped pod; what only it referenced goes too.
    client
        .write(WriteRequest {
            op: Op::Delete.into(),
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "pod-a".into(),
            subresource: String::new(),
            object: serde_json::to_vec(&json!({"gracePeriodSeconds": 0}))?,
        })
        .await?;
    let got = collect(&mut stream, 4).await?;
    let gone = [
        ("PodPeer", "pod-a"),
        ("Pod", "pod-a"),
        ("ConfigMap", "cm-a"),
        ("Secret", "secret-a"),
    ];
    assert!(
        gone.iter()
            .all(|(k, n)| got.contains(&ev(Type::Deleted, k, n))),
        "{got:?}"
    );
    drop(stream);
    resume_replays_what_came_after(&mut client, last).await
}

/// Resuming node-a's stream from `last` (just before the Service touch
/// and pod-a's delete) replays exactly what came after it.
async fn resume_replays_what_came_after(
    client: &mut skep_proto::v1::node_sync_client::NodeSyncClient<tonic::transport::Channel>,
    last: u64,
) -> Result<()> {
    let mut resumed = client
        .watch(WatchRequest {
            node_name: "node-a".into(),
            from_revision: last,
        })
        .await?
        .into_inner();
    let first = describe(&next(&mut resumed).await?);
    assert_eq!(
        first,
        (Type::Modified, "Service".to_owned(), "web".to_owned())
    );
    let replayed = collect(&mut resumed, 4).await?;
    assert!(replayed.contains(&(Type::Deleted, "Pod".to_owned(), "pod-a".to_owned())));
    assert!(replayed.contains(&ev(Type::Deleted, "PodPeer", "pod-a")));
    Ok(())
}

/// Touches the service (an event every node gets) and returns the revision
/// the stream had reached just before it.
async fn next_revision_after_write(
    cluster: &Cluster,
    stream: &mut Streaming<WatchEvent>,
) -> Result<u64> {
    let info = registry::by_kind("v1", "Service").ok_or("no service kind")?;
    let old = cluster.objects.get(info, "default", "web").await?;
    let before = skep_api::object::resource_version(&old).ok_or("no rv")?;
    let mut changed = old.clone();
    changed["metadata"]["labels"] = json!({"touched": "yes"});
    let body = Decoded {
        value: changed,
        duplicates: Vec::new(),
    };
    cluster
        .objects
        .replace(info, "", &old, body, &WriteOptions::by("test"))
        .await?;
    let event = next(stream).await?;
    assert_eq!(
        describe(&event),
        (Type::Modified, "Service".to_owned(), "web".to_owned())
    );
    // Everything up to the write is what a node that stopped here has seen.
    Ok(event.revision.max(before) - 1)
}

#[tokio::test]
async fn a_node_may_touch_only_what_is_its_own() -> Result<()> {
    let (mut cluster, server) = start().await?;
    let node_a = NodeCredentials::from_kubeconfig(&server.node_kubeconfig("node-a")?)?;
    let admin = NodeCredentials::from_kubeconfig(server.kubeconfig())?;
    cluster.serve(server);
    cluster
        .create(pod("pod-b", Some("node-b"), "x", "y"))
        .await?;
    let mut client = node_a.client()?;

    let status = |name: &str| WriteRequest {
        op: Op::Update.into(),
        kind: "Pod".into(),
        namespace: "default".into(),
        name: name.into(),
        subresource: "status".into(),
        object: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "status": {"phase": "Running"}}))
        .unwrap_or_default(),
    };
    let err = client
        .write(status("pod-b"))
        .await
        .err()
        .ok_or("wrote another node's pod")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let err = client
        .watch(WatchRequest {
            node_name: "node-b".into(),
            from_revision: 0,
        })
        .await
        .err()
        .ok_or("watched as another node")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Registering its own Node works; another's does not.
    let node = |name: &str| WriteRequest {
        op: Op::Create.into(),
        kind: "Node".into(),
        namespace: String::new(),
        name: name.into(),
        subresource: String::new(),
        object: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name}}))
        .unwrap_or_default(),
    };
    client.write(node("node-a")).await?;
    let err = client
        .write(node("node-b"))
        .await
        .err()
        .ok_or("registered another node")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The admin is a user, not a node.
    let err = admin
        .client()?
        .watch(WatchRequest {
            node_name: "node-a".into(),
            from_revision: 0,
        })
        .await
        .err()
        .ok_or("a user watched as a node")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    Ok(())
}

#[tokio::test]
async fn a_node_asks_about_its_ports_callers() -> Result<()> {
    let (mut cluster, server) = start().await?;
    let node_a = NodeCredentials::from_kubeconfig(&server.node_kubeconfig("node-a")?)?;
    let admin = NodeCredentials::from_kubeconfig(server.kubeconfig())?;
    cluster.serve(server);
    let mut client = node_a.client()?;
    let review = |v: Value| Review {
        object: serde_json::to_vec(&v).unwrap_or_default(),
    };
    let access = |user: &str| {
        review(
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:authenticated"],
                "resourceAttributes": {"verb": "get", "resource": "nodes",
                    "subresource": "proxy", "name": "node-a"}}}),
        )
    };
    // The bootstrap binding lets the API server's kubelet client in;
    // someone else is not.
    let answer: Value = serde_json::from_slice(
        &client
            .review_access(access(skep_proto::KUBELET_CLIENT_USER))
            .await?
            .into_inner()
            .object,
    )?;
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    let answer: Value = serde_json::from_slice(
        &client
            .review_access(access("jane"))
            .await?
            .into_inner()
            .object,
    )?;
    assert_eq!(answer["status"], json!({"allowed": false}));
    // An invalid review is refused as REST refuses it.
    let err = client
        .review_access(review(json!({"spec": {"user": "jane"}})))
        .await
        .err()
        .ok_or("answered an invalid review")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let tokens = |token: &str| {
        review(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token}}),
        )
    };
    let answer: Value = serde_json::from_slice(
        &client
            .review_token(tokens("not-a-token"))
            .await?
            .into_inner()
            .object,
    )?;
    assert_eq!(answer["status"]["error"], "invalid bearer token");
    assert_ne!(answer["status"]["authenticated"], true);

    // Only nodes ask here.
    let err = admin
        .client()?
        .review_token(tokens("x"))
        .await
        .err()
        .ok_or("a user asked as a node")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    Ok(())
}

/// Replaces `name`'s Node (or its status) with what `change` makes of it.
async fn change_node(
    cluster: &Cluster,
    name: &str,
    subresource: &str,
    change: impl FnOnce(&mut Value),
) -> Result<()> {
    let info = registry::by_kind("v1", "Node").ok_or("no node kind")?;
    let old = cluster.objects.get(info, "", name).await?;
    let mut new = old.clone();
    change(&mut new);
    let body = Decoded {
        value: new,
        duplicates: Vec::new(),
    };
    cluster
        .objects
        .replace(info, subresource, &old, body, &WriteOptions::by("test"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_node_sees_other_nodes_when_routing_to_them_changes() -> Result<()> {
    let (mut cluster, server) = start().await?;
    let node_a = NodeCredentials::from_kubeconfig(&server.node_kubeconfig("node-a")?)?;
    cluster.serve(server);
    cluster.create(named("Service", "web")).await?;
    for name in ["node-a", "node-b"] {
        cluster
            .create(
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.2"}]}}),
            )
            .await?;
    }
    let mut client = node_a.client()?;
    let mut stream = client
        .watch(WatchRequest {
            node_name: "node-a".into(),
            from_revision: 0,
        })
        .await?
        .into_inner();
    let (snapshot, _) = snapshot(&mut stream).await?;
    assert!(snapshot.contains(&("Node".to_owned(), "node-a".to_owned())));
    assert!(snapshot.contains(&("Node".to_owned(), "node-b".to_owned())));

    // Another node's heartbeat is not sent: the next event is the service's.
    change_node(&cluster, "node-b", "status", |n| {
        n["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    })
    .await?;
    next_revision_after_write(&cluster, &mut stream).await?;

    // Its pod CIDR is; so is every change of the node's own Node.
    change_node(&cluster, "node-b", "", |n| {
        n["spec"]["podCIDR"] = json!("10.244.1.0/24");
    })
    .await?;
    let event = next(&mut stream).await?;
    assert_eq!(
        describe(&event),
        (Type::Modified, "Node".to_owned(), "node-b".to_owned())
    );
    let obj: Value = serde_json::from_slice(&event.object)?;
    assert_eq!(obj["spec"]["podCIDR"], "10.244.1.0/24");
    change_node(&cluster, "node-a", "status", |n| {
        n["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    })
    .await?;
    assert_eq!(
        describe(&next(&mut stream).await?),
        (Type::Modified, "Node".to_owned(), "node-a".to_owned())
    );

    // A node that leaves is deleted from every other node's view.
    let info = registry::by_kind("v1", "Node").ok_or("no node kind")?;
    cluster
        .objects
        .delete(
            info,
            "",
            "node-b",
            &skep_api::delete::DeleteOptions::default(),
            false,
        )
        .await?;
    assert_eq!(
        describe(&next(&mut stream).await?),
        (Type::Deleted, "Node".to_owned(), "node-b".to_owned())
    );
    Ok(())
}

#[tokio::test]
async fn a_node_receives_its_pods_claims_and_the_volumes_they_are_bound_to() -> Result<()> {
    let (mut cluster, server) = start().await?;
    let node_a = NodeCredentials::from_kubeconfig(&server.node_kubeconfig("node-a")?)?;
    cluster.serve(server);
    for name in ["pv-data", "pv-other"] {
        cluster
            .create(json!({"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": format!("/tmp/{name}")}}}))
            .await?;
    }
    for name in ["data", "other"] {
        cluster
            .create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}))
            .await?;
    }
    let mut pod = pod("pod-a", Some("node-a"), "cm", "sec");
    pod["spec"]["volumes"] = json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]);
    cluster.create(pod).await?;

    let mut client = node_a.client()?;
    let mut stream = client
        .watch(WatchRequest {
            node_name: "node-a".into(),
            from_revision: 0,
        })
        .await?
        .into_inner();
    let (snapshot, _) = snapshot(&mut stream).await?;
    let kinds: BTreeSet<(String, String)> = snapshot
        .into_iter()
        .filter(|(k, _)| k.starts_with("Persistent"))
        .collect();
    // Unbound: the claim, not yet a volume.
    assert_eq!(
        kinds,
        [("PersistentVolumeClaim".to_owned(), "data".to_owned())]
            .into_iter()
            .collect()
    );

    // Binding the claim brings its volume.
    let written = cluster
        .change("PersistentVolumeClaim", "default", "data", |c| {
            c["spec"]["volumeName"] = json!("pv-data");
        })
        .await?;
    let got = collect(&mut stream, 2).await?;
    assert!(got.contains(&ev(Type::Modified, "PersistentVolumeClaim", "data")));
    assert!(got.contains(&ev(Type::Added, "PersistentVolume", "pv-data")));

    // A resumed stream knows the binding: a change to the volume arrives.
    drop(stream);
    let from = skep_api::object::resource_version(&written).ok_or("no rv")?;
    cluster
        .change("PersistentVolume", "", "pv-data", |v| {
            v["metadata"]["labels"] = json!({"touched": "yes"});
        })
        .await?;
    let mut resumed = client
        .watch(WatchRequest {
            node_name: "node-a".into(),
            from_revision: from,
        })
        .await?
        .into_inner();
    assert_eq!(
        describe(&next(&mut resumed).await?),
        ev(Type::Modified, "PersistentVolume", "pv-data")
    );

    // The pod goes: its claim and the claim's volume go with it.
    client
        .write(WriteRequest {
            op: Op::Delete.into(),
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "pod-a".into(),
            subresource: String::new(),
            object: serde_json::to_vec(&json!({"gracePeriodSeconds": 0}))?,
        })
        .await?;
    // (The pod's env also names ConfigMap "cm", which does not exist.)
    let got = collect(&mut resumed, 5).await?;
    for (kind, name) in [
        ("ConfigMap", "cm"),
        ("Pod", "pod-a"),
        ("PodPeer", "pod-a"),
        ("PersistentVolumeClaim", "data"),
        ("PersistentVolume", "pv-data"),
    ] {
        assert!(got.contains(&ev(Type::Deleted, kind, name)), "{got:?}");
    }
    Ok(())
}

#[tokio::test]
async fn every_node_gets_every_pods_policy_facts_when_they_change() -> Result<()> {
    let (mut cluster, server) = start().await?;
    let node_a = NodeCredentials::from_kubeconfig(&server.node_kubeconfig("node-a")?)?;
    cluster.serve(server);
    cluster.create(named("Service", "web")).await?;
    let mut other = pod("pod-b", Some("node-b"), "cm-b", "secret-b");
    other["metadata"]["labels"] = json!({"app": "db"});
    other["spec"]["containers"][0]["ports"] = json!([{"name": "sql", "containerPort": 5432}]);
    cluster.create(other).await?;

    let mut client = node_a.client()?;
    let mut stream = client
        .watch(WatchRequest {
            node_name: "node-a".into(),
            from_revision: 0,
        })
        .await?
        .into_inner();
    let mut facts = None;
    loop {
        let event = next(&mut stream).await?;
        if event.r#type == i32::from(Type::Synced) {
            break;
        }
        let (_, kind, name) = describe(&event);
        // Another node's pod: its facts, not the pod nor what it references.
        assert!(
            kind != "Pod" && kind != "ConfigMap" && kind != "Secret",
            "{kind} {name}"
        );
        if kind == "PodPeer" {
            facts = Some(serde_json::from_slice::<Value>(&event.object)?);
        }
    }
    let facts = facts.ok_or("no PodPeer for pod-b")?;
    assert_eq!(facts["metadata"]["labels"], json!({"app": "db"}));
    assert_eq!(facts["spec"]["nodeName"], "node-b");
    assert_eq!(
        facts["spec"]["containers"],
        json!([{"name": "c", "ports": [{"name": "sql", "containerPort": 5432, "protocol": "TCP"}]}])
    );
    // Nothing else of the pod travels: no env, no volumes, no image.
    assert_eq!(facts["spec"].as_object().map(serde_json::Map::len), Some(2));
    assert!(facts["metadata"]["uid"].is_string());

    // A status write that moves no fact (conditions) sends nothing.
    cluster
        .change_sub("Pod", "default", "pod-b", "status", |p| {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        })
        .await?;
    next_revision_after_write(&cluster, &mut stream).await?;

    // Its address and its labels do.
    cluster
        .change_sub("Pod", "default", "pod-b", "status", |p| {
            p["status"]["podIP"] = json!("10.244.1.7");
            p["status"]["podIPs"] = json!([{"ip": "10.244.1.7"}]);
        })
        .await?;
    let event = next(&mut stream).await?;
    assert_eq!(describe(&event), ev(Type::Modified, "PodPeer", "pod-b"));
    let facts: Value = serde_json::from_slice(&event.object)?;
    assert_eq!(facts["status"]["podIP"], "10.244.1.7");
    cluster
        .change("Pod", "default", "pod-b", |p| {
            p["metadata"]["labels"] = json!({"app": "web"});
        })
        .await?;
    let event = next(&mut stream).await?;
    assert_eq!(describe(&event), ev(Type::Modified, "PodPeer", "pod-b"));
    let facts: Value = serde_json::from_slice(&event.object)?;
    assert_eq!(facts["metadata"]["labels"], json!({"app": "web"}));

    // A pod that goes is deleted from every node's peers.
    let info = registry::by_kind("v1", "Pod").ok_or("no pod kind")?;
    cluster
        .objects
        .delete(
            info,
            "default",
            "pod-b",
            &skep_api::delete::DeleteOptions::from_value(Some(&json!({"gracePeriodSeconds": 0})))?,
            false,
        )
        .await?;
    assert_eq!(
        describe(&next(&mut stream).await?),
        ev(Type::Deleted, "PodPeer", "pod-b")
    );
    Ok(())
}
