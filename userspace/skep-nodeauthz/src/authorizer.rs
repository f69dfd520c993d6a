//! The node authorizer (`plugin/pkg/auth/authorizer/node/node_authorizer.go`,
//! with `AuthorizeNodeWithSelectors` on, as in Kubernetes v1.32), and who
//! counts as a node (`pkg/auth/nodeidentifier`).

use k8s_openapi::api::rbac::v1::PolicyRule;
use skep_rbac::attributes::{Attributes, Request, ResourceAttributes, UserInfo};
use skep_rbac::gofmt::quote;
use skep_rbac::policy::Decision;
use skep_rbac::rule::{resource_rule as rule, rules_allow};

use crate::graph::{Graph, ObjectKind};

/// The group every node credential is in (`user.NodesGroup`).
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name: `system:node:NAME`.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace holding node leases (`NamespaceNodeLease`).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

const READ: &[&str] = &["get", "list", "watch"];

/// The node a user is (`NodeIdentity` of the default node identifier): `None`
/// unless the name starts with `system:node:` and the user is in
/// `system:nodes`; `Some("")` for a node whose name cannot be told.
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    let node = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(node)
}

/// What nodes may do to resources the authorizer does not subdivide
/// (`bootstrappolicy.NodeRules()` of v1.32 with its default feature gates:
/// DynamicResourceAllocation and ClusterTrustBundle off). Requests on
/// secrets, config maps, claims, volumes, service accounts, leases, nodes and
/// pods never reach these: the authorizer decides them itself.
pub fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[""], &["services"]),
        rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(&["update", "patch"], &[""], &["nodes"]),
        rule(&["create", "update", "patch"], &[""], &["events"]),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(READ, &[""], &["secrets", "configmaps"]),
        rule(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["get"], &[""], &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        rule(
            &["get", "update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            &["get", "watch", "list"],
            &["storage.k8s.io"],
            &["csidrivers"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

/// The node authorizer: for node credentials, reads of secrets, config maps,
/// claims, volumes and pods only where the [`Graph`] links them to the node,
/// service account tokens only for its pods' service accounts, its own Node
/// and Lease; other resources by [`node_rules`]. Anyone else gets NoOpinion,
/// so the next authorizer (RBAC) decides.
#[derive(Clone, Debug)]
pub struct NodeAuthorizer {
    rules: Vec<PolicyRule>,
}

impl Default for NodeAuthorizer {
    fn default() -> Self {
        Self::new()
    }
}

/// A decision with no opinion and upstream's reason.
fn no(reason: impl Into<String>) -> Decision {
    Decision::NoOpinion {
        reason: reason.into(),
    }
}

fn allow() -> Decision {
    Decision::Allow {
        reason: String::new(),
    }
}

fn no_relationship(node: &str) -> Decision {
    no(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

impl NodeAuthorizer {
    /// The authorizer with upstream's static node rules ([`node_rules`]),
    /// as kube-apiserver builds it.
    pub fn new() -> Self {
        Self::with_rules(node_rules())
    }

    /// The authorizer with other static rules (none: everything the
    /// authorizer does not subdivide is left to RBAC).
    pub fn with_rules(rules: Vec<PolicyRule>) -> Self {
        Self { rules }
    }

    /// Decides a request (`Authorize`). `field_equals` holds the request's
    /// field selector terms written `field=value` or `field==value` (the
    /// `spec.nodeName=NAME` of a kubelet's pod list, for instance); empty when
    /// there is none.
    ///
    /// As in kube-apiserver, the caller fills `name` of a list or watch from a
    /// `metadata.name=` field selector, so a kubelet can watch one secret.
    pub fn authorize(
        &self,
        graph: &Graph,
        attrs: &Attributes,
        field_equals: &[(&str, &str)],
    ) -> Decision {
        let Some(node) = node_identity(&attrs.user) else {
            return no("");
        };
        if node.is_empty() {
            return no(format!("unknown node for user {}", quote(&attrs.user.name)));
        }
        if let Request::Resource(r) = &attrs.request {
            let verb = attrs.verb.as_str();
            let ctx = Ctx {
                graph,
                node,
                verb,
                r,
            };
            match (r.api_group.as_str(), r.resource.as_str()) {
                ("", "secrets") => return ctx.read_namespaced(Some(ObjectKind::Secret)),
                ("", "configmaps") => return ctx.read_namespaced(Some(ObjectKind::ConfigMap)),
                ("", "persistentvolumeclaims") => {
                    let kind = Some(ObjectKind::PersistentVolumeClaim);
                    return if r.subresource == "status" {
                        ctx.status_update(kind)
                    } else {
                        ctx.get(kind)
                    };
                }
                ("", "persistentvolumes") => return ctx.get(Some(ObjectKind::PersistentVolume)),
                // Not served by skep: nothing links them to a node.
                ("resource.k8s.io", "resourceclaims") | ("storage.k8s.io", "volumeattachments") => {
                    return ctx.get(None);
                }
                ("", "serviceaccounts") => return ctx.create_token(),
                ("coordination.k8s.io", "leases") => return ctx.lease(),
                ("storage.k8s.io", "csinodes") => return ctx.csi_node(),
                ("resource.k8s.io", "resourceslices") => {
                    return ctx.resource_slice(field_equals);
                }
                ("", "nodes") => return ctx.node(),
                ("", "pods") => return ctx.pod(field_equals),
                _ => {}
            }
        }
        if rules_allow(attrs, &self.rules) {
            allow()
        } else {
            no("")
        }
    }
}

/// One resource request from an identified node.
struct Ctx<'a> {
    graph: &'a Graph,
    node: &'a str,
    verb: &'a str,
    r: &'a ResourceAttributes,
}

impl Ctx<'_> {
    /// `authorize`: a named object linked to the node. `None` stands for a
    /// kind skep never links to nodes.
    fn linked(&self, kind: Option<ObjectKind>) -> Decision {
        if self.r.name.is_empty() {
            return no("No Object name found");
        }
        self.path(kind)
    }

    /// `hasPathFrom`, as the decision.
    fn path(&self, kind: Option<ObjectKind>) -> Decision {
        let found = kind.is_some_and(|k| {
            self.graph
                .reachable(self.node, k, &self.r.namespace, &self.r.name)
        });
        if found {
            allow()
        } else {
            no_relationship(self.node)
        }
    }

    /// `authorizeReadNamespacedObject`.
    fn read_namespaced(&self, kind: Option<ObjectKind>) -> Decision {
        if !matches!(self.verb, "get" | "list" | "watch") {
            return no("can only read resources of this type");
        }
        if !self.r.subresource.is_empty() {
            return no("cannot read subresource");
        }
        if self.r.namespace.is_empty() {
            return no("can only read namespaced object of this type");
        }
        self.linked(kind)
    }

    /// `authorizeGet`.
    fn get(&self, kind: Option<ObjectKind>) -> Decision {
        if self.verb != "get" {
            return no("can only get individual resources of this type");
        }
        if !self.r.subresource.is_empty() {
            return no("cannot get subresource");
        }
        self.linked(kind)
    }

    /// `authorizeStatusUpdate`.
    fn status_update(&self, kind: Option<ObjectKind>) -> Decision {
        if !matches!(self.verb, "update" | "patch") {
            return no("can only get/update/patch this type");
        }
        if self.r.subresource != "status" {
            return no("can only update status subresource");
        }
        self.linked(kind)
    }

    /// `authorizeCreateToken`.
    fn create_token(&self) -> Decision {
        if self.verb != "create" || self.r.name.is_empty() {
            return no("can only create tokens for individual service accounts");
        }
        if self.r.subresource != "token" {
            return no("can only create token subresource of serviceaccount");
        }
        self.path(Some(ObjectKind::ServiceAccount))
    }

    /// `authorizeLease`.
    fn lease(&self) -> Decision {
        if !matches!(self.verb, "get" | "create" | "update" | "patch" | "delete") {
            return no("can only get, create, update, patch, or delete a node lease");
        }
        if self.r.namespace != NODE_LEASE_NAMESPACE {
            return no(format!(
                "can only access leases in the {} system namespace",
                quote(NODE_LEASE_NAMESPACE)
            ));
        }
        // The name of a create is not known here; NodeRestriction checks it.
        if self.verb != "create" && self.r.name != self.node {
            return no("can only access node lease with the same name as the requesting node");
        }
        allow()
    }

    /// `authorizeCSINode`.
    fn csi_node(&self) -> Decision {
        if !matches!(self.verb, "get" | "create" | "update" | "patch" | "delete") {
            return no("can only get, create, update, patch, or delete a CSINode");
        }
        if !self.r.subresource.is_empty() {
            return no("cannot authorize CSINode subresources");
        }
        if self.verb != "create" && self.r.name != self.node {
            return no("can only access CSINode with the same name as the requesting node");
        }
        allow()
    }

    /// `authorizeResourceSlice` (skep serves no slices, so none is linked).
    fn resource_slice(&self, field_equals: &[(&str, &str)]) -> Decision {
        if !self.r.subresource.is_empty() {
            return no("cannot authorize ResourceSlice subresources");
        }
        match self.verb {
            "create" => allow(),
            "get" | "update" | "patch" | "delete" => self.linked(None),
            "watch" | "list" | "deletecollection" => {
                if selects(field_equals, "nodeName", self.node) {
                    allow()
                } else {
                    no(
                        "can only list/watch/deletecollection resourceslices with nodeName field selector",
                    )
                }
            }
            _ => no(
                "only the following verbs are allowed for a ResourceSlice: get, watch, list, create, update, patch, delete, deletecollection",
            ),
        }
    }

    /// `authorizeNode`.
    fn node(&self) -> Decision {
        match (self.r.subresource.as_str(), self.verb) {
            // NodeRestriction limits a node to its own Node object.
            ("", "create" | "update" | "patch") | ("status", "update" | "patch") => allow(),
            // By name rather than through the graph, so a kubelet may read
            // its Node before creating it.
            ("", "get" | "list" | "watch") => {
                let node = self.node;
                match self.r.name.as_str() {
                    name if name == node => allow(),
                    "" => no(format!(
                        "node '{node}' cannot read all nodes, only its own Node object"
                    )),
                    name => no(format!(
                        "node '{node}' cannot read '{name}', only its own Node object"
                    )),
                }
            }
            _ => no(""),
        }
    }

    /// `authorizePod`.
    fn pod(&self, field_equals: &[(&str, &str)]) -> Decision {
        match (self.r.subresource.as_str(), self.verb) {
            ("", "get") => self.get(Some(ObjectKind::Pod)),
            ("", "list" | "watch") => {
                if selects(field_equals, "spec.nodeName", self.node) {
                    allow()
                } else if !self.r.name.is_empty() {
                    self.linked(Some(ObjectKind::Pod))
                } else {
                    no("can only list/watch pods with spec.nodeName field selector")
                }
            }
            // Mirror pods, pod status and evictions: NodeRestriction limits
            // them to pods bound to the node.
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                allow()
            }
            _ => no(""),
        }
    }
}

fn selects(field_equals: &[(&str, &str)], field: &str, value: &str) -> bool {
    field_equals.iter().any(|(f, v)| *f == field && *v == value)
}

#[cfg(test)]
#[path = "authorizer_test.rs"]
mod tests;
