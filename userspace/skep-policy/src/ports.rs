//! What a rule's `ports` allow, as the protocol/port part of a
//! [`PolicyKey`] prefix: any protocol, one protocol, or aligned port
//! blocks of one protocol.

use skep_ebpf_common::policy::PolicyKey;
use skep_ebpf_common::policy::{POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_PORT, POLICY_PREFIX_PROTO};

/// The protocol/port tail of a rule key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Every protocol and port (a rule without `ports`).
    AnyProto,
    /// Every port of one protocol (a port entry without `port`).
    Proto(u8),
    /// The `2^bits` ports of one protocol starting at `first` (aligned).
    Block {
        /// IP protocol number.
        proto: u8,
        /// First port of the block, host order; a multiple of `2^bits`.
        first: u16,
        /// log2 of the block size, 0..=16.
        bits: u8,
    },
}

impl PortMatch {
    /// One port of one protocol.
    #[must_use]
    pub fn port(proto: u8, port: u16) -> Self {
        Self::Block {
            proto,
            first: port,
            bits: 0,
        }
    }

    /// Fills the protocol and port of `key` and returns the LPM prefix
    /// length for this match.
    #[must_use]
    pub fn apply(self, key: &mut PolicyKey) -> u32 {
        match self {
            Self::AnyProto => {
                key.proto = 0;
                key.port = 0;
                POLICY_PREFIX_ANY_PROTO
            }
            Self::Proto(proto) => {
                key.proto = proto;
                key.port = 0;
                POLICY_PREFIX_PROTO
            }
            Self::Block { proto, first, bits } => {
                key.proto = proto;
                key.port = first.to_be();
                POLICY_PREFIX_PORT - u32::from(bits)
            }
        }
    }
}

/// `first..=last` of one protocol as the fewest aligned blocks (the
/// longest-prefix decomposition of a range); empty when `last < first`.
#[must_use]
pub fn range_blocks(proto: u8, first: u16, last: u16) -> Vec<PortMatch> {
    let mut blocks = Vec::new();
    let mut start = u32::from(first);
    let end = u32::from(last);
    while start <= end {
        // The largest aligned block at `start` that does not pass `end`.
        let mut bits = start.trailing_zeros().min(16);
        while start + (1 << bits) - 1 > end {
            bits -= 1;
        }
        blocks.push(PortMatch::Block {
            proto,
            #[expect(clippy::cast_possible_truncation, reason = "start <= last, a u16")]
            first: start as u16,
            #[expect(clippy::cast_possible_truncation, reason = "at most 16")]
            bits: bits as u8,
        });
        start += 1 << bits;
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ports a block covers.
    fn covered(b: PortMatch) -> std::ops::RangeInclusive<u32> {
        match b {
            PortMatch::Block { first, bits, .. } => {
                u32::from(first)..=u32::from(first) + (1 << bits) - 1
            }
            other => panic!("not a block: {other:?}"),
        }
    }

    #[test]
    fn range_blocks_cover_exactly_the_range_with_aligned_minimal_blocks() {
        // Exhaustive over every range inside 0..=40, plus the top edge.
        let mut ranges: Vec<(u16, u16)> = (0..=40)
            .flat_map(|a| (a..=40).map(move |b| (a, b)))
            .collect();
        ranges.extend([(65_500, 65_535), (0, 65_535), (1, 65_535), (65_535, 65_535)]);
        for (first, last) in ranges {
            let blocks = range_blocks(6, first, last);
            let mut next = u32::from(first);
            for &b in &blocks {
                let r = covered(b);
                assert_eq!(*r.start(), next, "{first}..={last}: gap or overlap");
                let size = r.end() - r.start() + 1;
                assert_eq!(r.start() % size, 0, "{first}..={last}: unaligned {b:?}");
                next = r.end() + 1;
            }
            assert_eq!(next, u32::from(last) + 1, "{first}..={last}: not covered");
            // Minimal: no two neighbours could merge into one aligned block.
            for w in blocks.windows(2) {
                let (a, b) = (covered(w[0]), covered(w[1]));
                let size = a.end() - a.start() + 1;
                let mergeable = b.end() - b.start() + 1 == size && a.start() % (2 * size) == 0;
                assert!(!mergeable, "{first}..={last}: {w:?} could merge");
            }
        }
        assert!(range_blocks(6, 5, 4).is_empty());
        assert_eq!(range_blocks(6, 0, 65_535).len(), 1);
    }

    #[test]
    fn apply_sets_network_order_port_and_prefix() {
        let mut key = PolicyKey::default();
        assert_eq!(PortMatch::port(17, 80).apply(&mut key), POLICY_PREFIX_PORT);
        assert_eq!((key.proto, key.port.to_ne_bytes()), (17, [0, 80]));
        let blocks = range_blocks(6, 80, 81);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].apply(&mut key), POLICY_PREFIX_PORT - 1);
        assert_eq!(PortMatch::Proto(132).apply(&mut key), POLICY_PREFIX_PROTO);
        assert_eq!((key.proto, key.port), (132, 0));
        assert_eq!(PortMatch::AnyProto.apply(&mut key), POLICY_PREFIX_ANY_PROTO);
    }
}
