//! Connection tracking for packet-level NAT (`NodePort`, `externalIPs`), shared
//! with network policy.
//!
//! # One entry per direction, keys not normalised
//!
//! A tracked flow has two entries, each keyed by the exact 5-tuple the packets
//! of one direction carry where the datapath looks them up, and each holding
//! the whole tuple those packets must carry after translation:
//!
//! ```text
//! original  C:cp → N:np    ⇒  S:sp → B:bp   (S:sp = C:cp, or N:snat when SNAT'd)
//! reply     B:bp → S:sp    ⇒  N:np → C:cp
//! ```
//!
//! A direction-normalised key (smaller address first) would let both
//! directions share one entry, but only when the reply is the mirror image of
//! the original, which NAT breaks: the reply of a DNAT'd and SNAT'd flow
//! carries neither of the client's addresses. Exact keys make every lookup one
//! hash probe with the packet's own tuple, whichever direction it goes, and
//! the peer of any entry is found the same way: it is keyed by the *reverse*
//! of the entry's translated tuple ([`CtKey::peer_of`]). Policy adds entries
//! without translation (translated tuple = key) under the same rules.
//!
//! Entries live in an LRU hash sized from memory, so a full table evicts the
//! least recently used flow and no userspace GC is needed; an entry past its
//! timeout ([`ct_timeout_ns`]) is ignored by the datapath and overwritten by
//! the next new flow with its tuple.

/// [`CtValue::flags`]: this entry tracks the reply direction (the backend's
/// packets); without it, the original direction (the client's).
pub const CT_FLAG_REPLY: u8 = 1;
/// [`CtValue::flags`]: a packet of the reply direction was seen.
pub const CT_FLAG_SEEN_REPLY: u8 = 2;
/// [`CtValue::flags`]: a TCP FIN or RST was seen; the flow ages out in
/// [`CT_TIMEOUT_TCP_CLOSE_SECS`] and a new SYN with the same tuple starts a
/// new flow.
pub const CT_FLAG_CLOSING: u8 = 4;
/// [`CtValue::flags`]: the source was translated to this node's address
/// (`externalTrafficPolicy: Cluster` with a backend on another node).
pub const CT_FLAG_SNAT: u8 = 8;
/// [`CtValue::flags`] of an original-direction entry: the source pod's
/// egress policy allowed the flow (its later packets pass without a policy
/// lookup; replies always pass).
pub const CT_FLAG_POLICY_EGRESS: u8 = 16;
/// [`CtValue::flags`] of an original-direction entry: the destination pod's
/// ingress policy allowed the flow.
pub const CT_FLAG_POLICY_INGRESS: u8 = 32;

/// Timeout of an established TCP flow: 6 hours (Cilium's
/// `bpf-ct-timeout-regular-tcp`).
pub const CT_TIMEOUT_TCP_ESTABLISHED_SECS: u64 = 21_600;
/// Timeout of a TCP flow that has not seen a reply yet: 60 s (Cilium's
/// `bpf-ct-timeout-regular-tcp-syn`).
pub const CT_TIMEOUT_TCP_SYN_SECS: u64 = 60;
/// Timeout of a TCP flow after FIN or RST: 10 s (Cilium's
/// `bpf-ct-timeout-regular-tcp-fin`).
pub const CT_TIMEOUT_TCP_CLOSE_SECS: u64 = 10;
/// Timeout of a UDP (or other) flow: 60 s (Cilium's `bpf-ct-timeout-regular-any`).
pub const CT_TIMEOUT_ANY_SECS: u64 = 60;

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const PROTO_TCP: u8 = 6;

/// Key of the conntrack map: the 5-tuple of one direction, addresses and
/// ports in network byte order as on the wire. 16 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtKey {
    /// Source address.
    pub src_addr: u32,
    /// Destination address.
    pub dst_addr: u32,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// Explicit padding, always 0.
    pub pad: u16,
}

impl CtKey {
    /// The key of the other direction of `value`'s flow: the reverse of the
    /// tuple `value` translates to.
    #[must_use]
    pub const fn peer_of(&self, value: &CtValue) -> Self {
        Self {
            src_addr: value.nat_dst_addr,
            dst_addr: value.nat_src_addr,
            src_port: value.nat_dst_port,
            dst_port: value.nat_src_port,
            proto: self.proto,
            family: self.family,
            pad: 0,
        }
    }
}

/// Value of the conntrack map. 32 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// When a packet of this direction was last seen (`bpf_ktime_get_ns`).
    pub last_seen_ns: u64,
    /// Source address packets of this direction carry after translation.
    pub nat_src_addr: u32,
    /// Destination address after translation.
    pub nat_dst_addr: u32,
    /// Source port after translation.
    pub nat_src_port: u16,
    /// Destination port after translation.
    pub nat_dst_port: u16,
    /// The backend the flow was sent to (0: none, e.g. a policy-only entry).
    pub backend_id: u32,
    /// The service's rev-NAT id (0: none): names the service in `ct list`.
    pub rev_nat_id: u16,
    /// `CT_FLAG_*` bits (a bit set, not `bool`s: `bool` is not `Pod`).
    pub flags: u8,
    /// Explicit padding, always 0.
    pub pad: [u8; 5],
}

