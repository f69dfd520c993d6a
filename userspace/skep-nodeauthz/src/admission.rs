//! NodeRestriction admission (`plugin/pkg/admission/noderestriction/admission.go`,
//! Kubernetes v1.32): what a node may write, judged on the objects
//! themselves, with upstream's Forbidden messages.
//!
//! skep runs no static pods, so it has no mirror pods: a pod create from a
//! node that passes every upstream check is still refused (see
//! [`NO_MIRROR_PODS`]). Everything else is as upstream.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};
use skep_rbac::Forbidden;
use skep_rbac::attributes::UserInfo;
use skep_rbac::gofmt::quote;

use crate::authorizer::{NODE_LEASE_NAMESPACE, node_identity};
use crate::refs;

/// The detail of a refused pod create that upstream would have allowed (a
/// valid mirror pod); skep has no static pods, so nodes create no pods.
pub const NO_MIRROR_PODS: &str = "skep runs no static pods";

/// A write's operation (`admission.Operation`); displays as upstream's
/// (`CREATE`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create, including subresource creates (token requests, evictions).
    Create,
    /// Update or patch.
    Update,
    /// Delete.
    Delete,
    /// Connect (exec, attach, port-forward, proxy): NodeRestriction ignores it.
    Connect,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        })
    }
}

/// What admission knows of a stored pod (upstream reads it from a lister).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// `spec.nodeName`, empty if unbound.
    pub node_name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl PodFacts {
    /// The facts of a pod object.
    pub fn of(pod: &Value) -> Self {
        Self {
            node_name: refs::pod_node_name(pod).to_owned(),
            uid: refs::uid(pod).to_owned(),
        }
    }
}

/// The stored objects admission looks up: the API server answers from its
/// store or caches.
pub trait Lookup {
    /// The pod `namespace/name`, `None` if there is none.
    fn pod(&self, namespace: &str, name: &str) -> Option<PodFacts>;
    /// The UID of Node `name`, `None` if there is none.
    fn node_uid(&self, name: &str) -> Option<String>;
}

/// One write to admit (`admission.Attributes`).
#[derive(Clone, Copy, Debug)]
pub struct AdmissionRequest<'a> {
    /// Who writes.
    pub user: &'a UserInfo,
    /// The operation.
    pub operation: Operation,
    /// API group, `""` for core.
    pub group: &'a str,
    /// Resource (plural), e.g. `pods`.
    pub resource: &'a str,
    /// Subresource, e.g. `status`, `token`, `eviction`; empty for none.
    pub subresource: &'a str,
    /// Namespace; empty for cluster-scoped resources.
    pub namespace: &'a str,
    /// Object name: from the URL, and for a create of the object itself its
    /// `metadata.name` (as kube-apiserver's create handler fills it).
    pub name: &'a str,
    /// The new object (create, update) or the request body of a subresource
    /// create (the TokenRequest, the Eviction).
    pub object: Option<&'a Value>,
    /// The stored object (update, delete).
    pub old_object: Option<&'a Value>,
}

/// Why a write is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// 403 Forbidden with upstream's message.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// 404: an object admission needed is gone (upstream returns the
    /// lister's error, whose resource is singular: `pod "web" not found`).
    #[error("{resource} {} not found", quote(.name))]
    NotFound {
        /// `pod` or `node` (`details.kind`).
        resource: &'static str,
        /// The name looked up.
        name: String,
    },
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// A request from an identified node.
struct NodeRequest<'a, L> {
    node: &'a str,
    req: &'a AdmissionRequest<'a>,
    lookup: &'a L,
}

