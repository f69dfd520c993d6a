//! Map keys, values and names shared by the skep eBPF programs (`skep-ebpf`)
//! and the userspace loader (`skep-datapath`).
//!
//! Every type here is `#[repr(C)]` with no implicit padding: the kernel copies
//! keys byte for byte, so a padding byte with garbage in it would make two
//! equal keys hash differently.
#![no_std]
#![deny(missing_docs)]

/// Names of the programs in the eBPF object, as userspace looks them up.
pub mod program {
    /// TC classifier counting packets that enter an interface.
    pub const METRICS_INGRESS: &str = "skep_metrics_ingress";
    /// TC classifier counting packets that leave an interface.
    pub const METRICS_EGRESS: &str = "skep_metrics_egress";
    /// cgroup `connect4`: picks a service backend once per connection.
    pub const SOCK_CONNECT4: &str = "skep_sock_connect4";
    /// cgroup `sendmsg4`: picks a service backend per unconnected UDP send.
    pub const SOCK_SENDMSG4: &str = "skep_sock_sendmsg4";
    /// cgroup `recvmsg4`: shows the service address as a reply's source.
    pub const SOCK_RECVMSG4: &str = "skep_sock_recvmsg4";
    /// cgroup `getpeername4`: shows the service address as the peer.
    pub const SOCK_GETPEERNAME4: &str = "skep_sock_getpeername4";
    /// TC ingress on a pod's host-side veth: routes what the pod sends.
    pub const POD_INGRESS: &str = "skep_pod_ingress";
    /// TC ingress on the node's underlay device: delivers to local pods.
    pub const UNDERLAY_INGRESS: &str = "skep_underlay_ingress";
    /// The socket-level load-balancing programs, attached to the node's cgroup.
    pub const SOCK_LB: &[&str] = &[
        SOCK_CONNECT4,
        SOCK_SENDMSG4,
        SOCK_RECVMSG4,
        SOCK_GETPEERNAME4,
    ];
    /// The routing programs (TC ingress).
    pub const ROUTE: &[&str] = &[POD_INGRESS, UNDERLAY_INGRESS];
    /// Every program the object must contain.
    pub const ALL: &[&str] = &[
        METRICS_INGRESS,
        METRICS_EGRESS,
        SOCK_CONNECT4,
        SOCK_SENDMSG4,
        SOCK_RECVMSG4,
        SOCK_GETPEERNAME4,
        POD_INGRESS,
        UNDERLAY_INGRESS,
    ];
}

/// Names of the maps in the eBPF object; pinned under the node's bpffs directory
/// by these names.
pub mod map {
    /// Per-CPU packet and byte counters, keyed by [`crate::MetricsKey`].
    pub const METRICS: &str = "SKEP_METRICS";
    /// Services and their backend slots, keyed by [`crate::ServiceKey`].
    pub const SERVICES: &str = "SKEP_SERVICES";
    /// Backends by id ([`crate::BackendId`] → [`crate::Backend`]).
    pub const BACKENDS: &str = "SKEP_BACKENDS";
    /// Reverse NAT: a service's rev-NAT id → its address ([`crate::RevNatValue`]).
    pub const REVNAT: &str = "SKEP_REVNAT";
    /// Per-socket reverse NAT (LRU), the socket-level conntrack:
    /// [`crate::SockRevNatKey`] → [`crate::SockRevNatValue`].
    pub const SOCK_REVNAT: &str = "SKEP_SOCK_REVNAT";
    /// Session affinity (LRU): [`crate::AffinityKey`] → [`crate::AffinityValue`].
    pub const AFFINITY: &str = "SKEP_AFFINITY";
    /// Service names for introspection: rev-NAT id → [`crate::ServiceName`].
    /// Only userspace reads it.
    pub const SERVICE_NAMES: &str = "SKEP_SERVICE_NAMES";
    /// Pods on this node: [`crate::EndpointKey`] → [`crate::EndpointValue`].
    pub const ENDPOINTS: &str = "SKEP_ENDPOINTS";
    /// Endpoint names for introspection: [`crate::EndpointKey`] →
    /// [`crate::EndpointName`]. Only userspace reads it.
    pub const ENDPOINT_NAMES: &str = "SKEP_ENDPOINT_NAMES";
    /// Per-CPU counters of what the routing programs did, indexed by
    /// [`crate::RouteAction`].
    pub const ROUTE_COUNTERS: &str = "SKEP_ROUTE_COUNTERS";
    /// Packet-level conntrack (LRU): [`crate::CtKey`] → [`crate::CtValue`].
    pub const CT: &str = "SKEP_CT";
    /// What the datapath treats as this node: an array of one [`crate::NodeConfig`].
    pub const NODE_CONFIG: &str = "SKEP_NODE_CONFIG";
    /// Session affinity for external clients (LRU):
    /// [`crate::ExternalAffinityKey`] → [`crate::AffinityValue`].
    pub const EXTERNAL_AFFINITY: &str = "SKEP_EXTERNAL_AFFINITY";
    /// Local pods some policy isolates: [`crate::EndpointKey`] →
    /// [`crate::PolicyEndpoint`].
    pub const POLICY_ENDPOINTS: &str = "SKEP_POLICY_ENDPOINTS";
    /// Who an address is (LPM trie, IPv4 network byte order) →
    /// [`crate::PeerIdentity`].
    pub const IPCACHE: &str = "SKEP_IPCACHE";
    /// Compiled policy rules (LPM trie): [`crate::PolicyKey`] →
    /// [`crate::PolicyValue`].
    pub const POLICY: &str = "SKEP_POLICY";
    /// Per-CPU verdict counters: [`crate::PolicyCounterKey`] →
    /// [`crate::MetricsValue`].
    pub const POLICY_COUNTERS: &str = "SKEP_POLICY_COUNTERS";
    /// Ring buffer of judged flows ([`crate::PolicyFlow`]), read by `skep flows`.
    pub const POLICY_FLOWS: &str = "SKEP_POLICY_FLOWS";
    /// Names of policies ([`crate::PolicyValue::policy`] as `u32` →
    /// [`crate::PolicyName`]). Only userspace reads it.
    pub const POLICY_NAMES: &str = "SKEP_POLICY_NAMES";
    /// Names of every pod in the cluster, for flows: [`crate::EndpointKey`]
    /// → [`crate::PolicyName`]. Only userspace reads it.
    pub const PEER_NAMES: &str = "SKEP_PEER_NAMES";
    /// The LRU maps, sized at load time from memory (or configuration).
    pub const LRU: &[&str] = &[SOCK_REVNAT, AFFINITY, CT, EXTERNAL_AFFINITY];
    /// Every map the object must contain.
    pub const ALL: &[&str] = &[
        METRICS,
        SERVICES,
        BACKENDS,
        REVNAT,
        SOCK_REVNAT,
        AFFINITY,
        SERVICE_NAMES,
        ENDPOINTS,
        ENDPOINT_NAMES,
        ROUTE_COUNTERS,
        CT,
        NODE_CONFIG,
        EXTERNAL_AFFINITY,
        POLICY_ENDPOINTS,
        IPCACHE,
        POLICY,
        POLICY_COUNTERS,
        POLICY_FLOWS,
        POLICY_NAMES,
        PEER_NAMES,
    ];
}

