//! Reading the packet counters the TC programs keep in the pinned metrics map.

use std::path::Path;

use aya::maps::{Map, PerCpuHashMap};
use skep_ebpf_common::{MetricsKey, MetricsValue, map};

use crate::{DatapathError, pinned};

/// One row of the metrics map, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsRow {
    /// What was counted.
    pub key: MetricsKey,
    /// Packets and bytes, all CPUs together.
    pub value: MetricsValue,
}

/// An IP protocol number's name in tables, flows and metrics (`-` for 0, the
/// number itself when it has no name here).
#[must_use]
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        0 => "-".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

/// Reads every counter from the map pinned in `pin_dir`, sorted by key. Works
/// from any process: it opens the pin, not the loader's handle.
pub fn read_pinned(pin_dir: &Path) -> Result<Vec<MetricsRow>, DatapathError> {
    let map_err = |source| pinned::map_err(map::METRICS, source);
    let data = pinned::open(pin_dir, map::METRICS)?;
    let counters: PerCpuHashMap<_, MetricsKey, MetricsValue> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(map_err)?;
    let mut rows = Vec::new();
    for entry in counters.iter() {
        let (key, per_cpu) = entry.map_err(map_err)?;
        let value = per_cpu
            .iter()
            .fold(MetricsValue::default(), |acc, v| MetricsValue {
                packets: acc.packets + v.packets,
                bytes: acc.bytes + v.bytes,
            });
        rows.push(MetricsRow { key, value });
    }
    rows.sort_by_key(|row| row.key);
    Ok(rows)
}
