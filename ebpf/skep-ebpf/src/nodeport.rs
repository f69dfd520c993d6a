//! `NodePort` and `externalIPs`: traffic that arrives from outside the node,
//! translated per packet with conntrack (the socket hooks never see it).
//!
//! On the underlay ingress, a packet to a frontend with
//! `SERVICE_FLAG_EXTERNAL` (`<node IP>:<nodePort>`, `<externalIP>:<port>`)
//! gets a backend (random slot, or the client IP's affinity entry), its
//! destination rewritten to the backend, and both directions recorded in the
//! conntrack. When the backend is on another node (the FIB sends the packet
//! back out of the device it came in on) and the service is not
//! `externalTrafficPolicy: Local`, the source becomes this node's address
//! (the client's port, or a free one above the ephemeral range if that tuple
//! is taken), so the reply comes back here to be translated; otherwise the
//! client's address is kept. Later packets of the flow, in either direction,
//! are translated from their conntrack entry: replies of a local backend at
//! its pod veth's ingress, replies of a remote backend (to the SNAT address)
//! at the underlay ingress. Each translated packet leaves through
//! `bpf_fib_lookup` + `bpf_redirect_neigh`.
//!
//! TCP and UDP are translated. SCTP is not (its `CRC32c` would have to be
//! recomputed over the whole packet) and passes untouched, like ICMP: an ICMP
//! error about a tracked flow is not translated either, so a client sees the
//! backend's address in it (path-MTU discovery through a `NodePort` relies on
//! the backend's own retransmits). IPv4 only; fragments after the first pass
//! untouched.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibLookup, bpf_redir_neigh, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT,
    },
    helpers::{bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect_neigh},
    macros::map,
    maps::{Array, LruHashMap},
    programs::TcContext,
};
use skep_ebpf_common::{
    AffinityValue, Backend, BackendId, CtKey, CtValue, ExternalAffinityKey, Family, NodeConfig,
    ServiceKey, ServiceValue, CT_FLAG_SNAT, LRU_MAP_DEFAULT_ENTRIES, SERVICE_FLAG_AFFINITY,
    SERVICE_FLAG_EXTERNAL, SERVICE_FLAG_LOCAL_ONLY,
};

use crate::{
    conntrack,
    packet::{self, ETH_HLEN},
    sock_lb::{BACKENDS, SERVICES},
};

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const AF_INET: u8 = 2;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Offsets inside the IPv4 header.
const IP_CSUM: usize = ETH_HLEN + 10;
const IP_SRC: usize = ETH_HLEN + 12;
const IP_DST: usize = ETH_HLEN + 16;
/// Ports for a SNAT tuple when the client's own port is taken: above Linux's
/// default ephemeral range (32768–60999), so they rarely meet a local socket's.
const SNAT_PORT_MIN: u32 = 61_000;
const SNAT_PORT_SPAN: u32 = 65_536 - SNAT_PORT_MIN;
const SNAT_PORT_TRIES: u32 = 8;

/// What this node is (its address for SNAT), written by the agent.
#[map(name = "SKEP_NODE_CONFIG")]
static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// This node's underlay address (network byte order; 0 when unset).
#[inline(always)]
pub fn node_ipv4() -> u32 {
    NODE_CONFIG.get(0).map_or(0, |config| config.ipv4)
}

/// Session affinity of external clients: client IP × service → backend.
#[map(name = "SKEP_EXTERNAL_AFFINITY")]
static EXTERNAL_AFFINITY: LruHashMap<ExternalAffinityKey, AffinityValue> =
    LruHashMap::pinned(LRU_MAP_DEFAULT_ENTRIES, 0);

/// The headers of a TCP or UDP over IPv4 packet the datapath can translate.
struct Packet {
    /// Offset of the L4 header.
    l4: usize,
    /// Offset of the L4 checksum.
    l4_csum: usize,
    proto: u8,
    /// Addresses and ports as on the wire (network byte order).
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    /// TCP flags byte (0 for UDP).
    tcp_flags: u8,
}

