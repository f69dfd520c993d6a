//! Pod routing without the kernel's forwarding path, Cilium-style:
//!
//! - a packet a pod sends (TC ingress on its host-side veth) to a pod on this
//!   node goes `bpf_redirect_peer` straight into that pod's namespace;
//! - to anything else it is looked up with `bpf_fib_lookup` in the node's
//!   routing table (the routes to other nodes' pod CIDRs are ordinary kernel
//!   routes) and sent with `bpf_redirect_neigh`, which resolves the next hop;
//! - a packet arriving on the underlay for a pod on this node goes
//!   `bpf_redirect_peer` into the pod.
//!
//! Whatever the fast path cannot handle (not IPv4, to the node itself, no
//! route, TTL expiring) goes to the kernel stack unchanged (`TC_ACT_OK`), so
//! nothing the kernel would have delivered is ever dropped. Forwarded packets
//! get their TTL decremented like a router's. Every outcome is counted per
//! CPU in [`ROUTE_COUNTERS`].

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SKIP_NEIGH, TC_ACT_OK, TC_ACT_SHOT,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use skep_ebpf_common::{
    EndpointKey, EndpointName, EndpointValue, Family, MetricsValue, RouteAction,
    ENDPOINTS_MAP_ENTRIES, ROUTE_COUNTERS_LEN,
};

use crate::packet::{self, ETH_HLEN};

/// `AF_INET`, for the FIB lookup and the next hop.
const AF_INET: u8 = 2;
/// `BPF_F_NO_PREALLOC`: the names map is only written by userspace, rarely.
const BPF_F_NO_PREALLOC: u32 = 1;
/// Offsets in the IPv4 header.
const IPV4_TOS: usize = 1;
const IPV4_TTL: usize = 8;
const IPV4_CHECKSUM: usize = 10;
const IPV4_SRC: usize = 12;
const IPV4_DST: usize = 16;

/// Sizes of the helper parameter structs (a few dozen bytes: the casts are exact).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "small struct sizes"
)]
const FIB_LOOKUP_LEN: i32 = size_of::<bpf_fib_lookup>() as i32;
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "small struct sizes"
)]
const REDIR_NEIGH_LEN: i32 = size_of::<bpf_redir_neigh>() as i32;

/// Pods on this node, by address.
#[map(name = "SKEP_ENDPOINTS")]
static ENDPOINTS: HashMap<EndpointKey, EndpointValue> = HashMap::pinned(ENDPOINTS_MAP_ENTRIES, 0);

/// Endpoint names, written and read by userspace only; declared here so it is
/// pinned with the other maps.
#[map(name = "SKEP_ENDPOINT_NAMES")]
static ENDPOINT_NAMES: HashMap<EndpointKey, EndpointName> =
    HashMap::pinned(ENDPOINTS_MAP_ENTRIES, BPF_F_NO_PREALLOC);

/// What the routing programs did, per [`RouteAction`].
#[map(name = "SKEP_ROUTE_COUNTERS")]
static ROUTE_COUNTERS: PerCpuArray<MetricsValue> = PerCpuArray::pinned(ROUTE_COUNTERS_LEN, 0);

/// The IPv4 header fields routing needs; addresses in network byte order.
#[derive(Clone, Copy)]
pub struct Ipv4 {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// The TTL and protocol bytes, as the 16-bit word the checksum covers.
    ttl_proto: [u8; 2],
    tos: u8,
}

impl Ipv4 {
    /// The header of the IPv4 packet in `ctx`, or `None` if it is not one.
    #[inline(always)]
    pub fn read(ctx: &TcContext) -> Option<Self> {
        if packet::family(ctx) != Family::Ipv4 {
            return None;
        }
        Some(Self {
            src: ctx.load(ETH_HLEN + IPV4_SRC).ok()?,
            dst: ctx.load(ETH_HLEN + IPV4_DST).ok()?,
            ttl_proto: ctx.load(ETH_HLEN + IPV4_TTL).ok()?,
            tos: ctx.load(ETH_HLEN + IPV4_TOS).ok()?,
        })
    }

