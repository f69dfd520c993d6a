use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::authorizer::{NODE_USER_PREFIX, NODES_GROUP};

#[derive(Default)]
struct Store {
    pods: HashMap<(String, String), PodFacts>,
    nodes: HashMap<String, String>,
}

impl Lookup for Store {
    fn pod(&self, namespace: &str, name: &str) -> Option<PodFacts> {
        self.pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
    fn node_uid(&self, name: &str) -> Option<String> {
        self.nodes.get(name).cloned()
    }
}

fn store() -> Store {
    let mut s = Store::default();
    for (name, node) in [("mine", "n1"), ("theirs", "n2")] {
        s.pods.insert(
            ("ns".to_owned(), name.to_owned()),
            PodFacts::of(
                &json!({"metadata": {"uid": format!("uid-{name}")}, "spec": {"nodeName": node}}),
            ),
        );
    }
    s.nodes.insert("n1".to_owned(), "node-uid".to_owned());
    s
}

fn n1() -> UserInfo {
    UserInfo::new(format!("{NODE_USER_PREFIX}n1"), &[NODES_GROUP])
}

struct Req {
    user: UserInfo,
    operation: Operation,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    namespace: &'static str,
    name: &'static str,
    object: Option<Value>,
    old_object: Option<Value>,
}

fn req(
    operation: Operation,
    resource: &'static str,
    subresource: &'static str,
    name: &'static str,
) -> Req {
    Req {
        user: n1(),
        operation,
        group: "",
        resource,
        subresource,
        namespace: "ns",
        name,
        object: None,
        old_object: None,
    }
}

impl Req {
    fn group(mut self, group: &'static str) -> Self {
        self.group = group;
        self
    }
    fn namespace(mut self, ns: &'static str) -> Self {
        self.namespace = ns;
        self
    }
    fn object(mut self, o: Value) -> Self {
        self.object = Some(o);
        self
    }
    fn old(mut self, o: Value) -> Self {
        self.old_object = Some(o);
        self
    }
    fn run(&self) -> Result<(), AdmissionError> {
        admit(
            &AdmissionRequest {
                user: &self.user,
                operation: self.operation,
                group: self.group,
                resource: self.resource,
                subresource: self.subresource,
                namespace: self.namespace,
                name: self.name,
                object: self.object.as_ref(),
                old_object: self.old_object.as_ref(),
            },
            &store(),
        )
    }
    #[track_caller]
    fn ok(&self) {
        assert_eq!(self.run(), Ok(()));
    }
    #[track_caller]
    fn forbidden(&self, message: &str) {
        match self.run() {
            Err(AdmissionError::Forbidden(f)) => assert_eq!(f.message, message),
            other => panic!("expected Forbidden {message:?}, got {other:?}"),
        }
    }
}

#[test]
fn only_nodes_are_restricted() {
    let mut r = req(Operation::Delete, "pods", "", "theirs");
    r.user = UserInfo::new("jane", &["system:authenticated"]);
    r.ok();
    let mut r = req(Operation::Delete, "pods", "", "theirs");
    r.user = UserInfo::new("system:node:", &[NODES_GROUP]);
    r.forbidden(
        "pods \"theirs\" is forbidden: could not determine node from user \"system:node:\"",
    );
    // CONNECT is not handled, and other resources pass.
    req(Operation::Connect, "pods", "exec", "theirs").ok();
    req(Operation::Create, "events", "", "e")
        .object(json!({}))
        .ok();
    req(Operation::Update, "configmaps", "", "x").ok();
}

#[test]
fn pods_bound_to_it_may_be_deleted() {
    req(Operation::Delete, "pods", "", "mine").ok();
    req(Operation::Delete, "pods", "", "theirs").forbidden(
        "pods \"theirs\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself",
    );
    let err = req(Operation::Delete, "pods", "", "gone").run();
    assert_eq!(
        err,
        Err(AdmissionError::NotFound {
            resource: "pod",
            name: "gone".to_owned()
        })
    );
    assert_eq!(
        err.expect_err("refused").to_string(),
        "pod \"gone\" not found"
    );
    req(Operation::Update, "pods", "", "mine").forbidden(
        "pods \"mine\" is forbidden: unexpected operation \"UPDATE\", node \"n1\" can only create and delete mirror pods",
    );
}

fn mirror_pod() -> Value {
    json!({
        "metadata": {
            "name": "static-web",
            "annotations": {"kubernetes.io/config.mirror": "hash"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid", "controller": true}],
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
    })
}

#[test]
fn pod_creates_get_upstreams_messages_then_skeps_refusal() {
    let create = |pod: Value| req(Operation::Create, "pods", "", "static-web").object(pod);
    let prefix = "pods \"static-web\" is forbidden: ";
    let mut p = mirror_pod();
    p["metadata"]["annotations"] = json!({});
    create(p).forbidden(&format!(
        "{prefix}pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
    ));
    let mut p = mirror_pod();
    p["spec"]["nodeName"] = json!("n2");
    create(p).forbidden(&format!(
        "{prefix}node \"n1\" can only create pods with spec.nodeName set to itself"
    ));
    let mut p = mirror_pod();
    p["metadata"]["ownerReferences"] = json!([]);
    create(p).forbidden(&format!(
        "{prefix}node \"n1\" can only create pods with an owner reference set to itself"
    ));
    let mut p = mirror_pod();
    p["metadata"]["ownerReferences"][0]["controller"] = json!(false);
    create(p).forbidden(&format!(
        "{prefix}node \"n1\" can only create pods with a controller owner reference set to itself"
    ));
    let mut p = mirror_pod();
    p["metadata"]["ownerReferences"][0]["uid"] = json!("stale");
    create(p).forbidden(&format!(
        "{prefix}node n1 UID mismatch: expected stale got node-uid"
    ));
    let mut p = mirror_pod();
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
    create(p).forbidden(&format!(
        "{prefix}node \"n1\" can not create pods that reference secrets"
    ));
    let mut p = mirror_pod();
    p["spec"]["serviceAccountName"] = json!("default");
    create(p).forbidden(&format!(
        "{prefix}node \"n1\" can not create pods that reference a service account"
    ));
    create(mirror_pod()).forbidden(&format!(
        "{prefix}node \"n1\" can not create mirror pods: skep runs no static pods"
    ));
    // With no name anywhere, the message says Unknown.
    req(Operation::Create, "pods", "", "")
        .object(json!({"metadata": {}, "spec": {}}))
        .forbidden(
            "pods \"Unknown\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods",
        );
}

fn bound_pod(node: &str, labels: &Value) -> Value {
    json!({"metadata": {"name": "mine", "labels": labels}, "spec": {"nodeName": node}})
}

#[test]
fn status_of_its_own_pods_only() {
    let status = |old: Value, new: Value| {
        req(Operation::Update, "pods", "status", "mine")
            .old(old)
            .object(new)
    };
    status(
        bound_pod("n1", &json!({"a": "b"})),
        bound_pod("n1", &json!({"a": "b"})),
    )
    .ok();
    status(bound_pod("n1", &json!({})), bound_pod("n1", &json!(null))).ok();
    status(bound_pod("n2", &json!({})), bound_pod("n1", &json!({}))).forbidden(
        "pods \"mine\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself",
    );
    status(
        bound_pod("n1", &json!({"a": "b"})),
        bound_pod("n1", &json!({"a": "c"})),
    )
    .forbidden("pods \"mine\" is forbidden: node \"n1\" cannot update labels through pod status");
    let mut new = bound_pod("n1", &json!({}));
    new["status"] = json!({"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "x"}]});
    status(bound_pod("n1", &json!({})), new)
        .forbidden("pods \"mine\" is forbidden: node \"n1\" cannot update resource claim statues");
    req(Operation::Delete, "pods", "status", "mine")
        .forbidden("pods \"mine\" is forbidden: unexpected operation \"DELETE\"");
    req(Operation::Update, "pods", "ephemeralcontainers", "mine").forbidden(
        "pods \"mine\" is forbidden: unexpected pod subresource \"ephemeralcontainers\", only 'status' and 'eviction' are allowed",
    );
}

#[test]
fn evictions_of_its_own_pods_only() {
    let eviction = json!({"metadata": {"name": "mine"}});
    req(Operation::Create, "pods", "eviction", "mine")
        .object(eviction.clone())
        .ok();
    req(Operation::Create, "pods", "eviction", "")
        .object(eviction)
        .ok();
    req(Operation::Create, "pods", "eviction", "theirs")
        .object(json!({"metadata": {"name": "theirs"}}))
        .forbidden("pods \"theirs\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself");
    req(Operation::Create, "pods", "eviction", "")
        .object(json!({"metadata": {}}))
        .forbidden("pods \"Unknown\" is forbidden: could not determine pod from request data");
}

fn node(name: &str, labels: Value, taints: Value) -> Value {
    let mut node = json!({"metadata": {"name": name}, "spec": {}});
    node["metadata"]["labels"] = labels;
    node["spec"]["taints"] = taints;
    node
}

#[test]
fn its_own_node_with_allowed_labels_and_unchanged_taints() {
    let create = |n: Value| {
        req(Operation::Create, "nodes", "", "")
            .namespace("")
            .object(n)
    };
    create(node(
        "n1",
        json!({"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux", "example.com/x": "y"}),
        json!(null),
    ))
    .ok();
    create(node("n2", json!({}), json!(null)))
        .forbidden("nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"");
    create(node(
        "n1",
        json!({"node-restriction.kubernetes.io/a": "x", "foo.node-restriction.kubernetes.io/b": "y", "node-role.kubernetes.io/master": "", "kubelet.kubernetes.io/ok": "1", "sub.node.kubernetes.io/ok": "2"}),
        json!(null),
    ))
    .forbidden(
        "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: foo.node-restriction.kubernetes.io/b, node-restriction.kubernetes.io/a, node-role.kubernetes.io/master",
    );
    let mut with_source = node("n1", json!({}), json!(null));
    with_source["spec"]["configSource"] = json!({"configMap": {"name": "c"}});
    create(with_source.clone()).forbidden(
        "nodes \"n1\" is forbidden: node \"n1\" is not allowed to create pods with a non-nil configSource",
    );

    let update = |old: Value, new: Value| {
        req(Operation::Update, "nodes", "", "n1")
            .namespace("")
            .old(old)
            .object(new)
    };
    let taint = json!([{"key": "k", "effect": "NoSchedule"}]);
    update(
        node("n1", json!({}), taint.clone()),
        node(
            "n1",
            json!({"topology.kubernetes.io/zone": "z"}),
            json!([{"key": "k", "value": "", "effect": "NoSchedule"}]),
        ),
    )
    .ok();
    update(
        node("n1", json!({}), json!([])),
        node("n1", json!({}), json!(null)),
    )
    .ok();
    update(
        node("n1", json!({}), taint),
        node("n1", json!({}), json!([])),
    )
    .forbidden("nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints");
    update(
        node("n1", json!({"k8s.io/team": "a"}), json!(null)),
        node("n1", json!({}), json!(null)),
    )
    .forbidden("nodes \"n1\" is forbidden: is not allowed to modify labels: k8s.io/team");
    update(node("n1", json!({}), json!(null)), with_source).forbidden(
        "nodes \"n1\" is forbidden: node \"n1\" is not allowed to update configSource to a new non-nil configSource",
    );
    req(Operation::Update, "nodes", "status", "n2")
        .namespace("")
        .forbidden("nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"");
    req(Operation::Delete, "nodes", "", "n1").namespace("").ok();
}

#[test]
fn tokens_only_bound_to_its_own_pods() {
    let token = |bound: Value| {
        req(Operation::Create, "serviceaccounts", "token", "sa")
            .object(json!({"spec": {"boundObjectRef": bound}}))
    };
    let prefix = "serviceaccounts \"sa\" is forbidden: ";
    token(json!({"apiVersion": "v1", "kind": "Pod", "name": "mine", "uid": "uid-mine"})).ok();
    token(json!(null)).forbidden(&format!("{prefix}node requested token not bound to a pod"));
    token(json!({"apiVersion": "v1", "kind": "Secret", "name": "mine", "uid": "u"}))
        .forbidden(&format!("{prefix}node requested token not bound to a pod"));
    token(json!({"apiVersion": "v1", "kind": "Pod", "name": "mine"})).forbidden(&format!(
        "{prefix}node requested token with a pod binding without a uid"
    ));
    token(json!({"apiVersion": "v1", "kind": "Pod", "name": "mine", "uid": "old"})).forbidden(&format!(
        "{prefix}the UID in the bound object reference (old) does not match the UID in record. The object might have been deleted and then recreated"
    ));
    token(json!({"apiVersion": "v1", "kind": "Pod", "name": "theirs", "uid": "uid-theirs"}))
        .forbidden(&format!(
            "{prefix}node requested token bound to a pod scheduled on a different node"
        ));
    assert_eq!(
        token(json!({"apiVersion": "v1", "kind": "Pod", "name": "gone", "uid": "u"})).run(),
        Err(AdmissionError::NotFound {
            resource: "pod",
            name: "gone".to_owned()
        })
    );
    // Only token creates are checked.
    req(Operation::Update, "serviceaccounts", "", "sa").ok();
}

#[test]
fn its_own_lease_in_kube_node_lease() {
    let lease = |op, ns, name, obj: Value| {
        req(op, "leases", "", name)
            .group("coordination.k8s.io")
            .namespace(ns)
            .object(obj)
    };
    lease(
        Operation::Create,
        "kube-node-lease",
        "n1",
        json!({"metadata": {"name": "n1"}}),
    )
    .ok();
    lease(Operation::Update, "kube-node-lease", "n1", json!({})).ok();
    lease(Operation::Create, "kube-node-lease", "n2", json!({"metadata": {"name": "n2"}})).forbidden(
        "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node",
    );
    lease(Operation::Delete, "kube-node-lease", "n2", json!({})).forbidden(
        "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node",
    );
    lease(Operation::Update, "default", "n1", json!({})).forbidden(
        "leases.coordination.k8s.io \"n1\" is forbidden: can only access leases in the \"kube-node-lease\" system namespace",
    );
}

#[test]
fn claims_only_by_status_and_only_its_fields() {
    let claim = |status: Value, labels: Value| json!({"metadata": {"name": "c", "resourceVersion": "1", "labels": labels}, "spec": {"volumeName": "pv"}, "status": status});
    req(Operation::Update, "persistentvolumeclaims", "status", "c")
        .old(claim(json!({"phase": "Bound"}), json!({})))
        .object(claim(json!({"phase": "Bound", "capacity": {"storage": "2Gi"}, "conditions": [{"type": "Resizing"}]}), json!(null)))
        .ok();
    req(Operation::Update, "persistentvolumeclaims", "status", "c")
        .old(claim(json!({"phase": "Bound"}), json!({})))
        .object(claim(json!({"phase": "Lost"}), json!({"a": "b"})))
        .forbidden(
            "persistentvolumeclaims \"c\" is forbidden: node \"n1\" is not allowed to update fields other than status.quantity and status.conditions: changed metadata.labels, status.phase",
        );
    req(Operation::Update, "persistentvolumeclaims", "", "c")
        .forbidden("persistentvolumeclaims \"c\" is forbidden: may only update PVC status");
}

#[test]
fn kubelet_labels() {
    for ok in [
        "kubernetes.io/hostname",
        "beta.kubernetes.io/arch",
        "node.kubernetes.io/instance-type",
        "kubelet.kubernetes.io/x",
        "a.b.node.kubernetes.io/x",
        "example.com/x",
        "plain",
    ] {
        assert!(
            forbidden_labels(&BTreeSet::from([ok.to_owned()])).is_empty(),
            "{ok}"
        );
    }
    for bad in [
        "node-role.kubernetes.io/worker",
        "kubernetes.io/role",
        "k8s.io/x",
        "x.k8s.io/y",
        "node-restriction.kubernetes.io/z",
        "notnode.kubernetes.io/x",
    ] {
        assert!(
            !forbidden_labels(&BTreeSet::from([bad.to_owned()])).is_empty(),
            "{bad}"
        );
    }
}