impl Packet {
    fn key(&self) -> CtKey {
        CtKey {
            src_addr: self.src,
            dst_addr: self.dst,
            src_port: self.sport,
            dst_port: self.dport,
            proto: self.proto,
            family: Family::Ipv4 as u8,
            pad: 0,
        }
    }
}

/// Reads the headers; `None` for anything not translated (not IPv4, not TCP
/// or UDP, a non-first fragment, truncated).
#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Packet> {
    if !matches!(packet::family(ctx), Family::Ipv4) {
        return None;
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).ok()?;
    if u16::from_be(frag) & 0x1fff != 0 {
        return None;
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    let l4 = ETH_HLEN + ihl;
    let (l4_csum, tcp_flags) = match proto {
        PROTO_TCP => (l4 + 16, ctx.load::<u8>(l4 + 13).ok()?),
        PROTO_UDP => (l4 + 6, 0),
        _ => return None,
    };
    Some(Packet {
        l4,
        l4_csum,
        proto,
        src: ctx.load(IP_SRC).ok()?,
        dst: ctx.load(IP_DST).ok()?,
        sport: ctx.load(l4).ok()?,
        dport: ctx.load(l4 + 2).ok()?,
        tcp_flags,
    })
}

/// The first step of `skep_underlay_ingress`: translate a tracked flow, or
/// start one for an external frontend. `None`: not a `NodePort` packet, the
/// routing step goes on.
#[inline(always)]
pub fn try_ingress(ctx: &mut TcContext) -> Option<i32> {
    let pkt = parse(ctx)?;
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = pkt.key();
    if let Some(entry) = conntrack::lookup_nat(&key, pkt.tcp_flags, now) {
        return Some(translate_and_forward(ctx, &pkt, &entry));
    }
    let service_key = ServiceKey {
        address: pkt.dst,
        port: pkt.dport,
        proto: pkt.proto,
        family: Family::Ipv4 as u8,
        slot: 0,
        pad: 0,
    };
    // SAFETY: a map lookup; the value is copied out at once.
    let service = (unsafe { SERVICES.get(&service_key) }).copied()?;
    if service.flags & SERVICE_FLAG_EXTERNAL == 0 {
        return None;
    }
    if service.count == 0 {
        // No endpoints. Under `Local` (none on this node) the packet is
        // dropped, as kube-proxy does; otherwise the stack answers it (no
        // socket has the node port: TCP reset, ICMP port unreachable), so
        // the client fails fast like kube-proxy's REJECT.
        return (service.flags & SERVICE_FLAG_LOCAL_ONLY != 0).then_some(TC_ACT_SHOT);
    }
    let Some((backend_id, backend)) = select_backend(&pkt, service_key, &service, now) else {
        return Some(TC_ACT_SHOT);
    };
    // SAFETY: `skb` is the valid context pointer the kernel passed in.
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some((out_ifindex, _)) = fib(
        ctx,
        &pkt,
        pkt.src,
        backend.address,
        pkt.sport,
        backend.port,
        ingress_ifindex,
    ) else {
        return Some(TC_ACT_SHOT);
    };
    let remote = out_ifindex == ingress_ifindex;
    let mut forward = CtValue {
        last_seen_ns: now,
        nat_src_addr: pkt.src,
        nat_dst_addr: backend.address,
        nat_src_port: pkt.sport,
        nat_dst_port: backend.port,
        backend_id,
        rev_nat_id: service.rev_nat_id,
        flags: 0,
        pad: [0; 5],
    };
    if remote && service.flags & SERVICE_FLAG_LOCAL_ONLY == 0 {
        let Some((node, port)) = snat_source(&key, &forward, now) else {
            return Some(TC_ACT_SHOT);
        };
        forward.nat_src_addr = node;
        forward.nat_src_port = port;
        forward.flags |= CT_FLAG_SNAT;
    }
    let translated = CtKey {
        src_addr: forward.nat_src_addr,
        dst_addr: forward.nat_dst_addr,
        src_port: forward.nat_src_port,
        dst_port: forward.nat_dst_port,
        ..key
    };
    if !crate::policy::admit_nodeport(ctx, &translated) {
        return Some(TC_ACT_SHOT);
    }
    conntrack::create(&key, &forward);
    Some(translate_and_forward(ctx, &pkt, &forward))
}