/// How long after its last packet an entry of protocol `proto` with `flags`
/// stays valid, in nanoseconds.
#[must_use]
pub const fn ct_timeout_ns(proto: u8, flags: u8) -> u64 {
    let secs = if proto != PROTO_TCP {
        CT_TIMEOUT_ANY_SECS
    } else if flags & CT_FLAG_CLOSING != 0 {
        CT_TIMEOUT_TCP_CLOSE_SECS
    } else if flags & CT_FLAG_SEEN_REPLY == 0 {
        CT_TIMEOUT_TCP_SYN_SECS
    } else {
        CT_TIMEOUT_TCP_ESTABLISHED_SECS
    };
    secs * NANOS_PER_SECOND
}

/// Whether `value` (an entry of protocol `proto`) has expired at `now_ns`.
#[must_use]
pub const fn ct_expired(value: &CtValue, proto: u8, now_ns: u64) -> bool {
    now_ns.saturating_sub(value.last_seen_ns) > ct_timeout_ns(proto, value.flags)
}

/// Value of the node-config map (an array with one entry): what the datapath
/// treats as "this node". Written by the agent at start. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's IPv4 address on the underlay, network byte order: the
    /// source of SNAT'd `NodePort` traffic. 0 until the agent sets it (no
    /// SNAT then: flows to other nodes' backends are dropped).
    pub ipv4: u32,
    /// Reserved, always 0.
    pub flags: u32,
}

/// Key of the external session-affinity LRU map: one client IP and one
/// service, for traffic that comes from outside the node. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExternalAffinityKey {
    /// The client's address, network byte order.
    pub client_addr: u32,
    /// The service's rev-NAT id.
    pub rev_nat_id: u16,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// Explicit padding, always 0.
    pub pad: u8,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all impls below): each type is `repr(C)`, `Copy`, made only of
    // integers (and integer arrays) with no implicit padding (the size tests
    // below check it), so every byte pattern is a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CtValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::NodeConfig {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ExternalAffinityKey {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn ct_types_have_no_implicit_padding() {
        assert_eq!(size_of::<CtKey>(), 4 + 4 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(size_of::<CtValue>(), 8 + 4 + 4 + 2 + 2 + 4 + 2 + 1 + 5);
        assert_eq!(size_of::<NodeConfig>(), 8);
        assert_eq!(size_of::<ExternalAffinityKey>(), 4 + 2 + 1 + 1);
    }

    #[test]
    fn peers_of_a_snat_flow_find_each_other() {
        let (client, node, backend, snat) = (1, 2, 3, 4000);
        let original = CtKey {
            src_addr: client,
            dst_addr: node,
            src_port: 1000,
            dst_port: 30080,
            proto: 6,
            family: 4,
            pad: 0,
        };
        let forward = CtValue {
            nat_src_addr: node,
            nat_src_port: snat,
            nat_dst_addr: backend,
            nat_dst_port: 8080,
            ..CtValue::default()
        };
        let reply_key = original.peer_of(&forward);
        assert_eq!(
            (reply_key.src_addr, reply_key.src_port, reply_key.dst_addr),
            (backend, 8080, node)
        );
        assert_eq!(reply_key.dst_port, snat);
        let reply = CtValue {
            nat_src_addr: node,
            nat_src_port: 30080,
            nat_dst_addr: client,
            nat_dst_port: 1000,
            ..CtValue::default()
        };
        assert_eq!(reply_key.peer_of(&reply), original);
    }

    #[test]
    fn timeouts_follow_tcp_state() {
        let secs = |s: u64| s * NANOS_PER_SECOND;
        assert_eq!(ct_timeout_ns(17, 0), secs(60));
        assert_eq!(ct_timeout_ns(6, 0), secs(60));
        assert_eq!(ct_timeout_ns(6, CT_FLAG_SEEN_REPLY), secs(21_600));
        assert_eq!(
            ct_timeout_ns(6, CT_FLAG_SEEN_REPLY | CT_FLAG_CLOSING),
            secs(10)
        );
        let entry = CtValue {
            last_seen_ns: secs(100),
            flags: CT_FLAG_SEEN_REPLY | CT_FLAG_CLOSING,
            ..CtValue::default()
        };
        assert!(!ct_expired(&entry, 6, secs(110)));
        assert!(ct_expired(&entry, 6, secs(111)));
        // A clock reading before the last packet (another CPU) is not expiry.
        assert!(!ct_expired(&entry, 6, secs(99)));
    }
}
