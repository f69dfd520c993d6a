//! The cluster cache: nodes with what is requested on them, and the pods on
//! them (bound, or *assumed* while their binding is in flight), indexed by
//! namespace and label and by topology domain so that inter-pod affinity and
//! spreading are answered without walking every pod.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::model::{AffinityTerm, Labels, NodeSpecInfo, PodInfo};
use crate::resources::Resources;

/// Index of a node slot in the cache (stable for the cache's lifetime).
pub type NodeId = usize;
/// Index of a pod slot in the cache (reused after removal).
pub type PodId = u32;

/// The label holding a node's zone (default spreading across zones).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Errors of cache operations.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The pod is not in the cache.
    #[error("failed to find pod {key} in the scheduler cache")]
    PodNotFound {
        /// `namespace/name`.
        key: String,
    },
    /// The pod is already in the cache (bound or assumed).
    #[error("failed to assume pod {key}: it is already in the scheduler cache")]
    PodExists {
        /// `namespace/name`.
        key: String,
    },
    /// The pod is in the cache but not assumed.
    #[error("failed to forget pod {key}: it is bound, not assumed")]
    NotAssumed {
        /// `namespace/name`.
        key: String,
    },
    /// The node is unknown or has been removed.
    #[error("failed to assume pod {key} on node {node}: node not found")]
    NodeNotFound {
        /// `namespace/name`.
        key: String,
        /// Node name.
        node: String,
    },
    /// Reserving the pod's requests would exceed the node's allocatable.
    #[error("failed to assume pod {key} on node {node}: {reasons:?}")]
    DoesNotFit {
        /// `namespace/name`.
        key: String,
        /// Node name.
        node: String,
        /// The kube-style reasons (`Insufficient cpu`, …).
        reasons: Vec<String>,
    },
}

/// A node and the pods placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// The compiled node; `None` while only pods referencing it are known
    /// (or after it was removed with pods still on it).
    pub spec: Option<NodeSpecInfo>,
    /// Interned value of its `topology.kubernetes.io/zone` label.
    pub zone: Option<u32>,
    /// Sum of the exact requests of the pods on it.
    pub requested: Resources,
    /// Sum of the non-zero CPU requests (scoring).
    pub non_zero_cpu: i64,
    /// Sum of the non-zero memory requests (scoring).
    pub non_zero_memory: i64,
    /// Pods on it (bound and assumed).
    pub pods: Vec<PodId>,
}

impl NodeInfo {
    /// Node labels (empty for a placeholder).
    pub fn label(&self, key: &str) -> Option<&str> {
        self.spec
            .as_ref()
            .and_then(|s| s.labels.get(key))
            .map(String::as_str)
    }
}

#[derive(Debug)]
struct PodEntry {
    info: Arc<PodInfo>,
    node: NodeId,
    assumed: bool,
}

/// Which of a pod's inter-pod terms a [`TermGroup`] collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TermKind {
    /// `requiredDuringScheduling…` pod affinity.
    RequiredAffinity,
    /// `requiredDuringScheduling…` pod anti-affinity.
    RequiredAntiAffinity,
    /// `preferredDuringScheduling…` pod affinity.
    PreferredAffinity,
    /// `preferredDuringScheduling…` pod anti-affinity.
    PreferredAntiAffinity,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    kind: TermKind,
    weight: i32,
    term: AffinityTerm,
}

/// All placed pods carrying one identical affinity term (typically the
/// replicas of one workload), with how many of them sit in each topology
/// domain. Lets the existing-pods side of inter-pod affinity cost one check
/// per distinct term rather than one per pod.
#[derive(Debug, Clone)]
pub struct TermGroup {
    /// The term kind.
    pub kind: TermKind,
    /// The weight (preferred terms; 0 for required).
    pub weight: i32,
    /// The term.
    pub term: AffinityTerm,
    /// Topology value (of `term.topology_key`) → pods of the group there.
    pub counts: HashMap<String, u32>,
    members: u32,
}

#[derive(Debug, Default)]
struct NsIndex {
    all: HashSet<PodId>,
    by_label: HashMap<String, HashMap<String, HashSet<PodId>>>,
}