/// The first step of `skep_pod_ingress`: translate a local backend's reply
/// to a tracked `NodePort` flow. `None`: untracked, the routing step goes on.
#[inline(always)]
pub fn try_reply(ctx: &mut TcContext) -> Option<i32> {
    let pkt = parse(ctx)?;
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = conntrack::lookup_nat(&pkt.key(), pkt.tcp_flags, now)?;
    Some(translate_and_forward(ctx, &pkt, &entry))
}

/// The client's affinity entry while fresh and its backend exists, else a
/// random slot (recorded as the client's affinity when the service has it).
#[inline(always)]
fn select_backend(
    pkt: &Packet,
    mut key: ServiceKey,
    service: &ServiceValue,
    now: u64,
) -> Option<(BackendId, Backend)> {
    let affinity = service.flags & SERVICE_FLAG_AFFINITY != 0;
    let affinity_key = ExternalAffinityKey {
        client_addr: pkt.src,
        rev_nat_id: service.rev_nat_id,
        family: Family::Ipv4 as u8,
        pad: 0,
    };
    if affinity {
        // SAFETY: a map lookup; the value is copied out at once.
        if let Some(entry) = unsafe { EXTERNAL_AFFINITY.get(&affinity_key) }.copied() {
            let timeout = u64::from(service.affinity_timeout) * NANOS_PER_SECOND;
            if now.saturating_sub(entry.last_used_ns) <= timeout {
                // SAFETY: a map lookup; the value is copied out at once.
                if let Some(backend) = unsafe { BACKENDS.get(&entry.backend_id) }.copied() {
                    touch_affinity(&affinity_key, entry.backend_id, now);
                    return Some((entry.backend_id, backend));
                }
            }
        }
    }
    // SAFETY: a helper call without arguments.
    let random = unsafe { bpf_get_prandom_u32() };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the remainder is below count, a u16"
    )]
    let slot = (random % u32::from(service.count)) as u16 + 1;
    key.slot = slot;
    // SAFETY: map lookups; the values are copied out at once.
    let backend_id = unsafe { SERVICES.get(&key) }?.backend_id;
    // SAFETY: as above.
    let backend = unsafe { BACKENDS.get(&backend_id) }.copied()?;
    if affinity {
        touch_affinity(&affinity_key, backend_id, now);
    }
    Some((backend_id, backend))
}

#[inline(always)]
fn touch_affinity(key: &ExternalAffinityKey, backend_id: BackendId, now: u64) {
    let value = AffinityValue {
        last_used_ns: now,
        backend_id,
        pad: 0,
    };
    let _ = EXTERNAL_AFFINITY.insert(key, &value, 0);
}

/// This node's address and a source port for the SNAT'd tuple: the client's
/// port unless a live flow already holds that reply tuple, then a few random
/// ones above the ephemeral range. `None` when the node address is unset or
/// every try is taken.
#[inline(always)]
fn snat_source(original: &CtKey, forward: &CtValue, now: u64) -> Option<(u32, u16)> {
    let node = NODE_CONFIG.get(0)?.ipv4;
    if node == 0 {
        return None;
    }
    let mut candidate = CtValue {
        nat_src_addr: node,
        ..*forward
    };
    let mut port = original.src_port;
    let mut tries = 0;
    loop {
        candidate.nat_src_port = port;
        if !conntrack::in_use(&original.peer_of(&candidate), now) {
            return Some((node, port));
        }
        if tries == SNAT_PORT_TRIES {
            return None;
        }
        tries += 1;
        // SAFETY: a helper call without arguments.
        let random = unsafe { bpf_get_prandom_u32() };
        #[allow(
            clippy::cast_possible_truncation,
            reason = "SNAT_PORT_MIN + remainder < 65536"
        )]
        let host_order = (SNAT_PORT_MIN + random % SNAT_PORT_SPAN) as u16;
        port = host_order.to_be();
    }
}

