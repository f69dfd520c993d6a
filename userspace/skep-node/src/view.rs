//! The node's view of the cluster, in the shape of kube-rs's reflector: one
//! [`ViewWriter`], owned by the node-sync stream task, applies the stream's
//! events; any number of cheap [`ViewReader`] clones take [`View`]
//! snapshots; and one change signal per concern ([`Concern`]) wakes only
//! the loops that read what changed.
//!
//! # Sharing
//!
//! Every kind is an `Arc<HashMap<key, Arc<object>>>`. A snapshot is a clone
//! of the dozen outer `Arc`s, so a reader never copies an object. The
//! writer changes a map with [`Arc::make_mut`]: in place while no reader
//! holds a snapshot of that map (the usual case: loops take a snapshot, run
//! and drop it), else it first makes a shallow copy (keys and pointers, no
//! objects), after which it owns that copy and writes it in place again.
//! So a map is copied at most once per snapshot a reader keeps across a
//! write, never once per event; a persistent map (`im`) would make every
//! write O(log n) and add a dependency for a copy we seldom pay.
//!
//! # Signals
//!
//! Each concern has a `tokio::sync::watch` of the store revision of the
//! last change it reads (0 until the first snapshot is in). An event wakes
//! a concern only when a fact that concern reads changed, compared with the
//! copy the view held: another node's heartbeat moves no route, this
//! node's worker's own status write (echoed by the stream) moves no policy,
//! service or DNS fact. The objects are still replaced, so readers always
//! see the newest copy (with its `resourceVersion`). A fresh snapshot
//! ([`ViewWriter::synced`]) wakes every concern.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skep_policy::PolicyPod;
use skep_proto::kinds as wire;
use tokio::sync::watch;

use crate::podspec::Sources;

/// A kind's objects, shared: readers hold the map, never copy an object.
pub type Map<K, T> = Arc<HashMap<K, Arc<T>>>;

/// A namespaced object's key.
pub type NsName = (String, String);

/// What the node knows of the cluster: the kinds the node-sync stream
/// sends. A value is a snapshot; cloning it copies a dozen pointers.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// This node.
    pub node: Option<Arc<Node>>,
    /// Every Node by name, this one included; other nodes' copies are only
    /// as fresh as their routing facts (pod CIDRs, addresses).
    pub nodes: Map<String, Node>,
    /// Pods bound here, by UID.
    pub pods: Map<String, Pod>,
    /// Every pod of the cluster (this node's too), by UID, as far as
    /// network policy needs it: metadata (namespace, name, uid, labels),
    /// `spec.nodeName`, `spec.hostNetwork`, the containers' names and
    /// ports, `status.phase`/`podIP`/`podIPs` (node sync's `PodPeer`).
    pub peer_pods: Map<String, Pod>,
    /// ConfigMaps by (namespace, name).
    pub config_maps: Map<NsName, ConfigMap>,
    /// Secrets by (namespace, name).
    pub secrets: Map<NsName, Secret>,
    /// PersistentVolumeClaims the pods here use, by (namespace, name).
    pub claims: Map<NsName, PersistentVolumeClaim>,
    /// PersistentVolumes those claims are bound to, by name.
    pub volumes: Map<String, PersistentVolume>,
    /// Every Service, by (namespace, name): the datapath and DNS serve them.
    pub services: Map<NsName, Service>,
    /// Every EndpointSlice, by (namespace, name).
    pub endpoint_slices: Map<NsName, EndpointSlice>,
    /// Every Namespace, by name (policy selects namespaces by label).
    pub namespaces: Map<String, Namespace>,
    /// Every NetworkPolicy, by (namespace, name).
    pub network_policies: Map<NsName, NetworkPolicy>,
}

/// A part of the view some loop reads; each has its own change signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Concern {
    /// This node's pods: their spec, the metadata a worker reads, their
    /// coming and going (not their status).
    LocalPods,
    /// Services and EndpointSlices: the service maps and cluster DNS.
    Services,
    /// What the policy compiler reads: Namespaces' labels,
    /// NetworkPolicies' specs and every pod's policy facts.
    Policy,
    /// The Nodes' routing facts (pod CIDRs, addresses, deletion).
    Nodes,
    /// What pods' volumes and pull secrets come from: ConfigMaps, Secrets,
    /// claims and volumes.
    Sources,
}

