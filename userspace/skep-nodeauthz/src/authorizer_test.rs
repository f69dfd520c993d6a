use serde_json::json;
use skep_rbac::attributes::ResourceAttributes;

use super::*;

fn node_user(name: &str) -> UserInfo {
    UserInfo::new(
        format!("{NODE_USER_PREFIX}{name}"),
        &[NODES_GROUP, "system:authenticated"],
    )
}

fn res(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> ResourceAttributes {
    ResourceAttributes {
        api_group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: sub.to_owned(),
        name: name.to_owned(),
        namespace: ns.to_owned(),
    }
}

/// A graph where pod `ns/web` on n1 mounts secret `s`, config map `cm`,
/// claim `claim` (bound to volume `pv1`) and runs as `sa`.
fn graph() -> Graph {
    let mut g = Graph::new();
    g.upsert_pod(&json!({
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {
            "nodeName": "n1",
            "serviceAccountName": "sa",
            "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "s"}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "claim"}},
            ],
        },
    }));
    g.upsert_pv(&json!({
        "metadata": {"name": "pv1"},
        "spec": {"claimRef": {"namespace": "ns", "name": "claim"}, "hostPath": {"path": "/x"}},
    }));
    g
}

fn decide(node: &str, verb: &str, r: ResourceAttributes) -> Decision {
    decide_selected(node, verb, r, &[])
}

fn decide_selected(
    node: &str,
    verb: &str,
    r: ResourceAttributes,
    field_equals: &[(&str, &str)],
) -> Decision {
    NodeAuthorizer::new().authorize(
        &graph(),
        &Attributes::resource(node_user(node), verb, r),
        field_equals,
    )
}

#[track_caller]
fn allowed(d: &Decision) {
    assert_eq!(
        d,
        &Decision::Allow {
            reason: String::new()
        }
    );
}

#[track_caller]
fn refused(d: &Decision, reason: &str) {
    assert_eq!(
        d,
        &Decision::NoOpinion {
            reason: reason.to_owned()
        }
    );
}

const NO_REL_N2: &str = "no relationship found between node 'n2' and this object";

#[test]
fn node_identity_needs_prefix_and_group() {
    assert_eq!(node_identity(&node_user("n1")), Some("n1"));
    assert_eq!(node_identity(&node_user("")), Some(""));
    assert_eq!(
        node_identity(&UserInfo::new("system:node:n1", &["system:authenticated"])),
        None
    );
    assert_eq!(node_identity(&UserInfo::new("jane", &[NODES_GROUP])), None);
}

#[test]
fn non_nodes_get_no_opinion_and_unknown_nodes_a_reason() {
    let attrs = Attributes::resource(
        UserInfo::new("jane", &["system:authenticated"]),
        "get",
        res("", "secrets", "", "ns", "s"),
    );
    refused(&NodeAuthorizer::new().authorize(&graph(), &attrs, &[]), "");
    refused(
        &decide("", "get", res("", "secrets", "", "ns", "s")),
        "unknown node for user \"system:node:\"",
    );
}

#[test]
fn secrets_and_configmaps_of_its_pods_only() {
    allowed(&decide("n1", "get", res("", "secrets", "", "ns", "s")));
    allowed(&decide("n1", "get", res("", "configmaps", "", "ns", "cm")));
    // A single-object list/watch (name from a metadata.name selector).
    allowed(&decide("n1", "watch", res("", "secrets", "", "ns", "s")));
    allowed(&decide("n1", "list", res("", "configmaps", "", "ns", "cm")));
    refused(
        &decide("n2", "get", res("", "secrets", "", "ns", "s")),
        NO_REL_N2,
    );
    refused(
        &decide("n1", "get", res("", "secrets", "", "ns", "other")),
        "no relationship found between node 'n1' and this object",
    );
    refused(
        &decide("n1", "list", res("", "secrets", "", "ns", "")),
        "No Object name found",
    );
    refused(
        &decide("n1", "list", res("", "secrets", "", "", "")),
        "can only read namespaced object of this type",
    );
    refused(
        &decide("n1", "update", res("", "secrets", "", "ns", "s")),
        "can only read resources of this type",
    );
    refused(
        &decide("n1", "get", res("", "configmaps", "status", "ns", "cm")),
        "cannot read subresource",
    );
}

