//! The desired contents of one node's policy maps, and the minimal change
//! from one such state to another.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use skep_ebpf_common::policy::{PeerIdentity, PolicyEndpoint, PolicyKey, PolicyValue};

/// Everything the policy maps of one node should hold, as
/// [`crate::compile`] computes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Policy endpoints map: this node's isolated pods only, by pod IP.
    pub endpoints: BTreeMap<Ipv4Addr, PolicyEndpoint>,
    /// The ipcache LPM trie: (address, prefix length) → identities. Every
    /// pod of the cluster as a /32 and every policy CIDR that matters here.
    pub ipcache: BTreeMap<(Ipv4Addr, u32), PeerIdentity>,
    /// The rules LPM trie: (key, prefix length) → allowing policy.
    pub rules: BTreeMap<(PolicyKey, u32), PolicyValue>,
    /// Policy id → `namespace/name` (the userspace-only names map).
    pub policy_names: BTreeMap<u32, String>,
    /// Pod IP → `namespace/name`, for every pod of the cluster.
    pub peer_names: BTreeMap<Ipv4Addr, String>,
}

/// What to write to and delete from one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDiff<'a, K, V> {
    /// Entries that are new or whose value changed.
    pub upserts: Vec<(&'a K, &'a V)>,
    /// Keys to delete.
    pub removals: Vec<&'a K>,
}

impl<K, V> Default for MapDiff<'_, K, V> {
    fn default() -> Self {
        Self {
            upserts: Vec::new(),
            removals: Vec::new(),
        }
    }
}

impl<'a, K: Ord, V: PartialEq> MapDiff<'a, K, V> {
    /// The change from `current` to `desired`: one merge pass over both
    /// sorted maps.
    #[must_use]
    pub fn between(current: &'a BTreeMap<K, V>, desired: &'a BTreeMap<K, V>) -> Self {
        let mut diff = Self::default();
        let mut cur = current.iter().peekable();
        let mut want = desired.iter().peekable();
        loop {
            match (cur.peek(), want.peek()) {
                (None, None) => break,
                (Some(&(k, _)), None) => {
                    diff.removals.push(k);
                    cur.next();
                }
                (None, Some(&kv)) => {
                    diff.upserts.push(kv);
                    want.next();
                }
                (Some(&(ck, cv)), Some(&(wk, wv))) => match ck.cmp(wk) {
                    std::cmp::Ordering::Less => {
                        diff.removals.push(ck);
                        cur.next();
                    }
                    std::cmp::Ordering::Greater => {
                        diff.upserts.push((wk, wv));
                        want.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if cv != wv {
                            diff.upserts.push((wk, wv));
                        }
                        cur.next();
                        want.next();
                    }
                },
            }
        }
        diff
    }

    /// How many map operations it takes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.upserts.len() + self.removals.len()
    }

    /// Whether nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// The change from the maps' current contents to a desired state, per map.
///
/// Apply it in this order so no packet sees a half-made policy: names;
/// rule and ipcache upserts (rules for a new identity exist before anyone
/// carries it); endpoint upserts and removals (a pod becomes isolated only
/// once its rules are in); then ipcache and rule removals; names last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff<'a> {
    /// Policy endpoints.
    pub endpoints: MapDiff<'a, Ipv4Addr, PolicyEndpoint>,
    /// The ipcache.
    pub ipcache: MapDiff<'a, (Ipv4Addr, u32), PeerIdentity>,
    /// The rules.
    pub rules: MapDiff<'a, (PolicyKey, u32), PolicyValue>,
    /// Policy names.
    pub policy_names: MapDiff<'a, u32, String>,
    /// Peer names.
    pub peer_names: MapDiff<'a, Ipv4Addr, String>,
}

impl PolicyDiff<'_> {
    /// How many map operations it takes in all.
    #[must_use]
    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.ipcache.len()
            + self.rules.len()
            + self.policy_names.len()
            + self.peer_names.len()
    }

    /// Whether nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PolicyState {
    /// The change from `self` (what the maps hold now) to `desired`.
    #[must_use]
    pub fn diff<'a>(&'a self, desired: &'a PolicyState) -> PolicyDiff<'a> {
        PolicyDiff {
            endpoints: MapDiff::between(&self.endpoints, &desired.endpoints),
            ipcache: MapDiff::between(&self.ipcache, &desired.ipcache),
            rules: MapDiff::between(&self.rules, &desired.rules),
            policy_names: MapDiff::between(&self.policy_names, &desired.policy_names),
            peer_names: MapDiff::between(&self.peer_names, &desired.peer_names),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_diff_upserts_changed_and_new_removes_gone_and_skips_equal() {
        let cur = BTreeMap::from([(1, "a"), (2, "b"), (4, "d"), (6, "f")]);
        let want = BTreeMap::from([(2, "b"), (3, "c"), (4, "D"), (7, "g")]);
        let d = MapDiff::between(&cur, &want);
        assert_eq!(d.upserts, [(&3, &"c"), (&4, &"D"), (&7, &"g")]);
        assert_eq!(d.removals, [&1, &6]);
        assert!(MapDiff::between(&want, &want).is_empty());
        let empty = BTreeMap::new();
        assert_eq!(MapDiff::between(&empty, &want).upserts.len(), 4);
        assert_eq!(MapDiff::between(&want, &empty).removals.len(), 4);
    }
}