    const fn ttl(&self) -> u8 {
        self.ttl_proto[0]
    }

    const fn protocol(&self) -> u8 {
        self.ttl_proto[1]
    }
}

/// `skep_pod_ingress`: a packet leaving a pod (TC ingress on its host veth).
#[inline(always)]
pub fn pod_ingress(ctx: &mut TcContext) -> i32 {
    if let Some(verdict) = crate::nodeport::try_reply(ctx) {
        return verdict;
    }
    let Some(ip) = Ipv4::read(ctx) else {
        return pass(ctx, RouteAction::PodToStack);
    };
    if let Some(verdict) = crate::policy::egress(ctx, ip.src, ip.dst) {
        return verdict;
    }
    if let Some(verdict) = deliver_local(ctx, &ip, RouteAction::PodToLocalPod) {
        return verdict;
    }
    forward(ctx, &ip)
}

/// `skep_underlay_ingress`: a packet arriving on the node's underlay device.
#[inline(always)]
pub fn underlay_ingress(ctx: &mut TcContext) -> i32 {
    if let Some(verdict) = crate::nodeport::try_ingress(ctx) {
        return verdict;
    }
    let Some(ip) = Ipv4::read(ctx) else {
        return pass(ctx, RouteAction::UnderlayToStack);
    };
    if let Some(verdict) = deliver_local(ctx, &ip, RouteAction::UnderlayToPod) {
        return verdict;
    }
    pass(ctx, RouteAction::UnderlayToStack)
}

/// If `ip`'s destination is a pod on this node, hands the packet straight to
/// it (unless its ingress policy denies it: dropped): TTL decremented, MACs rewritten to what the pod expects from its
/// gateway, `bpf_redirect_peer` into its namespace; counted as `action`.
/// `None` when the destination is not a local pod (the caller goes on).
/// Callers that rewrote the destination (`NodePort` DNAT) pass the new header.
#[inline(always)]
pub fn deliver_local(ctx: &mut TcContext, ip: &Ipv4, action: RouteAction) -> Option<i32> {
    let key = EndpointKey {
        address: ip.dst,
        family: Family::Ipv4 as u8,
        pad: [0; 3],
    };
    // SAFETY: a map lookup; the value is copied out at once.
    let endpoint = unsafe { ENDPOINTS.get(&key) }.copied()?;
    if let Some(verdict) = crate::policy::ingress(ctx, ip.src, ip.dst) {
        return Some(verdict);
    }
    if ip.ttl() <= 1 {
        return Some(pass_ttl_expired(ctx));
    }
    if decrement_ttl(ctx, ip).is_err() {
        return Some(pass(ctx, action_to_stack(action)));
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&endpoint.pod_mac);
    macs[6..].copy_from_slice(&endpoint.host_mac);
    if ctx.store(0, &macs, 0).is_err() {
        // The TTL is already decremented: the stack would decrement it again.
        return Some(TC_ACT_SHOT);
    }
    count(ctx, action);
    // SAFETY: a helper call with plain integers.
    Some(verdict(unsafe {
        bpf_redirect_peer(endpoint.host_ifindex, 0)
    }))
}

