//! Kubernetes `NetworkPolicy` enforcement in the TC programs, on the
//! identity design of `skep_ebpf_common::policy` (read its module doc).
//!
//! # Where
//!
//! - **Egress**: [`egress`] in `skep_pod_ingress`, after `NodePort` replies
//!   and before delivery or forwarding: the packet as the pod sent it.
//! - **Ingress**: [`ingress`] in `route::deliver_local` (pod → local pod,
//!   underlay → pod), and [`admit_nodeport`] for a new `NodePort` flow to a
//!   local backend (judged on the translated tuple: the backend pod it
//!   reaches, the source as the backend will see it).
//!
//! Traffic between a pod and its own node (the node-config address) is never
//! judged. IPv4 only: other families pass untouched.
//!
//! # Cost
//!
//! A pod not in the policy-endpoints map costs one hash miss per direction.
//! For a policy endpoint, every packet costs one conntrack lookup, shared
//! with the `NodePort` reply check and the other direction's check of the
//! same packet ([`Tracked`]); the first packet of a flow in an isolated direction costs one ipcache lookup and at
//! most three rule lookups (peer pod identity, peer CIDR identity, any peer),
//! each a fixed-depth LPM walk whatever the number of policies.
//!
//! # Conntrack
//!
//! Every flow of a policy endpoint is tracked, judged or not, so the replies
//! of a flow always pass, even when the other end is isolated in the
//! opposite direction (a client that is ingress-isolated still gets its
//! answers). An allowed flow gets a policy-only conntrack pair (no
//! translation, no service: `conntrack::is_policy_only`) whose original
//! entry carries the direction's `CT_FLAG_POLICY_*` bit; a later packet of
//! the original direction passes on that bit, a reply on `CT_FLAG_REPLY`.
//! An existing live entry (`NodePort`'s, or the other direction's judge) is
//! never overwritten: only the bit is added.
//!
//! Known gaps: non-first IP fragments carry no ports and are judged with
//! port 0; ICMP errors about an allowed flow are judged as flows of their
//! own.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie, PerCpuHashMap, RingBuf},
    programs::TcContext,
};
use skep_ebpf_common::{
    CtKey, Direction, EndpointKey, Family, MetricsValue, PeerIdentity, PolicyCounterKey,
    PolicyEndpoint, PolicyFlow, PolicyKey, PolicyName, PolicyValue, PolicyVerdict,
    CT_FLAG_POLICY_EGRESS, CT_FLAG_POLICY_INGRESS, CT_FLAG_REPLY, IDENTITY_ANY,
    IPCACHE_MAP_ENTRIES, IPCACHE_PREFIX_HOST, POLICY_COUNTERS_MAP_ENTRIES, POLICY_EGRESS_ISOLATED,
    POLICY_ENDPOINTS_MAP_ENTRIES, POLICY_FLOWS_RING_BYTES, POLICY_INGRESS_ISOLATED,
    POLICY_MAP_ENTRIES, POLICY_NAMES_MAP_ENTRIES, POLICY_PREFIX_PORT,
};

use crate::{
    conntrack::{self, Tracked},
    metrics, nodeport,
    packet::{self, ETH_HLEN},
};

/// `BPF_F_NO_PREALLOC`: the names maps are written by userspace only, rarely.
const BPF_F_NO_PREALLOC: u32 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;
/// The fragment-offset bits of the IPv4 flags/offset word.
const IP_FRAGMENT_OFFSET: u16 = 0x1fff;

/// Local pods some policy isolates (a miss: not isolated at all).
#[map(name = "SKEP_POLICY_ENDPOINTS")]
static POLICY_ENDPOINTS: HashMap<EndpointKey, PolicyEndpoint> =
    HashMap::pinned(POLICY_ENDPOINTS_MAP_ENTRIES, 0);

/// Who an address is: pod /32s and policy CIDRs (IPv4, network byte order).
#[map(name = "SKEP_IPCACHE")]
static IPCACHE: LpmTrie<u32, PeerIdentity> = LpmTrie::pinned(IPCACHE_MAP_ENTRIES, 0);

/// The compiled rules.
#[map(name = "SKEP_POLICY")]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(POLICY_MAP_ENTRIES, 0);

/// Verdicts per endpoint, direction and verdict.
#[map(name = "SKEP_POLICY_COUNTERS")]
static POLICY_COUNTERS: PerCpuHashMap<PolicyCounterKey, MetricsValue> =
    PerCpuHashMap::pinned(POLICY_COUNTERS_MAP_ENTRIES, 0);

/// Judged flows for `skep flows` (dropped silently when full).
#[map(name = "SKEP_POLICY_FLOWS")]
static POLICY_FLOWS: RingBuf = RingBuf::pinned(POLICY_FLOWS_RING_BYTES, 0);

