//! The datapath's policy lookups, done on a [`PolicyState`] instead of the
//! kernel maps: exactly the ipcache longest-prefix match, the policy
//! endpoint hash lookup and the (at most three) rule longest-prefix
//! matches of the TC programs. Tests of the compiler and the end-to-end
//! expectations use it, so both agree with the datapath on what a state
//! means.

use std::net::Ipv4Addr;

use skep_ebpf_common::Direction;
use skep_ebpf_common::policy::{
    IDENTITY_ANY, IPCACHE_PREFIX_HOST, POLICY_EGRESS_ISOLATED, POLICY_INGRESS_ISOLATED,
    POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_PORT, PeerIdentity, PolicyKey, PolicyValue,
};

use crate::cidr::Cidr;
use crate::state::PolicyState;

/// One node's verdict on one direction of a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint is not local or not isolated in that direction.
    NotIsolated,
    /// A rule of this policy id allowed it.
    Allowed(u32),
    /// No rule allowed it.
    Denied,
}

/// The ipcache entry an address hits (longest prefix), or all zeros on a
/// miss, as the programs treat a miss.
#[must_use]
pub fn ipcache_lookup(state: &PolicyState, addr: Ipv4Addr) -> PeerIdentity {
    (0..=IPCACHE_PREFIX_HOST)
        .rev()
        .find_map(|len| {
            #[expect(clippy::cast_possible_truncation, reason = "len <= 32")]
            let net = Cidr::new(addr, len as u8).addr();
            state.ipcache.get(&(net, len)).copied()
        })
        .unwrap_or_default()
}

/// The rule a full key hits (longest prefix), like one `bpf_map_lookup_elem`
/// on the rules trie.
#[must_use]
pub fn rule_lookup(state: &PolicyState, key: PolicyKey) -> Option<PolicyValue> {
    (POLICY_PREFIX_ANY_PROTO..=POLICY_PREFIX_PORT)
        .rev()
        .find_map(|len| {
            let mut masked = key;
            let port_bits = len.saturating_sub(POLICY_PREFIX_ANY_PROTO + 8);
            if len < POLICY_PREFIX_ANY_PROTO + 8 {
                masked.proto = 0;
            }
            let keep = if port_bits == 0 {
                0
            } else {
                u16::MAX << (16 - port_bits)
            };
            masked.port = (u16::from_be(key.port) & keep).to_be();
            state.rules.get(&(masked, len)).copied()
        })
}

/// What the node owning `state` decides for a new flow's packet of
/// `proto` to destination `port`, judged at `endpoint` in `direction`
/// (`Ingress`: `peer` → `endpoint`; `Egress`: `endpoint` → `peer`).
#[must_use]
pub fn verdict(
    state: &PolicyState,
    endpoint: Ipv4Addr,
    peer: Ipv4Addr,
    direction: Direction,
    proto: u8,
    port: u16,
) -> Verdict {
    let isolated = match direction {
        Direction::Ingress => POLICY_INGRESS_ISOLATED,
        Direction::Egress => POLICY_EGRESS_ISOLATED,
    };
    let Some(ep) = state
        .endpoints
        .get(&endpoint)
        .filter(|ep| ep.flags & isolated != 0)
    else {
        return Verdict::NotIsolated;
    };
    let who = ipcache_lookup(state, peer);
    [who.pod, who.cidr, IDENTITY_ANY]
        .into_iter()
        .enumerate()
        // A zero pod or CIDR identity is the same lookup as the last one.
        .filter(|&(i, id)| i == 2 || id != IDENTITY_ANY)
        .find_map(|(_, id)| {
            let key = PolicyKey {
                endpoint: ep.identity,
                peer: id,
                direction: direction as u8,
                proto,
                port: port.to_be(),
            };
            rule_lookup(state, key)
        })
        .map_or(Verdict::Denied, |v| Verdict::Allowed(v.policy))
}

/// Whether a new flow `src` → `dst:port` passes the policy of the node
/// owning `state`: egress judged at `src` if it is local, ingress at `dst`
/// if it is local. For a flow between nodes ask both nodes' states. A pod
/// talking to itself never leaves its own namespace (loopback), so is
/// never judged.
#[must_use]
pub fn allows(state: &PolicyState, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
    src == dst
        || (verdict(state, src, dst, Direction::Egress, proto, port) != Verdict::Denied
            && verdict(state, dst, src, Direction::Ingress, proto, port) != Verdict::Denied)
}
