//! Network policy in the datapath: what the TC programs look up to judge a
//! new flow, and what they report.
//!
//! # Identities, not rules, in the fast path
//!
//! The agent compiles every `NetworkPolicy` into three maps, Cilium-style,
//! so that judging a flow costs the same few lookups whether 1 or 1,000
//! policies exist:
//!
//! - **Identities.** Every distinct (namespace, pod labels, named container
//!   ports) is a *pod identity*; every CIDR named in any `ipBlock` (`cidr`
//!   and `except` alike) is a *CIDR identity*. Identities are node-local
//!   numbers (no packet carries them: routing is native), allocated by the
//!   agent. Named ports are part of a pod identity so an egress rule's named
//!   port resolves exactly, per destination pod.
//! - **The ipcache** ([`crate::map::IPCACHE`], an LPM trie): every pod IP in
//!   the cluster as a /32, and every policy CIDR, to a [`PeerIdentity`]. A
//!   pod's /32 entry also carries the CIDR identity of the longest policy
//!   CIDR containing it, so `ipBlock` applies to pod IPs too. Because
//!   prefixes nest, an address is inside a policy CIDR `Q` exactly when its
//!   longest match `P` satisfies `P ⊆ Q`: the compiler selects CIDR
//!   identities by that test, and `except` falls out of it.
//! - **Policy endpoints** ([`crate::map::POLICY_ENDPOINTS`]): the local pods
//!   some policy isolates, with their own identity and which directions are
//!   isolated. A pod that is not in it is not isolated: one hash miss.
//! - **Rules** ([`crate::map::POLICY`], an LPM trie): ([`PolicyKey`]) the
//!   endpoint's identity, the peer identity and the direction are matched
//!   exactly; protocol and destination port are a prefix, so "any protocol",
//!   "any port of a protocol" and `port`..`endPort` ranges (split into
//!   aligned blocks) are each one entry. A flow is allowed when a lookup
//!   with the peer's pod identity, its CIDR identity or [`IDENTITY_ANY`]
//!   matches: at most three lookups, only for the first packet of a flow.
//!
//! # Where it is enforced
//!
//! Egress on the pod's host-veth TC ingress (`skep_pod_ingress`), before
//! routing; ingress where a packet is handed to a local pod (same-node
//! delivery, the underlay, `NodePort`). Traffic between a pod and its own
//! node is never judged, as Kubernetes expects (probes, node-local DNS).
//! An allowed flow gets a conntrack entry pair (`CT_FLAG_POLICY_*`), so later
//! packets and every reply pass on one conntrack lookup.

/// How many local endpoints the policy-endpoints map holds.
pub const POLICY_ENDPOINTS_MAP_ENTRIES: u32 = crate::ENDPOINTS_MAP_ENTRIES;
/// How many prefixes the ipcache holds (pod /32s of the whole cluster and
/// policy CIDRs).
pub const IPCACHE_MAP_ENTRIES: u32 = 262_144;
/// How many rule prefixes the policy map holds, for all local endpoints
/// together (entries grow with local identities × selected peer identities
/// × port blocks; Cilium's per-endpoint default is 16,384). The trie is not
/// preallocated, so the bound costs nothing until used.
pub const POLICY_MAP_ENTRIES: u32 = 1 << 20;
/// How many names the userspace-only policy-names map holds.
pub const POLICY_NAMES_MAP_ENTRIES: u32 = 65_536;
/// How many per-endpoint verdict counters exist (endpoint × direction ×
/// verdict).
pub const POLICY_COUNTERS_MAP_ENTRIES: u32 = crate::ENDPOINTS_MAP_ENTRIES * 4;
/// Bytes of the flows ring buffer (a power of two, a multiple of the page).
pub const POLICY_FLOWS_RING_BYTES: u32 = 1 << 20;

/// The identity meaning "any peer at all" in a [`PolicyKey`] (a rule with no
/// `from`/`to`, or an empty one).
pub const IDENTITY_ANY: u32 = 0;
/// CIDR identities are at or above this; pod identities below.
pub const IDENTITY_CIDR_BASE: u32 = 1 << 24;

/// [`PolicyEndpoint::flags`]: some policy selects the pod for ingress.
pub const POLICY_INGRESS_ISOLATED: u32 = 1;
/// [`PolicyEndpoint::flags`]: some policy selects the pod for egress.
pub const POLICY_EGRESS_ISOLATED: u32 = 2;

/// Prefix length of a [`PolicyKey`] matching any protocol and port.
pub const POLICY_PREFIX_ANY_PROTO: u32 = 72;
/// Prefix length of a [`PolicyKey`] matching one protocol, any port.
pub const POLICY_PREFIX_PROTO: u32 = 80;
/// Prefix length of a [`PolicyKey`] matching one protocol and one port
/// (a port block of `2^k` ports has `POLICY_PREFIX_PORT - k`).
pub const POLICY_PREFIX_PORT: u32 = 96;
/// Prefix length of an ipcache entry for one IPv4 address.
pub const IPCACHE_PREFIX_HOST: u32 = 32;