/// Policy names (userspace only; declared here so it is pinned with the rest).
#[map(name = "SKEP_POLICY_NAMES")]
static POLICY_NAMES: HashMap<u32, PolicyName> =
    HashMap::pinned(POLICY_NAMES_MAP_ENTRIES, BPF_F_NO_PREALLOC);

/// Names of the cluster's pods by address (userspace only).
#[map(name = "SKEP_PEER_NAMES")]
static PEER_NAMES: HashMap<EndpointKey, PolicyName> =
    HashMap::pinned(IPCACHE_MAP_ENTRIES, BPF_F_NO_PREALLOC);

/// The tuple of the packet being judged and its TCP flags.
struct Flow {
    key: CtKey,
    tcp_flags: u8,
}

/// A pod's key in the policy-endpoints map.
#[inline(always)]
const fn endpoint_key(address: u32) -> EndpointKey {
    EndpointKey {
        address,
        family: Family::Ipv4 as u8,
        pad: [0; 3],
    }
}

/// The policy state of the local pod at `address`, if some policy selects it.
#[inline(always)]
fn policy_endpoint(address: u32) -> Option<PolicyEndpoint> {
    // SAFETY: a map lookup; the value is copied out at once.
    unsafe { POLICY_ENDPOINTS.get(&endpoint_key(address)) }.copied()
}

/// The egress check of a packet a pod sends (`src` → `dst`, from the IPv4
/// header): `Some(TC_ACT_SHOT)` when its policy denies it, `None` to go on.
/// `tracked`: the packet's conntrack lookup, made here if not yet.
#[inline(always)]
pub fn egress(ctx: &TcContext, src: u32, dst: u32, tracked: &mut Option<Tracked>) -> Option<i32> {
    let endpoint = policy_endpoint(src)?;
    if dst == nodeport::node_ipv4() {
        return None;
    }
    judge(ctx, &endpoint, src, Direction::Egress, tracked)
}

/// The ingress check of a packet about to be handed to the local pod `dst`:
/// `Some(TC_ACT_SHOT)` when its policy denies it, `None` to go on.
/// `tracked`: as for [`egress`].
#[inline(always)]
pub fn ingress(ctx: &TcContext, src: u32, dst: u32, tracked: &mut Option<Tracked>) -> Option<i32> {
    let endpoint = policy_endpoint(dst)?;
    if src == nodeport::node_ipv4() {
        return None;
    }
    judge(ctx, &endpoint, dst, Direction::Ingress, tracked)
}

/// Whether the ingress policy of the destination of `translated` (the tuple
/// of a new `NodePort` flow after DNAT/SNAT) admits it. The `NodePort`
/// conntrack entries then carry the flow: no policy entries are made.
#[inline(always)]
pub fn admit_nodeport(ctx: &TcContext, translated: &CtKey) -> bool {
    let Some(endpoint) = policy_endpoint(translated.dst_addr) else {
        return true;
    };
    if endpoint.flags & POLICY_INGRESS_ISOLATED == 0 || translated.src_addr == nodeport::node_ipv4()
    {
        return true;
    }
    decide(
        ctx,
        &endpoint,
        translated.dst_addr,
        Direction::Ingress,
        translated,
    )
}

/// Judges the packet for `endpoint` (the local pod at `local`) in
/// `direction`; see the module doc. `tracked` (the packet's conntrack
/// lookup, made here if not yet) is kept up to date with the entry this
/// writes, for the other direction's check of the same packet.
#[inline(always)]
fn judge(
    ctx: &TcContext,
    endpoint: &PolicyEndpoint,
    local: u32,
    direction: Direction,
    tracked: &mut Option<Tracked>,
) -> Option<i32> {
    let (bit, isolated_flag) = match direction {
        Direction::Ingress => (CT_FLAG_POLICY_INGRESS, POLICY_INGRESS_ISOLATED),
        Direction::Egress => (CT_FLAG_POLICY_EGRESS, POLICY_EGRESS_ISOLATED),
    };
    let isolated = endpoint.flags & isolated_flag != 0;
    if tracked.is_none() {
        if let Some(flow) = parse(ctx) {
            // SAFETY: a helper call without arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            *tracked = Some(Tracked::new(flow.key, flow.tcp_flags, now));
        }
    }
    let Some(flow) = tracked.as_mut() else {
        // A truncated IPv4 header: nothing to judge it by.
        return isolated.then_some(TC_ACT_SHOT);
    };
    if let Some(entry) = flow.entry {
        if entry.flags & (CT_FLAG_REPLY | bit) != 0 {
            if isolated {
                count(ctx, local, direction, PolicyVerdict::Established);
            }
            return None;
        }
    }
    if isolated && !decide(ctx, endpoint, local, direction, &flow.key) {
        return Some(TC_ACT_SHOT);
    }
    flow.entry = Some(conntrack::allow_policy(
        &flow.key, bit, flow.entry, flow.now,
    ));
    None
}