/// Admits a write (`Admit`): requests from anyone but a node pass untouched.
pub fn admit(req: &AdmissionRequest<'_>, lookup: &impl Lookup) -> Result<(), AdmissionError> {
    // The plugin handles CREATE, UPDATE and DELETE only.
    if req.operation == Operation::Connect {
        return Ok(());
    }
    let Some(node) = node_identity(req.user) else {
        return Ok(());
    };
    let n = NodeRequest { node, req, lookup };
    if node.is_empty() {
        return n.forbid(format!(
            "could not determine node from user {}",
            quote(&req.user.name)
        ));
    }
    match (req.group, req.resource) {
        ("", "pods") => match req.subresource {
            "" => n.pod(),
            "status" => n.pod_status(),
            "eviction" => n.pod_eviction(),
            other => n.forbid(format!(
                "unexpected pod subresource {}, only 'status' and 'eviction' are allowed",
                quote(other)
            )),
        },
        ("", "nodes") => n.node_object(),
        ("", "persistentvolumeclaims") => match req.subresource {
            "status" => n.pvc_status(),
            _ => n.forbid("may only update PVC status"),
        },
        ("", "serviceaccounts") => n.service_account(),
        ("coordination.k8s.io", "leases") => n.lease(),
        ("storage.k8s.io", "csinodes") => n.csi_node(),
        ("resource.k8s.io", "resourceslices") => n.resource_slice(),
        _ => Ok(()),
    }
}