/// Rewrites the packet's tuple to `entry`'s translated one (only the fields
/// that differ, checksums updated incrementally), then sends it on.
#[inline(always)]
fn translate_and_forward(ctx: &mut TcContext, pkt: &Packet, entry: &CtValue) -> i32 {
    if rewrite(ctx, pkt, entry).is_err() {
        return TC_ACT_SHOT;
    }
    // SAFETY: `skb` is the valid context pointer the kernel passed in.
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some((ifindex, nexthop)) = fib(
        ctx,
        pkt,
        entry.nat_src_addr,
        entry.nat_dst_addr,
        entry.nat_src_port,
        entry.nat_dst_port,
        ingress_ifindex,
    ) else {
        // No route from here: let the stack decide (and count the drop).
        return TC_ACT_OK;
    };
    // SAFETY: an all-zero bpf_redir_neigh is valid; the fields follow.
    let mut params: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    params.nh_family = u32::from(AF_INET);
    params.__bindgen_anon_1.ipv4_nh = nexthop;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "the struct is 20 bytes; the helper returns a TC action"
    )]
    // SAFETY: `params` is a valid bpf_redir_neigh for the helper to read.
    let action = unsafe {
        bpf_redirect_neigh(
            ifindex,
            &raw mut params,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    } as i32;
    action
}

#[inline(always)]
fn rewrite(ctx: &mut TcContext, pkt: &Packet, entry: &CtValue) -> Result<(), i64> {
    let udp_flag = if pkt.proto == PROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    };
    let addr_flags = u64::from(BPF_F_PSEUDO_HDR) | udp_flag | 4;
    let port_flags = udp_flag | 2;
    if entry.nat_src_addr != pkt.src {
        let (old, new) = (u64::from(pkt.src), u64::from(entry.nat_src_addr));
        ctx.l4_csum_replace(pkt.l4_csum, old, new, addr_flags)?;
        ctx.l3_csum_replace(IP_CSUM, old, new, 4)?;
        ctx.store(IP_SRC, &entry.nat_src_addr, 0)?;
    }
    if entry.nat_dst_addr != pkt.dst {
        let (old, new) = (u64::from(pkt.dst), u64::from(entry.nat_dst_addr));
        ctx.l4_csum_replace(pkt.l4_csum, old, new, addr_flags)?;
        ctx.l3_csum_replace(IP_CSUM, old, new, 4)?;
        ctx.store(IP_DST, &entry.nat_dst_addr, 0)?;
    }
    if entry.nat_src_port != pkt.sport {
        let (old, new) = (u64::from(pkt.sport), u64::from(entry.nat_src_port));
        ctx.l4_csum_replace(pkt.l4_csum, old, new, port_flags)?;
        ctx.store(pkt.l4, &entry.nat_src_port, 0)?;
    }
    if entry.nat_dst_port != pkt.dport {
        let (old, new) = (u64::from(pkt.dport), u64::from(entry.nat_dst_port));
        ctx.l4_csum_replace(pkt.l4_csum, old, new, port_flags)?;
        ctx.store(pkt.l4 + 2, &entry.nat_dst_port, 0)?;
    }
    Ok(())
}

/// The FIB's egress interface and next hop for the tuple, looked up as if
/// the packet were forwarded from `ifindex`. `None` when there is no route
/// (or forwarding is off).
#[inline(always)]
fn fib(
    ctx: &TcContext,
    pkt: &Packet,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    ifindex: u32,
) -> Option<(u32, u32)> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) request.
    let mut params: FibLookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = pkt.proto;
    params.sport = sport;
    params.dport = dport;
    params.ifindex = ifindex;
    params.__bindgen_anon_3.ipv4_src = src;
    params.__bindgen_anon_4.ipv4_dst = dst;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "the struct is 64 bytes"
    )]
    let len = core::mem::size_of::<FibLookup>() as i32;
    // SAFETY: the helper takes the program's own context and a valid params
    // struct of `len` bytes.
    let ret = unsafe { bpf_fib_lookup(ctx.skb.skb.cast(), &raw mut params, len, 0) };
    match u32::try_from(ret) {
        Ok(BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH) => {
            // SAFETY: the kernel wrote the next hop into the IPv4 member.
            Some((params.ifindex, unsafe { params.__bindgen_anon_4.ipv4_dst }))
        }
        _ => None,
    }
}