#[test]
fn claims_and_volumes_by_get_only() {
    allowed(&decide(
        "n1",
        "get",
        res("", "persistentvolumeclaims", "", "ns", "claim"),
    ));
    allowed(&decide(
        "n1",
        "get",
        res("", "persistentvolumes", "", "", "pv1"),
    ));
    refused(
        &decide("n2", "get", res("", "persistentvolumes", "", "", "pv1")),
        NO_REL_N2,
    );
    refused(
        &decide("n1", "list", res("", "persistentvolumes", "", "", "")),
        "can only get individual resources of this type",
    );
    refused(
        &decide(
            "n1",
            "watch",
            res("", "persistentvolumeclaims", "", "ns", "claim"),
        ),
        "can only get individual resources of this type",
    );
    refused(
        &decide(
            "n1",
            "get",
            res("", "persistentvolumes", "status", "", "pv1"),
        ),
        "cannot get subresource",
    );
    // Claim status: update/patch only, then the graph.
    allowed(&decide(
        "n1",
        "patch",
        res("", "persistentvolumeclaims", "status", "ns", "claim"),
    ));
    refused(
        &decide(
            "n1",
            "get",
            res("", "persistentvolumeclaims", "status", "ns", "claim"),
        ),
        "can only get/update/patch this type",
    );
    refused(
        &decide(
            "n2",
            "update",
            res("", "persistentvolumeclaims", "status", "ns", "claim"),
        ),
        NO_REL_N2,
    );
}

#[test]
fn kinds_skep_does_not_serve_are_never_linked() {
    refused(
        &decide(
            "n1",
            "get",
            res("storage.k8s.io", "volumeattachments", "", "", "va"),
        ),
        "no relationship found between node 'n1' and this object",
    );
    refused(
        &decide(
            "n1",
            "get",
            res("resource.k8s.io", "resourceclaims", "", "ns", ""),
        ),
        "No Object name found",
    );
    allowed(&decide(
        "n1",
        "create",
        res("resource.k8s.io", "resourceslices", "", "", ""),
    ));
    allowed(&decide_selected(
        "n1",
        "watch",
        res("resource.k8s.io", "resourceslices", "", "", ""),
        &[("nodeName", "n1")],
    ));
    refused(
        &decide(
            "n1",
            "list",
            res("resource.k8s.io", "resourceslices", "", "", ""),
        ),
        "can only list/watch/deletecollection resourceslices with nodeName field selector",
    );
}

#[test]
fn tokens_for_its_pods_service_accounts_only() {
    allowed(&decide(
        "n1",
        "create",
        res("", "serviceaccounts", "token", "ns", "sa"),
    ));
    refused(
        &decide(
            "n2",
            "create",
            res("", "serviceaccounts", "token", "ns", "sa"),
        ),
        NO_REL_N2,
    );
    refused(
        &decide(
            "n1",
            "create",
            res("", "serviceaccounts", "token", "ns", "default"),
        ),
        "no relationship found between node 'n1' and this object",
    );
    refused(
        &decide("n1", "get", res("", "serviceaccounts", "", "ns", "sa")),
        "can only create tokens for individual service accounts",
    );
    refused(
        &decide("n1", "create", res("", "serviceaccounts", "", "ns", "")),
        "can only create tokens for individual service accounts",
    );
    refused(
        &decide(
            "n1",
            "create",
            res("", "serviceaccounts", "other", "ns", "sa"),
        ),
        "can only create token subresource of serviceaccount",
    );
}