impl<L: Lookup> NodeRequest<'_, L> {
    /// `admission.NewForbidden`: the resource without its subresource, the
    /// request's name or else the object's name or generateName, or `Unknown`.
    fn forbidden(&self, detail: impl fmt::Display) -> AdmissionError {
        let req = self.req;
        let name = if req.name.is_empty() {
            let object = present(req.object);
            let meta = |field| object.map_or("", |o| str_at(o, &["metadata", field]));
            [meta("name"), meta("generateName")]
                .into_iter()
                .find(|n| !n.is_empty())
                .unwrap_or("Unknown")
        } else {
            req.name
        };
        Forbidden::new(req.group, req.resource, name, &detail.to_string()).into()
    }

    fn forbid(&self, detail: impl fmt::Display) -> Result<(), AdmissionError> {
        Err(self.forbidden(detail))
    }

    fn object(&self) -> Result<&Value, AdmissionError> {
        present(self.req.object).ok_or_else(|| self.forbidden("unexpected type <nil>"))
    }

    fn old_object(&self) -> Result<&Value, AdmissionError> {
        present(self.req.old_object).ok_or_else(|| self.forbidden("unexpected type <nil>"))
    }

    fn pod_facts(&self, name: &str) -> Result<PodFacts, AdmissionError> {
        self.lookup
            .pod(self.req.namespace, name)
            .ok_or_else(|| AdmissionError::NotFound {
                resource: "pod",
                name: name.to_owned(),
            })
    }

    /// `admitPod`.
    fn pod(&self) -> Result<(), AdmissionError> {
        let node = quote(self.node);
        match self.req.operation {
            Operation::Create => self.pod_create(),
            Operation::Delete => {
                let existing = self.pod_facts(self.req.name)?;
                if existing.node_name != self.node {
                    return self.forbid(format!(
                        "node {node} can only delete pods with spec.nodeName set to itself"
                    ));
                }
                Ok(())
            }
            op => self.forbid(format!(
                "unexpected operation {}, node {node} can only create and delete mirror pods",
                quote(&op.to_string())
            )),
        }
    }

    /// `admitPodCreate`, then skep's refusal of what would be a mirror pod.
    fn pod_create(&self) -> Result<(), AdmissionError> {
        let pod = self.object()?;
        let node = quote(self.node);
        if !refs::is_mirror_pod(pod) {
            return self.forbid(format!(
                "pod does not have {} annotation, node {node} can only create mirror pods",
                quote(refs::MIRROR_POD_ANNOTATION)
            ));
        }
        if refs::pod_node_name(pod) != self.node {
            return self.forbid(format!(
                "node {node} can only create pods with spec.nodeName set to itself"
            ));
        }
        let owners = get(pod, &["metadata", "ownerReferences"])
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        match owners {
            [] => {
                return self.forbid(format!(
                    "node {node} can only create pods with an owner reference set to itself"
                ));
            }
            [owner] => {
                if str_at(owner, &["apiVersion"]) != "v1"
                    || str_at(owner, &["kind"]) != "Node"
                    || str_at(owner, &["name"]) != self.node
                {
                    return self.forbid(format!(
                        "node {node} can only create pods with an owner reference set to itself"
                    ));
                }
                if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                    return self.forbid(format!(
                        "node {node} can only create pods with a controller owner reference set to itself"
                    ));
                }
                if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                    return self.forbid(format!(
                        "node {node} must not set blockOwnerDeletion on an owner reference"
                    ));
                }
                let Some(uid) = self.lookup.node_uid(self.node) else {
                    return Err(AdmissionError::NotFound {
                        resource: "node",
                        name: self.node.to_owned(),
                    });
                };
                let owner_uid = str_at(owner, &["uid"]);
                if owner_uid != uid {
                    return self.forbid(format!(
                        "node {} UID mismatch: expected {owner_uid} got {uid}",
                        self.node
                    ));
                }
            }
            _ => {
                return self.forbid(format!(
                    "node {node} can only create pods with a single owner reference set to itself"
                ));
            }
        }
        if !refs::pod_service_account(pod).is_empty() {
            return self.forbid(format!(
                "node {node} can not create pods that reference a service account"
            ));
        }
        let mut secrets = false;
        refs::visit_pod_secret_names(pod, |_| secrets = true);
        if secrets {
            return self.forbid(format!(
                "node {node} can not create pods that reference secrets"
            ));
        }
        let mut configmaps = false;
        refs::visit_pod_configmap_names(pod, |_| configmaps = true);
        if configmaps {
            return self.forbid(format!(
                "node {node} can not create pods that reference configmaps"
            ));
        }
        if refs::references_cluster_trust_bundles(pod) {
            return self.forbid(format!(
                "node {node} can not create pods that reference clustertrustbundles"
            ));
        }
        if refs::references_pvcs(pod) {
            return self.forbid(format!(
                "node {node} can not create pods that reference persistentvolumeclaims"
            ));
        }
        self.forbid(format!(
            "node {node} can not create mirror pods: {NO_MIRROR_PODS}"
        ))
    }

    /// `admitPodStatus`.
    fn pod_status(&self) -> Result<(), AdmissionError> {
        let node = quote(self.node);
        if self.req.operation != Operation::Update {
            return self.forbid(format!(
                "unexpected operation {}",
                quote(&self.req.operation.to_string())
            ));
        }
        let old = self.old_object()?;
        if refs::pod_node_name(old) != self.node {
            return self.forbid(format!(
                "node {node} can only update pod status for pods with spec.nodeName set to itself"
            ));
        }
        let new = self.object()?;
        if labels(old) != labels(new) {
            return self.forbid(format!(
                "node {node} cannot update labels through pod status"
            ));
        }
        if resource_claim_statuses(old) != resource_claim_statuses(new) {
            return self.forbid(format!("node {node} cannot update resource claim statues"));
        }
        Ok(())
    }

    /// `admitPodEviction`.
    fn pod_eviction(&self) -> Result<(), AdmissionError> {
        if self.req.operation != Operation::Create {
            return self.forbid(format!("unexpected operation {}", self.req.operation));
        }
        let eviction = self.object()?;
        let pod_name = if self.req.name.is_empty() {
            str_at(eviction, &["metadata", "name"])
        } else {
            self.req.name
        };
        if pod_name.is_empty() {
            return self.forbid("could not determine pod from request data");
        }
        let existing = self.pod_facts(pod_name)?;
        if existing.node_name != self.node {
            return self.forbid(format!(
                "node {} can only evict pods with spec.nodeName set to itself",
                self.node
            ));
        }
        Ok(())
    }

    /// `admitPVCStatus` (RecoverVolumeExpansionFailure off, as in v1.32).
    fn pvc_status(&self) -> Result<(), AdmissionError> {
        if self.req.operation != Operation::Update {
            return self.forbid(format!(
                "unexpected operation {}",
                quote(&self.req.operation.to_string())
            ));
        }
        let old = self.old_object()?;
        let new = self.object()?;
        let strip = |v: &Value| {
            let mut v = v.clone();
            for (parent, field) in [
                ("metadata", "resourceVersion"),
                ("metadata", "managedFields"),
                ("status", "capacity"),
                ("status", "conditions"),
            ] {
                if let Some(Value::Object(m)) = v.get_mut(parent) {
                    m.remove(field);
                }
            }
            semantic(&v)
        };
        let (old, new) = (strip(old), strip(new));
        if old != new {
            let mut changed = Vec::new();
            diff_paths(&old, &new, "", &mut changed);
            return self.forbid(format!(
                "node {} is not allowed to update fields other than status.quantity and status.conditions: changed {}",
                quote(self.node),
                changed.join(", ")
            ));
        }
        Ok(())
    }

    /// `admitNode`.
    fn node_object(&self) -> Result<(), AdmissionError> {
        let node = quote(self.node);
        let requested = if self.req.name.is_empty() && self.req.operation == Operation::Create {
            present(self.req.object).map_or("", |o| str_at(o, &["metadata", "name"]))
        } else {
            self.req.name
        };
        if requested != self.node {
            return self.forbid(format!(
                "node {node} is not allowed to modify node {}",
                quote(requested)
            ));
        }
        match self.req.operation {
            Operation::Create => {
                let new = self.object()?;
                if present(get(new, &["spec", "configSource"])).is_some() {
                    return self.forbid(format!(
                        "node {node} is not allowed to create pods with a non-nil configSource"
                    ));
                }
                let forbidden = forbidden_labels(&modified_labels(&labels(new), &Map::new()));
                if !forbidden.is_empty() {
                    return self.forbid(format!(
                        "node {node} is not allowed to set the following labels: {}",
                        forbidden.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            Operation::Update => {
                let new = self.object()?;
                let old = self.old_object()?;
                let source = present(get(new, &["spec", "configSource"]));
                if source.is_some_and(|s| {
                    present(get(old, &["spec", "configSource"])).map(semantic) != Some(semantic(s))
                }) {
                    return self.forbid(format!(
                        "node {node} is not allowed to update configSource to a new non-nil configSource"
                    ));
                }
                if taints(old) != taints(new) {
                    return self.forbid(format!("node {node} is not allowed to modify taints"));
                }
                let forbidden = forbidden_labels(&modified_labels(&labels(new), &labels(old)));
                if !forbidden.is_empty() {
                    return self.forbid(format!(
                        "is not allowed to modify labels: {}",
                        forbidden.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            Operation::Delete | Operation::Connect => {}
        }
        Ok(())
    }

    /// `admitServiceAccount`: a node's token requests are bound to one of its pods.
    fn service_account(&self) -> Result<(), AdmissionError> {
        if self.req.operation != Operation::Create || self.req.subresource != "token" {
            return Ok(());
        }
        let request = self.object()?;
        let reference = present(get(request, &["spec", "boundObjectRef"]));
        let field = |f| reference.map_or("", |r| str_at(r, &[f]));
        if reference.is_none()
            || field("apiVersion") != "v1"
            || field("kind") != "Pod"
            || field("name").is_empty()
        {
            return self.forbid("node requested token not bound to a pod");
        }
        let uid = field("uid");
        if uid.is_empty() {
            return self.forbid("node requested token with a pod binding without a uid");
        }
        let pod = self.pod_facts(field("name"))?;
        if uid != pod.uid {
            return self.forbid(format!(
                "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ));
        }
        if pod.node_name != self.node {
            return self
                .forbid("node requested token bound to a pod scheduled on a different node");
        }
        Ok(())
    }

    /// The object's name on create (from the body), the request's otherwise.
    fn own_name(&self) -> Result<&str, AdmissionError> {
        if self.req.operation == Operation::Create {
            Ok(str_at(self.object()?, &["metadata", "name"]))
        } else {
            Ok(self.req.name)
        }
    }

    /// `admitLease`.
    fn lease(&self) -> Result<(), AdmissionError> {
        if self.req.namespace != NODE_LEASE_NAMESPACE {
            return self.forbid(format!(
                "can only access leases in the {} system namespace",
                quote(NODE_LEASE_NAMESPACE)
            ));
        }
        if self.own_name()? != self.node {
            return self
                .forbid("can only access node lease with the same name as the requesting node");
        }
        Ok(())
    }

    /// `admitCSINode`.
    fn csi_node(&self) -> Result<(), AdmissionError> {
        if self.req.operation == Operation::Create && present(self.req.object).is_none() {
            return self.forbid("unable to access the object name");
        }
        if self.own_name()? != self.node {
            return self
                .forbid("can only access CSINode with the same name as the requesting node");
        }
        Ok(())
    }

    /// `admitResourceSlice`.
    fn resource_slice(&self) -> Result<(), AdmissionError> {
        match self.req.operation {
            Operation::Create => {
                if str_at(self.object()?, &["spec", "nodeName"]) != self.node {
                    return self.forbid(
                        "can only create ResourceSlice with the same NodeName as the requesting node",
                    );
                }
            }
            Operation::Delete => {
                if str_at(self.old_object()?, &["spec", "nodeName"]) != self.node {
                    return self.forbid(
                        "can only delete ResourceSlice with the same NodeName as the requesting node",
                    );
                }
            }
            Operation::Update | Operation::Connect => {}
        }
        Ok(())
    }
}

/// `metadata.labels` (absent and empty are the same, as `labels.Equals` has it).
fn labels(obj: &Value) -> Map<String, Value> {
    get(obj, &["metadata", "labels"])
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `status.resourceClaimStatuses` as (name, resourceClaimName) pairs.
fn resource_claim_statuses(pod: &Value) -> Vec<(&str, Option<&str>)> {
    get(pod, &["status", "resourceClaimStatuses"])
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|s| {
            (
                str_at(s, &["name"]),
                present(s.get("resourceClaimName")).and_then(Value::as_str),
            )
        })
        .collect()
}

/// `spec.taints` with unset fields as their zero values, so a taint reads the
/// same whether or not its empty value was written.
fn taints(node: &Value) -> Vec<[&str; 4]> {
    get(node, &["spec", "taints"])
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|t| {
            [
                str_at(t, &["key"]),
                str_at(t, &["value"]),
                str_at(t, &["effect"]),
                str_at(t, &["timeAdded"]),
            ]
        })
        .collect()
}

/// The label keys added, removed or changed between two label sets
/// (`getModifiedLabels`).
fn modified_labels(a: &Map<String, Value>, b: &Map<String, Value>) -> BTreeSet<String> {
    let differ = |x: &Map<String, Value>, y: &Map<String, Value>| {
        x.iter()
            .filter(|(k, v)| y.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    differ(a, b).into_iter().chain(differ(b, a)).collect()
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(namespace: &str, domain: &str) -> bool {
    namespace == domain
        || namespace
            .strip_suffix(domain)
            .is_some_and(|p| p.ends_with('.'))
}

/// `isKubernetesLabel`: a `kubernetes.io` or `k8s.io` label, subdomains included.
fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io")
}

/// The labels kubelets may set on their own Node (`kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The label namespaces kubelets may set, subdomains included.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The namespace of labels only administrators set (`LabelNamespaceNodeRestriction`).
pub const NODE_RESTRICTION_LABEL_NAMESPACE: &str = "node-restriction.kubernetes.io";

/// Whether a node may set the label key on itself (`IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key) || {
        let ns = label_namespace(key);
        KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|allowed| in_namespace(ns, allowed))
    }
}

/// Of the modified label keys, those a node may not add, remove or change
/// (`getForbiddenLabels`), sorted.
fn forbidden_labels(modified: &BTreeSet<String>) -> BTreeSet<String> {
    modified
        .iter()
        .filter(|key| {
            in_namespace(label_namespace(key), NODE_RESTRICTION_LABEL_NAMESPACE)
                || (is_kubernetes_label(key) && !is_kubelet_label(key))
        })
        .cloned()
        .collect()
}

/// The value with nulls, empty objects and empty arrays dropped, so
/// comparing two is close to `apiequality.Semantic.DeepEqual` (nil and empty
/// are the same).
fn semantic(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), semantic(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The dotted paths where two values differ, objects descended into.
fn diff_paths(old: &Value, new: &Value, at: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(before), Value::Object(after)) => {
            let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for key in keys {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match (before.get(key), after.get(key)) {
                    (Some(was), Some(is)) => diff_paths(was, is, &path, out),
                    _ => out.push(path),
                }
            }
        }
        _ if old != new => out.push(at.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
#[path = "admission_test.rs"]
mod tests;
