//! Local endpoints and routing counters: what the TC routing programs need to
//! deliver a packet straight into a pod on this node (`bpf_redirect_peer`),
//! and the per-action counters that show which path a packet took.
//!
//! Addresses are stored in network byte order, as they appear in the packet,
//! so the programs never swap bytes. Keys carry a family so IPv6 endpoints can
//! use the same maps with wider addresses later.

/// How many endpoints (pods) one node's endpoints map holds.
pub const ENDPOINTS_MAP_ENTRIES: u32 = 16384;
/// Bytes of an endpoint name (`namespace/pod`), NUL-padded.
pub const ENDPOINT_NAME_LEN: usize = 320;

/// Key of the endpoints map: a pod address on this node. 8 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// The pod's IPv4 address, network byte order.
    pub address: u32,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// Explicit padding, always 0.
    pub pad: [u8; 3],
}

/// Value of the endpoints map: how to hand a packet to the pod. 20 bytes, no
/// padding (the MACs sit between 4-byte fields at 4-byte-aligned offsets).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointValue {
    /// Index of the pod's host-side veth in the node namespace: the target of
    /// `bpf_redirect_peer`, which delivers into its peer (the pod's `eth0`).
    pub host_ifindex: u32,
    /// MAC of the pod's `eth0`: the destination MAC a delivered packet needs.
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth: the source MAC of a delivered packet, as if
    /// the node had routed it (the pod's gateway neighbour has this MAC).
    pub host_mac: [u8; 6],
    /// `ENDPOINT_FLAG_*` bits (none yet; room for policy). A `u32` keeps the
    /// value a multiple of 4 bytes without a padding field.
    pub flags: u32,
}

/// An endpoint's name (`namespace/pod`), NUL-padded: introspection only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointName {
    /// UTF-8 bytes, NUL-padded.
    pub bytes: [u8; ENDPOINT_NAME_LEN],
}

/// What the routing programs did with a packet: the index of its counter in
/// the routing counters map (a per-CPU array of [`crate::MetricsValue`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteAction {
    /// From a pod to a pod on this node: `bpf_redirect_peer`.
    PodToLocalPod = 0,
    /// From a pod to another node (or anywhere the node routes): found by
    /// `bpf_fib_lookup`, sent by `bpf_redirect_neigh`.
    PodToRemote = 1,
    /// From the underlay to a pod on this node: `bpf_redirect_peer`.
    UnderlayToPod = 2,
    /// From a pod, handed to the kernel stack (not IPv4, to the node itself,
    /// no route, …).
    PodToStack = 3,
    /// From the underlay, handed to the kernel stack (not for a local pod).
    UnderlayToStack = 4,
    /// TTL would expire: handed to the stack, which answers time-exceeded.
    TtlExpired = 5,
}

impl RouteAction {
    /// Every action, in counter-index order.
    pub const ALL: [Self; 6] = [
        Self::PodToLocalPod,
        Self::PodToRemote,
        Self::UnderlayToPod,
        Self::PodToStack,
        Self::UnderlayToStack,
        Self::TtlExpired,
    ];

    /// The action for a counter index, if it is one.
    #[must_use]
    pub const fn from_index(index: u32) -> Option<Self> {
        match index {
            0 => Some(Self::PodToLocalPod),
            1 => Some(Self::PodToRemote),
            2 => Some(Self::UnderlayToPod),
            3 => Some(Self::PodToStack),
            4 => Some(Self::UnderlayToStack),
            5 => Some(Self::TtlExpired),
            _ => None,
        }
    }

    /// A short name for tables and logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PodToLocalPod => "pod-to-local-pod (redirect_peer)",
            Self::PodToRemote => "pod-to-remote (fib_lookup + redirect_neigh)",
            Self::UnderlayToPod => "underlay-to-pod (redirect_peer)",
            Self::PodToStack => "pod-to-stack",
            Self::UnderlayToStack => "underlay-to-stack",
            Self::TtlExpired => "ttl-expired-to-stack",
        }
    }
}

/// How many counters the routing counters map holds.
#[expect(clippy::cast_possible_truncation, reason = "six actions")]
pub const ROUTE_COUNTERS_LEN: u32 = RouteAction::ALL.len() as u32;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, `Copy`, only integers, no implicit padding.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: `repr(C)`, `Copy`, integers and byte arrays at aligned offsets,
    // no implicit padding (20 bytes, checked below).
    unsafe impl aya::Pod for super::EndpointValue {}
    // SAFETY: `repr(C)`, one byte array.
    unsafe impl aya::Pod for super::EndpointName {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn endpoint_types_have_no_implicit_padding() {
        assert_eq!(size_of::<EndpointKey>(), 4 + 1 + 3);
        assert_eq!(size_of::<EndpointValue>(), 4 + 6 + 6 + 4);
        assert_eq!(size_of::<EndpointName>(), ENDPOINT_NAME_LEN);
    }

    #[test]
    fn actions_round_trip_through_their_index() {
        for (index, action) in RouteAction::ALL.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            assert_eq!(*action as u32, index);
            assert_eq!(RouteAction::from_index(index), Some(*action));
        }
        assert_eq!(RouteAction::from_index(ROUTE_COUNTERS_LEN), None);
    }
}
