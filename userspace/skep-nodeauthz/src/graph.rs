//! Which objects each node may reach (`plugin/pkg/auth/authorizer/node/graph.go`
//! and `graph_populator.go`), kept as an index rather than a graph walk.
//!
//! Upstream keeps a graph whose edges point at nodes (secret → pod → node,
//! pv → pvc → pod → node, …) and walks it, with a destination index for
//! busy vertices. Here every edge is folded into one inverted index:
//! object → node → reference count. A decision is then a constant-time
//! lookup, and the count says how many reasons a node has to reach the
//! object (pods on it naming the object, or persistent volumes bound to a
//! claim one of its pods mounts), so an object stays reachable until its
//! last reason goes.
//!
//! What feeds it: pods (only once bound to a node, like upstream) and
//! persistent volumes. skep does not serve VolumeAttachments, ResourceClaims,
//! ResourceSlices or PodCertificateRequests, so those vertices of upstream's
//! graph are left out.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::refs;

/// The kinds of objects a node reaches through its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A pod bound to the node.
    Pod,
    /// A secret named by a pod or by a persistent volume.
    Secret,
    /// A config map named by a pod.
    ConfigMap,
    /// A persistent volume claim mounted by a pod.
    PersistentVolumeClaim,
    /// A persistent volume bound to such a claim (cluster-scoped: namespace `""`).
    PersistentVolume,
    /// The service account of a pod.
    ServiceAccount,
}

impl ObjectKind {
    const COUNT: usize = 6;

    fn index(self) -> usize {
        self as usize
    }
}

/// Node name → number of reasons that node reaches the object.
type NodeCounts = HashMap<String, u32>;
/// Namespace → name → node counts.
type ByNamespace = HashMap<String, HashMap<String, NodeCounts>>;

/// What the graph remembers of a bound pod.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodEntry {
    node: String,
    /// Objects in the pod's namespace it references (none for mirror pods).
    refs: BTreeSet<(ObjectKind, String)>,
}

/// What the graph remembers of a persistent volume with a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PvEntry {
    claim: (String, String),
    /// Kubelet-visible secrets as (namespace, name).
    secrets: BTreeSet<(String, String)>,
}

/// The reachability index the node authorizer consults. The API server owns
/// one, feeds it from its watches of pods and persistent volumes, and holds
/// it behind a lock (writes are rare next to reads).
#[derive(Debug, Default)]
pub struct Graph {
    pods: HashMap<(String, String), PodEntry>,
    pvs: HashMap<String, PvEntry>,
    /// Claim (namespace, name) → persistent volumes whose `claimRef` names it.
    pvs_by_claim: HashMap<(String, String), BTreeSet<String>>,
    reach: [ByNamespace; ObjectKind::COUNT],
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `node` may reach the object (`hasPathFrom`): a constant-time
    /// lookup. Cluster-scoped objects (persistent volumes) have namespace `""`.
    pub fn reachable(&self, node: &str, kind: ObjectKind, namespace: &str, name: &str) -> bool {
        self.count(node, kind, namespace, name) > 0
    }

    /// How many reasons `node` has to reach the object (0 if none).
    pub fn count(&self, node: &str, kind: ObjectKind, namespace: &str, name: &str) -> u32 {
        self.reach[kind.index()]
            .get(namespace)
            .and_then(|names| names.get(name))
            .and_then(|nodes| nodes.get(node))
            .copied()
            .unwrap_or(0)
    }