impl Concern {
    /// Every concern.
    pub const ALL: [Self; 5] = [
        Self::LocalPods,
        Self::Services,
        Self::Policy,
        Self::Nodes,
        Self::Sources,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A set of concerns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touched(u8);

impl Touched {
    /// No concern.
    pub const NONE: Self = Self(0);

    /// Every concern.
    #[must_use]
    pub fn all() -> Self {
        Concern::ALL.into_iter().fold(Self::NONE, Self::with)
    }

    /// This set and `concern`.
    #[must_use]
    pub fn with(self, concern: Concern) -> Self {
        Self(self.0 | concern.bit())
    }

    /// Whether `concern` is in the set.
    #[must_use]
    pub fn contains(self, concern: Concern) -> bool {
        self.0 & concern.bit() != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn when(self, changed: bool, concern: Concern) -> Self {
        if changed { self.with(concern) } else { self }
    }
}

/// What applying one event did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The concerns whose facts changed.
    pub touched: Touched,
    /// The UID of this node's pod the event was about (set even when only
    /// its status changed: the worker's copy is refreshed, not woken).
    pub local_pod: Option<String>,
}

/// Whether pod `old` → `new` changed what a pod worker acts on: the spec,
/// the identity and the metadata the downward API and deletion read
/// (labels, annotations, generation, deletion timestamp and grace). The
/// status is the worker's own output: its echo wakes nobody.
#[must_use]
pub fn worker_facts_changed(old: &Pod, new: &Pod) -> bool {
    let (a, b) = (&old.metadata, &new.metadata);
    a.uid != b.uid
        || a.name != b.name
        || a.namespace != b.namespace
        || a.generation != b.generation
        || a.deletion_timestamp != b.deletion_timestamp
        || a.deletion_grace_period_seconds != b.deletion_grace_period_seconds
        || a.labels != b.labels
        || a.annotations != b.annotations
        || old.spec != new.spec
}

/// A Node's routing facts (what [`crate::routes::desired`] reads).
fn routing_facts_changed(old: &Node, new: &Node) -> bool {
    let spec = |n: &Node| {
        n.spec
            .as_ref()
            .map(|s| (s.pod_cidr.clone(), s.pod_cidrs.clone()))
    };
    let addresses = |n: &Node| n.status.as_ref().and_then(|s| s.addresses.clone());
    spec(old) != spec(new)
        || addresses(old) != addresses(new)
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
}

/// A Service's facts the service maps and DNS read.
fn service_changed(old: &Service, new: &Service) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

/// An EndpointSlice's facts the service maps and DNS read.
fn slice_changed(old: &EndpointSlice, new: &EndpointSlice) -> bool {
    old.address_type != new.address_type
        || old.endpoints != new.endpoints
        || old.ports != new.ports
        || old.metadata.labels != new.metadata.labels
}

/// An object's content apart from what every write moves (resourceVersion,
/// managedFields).
fn content_changed<T>(old: &T, new: &T) -> bool
where
    T: Clone + PartialEq + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let strip = |o: &T| {
        let mut o = o.clone();
        o.metadata_mut().resource_version = None;
        o.metadata_mut().managed_fields = None;
        o
    };
    strip(old) != strip(new)
}

/// Stores `new` under `key` (or removes `key`); returns whether `changed`
/// says a reader's facts moved. The newest copy is stored either way.
fn put<K, T>(
    map: &mut Map<K, T>,
    key: K,
    new: Option<Arc<T>>,
    changed: impl Fn(&T, &T) -> bool,
) -> bool
where
    K: Clone + Eq + Hash,
{
    match new {
        None => {
            if !map.contains_key(&key) {
                return false;
            }
            Arc::make_mut(map).remove(&key);
            true
        }
        Some(new) => {
            let moved = map.get(&key).is_none_or(|old| changed(old, &new));
            Arc::make_mut(map).insert(key, new);
            moved
        }
    }
}

/// How a map keys its objects: `(namespace, name)` or, cluster-scoped, the
/// name alone.
trait ObjectKey: Clone + Eq + Hash {
    /// The key of the object with `meta`.
    fn of(meta: &ObjectMeta) -> Self;
}

impl ObjectKey for NsName {
    fn of(meta: &ObjectMeta) -> Self {
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl ObjectKey for String {
    fn of(meta: &ObjectMeta) -> Self {
        meta.name.clone().unwrap_or_default()
    }
}

/// Parses an object and its key; `None` if it does not parse.
fn parse<K, T>(object: &[u8]) -> Option<(K, T)>
where
    K: ObjectKey,
    T: serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let o = serde_json::from_slice::<T>(object).ok()?;
    Some((K::of(o.metadata()), o))
}

/// Applies one event of a kind to its `map`.
fn apply_to<K, T>(
    map: &mut Map<K, T>,
    deleted: bool,
    object: &[u8],
    changed: impl Fn(&T, &T) -> bool,
) -> bool
where
    K: ObjectKey,
    T: Clone + serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let Some((key, o)) = parse::<K, T>(object) else {
        return false;
    };
    put(map, key, (!deleted).then(|| Arc::new(o)), changed)
}

impl View {
    /// The ConfigMaps, Secrets and claims of `namespace`, and the volumes
    /// (copies: a worker reads them when it sets up volumes or pulls).
    #[must_use]
    pub fn sources(&self, namespace: &str) -> Sources {
        fn of<T: Clone>(map: &Map<NsName, T>, namespace: &str) -> HashMap<String, T> {
            map.iter()
                .filter(|((ns, _), _)| ns == namespace)
                .map(|((_, n), v)| (n.clone(), T::clone(v)))
                .collect()
        }
        Sources {
            claims: of(&self.claims, namespace),
            volumes: self
                .volumes
                .iter()
                .map(|(k, v)| (k.clone(), PersistentVolume::clone(v)))
                .collect(),
            config_maps: of(&self.config_maps, namespace),
            secrets: of(&self.secrets, namespace),
        }
    }