/// Value of the policy-endpoints map (keyed by [`crate::EndpointKey`]): a
/// local pod some policy isolates. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEndpoint {
    /// The pod's identity: the first field of its [`PolicyKey`]s.
    pub identity: u32,
    /// `POLICY_*_ISOLATED` bits.
    pub flags: u32,
}

/// Value of the ipcache (an LPM trie keyed by an IPv4 address in network
/// byte order): who an address is. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The pod identity of a pod's /32; 0 for a CIDR entry.
    pub pod: u32,
    /// The identity of the longest policy CIDR containing the address; 0
    /// when none does.
    pub cidr: u32,
}

/// Data of the policy LPM trie's key (the trie adds the prefix length in
/// front). The first 72 bits are always matched exactly. 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// The isolated endpoint's identity ([`PolicyEndpoint::identity`]).
    pub endpoint: u32,
    /// The peer's identity (a pod or CIDR identity, or [`IDENTITY_ANY`]).
    pub peer: u32,
    /// A [`crate::Direction`] as `u8`, seen from the endpoint: `Ingress`
    /// judges traffic to it, `Egress` traffic from it.
    pub direction: u8,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// Destination port, network byte order (so a prefix is a port block).
    pub port: u16,
}

/// Value of the policy LPM trie. 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// Which `NetworkPolicy` allowed it: a key of the policy-names map.
    pub policy: u32,
}

/// A policy verdict, as counted and reported.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyVerdict {
    /// The first packet of a flow a rule allowed.
    Allowed = 0,
    /// No rule allowed it: dropped.
    Denied = 1,
    /// A later packet or reply of an allowed flow (found in conntrack).
    Established = 2,
}

impl PolicyVerdict {
    /// Every verdict, in raw-byte order.
    pub const ALL: [Self; 3] = [Self::Allowed, Self::Denied, Self::Established];

    /// The verdict for a raw byte, if it is one we write.
    #[must_use]
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Allowed),
            1 => Some(Self::Denied),
            2 => Some(Self::Established),
            _ => None,
        }
    }

    /// Its name in flows and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Established => "established",
        }
    }
}

/// Key of the per-CPU verdict counters (values are [`crate::MetricsValue`]).
/// 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyCounterKey {
    /// The local pod's address, network byte order.
    pub endpoint: u32,
    /// A [`crate::Direction`] as `u8`, seen from the endpoint.
    pub direction: u8,
    /// A [`PolicyVerdict`] as `u8`.
    pub verdict: u8,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// Explicit padding, always 0.
    pub pad: u8,
}

/// One judged flow, as the programs write it to the flows ring buffer:
/// every denied packet and the first packet of every allowed flow of an
/// isolated endpoint. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyFlow {
    /// `bpf_ktime_get_ns` when judged.
    pub time_ns: u64,
    /// Source address, network byte order.
    pub src_addr: u32,
    /// Destination address, network byte order.
    pub dst_addr: u32,
    /// Source port, network byte order (0 without ports).
    pub src_port: u16,
    /// Destination port, network byte order.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// A [`crate::Direction`] as `u8`, seen from the judged endpoint.
    pub direction: u8,
    /// A [`PolicyVerdict`] as `u8`.
    pub verdict: u8,
    /// Explicit padding, always 0.
    pub pad: u8,
    /// The judged local endpoint's identity.
    pub endpoint: u32,
    /// The peer identity the deciding lookup used (pod, CIDR, or
    /// [`IDENTITY_ANY`]); for a denial, the peer's pod identity (else its
    /// CIDR identity, else 0).
    pub peer: u32,
    /// The allowing policy ([`PolicyValue::policy`]); 0 for a denial.
    pub policy: u32,
    /// Explicit padding, always 0.
    pub pad2: u32,
}

/// A name for introspection (`namespace/name` of a policy or a peer pod),
/// NUL-padded; the values of the userspace-only names maps.
pub type PolicyName = crate::EndpointName;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all impls below): each type is `repr(C)`, `Copy`, made only of
    // integers with no implicit padding (the size tests below check it), so
    // every byte pattern is a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PolicyEndpoint {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PeerIdentity {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PolicyCounterKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PolicyFlow {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn policy_types_have_no_implicit_padding() {
        assert_eq!(size_of::<PolicyEndpoint>(), 8);
        assert_eq!(size_of::<PeerIdentity>(), 8);
        assert_eq!(size_of::<PolicyKey>(), 4 + 4 + 1 + 1 + 2);
        assert_eq!(size_of::<PolicyValue>(), 4);
        assert_eq!(size_of::<PolicyCounterKey>(), 8);
        assert_eq!(
            size_of::<PolicyFlow>(),
            8 + 4 + 4 + 2 + 2 + 4 + 4 + 4 + 4 + 4
        );
        assert_eq!(POLICY_PREFIX_ANY_PROTO, 8 * 9);
        assert_eq!(POLICY_PREFIX_PORT as usize, 8 * size_of::<PolicyKey>());
    }

    #[test]
    fn verdicts_round_trip_through_their_raw_byte() {
        for v in PolicyVerdict::ALL {
            assert_eq!(PolicyVerdict::from_u8(v as u8), Some(v));
        }
        assert_eq!(PolicyVerdict::from_u8(9), None);
    }
}