    /// The node a pod is bound to, if the graph holds the pod.
    pub fn pod_node(&self, namespace: &str, name: &str) -> Option<&str> {
        self.pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|p| p.node.as_str())
    }

    /// A pod was added or changed (`AddPod` via the populator's `updatePod`).
    ///
    /// A pod with no `spec.nodeName` is not in the graph. A bound pod reaches
    /// its node; unless it is a mirror pod, its service account, secrets,
    /// config maps and claims reach the node through it. Upstream skips
    /// updates that keep the node and UID; here the references are recomputed
    /// and compared, so an ephemeral container added later is seen too.
    pub fn upsert_pod(&mut self, pod: &Value) {
        let (namespace, name) = refs::namespace_name(pod);
        let key = (namespace.to_owned(), name.to_owned());
        let node = refs::pod_node_name(pod);
        if node.is_empty() {
            self.remove_pod(namespace, name);
            return;
        }
        let entry = PodEntry {
            node: node.to_owned(),
            refs: pod_refs(pod),
        };
        if self.pods.get(&key) == Some(&entry) {
            return;
        }
        self.remove_pod(namespace, name);
        self.add(ObjectKind::Pod, namespace, name, node);
        for (kind, object) in &entry.refs {
            self.add(*kind, namespace, object, node);
        }
        self.pods.insert(key, entry);
    }

    /// A pod was deleted (`DeletePod`): its node no longer reaches what only
    /// this pod gave it.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) {
        let Some(entry) = self.pods.remove(&(namespace.to_owned(), name.to_owned())) else {
            return;
        };
        self.sub(ObjectKind::Pod, namespace, name, &entry.node);
        for (kind, object) in &entry.refs {
            self.sub(*kind, namespace, object, &entry.node);
        }
    }

    /// A persistent volume was added or changed (`AddPV`): with a `claimRef`,
    /// every node reaching the claim reaches the volume and its
    /// kubelet-visible secrets.
    pub fn upsert_pv(&mut self, pv: &Value) {
        let (_, name) = refs::namespace_name(pv);
        let entry = refs::pv_claim(pv).map(|(ns, claim)| {
            let mut secrets = BTreeSet::new();
            refs::visit_pv_kubelet_secret_names(pv, |ns, s| {
                secrets.insert((ns.to_owned(), s.to_owned()));
            });
            PvEntry {
                claim: (ns.to_owned(), claim.to_owned()),
                secrets,
            }
        });
        if self.pvs.get(name) == entry.as_ref() {
            return;
        }
        self.remove_pv(name);
        let Some(entry) = entry else {
            return;
        };
        self.pvs_by_claim
            .entry(entry.claim.clone())
            .or_default()
            .insert(name.to_owned());
        for node in self.nodes_reaching(ObjectKind::PersistentVolumeClaim, &entry.claim) {
            add_pv(&mut self.reach, name, &entry, &node);
        }
        self.pvs.insert(name.to_owned(), entry);
    }

    /// A persistent volume was deleted (`DeletePV`).
    pub fn remove_pv(&mut self, name: &str) {
        let Some(entry) = self.pvs.remove(name) else {
            return;
        };
        if let Some(pvs) = self.pvs_by_claim.get_mut(&entry.claim) {
            pvs.remove(name);
            if pvs.is_empty() {
                self.pvs_by_claim.remove(&entry.claim);
            }
        }
        for node in self.nodes_reaching(ObjectKind::PersistentVolumeClaim, &entry.claim) {
            sub_pv(&mut self.reach, name, &entry, &node);
        }
    }

    fn nodes_reaching(
        &self,
        kind: ObjectKind,
        (namespace, name): &(String, String),
    ) -> Vec<String> {
        self.reach[kind.index()]
            .get(namespace)
            .and_then(|names| names.get(name))
            .map(|nodes| nodes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// One more reason for `node` to reach the object; a claim newly reached
    /// brings its volumes along.
    fn add(&mut self, kind: ObjectKind, namespace: &str, name: &str, node: &str) {
        if increment(&mut self.reach, kind, namespace, name, node) == 1
            && kind == ObjectKind::PersistentVolumeClaim
        {
            let claim = (namespace.to_owned(), name.to_owned());
            for pv in self.pvs_by_claim.get(&claim).into_iter().flatten() {
                if let Some(entry) = self.pvs.get(pv) {
                    add_pv(&mut self.reach, pv, entry, node);
                }
            }
        }
    }

    /// One reason fewer; a claim no longer reached takes its volumes along.
    fn sub(&mut self, kind: ObjectKind, namespace: &str, name: &str, node: &str) {
        if decrement(&mut self.reach, kind, namespace, name, node) == Some(0)
            && kind == ObjectKind::PersistentVolumeClaim
        {
            let claim = (namespace.to_owned(), name.to_owned());
            for pv in self.pvs_by_claim.get(&claim).into_iter().flatten() {
                if let Some(entry) = self.pvs.get(pv) {
                    sub_pv(&mut self.reach, pv, entry, node);
                }
            }
        }
    }
}

/// The objects a bound pod gives its node, in the pod's namespace.
fn pod_refs(pod: &Value) -> BTreeSet<(ObjectKind, String)> {
    let mut out = BTreeSet::new();
    // A node must never gain access to other objects through a pod it can
    // create itself (upstream short-circuits mirror pods the same way).
    if refs::is_mirror_pod(pod) {
        return out;
    }
    let sa = refs::pod_service_account(pod);
    if !sa.is_empty() {
        out.insert((ObjectKind::ServiceAccount, sa.to_owned()));
    }
    refs::visit_pod_secret_names(pod, |n| {
        out.insert((ObjectKind::Secret, n.to_owned()));
    });
    refs::visit_pod_configmap_names(pod, |n| {
        out.insert((ObjectKind::ConfigMap, n.to_owned()));
    });
    refs::visit_pod_pvc_names(pod, |n| {
        out.insert((ObjectKind::PersistentVolumeClaim, n.to_owned()));
    });
    out
}

fn add_pv(reach: &mut [ByNamespace; ObjectKind::COUNT], name: &str, pv: &PvEntry, node: &str) {
    increment(reach, ObjectKind::PersistentVolume, "", name, node);
    for (ns, secret) in &pv.secrets {
        increment(reach, ObjectKind::Secret, ns, secret, node);
    }
}

fn sub_pv(reach: &mut [ByNamespace; ObjectKind::COUNT], name: &str, pv: &PvEntry, node: &str) {
    decrement(reach, ObjectKind::PersistentVolume, "", name, node);
    for (ns, secret) in &pv.secrets {
        decrement(reach, ObjectKind::Secret, ns, secret, node);
    }
}

/// Adds one to the count and returns the new count.
fn increment(
    reach: &mut [ByNamespace; ObjectKind::COUNT],
    kind: ObjectKind,
    namespace: &str,
    name: &str,
    node: &str,
) -> u32 {
    let count = reach[kind.index()]
        .entry(namespace.to_owned())
        .or_default()
        .entry(name.to_owned())
        .or_default()
        .entry(node.to_owned())
        .or_default();
    *count += 1;
    *count
}

/// Takes one from the count, dropping empty entries, and returns the new
/// count; `None` if there was none.
fn decrement(
    reach: &mut [ByNamespace; ObjectKind::COUNT],
    kind: ObjectKind,
    namespace: &str,
    name: &str,
    node: &str,
) -> Option<u32> {
    let by_ns = &mut reach[kind.index()];
    let names = by_ns.get_mut(namespace)?;
    let nodes = names.get_mut(name)?;
    let count = nodes.get_mut(node)?;
    *count = count.saturating_sub(1);
    let left = *count;
    if left == 0 {
        nodes.remove(node);
        if nodes.is_empty() {
            names.remove(name);
            if names.is_empty() {
                by_ns.remove(namespace);
            }
        }
    }
    Some(left)
}

#[cfg(test)]
#[path = "graph_test.rs"]
mod tests;