/// Looks the flow up in the rules, counts and reports the verdict; `true`
/// when allowed.
#[inline(always)]
fn decide(
    ctx: &TcContext,
    endpoint: &PolicyEndpoint,
    local: u32,
    direction: Direction,
    key: &CtKey,
) -> bool {
    let peer_addr = match direction {
        Direction::Ingress => key.src_addr,
        Direction::Egress => key.dst_addr,
    };
    let peer = ipcache(peer_addr);
    let rule = PolicyKey {
        endpoint: endpoint.identity,
        peer: IDENTITY_ANY,
        direction: direction as u8,
        proto: key.proto,
        port: key.dst_port,
    };
    let matched = rule_for(rule, peer.pod)
        .or_else(|| rule_for(rule, peer.cidr))
        .or_else(|| {
            POLICY
                .get(&Key::new(POLICY_PREFIX_PORT, rule))
                .map(|value| (IDENTITY_ANY, value.policy))
        });
    let (verdict, peer_id, policy) = if let Some((peer_id, policy)) = matched {
        (PolicyVerdict::Allowed, peer_id, policy)
    } else {
        let peer_id = if peer.pod == 0 { peer.cidr } else { peer.pod };
        (PolicyVerdict::Denied, peer_id, 0)
    };
    count(ctx, local, direction, verdict);
    report(key, endpoint.identity, direction, verdict, peer_id, policy);
    verdict == PolicyVerdict::Allowed
}

/// The rule allowing `rule` with peer identity `peer` (none for
/// [`IDENTITY_ANY`], which the caller looks up last): the identity and the
/// allowing policy.
#[inline(always)]
fn rule_for(mut rule: PolicyKey, peer: u32) -> Option<(u32, u32)> {
    if peer == IDENTITY_ANY {
        return None;
    }
    rule.peer = peer;
    POLICY
        .get(&Key::new(POLICY_PREFIX_PORT, rule))
        .map(|value| (peer, value.policy))
}

/// The identity of `address` (all zero when the ipcache does not know it).
#[inline(always)]
fn ipcache(address: u32) -> PeerIdentity {
    let key = Key::new(IPCACHE_PREFIX_HOST, address);
    IPCACHE.get(&key).copied().unwrap_or_default()
}

/// Reads the tuple: ports for TCP, UDP and SCTP (same offsets) in a first
/// fragment, 0 otherwise. `None` when not IPv4 or truncated.
#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Flow> {
    if packet::family(ctx) != Family::Ipv4 {
        return None;
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).ok()?;
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    let mut flow = Flow {
        key: CtKey {
            src_addr: ctx.load(ETH_HLEN + 12).ok()?,
            dst_addr: ctx.load(ETH_HLEN + 16).ok()?,
            src_port: 0,
            dst_port: 0,
            proto,
            family: Family::Ipv4 as u8,
            pad: 0,
        },
        tcp_flags: 0,
    };
    let first_fragment = u16::from_be(frag) & IP_FRAGMENT_OFFSET == 0;
    if first_fragment && matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        let l4 = ETH_HLEN + ihl;
        flow.key.src_port = ctx.load(l4).ok()?;
        flow.key.dst_port = ctx.load(l4 + 2).ok()?;
        if proto == PROTO_TCP {
            flow.tcp_flags = ctx.load(l4 + 13).ok()?;
        }
    }
    Some(flow)
}

/// Counts one judged packet of the local pod at `local`.
#[inline(always)]
fn count(ctx: &TcContext, local: u32, direction: Direction, verdict: PolicyVerdict) {
    let key = PolicyCounterKey {
        endpoint: local,
        direction: direction as u8,
        verdict: verdict as u8,
        family: Family::Ipv4 as u8,
        pad: 0,
    };
    metrics::add(&POLICY_COUNTERS, &key, u64::from(ctx.len()));
}

/// Writes the verdict to the flows ring buffer (lost when it is full).
#[inline(always)]
fn report(
    key: &CtKey,
    endpoint: u32,
    direction: Direction,
    verdict: PolicyVerdict,
    peer: u32,
    policy: u32,
) {
    let flow = PolicyFlow {
        // SAFETY: a helper call without arguments.
        time_ns: unsafe { bpf_ktime_get_ns() },
        src_addr: key.src_addr,
        dst_addr: key.dst_addr,
        src_port: key.src_port,
        dst_port: key.dst_port,
        proto: key.proto,
        direction: direction as u8,
        verdict: verdict as u8,
        pad: 0,
        endpoint,
        peer,
        policy,
        pad2: 0,
    };
    let _ = POLICY_FLOWS.output(&flow, 0);
}

/// Forces the userspace-only names maps into the object (the linker drops
/// maps no program references); called on a rare path, never matches.
#[inline(always)]
pub fn keep_names_maps() {
    // SAFETY: map lookups; the references are dropped at once.
    unsafe {
        let _ = POLICY_NAMES.get(&0);
        let _ = PEER_NAMES.get(&endpoint_key(0));
    }
}