/// Where the pods of one controller are: per node and per zone.
#[derive(Debug, Default, Clone)]
pub struct OwnerCounts {
    /// Node → pods of the owner on it.
    pub per_node: HashMap<NodeId, u32>,
    /// Interned zone → pods of the owner in it.
    pub per_zone: HashMap<u32, u32>,
}

/// The scheduler's view of the cluster.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    node_ids: HashMap<String, NodeId>,
    /// Schedulable-candidate node ids (nodes with a spec), in insertion order.
    live: Vec<NodeId>,
    pods: Vec<Option<PodEntry>>,
    free_pods: Vec<PodId>,
    pod_ids: HashMap<String, PodId>,
    ns_index: HashMap<String, NsIndex>,
    groups: HashMap<GroupKey, TermGroup>,
    owners: HashMap<String, OwnerCounts>,
    namespaces: HashMap<String, Labels>,
    zone_ids: HashMap<String, u32>,
    /// Live nodes per label key and value (topology domains).
    node_label_values: HashMap<String, HashMap<String, u32>>,
    /// Live nodes per interned zone.
    zone_nodes: Vec<u32>,
}

/// Which resources `requests` would overflow on a node: kube's reasons
/// (`Too many pods`, `Insufficient cpu`, …) in kube's order.
pub fn insufficient(node: &NodeInfo, spec: &NodeSpecInfo, pod: &PodInfo) -> Vec<String> {
    let mut reasons = Vec::new();
    if i64::try_from(node.pods.len()).unwrap_or(i64::MAX) + 1 > spec.allowed_pods {
        reasons.push("Too many pods".to_owned());
    }
    let req = &pod.requests.exact;
    let alloc = &spec.allocatable;
    let used = &node.requested;
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        reasons.push("Insufficient cpu".to_owned());
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        reasons.push("Insufficient memory".to_owned());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        reasons.push("Insufficient ephemeral-storage".to_owned());
    }
    for (name, v) in &req.scalar {
        if *v > 0 && *v > alloc.scalar(name) - used.scalar(name) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of nodes that can take pods (known, not removed).
    pub fn node_count(&self) -> usize {
        self.live.len()
    }

    /// Number of pods in the cache (bound and assumed).
    pub fn pod_count(&self) -> usize {
        self.pod_ids.len()
    }

    /// The live node ids, in a stable order (for rotating sampling).
    pub fn live_nodes(&self) -> &[NodeId] {
        &self.live
    }

    /// Number of node slots (ids are below this).
    pub fn node_slots(&self) -> usize {
        self.nodes.len()
    }

    /// A node slot.
    pub fn node(&self, id: NodeId) -> &NodeInfo {
        &self.nodes[id]
    }

    /// A node by name.
    pub fn node_by_name(&self, name: &str) -> Option<&NodeInfo> {
        self.node_ids.get(name).map(|&id| &self.nodes[id])
    }

    /// The node a cached pod is placed on, and whether it is only assumed.
    pub fn pod_placement(&self, key: &str) -> Option<(&str, bool)> {
        let entry = self.entry(key)?;
        Some((self.nodes[entry.node].name.as_str(), entry.assumed))
    }

    /// A cached pod's compiled info.
    pub fn pod_info(&self, id: PodId) -> Option<&Arc<PodInfo>> {
        self.pods
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|e| &e.info)
    }

    /// The node slot of a cached pod.
    pub fn pod_node(&self, id: PodId) -> Option<NodeId> {
        self.pods
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|e| e.node)
    }

    fn entry(&self, key: &str) -> Option<&PodEntry> {
        let id = *self.pod_ids.get(key)?;
        self.pods[id as usize].as_ref()
    }

    /// Labels of a namespace, when known.
    pub fn namespace_labels(&self, ns: &str) -> Option<Labels> {
        self.namespaces.get(ns).cloned()
    }

    /// Records a namespace's labels (for `namespaceSelector` in affinity terms).
    pub fn set_namespace(&mut self, name: &str, labels: Labels) {
        self.namespaces.insert(name.to_owned(), labels);
    }

    /// Forgets a namespace's labels.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// All term groups (existing pods' inter-pod terms).
    pub fn term_groups(&self) -> impl Iterator<Item = &TermGroup> {
        self.groups.values()
    }

    /// Where an owner's pods are.
    pub fn owner_counts(&self, owner: &str) -> Option<&OwnerCounts> {
        self.owners.get(owner)
    }

    /// Pods in namespace `ns` that might match `selector` (a superset: the
    /// caller still checks the selector), chosen through the label index.
    pub fn candidate_pods<'a>(
        &'a self,
        ns: &str,
        selector: &'a crate::model::Selector,
    ) -> Box<dyn Iterator<Item = PodId> + 'a> {
        let Some(idx) = self.ns_index.get(ns) else {
            return Box::new(std::iter::empty());
        };
        if selector.nothing {
            return Box::new(std::iter::empty());
        }
        // The smallest posting list among `In` requirements.
        let mut best: Option<(usize, Vec<&HashSet<PodId>>)> = None;
        for r in &selector.requirements {
            if r.op != crate::model::Op::In {
                continue;
            }
            let lists: Vec<&HashSet<PodId>> = idx
                .by_label
                .get(&r.key)
                .map(|vals| r.values.iter().filter_map(|v| vals.get(v)).collect())
                .unwrap_or_default();
            let size: usize = lists.iter().map(|l| l.len()).sum();
            if best.as_ref().is_none_or(|(s, _)| size < *s) {
                best = Some((size, lists));
            }
        }
        match best {
            Some((_, lists)) => Box::new(lists.into_iter().flat_map(|l| l.iter().copied())),
            None => Box::new(idx.all.iter().copied()),
        }
    }

    /// Namespaces that have pods.
    pub fn pod_namespaces(&self) -> impl Iterator<Item = &str> {
        self.ns_index.keys().map(String::as_str)
    }

    fn count_labels(&mut self, labels: &Labels, add: bool) {
        for (k, v) in labels {
            let values = self.node_label_values.entry(k.clone()).or_default();
            if add {
                *values.entry(v.clone()).or_insert(0) += 1;
            } else {
                decrement(values, v);
                if values.is_empty() {
                    self.node_label_values.remove(k);
                }
            }
        }
    }

    /// The values of node label `key` on live nodes (the topology domains).
    pub fn label_domains(&self, key: &str) -> impl Iterator<Item = &str> {
        self.node_label_values
            .get(key)
            .into_iter()
            .flat_map(|v| v.keys().map(String::as_str))
    }

    fn intern_zone(&mut self, zone: &str) -> u32 {
        if let Some(&id) = self.zone_ids.get(zone) {
            return id;
        }
        let id = u32::try_from(self.zone_nodes.len()).unwrap_or(u32::MAX);
        self.zone_ids.insert(zone.to_owned(), id);
        self.zone_nodes.push(0);
        id
    }

    /// Number of zones that have live nodes.
    pub fn zone_count(&self) -> usize {
        self.zone_nodes.iter().filter(|&&n| n > 0).count()
    }

    fn node_slot(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.node_ids.get(name) {
            return id;
        }
        let id = self.nodes.len();
        self.nodes.push(NodeInfo {
            name: name.to_owned(),
            spec: None,
            zone: None,
            requested: Resources::default(),
            non_zero_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
        });
        self.node_ids.insert(name.to_owned(), id);
        id
    }

    /// Adds or replaces a node. Returns its id.
    #[tracing::instrument(skip_all, fields(node = node.metadata.name.as_deref().unwrap_or("")))]
    pub fn upsert_node(&mut self, node: &Node) -> NodeId {
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = NodeSpecInfo::new(node);
        let id = self.node_slot(&name);
        let labels_changed = self.nodes[id]
            .spec
            .as_ref()
            .is_none_or(|old| old.labels != spec.labels);
        let pods = self.nodes[id].pods.clone();
        if labels_changed {
            for &p in &pods {
                self.topology(p, -1);
            }
        }
        if self.nodes[id].spec.is_none() {
            self.live.push(id);
        }
        if let Some(z) = self.nodes[id].zone {
            self.zone_nodes[z as usize] -= 1;
        }
        if let Some(old) = self.nodes[id].spec.take() {
            self.count_labels(&old.labels, false);
        }
        self.count_labels(&spec.labels, true);
        let zone = spec.labels.get(ZONE_LABEL).map(|z| self.intern_zone(z));
        if let Some(z) = zone {
            self.zone_nodes[z as usize] += 1;
        }
        self.nodes[id].zone = zone;
        self.nodes[id].spec = Some(spec);
        if labels_changed {
            for &p in &pods {
                self.topology(p, 1);
            }
        }
        id
    }

    /// Removes a node (its pods stay accounted until they are removed).
    pub fn remove_node(&mut self, name: &str) {
        let Some(&id) = self.node_ids.get(name) else {
            return;
        };
        if self.nodes[id].spec.is_none() {
            return;
        }
        let pods = self.nodes[id].pods.clone();
        for &p in &pods {
            self.topology(p, -1);
        }
        if let Some(old) = self.nodes[id].spec.take() {
            self.count_labels(&old.labels, false);
        }
        if let Some(z) = self.nodes[id].zone.take() {
            self.zone_nodes[z as usize] -= 1;
        }
        for &p in &pods {
            self.topology(p, 1);
        }
        self.live.retain(|&n| n != id);
    }

    /// Reserves `pod`'s resources on `node` while its binding is in flight.
    /// Fails (reserving nothing) when the pod would not fit, so concurrent
    /// scheduling decisions can never double-book a node.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) -> Result<(), CacheError> {
        if self.pod_ids.contains_key(&pod.key) {
            return Err(CacheError::PodExists {
                key: pod.key.clone(),
            });
        }
        let Some(&id) = self.node_ids.get(node) else {
            return Err(CacheError::NodeNotFound {
                key: pod.key.clone(),
                node: node.to_owned(),
            });
        };
        let info = &self.nodes[id];
        let Some(spec) = info.spec.as_ref() else {
            return Err(CacheError::NodeNotFound {
                key: pod.key.clone(),
                node: node.to_owned(),
            });
        };
        let reasons = insufficient(info, spec, &pod);
        if !reasons.is_empty() {
            return Err(CacheError::DoesNotFit {
                key: pod.key.clone(),
                node: node.to_owned(),
                reasons,
            });
        }
        self.place(pod, id, true);
        Ok(())
    }

    /// Marks an assumed pod as bound (its binding succeeded).
    pub fn confirm(&mut self, key: &str) -> Result<(), CacheError> {
        let id = *self
            .pod_ids
            .get(key)
            .ok_or_else(|| CacheError::PodNotFound {
                key: key.to_owned(),
            })?;
        if let Some(e) = self.pods[id as usize].as_mut() {
            e.assumed = false;
        }
        Ok(())
    }

    /// Releases an assumed pod's reservation (its binding failed).
    pub fn forget(&mut self, key: &str) -> Result<(), CacheError> {
        let entry = self.entry(key).ok_or_else(|| CacheError::PodNotFound {
            key: key.to_owned(),
        })?;
        if !entry.assumed {
            return Err(CacheError::NotAssumed {
                key: key.to_owned(),
            });
        }
        self.remove_pod(key);
        Ok(())
    }

    /// Adds or updates a bound pod (from a watch). An assumed pod becomes
    /// bound; a pod seen on another node than assumed moves there.
    pub fn upsert_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod.node_name.clone() else {
            return;
        };
        self.remove_pod(&pod.key);
        let id = self.node_slot(&node);
        self.place(pod, id, false);
    }

    /// Removes a pod (deleted, or terminated). Returns whether it was cached.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(id) = self.pod_ids.remove(key) else {
            return false;
        };
        self.topology(id, -1);
        let Some(entry) = self.pods[id as usize].take() else {
            return false;
        };
        self.free_pods.push(id);
        let info = &entry.info;
        let node = &mut self.nodes[entry.node];
        node.requested.sub(&info.requests.exact);
        node.non_zero_cpu -= info.requests.non_zero_milli_cpu;
        node.non_zero_memory -= info.requests.non_zero_memory;
        if let Some(pos) = node.pods.iter().position(|&p| p == id) {
            node.pods.swap_remove(pos);
        }
        if let Some(idx) = self.ns_index.get_mut(&info.namespace) {
            idx.all.remove(&id);
            for (k, v) in &info.labels {
                if let Some(vals) = idx.by_label.get_mut(k) {
                    if let Some(set) = vals.get_mut(v) {
                        set.remove(&id);
                        if set.is_empty() {
                            vals.remove(v);
                        }
                    }
                    if vals.is_empty() {
                        idx.by_label.remove(k);
                    }
                }
            }
            if idx.all.is_empty() {
                self.ns_index.remove(&info.namespace);
            }
        }
        true
    }

    fn place(&mut self, info: Arc<PodInfo>, node: NodeId, assumed: bool) {
        let id = self.free_pods.pop().unwrap_or_else(|| {
            self.pods.push(None);
            PodId::try_from(self.pods.len() - 1).unwrap_or(PodId::MAX)
        });
        let n = &mut self.nodes[node];
        n.requested.add(&info.requests.exact);
        n.non_zero_cpu += info.requests.non_zero_milli_cpu;
        n.non_zero_memory += info.requests.non_zero_memory;
        n.pods.push(id);
        let idx = self.ns_index.entry(info.namespace.clone()).or_default();
        idx.all.insert(id);
        for (k, v) in &info.labels {
            idx.by_label
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(id);
        }
        self.pod_ids.insert(info.key.clone(), id);
        self.pods[id as usize] = Some(PodEntry {
            info,
            node,
            assumed,
        });
        self.topology(id, 1);
    }

    /// Adds (`delta` = 1) or removes (-1) a placed pod's contribution to term
    /// groups and owner counts, using its node's current labels.
    fn topology(&mut self, id: PodId, delta: i32) {
        let Some(entry) = self.pods[id as usize].as_ref() else {
            return;
        };
        let info = Arc::clone(&entry.info);
        let node = &self.nodes[entry.node];
        let node_id = entry.node;
        let zone = node.zone;
        let terms = info
            .affinity
            .iter()
            .map(|t| (TermKind::RequiredAffinity, 0, t))
            .chain(
                info.anti_affinity
                    .iter()
                    .map(|t| (TermKind::RequiredAntiAffinity, 0, t)),
            )
            .chain(
                info.preferred_affinity
                    .iter()
                    .map(|(w, t)| (TermKind::PreferredAffinity, *w, t)),
            )
            .chain(
                info.preferred_anti_affinity
                    .iter()
                    .map(|(w, t)| (TermKind::PreferredAntiAffinity, *w, t)),
            );
        for (kind, weight, term) in terms {
            let value = node.label(&term.topology_key).map(str::to_owned);
            let key = GroupKey {
                kind,
                weight,
                term: term.clone(),
            };
            if delta > 0 {
                let g = self.groups.entry(key).or_insert_with(|| TermGroup {
                    kind,
                    weight,
                    term: term.clone(),
                    counts: HashMap::new(),
                    members: 0,
                });
                g.members += 1;
                if let Some(v) = value {
                    *g.counts.entry(v).or_insert(0) += 1;
                }
            } else if let Some(g) = self.groups.get_mut(&key) {
                g.members -= 1;
                if let Some(v) = value {
                    decrement(&mut g.counts, &v);
                }
                if g.members == 0 {
                    self.groups.remove(&key);
                }
            }
        }
        if let Some(owner) = &info.owner {
            if delta > 0 {
                let o = self.owners.entry(owner.clone()).or_default();
                *o.per_node.entry(node_id).or_insert(0) += 1;
                if let Some(z) = zone {
                    *o.per_zone.entry(z).or_insert(0) += 1;
                }
            } else if let Some(o) = self.owners.get_mut(owner) {
                decrement(&mut o.per_node, &node_id);
                if let Some(z) = zone {
                    decrement(&mut o.per_zone, &z);
                }
                if o.per_node.is_empty() {
                    self.owners.remove(owner);
                }
            }
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(c) = map.get_mut(key) {
        *c -= 1;
        if *c == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::testutil::{bound_to, node, pod, pod_term, require_anti_affinity, with_labels};

    fn info(p: k8s_openapi::api::core::v1::Pod) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(p))
    }

    #[test]
    fn assume_reserves_and_forget_releases() {
        let mut c = Cache::new();
        c.upsert_node(&node("a", "1", "1Gi", &[]));
        c.assume(info(pod("p", "800m", "")), "a")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.node_by_name("a").map(|n| n.requested.milli_cpu),
            Some(800)
        );
        let err = c.assume(info(pod("q", "800m", "")), "a");
        assert!(
            matches!(&err, Err(CacheError::DoesNotFit { reasons, .. }) if reasons == &["Insufficient cpu"]),
            "{err:?}"
        );
        c.forget("default/p").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.node_by_name("a").map(|n| n.requested.milli_cpu), Some(0));
        c.assume(info(pod("q", "800m", "")), "a")
            .unwrap_or_else(|e| panic!("{e}"));
        // Confirmed pods cannot be forgotten, only removed.
        c.confirm("default/q").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            c.forget("default/q"),
            Err(CacheError::NotAssumed { .. })
        ));
        assert!(c.remove_pod("default/q"));
        assert_eq!(c.pod_count(), 0);
    }

    #[test]
    fn concurrent_assumes_never_exceed_allocatable() {
        let cache = Arc::new(Mutex::new(Cache::new()));
        if let Ok(mut c) = cache.lock() {
            c.upsert_node(&node("a", "1", "1Gi", &[]));
        }
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|i| {
                            let p = info(pod(&format!("t{t}-{i}"), "100m", ""));
                            cache.lock().is_ok_and(|mut c| c.assume(p, "a").is_ok())
                        })
                        .count()
                })
            })
            .collect();
        let won: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(won, 10, "1 cpu holds exactly ten 100m pods");
        let used = cache
            .lock()
            .map(|c| c.node_by_name("a").map(|n| n.requested.milli_cpu));
        assert_eq!(used.ok().flatten(), Some(1000));
    }

    #[test]
    fn bound_pod_replaces_its_assumption_and_node_relabel_moves_topology() {
        let mut c = Cache::new();
        c.upsert_node(&node("a", "4", "4Gi", &[("zone", "z1")]));
        c.upsert_node(&node("b", "4", "4Gi", &[("zone", "z1")]));
        let mut p = with_labels(pod("p", "1", ""), &[("app", "x")]);
        require_anti_affinity(&mut p, pod_term(&[("app", "x")], "zone"));
        c.assume(info(p.clone()), "a")
            .unwrap_or_else(|e| panic!("{e}"));
        // The watch reports it bound elsewhere: it moves.
        c.upsert_pod(info(bound_to(p, "b")));
        assert_eq!(c.pod_placement("default/p"), Some(("b", false)));
        assert_eq!(c.node_by_name("a").map(|n| n.requested.milli_cpu), Some(0));
        let counts = |c: &Cache| {
            c.term_groups()
                .map(|g| g.counts.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&c), vec![HashMap::from([("z1".to_owned(), 1)])]);
        c.upsert_node(&node("b", "4", "4Gi", &[("zone", "z2")]));
        assert_eq!(counts(&c), vec![HashMap::from([("z2".to_owned(), 1)])]);
        let domains = |c: &Cache| {
            let mut d: Vec<String> = c.label_domains("zone").map(str::to_owned).collect();
            d.sort();
            d
        };
        assert_eq!(domains(&c), ["z1", "z2"]);
        assert_eq!(c.zone_count(), 0, "no topology.kubernetes.io/zone labels");
        c.remove_node("a");
        assert_eq!(domains(&c), ["z2"]);
        c.remove_pod("default/p");
        assert_eq!(c.term_groups().count(), 0);
    }

    #[test]
    fn pods_before_their_node_are_kept() {
        let mut c = Cache::new();
        c.upsert_pod(info(bound_to(pod("p", "1", ""), "late")));
        assert_eq!(c.node_count(), 0);
        c.upsert_node(&node("late", "2", "2Gi", &[]));
        assert_eq!(c.node_count(), 1);
        assert_eq!(
            c.node_by_name("late").map(|n| n.requested.milli_cpu),
            Some(1000)
        );
    }
}