/// Sends a packet from a pod to wherever the node's routing table says
/// (another node's pod CIDR via its underlay address), or to the stack.
#[inline(always)]
fn forward(ctx: &mut TcContext, ip: &Ipv4) -> i32 {
    // SAFETY: `bpf_fib_lookup` is plain data; all zeroes is a valid value.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = ip.protocol();
    fib.ifindex = ingress_ifindex(ctx);
    fib.__bindgen_anon_2.tos = ip.tos;
    fib.__bindgen_anon_3.ipv4_src = ip.src;
    fib.__bindgen_anon_4.ipv4_dst = ip.dst;
    // tot_len stays 0: the kernel then checks the skb (GSO included) against
    // the egress MTU itself.
    // SAFETY: the helper takes this program's context and a live, correctly
    // sized parameter struct.
    let ret = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &raw mut fib,
            FIB_LOOKUP_LEN,
            BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        // To the node itself, no route, unreachable, fragmentation needed, …
        return pass(ctx, RouteAction::PodToStack);
    }
    if ip.ttl() <= 1 {
        return pass_ttl_expired(ctx);
    }
    if decrement_ttl(ctx, ip).is_err() {
        return pass(ctx, RouteAction::PodToStack);
    }
    // The lookup replaced the destination by the next hop (the gateway, or
    // the destination itself when it is on-link).
    let mut next_hop = bpf_redir_neigh {
        nh_family: u32::from(AF_INET),
        __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
            // SAFETY: an IPv4 lookup fills the IPv4 member.
            ipv4_nh: unsafe { fib.__bindgen_anon_4.ipv4_dst },
        },
    };
    count(ctx, RouteAction::PodToRemote);
    // SAFETY: a helper call with a live, correctly sized next-hop struct.
    verdict(unsafe { bpf_redirect_neigh(fib.ifindex, &raw mut next_hop, REDIR_NEIGH_LEN, 0) })
}

/// Decrements the TTL and fixes the header checksum, as a router does.
/// Nothing is changed when it fails.
#[inline(always)]
fn decrement_ttl(ctx: &mut TcContext, ip: &Ipv4) -> Result<(), i64> {
    let old = ip.ttl_proto;
    let new = [old[0].wrapping_sub(1), old[1]];
    ctx.l3_csum_replace(
        ETH_HLEN + IPV4_CHECKSUM,
        u64::from(u16::from_ne_bytes(old)),
        u64::from(u16::from_ne_bytes(new)),
        2,
    )?;
    if let Err(err) = ctx.store(ETH_HLEN + IPV4_TTL, &new, 0) {
        // Undo the checksum change so the packet is as it came.
        let _ = ctx.l3_csum_replace(
            ETH_HLEN + IPV4_CHECKSUM,
            u64::from(u16::from_ne_bytes(new)),
            u64::from(u16::from_ne_bytes(old)),
            2,
        );
        return Err(err);
    }
    Ok(())
}

/// The stack-bound counter matching a fast-path action.
#[inline(always)]
const fn action_to_stack(action: RouteAction) -> RouteAction {
    match action {
        RouteAction::UnderlayToPod | RouteAction::UnderlayToStack => RouteAction::UnderlayToStack,
        _ => RouteAction::PodToStack,
    }
}

/// A TTL that would expire: the stack answers with ICMP time-exceeded.
#[inline(always)]
fn pass_ttl_expired(ctx: &TcContext) -> i32 {
    keep_names_map();
    pass(ctx, RouteAction::TtlExpired)
}

/// Hands the packet to the kernel stack unchanged, counted as `action`.
#[inline(always)]
fn pass(ctx: &TcContext, action: RouteAction) -> i32 {
    count(ctx, action);
    TC_ACT_OK
}

#[inline(always)]
fn count(ctx: &TcContext, action: RouteAction) {
    if let Some(value) = ROUTE_COUNTERS.get_ptr_mut(action as u32) {
        // SAFETY: the pointer comes from a lookup of a per-CPU array slot,
        // which only this CPU writes while the program runs.
        unsafe {
            (*value).packets += 1;
            (*value).bytes += u64::from(ctx.len());
        }
    }
}

#[inline(always)]
fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the valid context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// A redirect helper's result as a TC verdict (`TC_ACT_REDIRECT`, or
/// `TC_ACT_SHOT` when the helper refused).
#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "redirect helpers return a TC_ACT_* value"
)]
const fn verdict(ret: i64) -> i32 {
    ret as i32
}

/// Forces [`ENDPOINT_NAMES`] into the object: the linker drops maps no
/// program references. Called only on the rare TTL-expired path; the lookup
/// never matches (no pod has address 0).
#[inline(always)]
fn keep_names_map() {
    let key = EndpointKey {
        address: 0,
        family: 0,
        pad: [0; 3],
    };
    // SAFETY: a map lookup; the reference is dropped at once.
    let _ = unsafe { ENDPOINT_NAMES.get(&key) };
    crate::policy::keep_names_maps();
}
