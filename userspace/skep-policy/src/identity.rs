//! Identity and policy-id allocation: the same key keeps its number across
//! compiles (and agent restarts, as the agent persists [`Identities`]), and
//! numbers no compile used are released so the space does not leak.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::{Deserialize, Serialize};
use skep_ebpf_common::policy::IDENTITY_CIDR_BASE;

use crate::cidr::Cidr;
use crate::pod::{NamedPort, PolicyPod};

/// What makes two pods indistinguishable to policy: same namespace, same
/// labels, same named ports. Pods sharing it share one identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodIdentityKey {
    /// The namespace.
    pub namespace: String,
    /// The pod labels.
    pub labels: BTreeMap<String, String>,
    /// The named container ports.
    pub named_ports: BTreeSet<NamedPort>,
}

impl PodIdentityKey {
    /// The identity key of a pod.
    #[must_use]
    pub fn of(pod: &PolicyPod) -> Self {
        Self {
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            named_ports: pod.named_ports.clone(),
        }
    }
}

/// Pod identities live in `1..IDENTITY_CIDR_BASE`.
const POD_IDS: Range<u32> = 1..IDENTITY_CIDR_BASE;
/// CIDR identities live in `IDENTITY_CIDR_BASE..u32::MAX`.
const CIDR_IDS: Range<u32> = IDENTITY_CIDR_BASE..u32::MAX;
/// Policy ids (keys of the policy-names map) start at 1 (0 = none).
const POLICY_IDS: Range<u32> = 1..u32::MAX;

/// One numbering: a key → id map, the ids in use, a cursor for the next
/// free id, and which keys the current compile touched.
#[derive(Clone, Debug)]
struct Allocator<K> {
    ids: BTreeMap<K, u32>,
    used: BTreeSet<u32>,
    range: Range<u32>,
    next: u32,
    touched: BTreeSet<u32>,
}

impl<K: Ord + Clone> Allocator<K> {
    fn new(range: Range<u32>) -> Self {
        Self {
            ids: BTreeMap::new(),
            used: BTreeSet::new(),
            next: range.start,
            range,
            touched: BTreeSet::new(),
        }
    }

    /// Rebuilds an allocator from its persisted (key, id) pairs; the cursor
    /// restarts after the highest id.
    fn restore(
        range: Range<u32>,
        pairs: Vec<(K, u32)>,
        what: &'static str,
    ) -> Result<Self, IdentitiesError> {
        let mut a = Self::new(range);
        for (key, id) in pairs {
            if !a.range.contains(&id) || !a.used.insert(id) || a.ids.insert(key, id).is_some() {
                return Err(IdentitiesError::Invalid { what, id });
            }
        }
        a.next = a.used.last().map_or(a.range.start, |&id| a.step(id));
        Ok(a)
    }

    /// The id after `id`, wrapping inside the range.
    fn step(&self, id: u32) -> u32 {
        if id + 1 >= self.range.end {
            self.range.start
        } else {
            id + 1
        }
    }

    /// The id of `key`, allocating one (the next free after the cursor, so
    /// a just-released id is not handed out again at once); `None` only
    /// when the whole range is in use.
    fn get(&mut self, key: &K) -> Option<u32> {
        if let Some(&id) = self.ids.get(key) {
            self.touched.insert(id);
            return Some(id);
        }
        let size = usize::try_from(self.range.end - self.range.start).unwrap_or(usize::MAX);
        if self.used.len() >= size {
            return None;
        }
        let mut id = self.next;
        while self.used.contains(&id) {
            id = self.step(id);
        }
        self.next = self.step(id);
        self.used.insert(id);
        self.ids.insert(key.clone(), id);
        self.touched.insert(id);
        Some(id)
    }

    /// Releases every id not asked for since the last `gc`; returns how many.
    fn gc(&mut self) -> usize {
        let before = self.ids.len();
        let touched = std::mem::take(&mut self.touched);
        self.ids.retain(|_, id| touched.contains(id));
        self.used = touched;
        before - self.ids.len()
    }

    fn pairs(&self) -> Vec<(K, u32)> {
        self.ids.iter().map(|(k, &id)| (k.clone(), id)).collect()
    }
}

/// Persisted identities that cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum IdentitiesError {
    /// An id out of its range or given twice.
    #[error("failed to restore {what} identities: id {id} is out of range or duplicated")]
    Invalid {
        /// Which numbering (`pod`, `cidr`, `policy`).
        what: &'static str,
        /// The offending id.
        id: u32,
    },
}

/// The identity allocator of one node: pod identities
/// (`1..IDENTITY_CIDR_BASE`), CIDR identities (from `IDENTITY_CIDR_BASE`)
/// and policy ids (from 1). [`crate::compile`] asks it for every key in
/// use and releases the rest at its end. Serializes to plain (key, id)
/// lists (JSON-friendly) so the agent can persist it and keep ids stable
/// across restarts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "PersistedIdentities", try_from = "PersistedIdentities")]
pub struct Identities {
    pods: Allocator<PodIdentityKey>,
    cidrs: Allocator<Cidr>,
    policies: Allocator<String>,
}

impl Default for Identities {
    fn default() -> Self {
        Self {
            pods: Allocator::new(POD_IDS),
            cidrs: Allocator::new(CIDR_IDS),
            policies: Allocator::new(POLICY_IDS),
        }
    }
}

