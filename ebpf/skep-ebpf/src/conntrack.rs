//! The packet-level conntrack: one LRU entry per direction of a flow, keyed
//! by the tuple the packet carries (see `skep_ebpf_common::ct` for why), each
//! holding the tuple to translate to. `NodePort` creates translating
//! entries; network policy creates policy-only ones (no translation, no
//! service: [`is_policy_only`]) and adds its verdict bits to either.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    macros::map,
    maps::LruHashMap,
};
use skep_ebpf_common::{
    ct_expired, CtKey, CtValue, CT_FLAG_CLOSING, CT_FLAG_REPLY, CT_FLAG_SEEN_REPLY,
    LRU_MAP_DEFAULT_ENTRIES,
};

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const PROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The conntrack table (resized at load from memory or configuration).
#[map(name = "SKEP_CT")]
static CT: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(LRU_MAP_DEFAULT_ENTRIES, 0);

/// A live entry for `key`, updated for this packet (last seen, TCP state),
/// copied out. `None` when there is none, it has expired, or a new TCP SYN
/// reuses the tuple of a closing flow (the caller then starts a new flow).
#[inline(always)]
pub fn lookup(key: &CtKey, tcp_flags: u8, now: u64) -> Option<CtValue> {
    let entry = CT.get_ptr_mut(key)?;
    // SAFETY: the pointer comes from a successful lookup and stays valid for
    // this program run; concurrent writers only ever store whole fields.
    let value = unsafe { &mut *entry };
    if ct_expired(value, key.proto, now) {
        return None;
    }
    let is_tcp = key.proto == PROTO_TCP;
    let new_syn = is_tcp && tcp_flags & TCP_SYN != 0 && tcp_flags & TCP_ACK == 0;
    if new_syn && value.flags & CT_FLAG_CLOSING != 0 {
        return None;
    }
    let mut mark_peer = 0;
    if is_tcp && tcp_flags & (TCP_FIN | TCP_RST) != 0 && value.flags & CT_FLAG_CLOSING == 0 {
        value.flags |= CT_FLAG_CLOSING;
        mark_peer |= CT_FLAG_CLOSING;
    }
    if value.flags & CT_FLAG_REPLY != 0 && value.flags & CT_FLAG_SEEN_REPLY == 0 {
        value.flags |= CT_FLAG_SEEN_REPLY;
        mark_peer |= CT_FLAG_SEEN_REPLY;
    }
    // The other direction is kept alive too (a one-way UDP stream must not
    // lose its reply entry), but at most once a second per flow.
    let stale = now.saturating_sub(value.last_seen_ns) > NANOS_PER_SECOND;
    value.last_seen_ns = now;
    let copy = *value;
    if mark_peer != 0 || stale {
        let peer = key.peer_of(&copy);
        if let Some(peer_entry) = CT.get_ptr_mut(&peer) {
            // SAFETY: as above, a pointer from a successful lookup.
            unsafe {
                (*peer_entry).flags |= mark_peer;
                (*peer_entry).last_seen_ns = now;
            }
        }
    }
    Some(copy)
}

/// Whether `value` (the entry of `key`) is a policy-only entry: no service
/// and the packet's own tuple as translation. `NodePort` never translates
/// those.
#[inline(always)]
pub const fn is_policy_only(key: &CtKey, value: &CtValue) -> bool {
    value.rev_nat_id == 0
        && value.nat_src_addr == key.src_addr
        && value.nat_dst_addr == key.dst_addr
        && value.nat_src_port == key.src_port
        && value.nat_dst_port == key.dst_port
}

/// [`lookup`] for the `NodePort` programs: only entries that translate (a
/// policy-only entry is `None`, the routing step goes on).
#[inline(always)]
pub fn lookup_nat(key: &CtKey, tcp_flags: u8, now: u64) -> Option<CtValue> {
    lookup(key, tcp_flags, now).filter(|value| !is_policy_only(key, value))
}

/// Records that policy allowed the flow of `original` in the direction of
/// `bit` (a `CT_FLAG_POLICY_*`). With `existing` (a live entry of `original`
/// was found), only the bit is added to it. Otherwise a policy-only pair is
/// created: the reply entry only where no live entry holds its tuple (a
/// `NodePort` entry is never overwritten), then the original. A failed
/// insert only loses tracking.
#[inline(always)]
pub fn allow_policy(original: &CtKey, bit: u8, existing: bool, now: u64) {
    if existing {
        if let Some(entry) = CT.get_ptr_mut(original) {
            // SAFETY: a pointer from a successful lookup; only a flag is set.
            unsafe { (*entry).flags |= bit };
        }
        return;
    }
    let forward = CtValue {
        last_seen_ns: now,
        nat_src_addr: original.src_addr,
        nat_dst_addr: original.dst_addr,
        nat_src_port: original.src_port,
        nat_dst_port: original.dst_port,
        backend_id: 0,
        rev_nat_id: 0,
        flags: bit,
        pad: [0; 5],
    };
    let reply_key = original.peer_of(&forward);
    let reply = CtValue {
        nat_src_addr: original.dst_addr,
        nat_dst_addr: original.src_addr,
        nat_src_port: original.dst_port,
        nat_dst_port: original.src_port,
        flags: CT_FLAG_REPLY,
        ..forward
    };
    if CT
        .insert(&reply_key, &reply, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // SAFETY: a map lookup; the value is only read here.
        let replaceable = unsafe { CT.get(&reply_key) }.is_none_or(|old| {
            ct_expired(old, reply_key.proto, now) || is_policy_only(&reply_key, old)
        });
        if replaceable {
            let _ = CT.insert(&reply_key, &reply, u64::from(BPF_ANY));
        }
    }
    // The original entry is not live (the caller's lookup said so): a new
    // flow with its tuple replaces it.
    let _ = CT.insert(original, &forward, u64::from(BPF_ANY));
}

/// Whether a live entry holds `key` (a candidate SNAT tuple is taken).
#[inline(always)]
pub fn in_use(key: &CtKey, now: u64) -> bool {
    // SAFETY: a map lookup; the value is only read here.
    unsafe { CT.get(key) }.is_some_and(|value| !ct_expired(value, key.proto, now))
}

/// Records a new flow: `original` (the client's tuple) translated by
/// `forward`, and its reply entry. The reply entry goes in first so the
/// first reply always finds it. An insert failure (map full of in-flight
/// updates) only loses tracking: the caller still forwards the packet.
#[inline(always)]
pub fn create(original: &CtKey, forward: &CtValue) {
    let reply_key = original.peer_of(forward);
    let reply = CtValue {
        last_seen_ns: forward.last_seen_ns,
        nat_src_addr: original.dst_addr,
        nat_dst_addr: original.src_addr,
        nat_src_port: original.dst_port,
        nat_dst_port: original.src_port,
        backend_id: forward.backend_id,
        rev_nat_id: forward.rev_nat_id,
        flags: forward.flags | CT_FLAG_REPLY,
        pad: [0; 5],
    };
    let _ = CT.insert(&reply_key, &reply, 0);
    let _ = CT.insert(original, forward, 0);
}