/// How many distinct [`MetricsKey`]s the metrics map holds.
pub const METRICS_MAP_ENTRIES: u32 = 4096;

/// Which way a packet was going when it was counted.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Entering the interface (TC ingress).
    Ingress = 0,
    /// Leaving the interface (TC egress).
    Egress = 1,
}

impl Direction {
    /// The direction for a raw key byte, if it is one we write.
    #[must_use]
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }

    /// Its name in tables, flows and metrics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// The L3 family of a counted packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Not IP (ARP, LLDP, …).
    Other = 0,
    /// IPv4.
    Ipv4 = 4,
    /// IPv6.
    Ipv6 = 6,
}

impl Family {
    /// The family for a raw key byte, if it is one we write.
    #[must_use]
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Other),
            4 => Some(Self::Ipv4),
            6 => Some(Self::Ipv6),
            _ => None,
        }
    }

    /// Its name in tables and metrics (`-` for not IP).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Other => "-",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// Key of the metrics map: one counter per interface, direction, family and
/// L4 protocol. 8 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricsKey {
    /// Interface index the program is attached to.
    pub ifindex: u32,
    /// A [`Direction`] as `u8` (enums are not `Pod`; the raw byte keeps the key
    /// layout fixed).
    pub direction: u8,
    /// A [`Family`] as `u8`.
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, …); 0 when not IP.
    pub protocol: u8,
    /// Explicit padding, always 0.
    pub pad: u8,
}

/// Value of the metrics map (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsValue {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen, counting from the Ethernet header.
    pub bytes: u64,
}

pub mod ct;
pub mod endpoint;
pub mod policy;
pub mod service;
pub use ct::*;
pub use endpoint::*;
pub use policy::*;
pub use service::*;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `MetricsKey` is `repr(C)`, `Copy`, made only of integers and has
    // no implicit padding, so every byte pattern of its size is a valid value.
    unsafe impl aya::Pod for super::MetricsKey {}
    // SAFETY: as above: `repr(C)`, two `u64`, no padding.
    unsafe impl aya::Pod for super::MetricsValue {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn keys_have_no_implicit_padding() {
        assert_eq!(size_of::<MetricsKey>(), 4 + 1 + 1 + 1 + 1);
        assert_eq!(size_of::<MetricsValue>(), 16);
    }

    #[test]
    fn enums_round_trip_through_their_raw_byte() {
        for d in [Direction::Ingress, Direction::Egress] {
            assert_eq!(Direction::from_u8(d as u8), Some(d));
        }
        for f in [Family::Other, Family::Ipv4, Family::Ipv6] {
            assert_eq!(Family::from_u8(f as u8), Some(f));
        }
        assert_eq!(Direction::from_u8(7), None);
        assert_eq!(Family::from_u8(5), None);
    }
}