impl Identities {
    /// The identity of a pod key (allocated if new); `None` when the pod
    /// identity space is exhausted.
    pub fn pod(&mut self, key: &PodIdentityKey) -> Option<u32> {
        self.pods.get(key)
    }

    /// The identity of a policy CIDR (allocated if new); `None` when
    /// exhausted.
    pub fn cidr(&mut self, cidr: Cidr) -> Option<u32> {
        self.cidrs.get(&cidr)
    }

    /// The id of a policy by `namespace/name` (allocated if new); `None`
    /// when exhausted.
    pub fn policy(&mut self, key: &str) -> Option<u32> {
        self.policies.get(&key.to_owned())
    }

    /// Releases every id not asked for since the last call; returns how
    /// many were released.
    pub fn gc(&mut self) -> usize {
        self.pods.gc() + self.cidrs.gc() + self.policies.gc()
    }

    /// How many (pod, CIDR, policy) ids are allocated.
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.pods.ids.len(),
            self.cidrs.ids.len(),
            self.policies.ids.len(),
        )
    }
}

/// The serialized form of [`Identities`].
#[derive(Serialize, Deserialize)]
struct PersistedIdentities {
    pods: Vec<(PodIdentityKey, u32)>,
    cidrs: Vec<(String, u32)>,
    policies: Vec<(String, u32)>,
}

impl From<Identities> for PersistedIdentities {
    fn from(ids: Identities) -> Self {
        Self {
            pods: ids.pods.pairs(),
            cidrs: ids
                .cidrs
                .pairs()
                .into_iter()
                .map(|(c, id)| (c.to_string(), id))
                .collect(),
            policies: ids.policies.pairs(),
        }
    }
}

impl TryFrom<PersistedIdentities> for Identities {
    type Error = IdentitiesError;

    fn try_from(p: PersistedIdentities) -> Result<Self, Self::Error> {
        let mut cidrs = Vec::with_capacity(p.cidrs.len());
        for (text, id) in p.cidrs {
            let cidr = text
                .parse::<Cidr>()
                .map_err(|_| IdentitiesError::Invalid { what: "cidr", id })?;
            cidrs.push((cidr, id));
        }
        Ok(Self {
            pods: Allocator::restore(POD_IDS, p.pods, "pod")?,
            cidrs: Allocator::restore(CIDR_IDS, cidrs, "cidr")?,
            policies: Allocator::restore(POLICY_IDS, p.policies, "policy")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, app: &str) -> PodIdentityKey {
        PodIdentityKey {
            namespace: ns.into(),
            labels: BTreeMap::from([("app".into(), app.into())]),
            named_ports: BTreeSet::new(),
        }
    }

    #[test]
    fn ids_are_stable_ranged_and_released_by_gc() {
        let mut ids = Identities::default();
        let a = ids.pod(&key("x", "a"));
        let b = ids.pod(&key("x", "b"));
        assert_eq!((a, b), (Some(1), Some(2)));
        assert_eq!(ids.pod(&key("x", "a")), a, "same key, same id");
        let net = Cidr::new(std::net::Ipv4Addr::new(10, 0, 0, 0), 8);
        assert_eq!(ids.cidr(net), Some(IDENTITY_CIDR_BASE));
        assert_eq!(ids.policy("x/p"), Some(1));
        assert_eq!(ids.gc(), 0);
        // Only b asked for: a, the CIDR and the policy are released.
        assert_eq!(ids.pod(&key("x", "b")), b);
        assert_eq!(ids.gc(), 3);
        assert_eq!(ids.counts(), (1, 0, 0));
        // A new key does not get the just-released id back at once.
        assert_eq!(ids.pod(&key("x", "c")), Some(3));
    }

    #[test]
    fn allocation_wraps_and_reports_exhaustion() {
        let mut a: Allocator<u8> = Allocator::new(1..4);
        assert_eq!(
            (a.get(&1), a.get(&2), a.get(&3)),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(a.get(&4), None, "range full");
        assert_eq!(a.gc(), 0, "all three asked for since the start");
        a.get(&3);
        assert_eq!(a.gc(), 2);
        assert_eq!(a.get(&5), Some(1), "wrapped to the first free id");
        assert_eq!(a.get(&6), Some(2));
    }

    #[test]
    fn identities_round_trip_through_json_and_keep_allocating_after_the_highest() {
        let mut ids = Identities::default();
        ids.pod(&key("x", "a"));
        ids.pod(&key("y", "b"));
        ids.cidr(Cidr::new(std::net::Ipv4Addr::new(192, 168, 0, 0), 16));
        ids.policy("x/deny");
        let json = serde_json::to_string(&ids).unwrap_or_else(|e| panic!("{e}"));
        let mut back: Identities = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.pod(&key("y", "b")), Some(2));
        assert_eq!(back.pod(&key("z", "c")), Some(3));
        assert_eq!(
            back.cidr(Cidr::new(std::net::Ipv4Addr::new(192, 168, 0, 0), 16)),
            Some(IDENTITY_CIDR_BASE)
        );
        assert_eq!(back.policy("x/deny"), Some(1));
        let dup = r#"{"pods":[],"cidrs":[],"policies":[["a",1],["b",1]]}"#;
        assert!(serde_json::from_str::<Identities>(dup).is_err());
        let out = r#"{"pods":[],"cidrs":[["10.0.0.0/8",1]],"policies":[]}"#;
        assert!(serde_json::from_str::<Identities>(out).is_err());
    }
}
