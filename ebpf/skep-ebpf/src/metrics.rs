//! Per-interface packet and byte counters: the first map userspace reads, and
//! the place later programs count their verdicts.

use aya_ebpf::{macros::map, maps::PerCpuHashMap, programs::TcContext};
use skep_ebpf_common::{Direction, MetricsKey, MetricsValue, METRICS_MAP_ENTRIES};

use crate::packet;

/// Counters keyed by interface, direction, family and protocol. Per-CPU so the
/// hot path never contends; pinned so counts survive an agent restart.
#[map(name = "SKEP_METRICS")]
static METRICS: PerCpuHashMap<MetricsKey, MetricsValue> =
    PerCpuHashMap::pinned(METRICS_MAP_ENTRIES, 0);

/// Counts the packet in `ctx`. Counting cannot fail the packet: a full map
/// only loses the count.
#[inline(always)]
pub fn count(ctx: &TcContext, direction: Direction) {
    let family = packet::family(ctx);
    let key = MetricsKey {
        // SAFETY: `skb` is the valid context pointer the kernel passed to the program.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        direction: direction as u8,
        family: family as u8,
        protocol: packet::l4_protocol(ctx, family),
        pad: 0,
    };
    add(&METRICS, &key, u64::from(ctx.len()));
}

/// Adds one packet of `len` bytes to the per-CPU counter at `key` in `map`,
/// inserting it when absent. A full map only loses the count.
#[inline(always)]
pub fn add<K>(map: &PerCpuHashMap<K, MetricsValue>, key: &K, len: u64) {
    if let Some(value) = map.get_ptr_mut(key) {
        // SAFETY: the pointer comes from a successful lookup of a per-CPU value,
        // which only this CPU writes while the program runs.
        unsafe {
            (*value).packets += 1;
            (*value).bytes += len;
        }
    } else {
        let value = MetricsValue {
            packets: 1,
            bytes: len,
        };
        let _ = map.insert(key, &value, 0);
    }
}