    /// Applies one node-sync event; `own` is this node's name. Returns the
    /// concerns whose facts changed and the local pod it was about. Bodies
    /// that do not parse change nothing.
    pub fn apply(&mut self, own: &str, kind: &str, deleted: bool, object: &[u8]) -> Applied {
        let mut out = Applied::default();
        let touched = Touched::NONE;
        out.touched = match kind {
            wire::NODE => {
                let Some((name, node)) = parse::<String, Node>(object) else {
                    return out;
                };
                let node = (!deleted).then(|| Arc::new(node));
                if name == own {
                    self.node.clone_from(&node);
                }
                let moved = put(&mut self.nodes, name, node, routing_facts_changed);
                touched.when(moved, Concern::Nodes)
            }
            wire::POD => {
                let Ok(pod) = serde_json::from_slice::<Pod>(object) else {
                    return out;
                };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                out.local_pod = Some(uid.clone());
                let pod = (!deleted).then(|| Arc::new(pod));
                let moved = put(&mut self.pods, uid, pod, worker_facts_changed);
                touched.when(moved, Concern::LocalPods)
            }
            wire::POD_PEER => {
                let Ok(pod) = serde_json::from_slice::<Pod>(object) else {
                    return out;
                };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let before = self
                    .peer_pods
                    .get(&uid)
                    .and_then(|p| PolicyPod::from_pod(p));
                let after = (!deleted).then(|| PolicyPod::from_pod(&pod)).flatten();
                let pod = (!deleted).then(|| Arc::new(pod));
                put(&mut self.peer_pods, uid, pod, |_, _| false);
                touched.when(before != after, Concern::Policy)
            }
            wire::NAMESPACE => {
                let moved = apply_to(&mut self.namespaces, deleted, object, |a, b| {
                    a.metadata.labels != b.metadata.labels
                });
                touched.when(moved, Concern::Policy)
            }
            wire::NETWORK_POLICY => {
                let moved = apply_to(&mut self.network_policies, deleted, object, |a, b| {
                    a.spec != b.spec
                });
                touched.when(moved, Concern::Policy)
            }
            wire::SERVICE => {
                let moved = apply_to(&mut self.services, deleted, object, service_changed);
                touched.when(moved, Concern::Services)
            }
            wire::ENDPOINT_SLICE => {
                let moved = apply_to(&mut self.endpoint_slices, deleted, object, slice_changed);
                touched.when(moved, Concern::Services)
            }
            wire::CONFIG_MAP => touched.when(
                apply_to(&mut self.config_maps, deleted, object, content_changed),
                Concern::Sources,
            ),
            wire::SECRET => touched.when(
                apply_to(&mut self.secrets, deleted, object, content_changed),
                Concern::Sources,
            ),
            wire::PERSISTENT_VOLUME_CLAIM => touched.when(
                apply_to(&mut self.claims, deleted, object, content_changed),
                Concern::Sources,
            ),
            wire::PERSISTENT_VOLUME => touched.when(
                apply_to(&mut self.volumes, deleted, object, content_changed),
                Concern::Sources,
            ),
            _ => touched,
        };
        out
    }
}

fn read(view: &RwLock<View>) -> std::sync::RwLockReadGuard<'_, View> {
    view.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(view: &RwLock<View>) -> std::sync::RwLockWriteGuard<'_, View> {
    view.write().unwrap_or_else(PoisonError::into_inner)
}

