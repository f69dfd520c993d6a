//! The packet-level conntrack: one LRU entry per direction of a flow, keyed
//! by the tuple the packet carries (see `skep_ebpf_common::ct` for why), each
//! holding the tuple to translate to. `NodePort` creates entries; network
//! policy will add its verdict bit to the same entries.

use aya_ebpf::{macros::map, maps::LruHashMap};
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
