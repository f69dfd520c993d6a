//! Service load-balancing maps, Cilium-style: one hash lookup of
//! VIP:port:protocol gives the service entry (slot 0) with its backend count;
//! slot `i` (1-based) of the same key gives the `i`th backend's id; a second
//! lookup of the id gives the backend's address.
//!
//! Addresses and ports are stored in network byte order, exactly as the kernel
//! hands them to the socket hooks (`bpf_sock_addr.user_ip4`/`user_port`), so the
//! programs never swap bytes. Every key carries a family so IPv6 maps can use the
//! same layout with wider addresses.

/// A backend's id: the key of the backends map. Ids are allocated and reused by
/// userspace; 0 is never used, so a zeroed slot never names a backend.
pub type BackendId = u32;

/// How many service entries (services × (1 + backends)) the services map holds:
/// 10,000 services of 10 backends need 110,000. Preallocated, about 80 bytes
/// an entry (element header, key and value rounded to 8), so ~20 MiB a node.
pub const SERVICES_MAP_ENTRIES: u32 = 262_144;
/// How many backends the backends map holds.
pub const BACKENDS_MAP_ENTRIES: u32 = 65536;
/// How many services (rev-NAT ids) exist at most: the id is a `u16`.
pub const REVNAT_MAP_ENTRIES: u32 = 65535;
/// Default size of each LRU map when the loader does not resize it.
pub const LRU_MAP_DEFAULT_ENTRIES: u32 = 65536;
/// Bytes of a service name (`namespace/name:port`), NUL-padded.
pub const SERVICE_NAME_LEN: usize = 192;

/// [`ServiceValue::flags`]: the service has `sessionAffinity: ClientIP`.
pub const SERVICE_FLAG_AFFINITY: u8 = 1;
/// [`ServiceValue::flags`]: the frontend takes traffic from outside the node
/// (a `NodePort` on a node address, or an `externalIPs` address).
pub const SERVICE_FLAG_EXTERNAL: u8 = 2;
/// [`ServiceValue::flags`]: `externalTrafficPolicy: Local`; the backends
/// listed are only this node's, and the client's address is kept.
pub const SERVICE_FLAG_LOCAL_ONLY: u8 = 4;

/// Key of the services map. Slot 0 is the service itself; slots `1..=count`
/// hold its backends. 12 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The service (virtual) IPv4 address, network byte order.
    pub address: u32,
    /// The service port, network byte order.
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// 0 for the service entry, `1..=count` for its backends.
    pub slot: u16,
    /// Explicit padding, always 0.
    pub pad: u16,
}

/// Value of the services map. For slot 0 the service fields are set and
/// `backend_id` is 0; for a backend slot only `backend_id` is set. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// The backend in this slot (backend slots only).
    pub backend_id: BackendId,
    /// How many backend slots the service has (slot 0 only). 0 means "no
    /// endpoints": connections are refused at once.
    pub count: u16,
    /// The service's reverse-NAT id, the key of the rev-NAT map (slot 0 only).
    pub rev_nat_id: u16,
    /// Session affinity timeout in seconds (slot 0, with
    /// [`SERVICE_FLAG_AFFINITY`]).
    pub affinity_timeout: u32,
    /// `SERVICE_FLAG_*` bits. A bit set, not `bool`s: `bool` is not `Pod`
    /// (only 0 and 1 are valid) and one byte holds every future flag.
    pub flags: u8,
    /// Explicit padding, always 0.
    pub pad: [u8; 3],
}

/// A backend: where a connection to a service goes. 12 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The backend's IPv4 address, network byte order.
    pub address: u32,
    /// The backend's port, network byte order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// Reserved for backend state (terminating, …); 0 today. A `u8`, not a
    /// `bool`, for the same reason as [`ServiceValue::flags`].
    pub flags: u8,
    /// Explicit padding, always 0.
    pub pad: [u8; 3],
}

/// Key of the rev-NAT map. 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevNatKey {
    /// The service's rev-NAT id (1-based; 0 is never allocated).
    pub rev_nat_id: u16,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// Explicit padding, always 0.
    pub pad: u8,
}

/// Value of the rev-NAT map: the service address a reply must appear to come
/// from. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevNatValue {
    /// The service address, network byte order.
    pub address: u32,
    /// The service port, network byte order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
}

/// Key of the per-socket reverse-NAT LRU map: which socket talked to which
/// backend. This is the socket-level conntrack; the family and protocol make it
/// shareable with the packet-level conntrack policy will add. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockRevNatKey {
    /// The socket's cookie (`bpf_get_socket_cookie`).
    pub cookie: u64,
    /// The backend address, network byte order.
    pub address: u32,
    /// The backend port, network byte order.
    pub port: u16,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
}

/// Value of the per-socket reverse-NAT map: the service the socket asked for.
/// 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockRevNatValue {
    /// The service address, network byte order.
    pub address: u32,
    /// The service port, network byte order.
    pub port: u16,
    /// The service's rev-NAT id: the entry is stale once that id is gone.
    pub rev_nat_id: u16,
}

/// Key of the session-affinity LRU map: one client (its network namespace,
/// i.e. the pod, or the host) and one service. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityKey {
    /// The client's network namespace cookie (`bpf_get_netns_cookie`): the
    /// socket-level stand-in for "client IP".
    pub client_cookie: u64,
    /// The service's rev-NAT id.
    pub rev_nat_id: u16,
    /// A [`crate::Family`] as `u8`.
    pub family: u8,
    /// Explicit padding, always 0.
    pub pad: [u8; 5],
}

/// Value of the session-affinity map. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    /// When the client last used the entry (`bpf_ktime_get_ns`).
    pub last_used_ns: u64,
    /// The backend the client sticks to.
    pub backend_id: BackendId,
    /// Explicit padding, always 0.
    pub pad: u32,
}

/// Value of the service-names map: `namespace/name:port`, NUL-padded. Only
/// userspace reads it, for `skep bpf lb list`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceName {
    /// UTF-8 bytes, NUL-padded.
    pub bytes: [u8; SERVICE_NAME_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all impls below): each type is `repr(C)`, `Copy`, made only of
    // integers (and integer arrays) laid out with no implicit padding (the
    // size tests below check it), so every byte pattern is a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ServiceKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ServiceValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RevNatKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RevNatValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SockRevNatKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SockRevNatValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::AffinityKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::AffinityValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ServiceName {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn service_types_have_no_implicit_padding() {
        // Sum of the fields' sizes == size of the struct.
        assert_eq!(size_of::<ServiceKey>(), 4 + 2 + 1 + 1 + 2 + 2);
        assert_eq!(size_of::<ServiceValue>(), 4 + 2 + 2 + 4 + 1 + 3);
        assert_eq!(size_of::<Backend>(), 4 + 2 + 1 + 1 + 1 + 3);
        assert_eq!(size_of::<RevNatKey>(), 2 + 1 + 1);
        assert_eq!(size_of::<RevNatValue>(), 4 + 2 + 1 + 1);
        assert_eq!(size_of::<SockRevNatKey>(), 8 + 4 + 2 + 1 + 1);
        assert_eq!(size_of::<SockRevNatValue>(), 4 + 2 + 2);
        assert_eq!(size_of::<AffinityKey>(), 8 + 2 + 1 + 5);
        assert_eq!(size_of::<AffinityValue>(), 8 + 4 + 4);
        assert_eq!(size_of::<ServiceName>(), SERVICE_NAME_LEN);
        assert_eq!(align_of::<ServiceKey>(), 4);
    }
}