/// The one writer of the view: the node-sync stream task owns it.
#[derive(Debug)]
pub struct ViewWriter {
    own: String,
    view: Arc<RwLock<View>>,
    signals: Vec<watch::Sender<u64>>,
    /// A snapshot being received; swapped in by [`Self::synced`].
    fresh: Option<View>,
    reader: ViewReader,
}

impl ViewWriter {
    /// An empty view of node `own`; no concern is synced yet.
    #[must_use]
    pub fn new(own: &str) -> Self {
        let view = Arc::new(RwLock::new(View::default()));
        let signals: Vec<watch::Sender<u64>> =
            Concern::ALL.iter().map(|_| watch::Sender::new(0)).collect();
        let reader = ViewReader {
            view: Arc::clone(&view),
            signals: signals.iter().map(watch::Sender::subscribe).collect(),
        };
        Self {
            own: own.to_owned(),
            view,
            signals,
            fresh: None,
            reader,
        }
    }

    /// A reader of this view.
    #[must_use]
    pub fn reader(&self) -> ViewReader {
        self.reader.clone()
    }

    /// Starts receiving a fresh snapshot: events go to a new view, which
    /// [`Self::synced`] swaps in (readers keep the old one until then).
    pub fn begin_snapshot(&mut self) {
        self.fresh = Some(View::default());
    }

    /// Whether a snapshot is being received.
    #[must_use]
    pub fn in_snapshot(&self) -> bool {
        self.fresh.is_some()
    }

    /// Applies one event of revision `revision`, waking the concerns whose
    /// facts it changed (none while a snapshot is being received: the
    /// swap wakes them all).
    pub fn apply(&mut self, revision: u64, kind: &str, deleted: bool, object: &[u8]) -> Applied {
        if let Some(fresh) = &mut self.fresh {
            fresh.apply(&self.own, kind, deleted, object);
            return Applied::default();
        }
        let applied = write(&self.view).apply(&self.own, kind, deleted, object);
        self.wake(applied.touched, revision);
        applied
    }

    /// The stream is caught up at `revision`. After a snapshot, swaps it in
    /// and wakes every concern, and returns `true`; after a resume (every
    /// event already applied and signalled) it does nothing.
    pub fn synced(&mut self, revision: u64) -> bool {
        let Some(fresh) = self.fresh.take() else {
            return false;
        };
        *write(&self.view) = fresh;
        self.wake(Touched::all(), revision.max(1));
        true
    }

    fn wake(&self, touched: Touched, revision: u64) {
        for concern in Concern::ALL {
            if touched.contains(concern) {
                self.signals[concern.index()].send_replace(revision);
            }
        }
    }
}

/// A cheap reader of the view: snapshots and change signals.
#[derive(Clone, Debug)]
pub struct ViewReader {
    view: Arc<RwLock<View>>,
    signals: Vec<watch::Receiver<u64>>,
}

impl ViewReader {
    /// The view as it is now (a dozen pointer copies).
    #[must_use]
    pub fn snapshot(&self) -> View {
        read(&self.view).clone()
    }

    /// This node's Node, as last received.
    #[must_use]
    pub fn node(&self) -> Option<Arc<Node>> {
        read(&self.view).node.clone()
    }

    /// The pods bound here.
    #[must_use]
    pub fn pods(&self) -> Map<String, Pod> {
        Arc::clone(&read(&self.view).pods)
    }

    /// See [`View::sources`].
    #[must_use]
    pub fn sources(&self, namespace: &str) -> Sources {
        self.snapshot().sources(namespace)
    }

    /// The change signal of `concern`: the store revision of the last
    /// change to what it covers, 0 until the first snapshot is in. A new
    /// receiver counts every change since the view was made as unseen.
    #[must_use]
    pub fn changes(&self, concern: Concern) -> watch::Receiver<u64> {
        self.signals[concern.index()].clone()
    }

    /// Whether the first snapshot is in.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        *self.signals[Concern::LocalPods.index()].borrow() != 0
    }
}

#[cfg(test)]
#[path = "view_test.rs"]
mod tests;