#[test]
fn its_own_lease_only() {
    let lease = |verb, ns, name| {
        decide(
            "n1",
            verb,
            res("coordination.k8s.io", "leases", "", ns, name),
        )
    };
    allowed(&lease("get", "kube-node-lease", "n1"));
    allowed(&lease("update", "kube-node-lease", "n1"));
    allowed(&lease("create", "kube-node-lease", ""));
    refused(
        &lease("update", "kube-node-lease", "n2"),
        "can only access node lease with the same name as the requesting node",
    );
    refused(
        &lease("get", "default", "n1"),
        "can only access leases in the \"kube-node-lease\" system namespace",
    );
    refused(
        &lease("list", "kube-node-lease", ""),
        "can only get, create, update, patch, or delete a node lease",
    );
}

#[test]
fn nodes_read_only_their_own_node() {
    let node = |verb, sub, name| decide("n1", verb, res("", "nodes", sub, "", name));
    allowed(&node("get", "", "n1"));
    allowed(&node("watch", "", "n1"));
    allowed(&node("create", "", ""));
    allowed(&node("patch", "", "n2")); // NodeRestriction refuses it.
    allowed(&node("update", "status", "n1"));
    refused(
        &node("get", "", "n2"),
        "node 'n1' cannot read 'n2', only its own Node object",
    );
    refused(
        &node("list", "", ""),
        "node 'n1' cannot read all nodes, only its own Node object",
    );
    refused(&node("delete", "", "n1"), "");
    refused(&node("get", "status", "n1"), "");
    refused(&node("get", "proxy", "n1"), "");
}

#[test]
fn pods_by_graph_or_node_name_selector() {
    let pod = |verb, sub, name| decide("n1", verb, res("", "pods", sub, "ns", name));
    allowed(&pod("get", "", "web"));
    refused(
        &decide("n2", "get", res("", "pods", "", "ns", "web")),
        NO_REL_N2,
    );
    refused(
        &pod("list", "", ""),
        "can only list/watch pods with spec.nodeName field selector",
    );
    allowed(&decide_selected(
        "n1",
        "watch",
        res("", "pods", "", "", ""),
        &[("spec.nodeName", "n1")],
    ));
    refused(
        &decide_selected(
            "n1",
            "list",
            res("", "pods", "", "", ""),
            &[("spec.nodeName", "n2")],
        ),
        "can only list/watch pods with spec.nodeName field selector",
    );
    allowed(&pod("watch", "", "web"));
    allowed(&pod("create", "", ""));
    allowed(&pod("delete", "", "web"));
    allowed(&pod("patch", "status", "web"));
    allowed(&pod("create", "eviction", "web"));
    refused(&pod("update", "", "web"), "");
    refused(&pod("create", "exec", "web"), "");
    refused(&pod("get", "log", "web"), "");
}

#[test]
fn other_resources_by_the_static_node_rules() {
    allowed(&decide("n1", "list", res("", "services", "", "", "")));
    allowed(&decide("n1", "create", res("", "events", "", "ns", "")));
    allowed(&decide(
        "n1",
        "create",
        res("authentication.k8s.io", "tokenreviews", "", "", ""),
    ));
    allowed(&decide("n1", "get", res("", "endpoints", "", "ns", "e")));
    refused(&decide("n1", "list", res("", "endpoints", "", "", "")), "");
    refused(
        &decide("n1", "create", res("", "namespaces", "", "", "")),
        "",
    );
    refused(
        &decide("n1", "get", res("apps", "deployments", "", "ns", "d")),
        "",
    );
    let healthz = Attributes::non_resource(node_user("n1"), "get", "/healthz");
    refused(
        &NodeAuthorizer::new().authorize(&graph(), &healthz, &[]),
        "",
    );
    // Without static rules, RBAC decides those.
    let attrs = Attributes::resource(node_user("n1"), "list", res("", "services", "", "", ""));
    refused(
        &NodeAuthorizer::with_rules(Vec::new()).authorize(&graph(), &attrs, &[]),
        "",
    );
}
