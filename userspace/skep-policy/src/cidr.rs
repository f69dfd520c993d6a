//! IPv4 prefixes as `ipBlock` names them, and the set of policy CIDRs with
//! the two questions the compiler asks of it: the longest CIDR containing
//! an address, and every CIDR inside a given one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An `ipBlock` CIDR that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// Not `a.b.c.d/len` with a prefix length of at most 32 (IPv6 blocks
    /// land here too: the datapath is IPv4-only).
    #[error("failed to parse {text:?} as an IPv4 CIDR")]
    Parse {
        /// The text as written in the policy.
        text: String,
    },
}

/// An IPv4 prefix with its host bits cleared. Ordered by (network address,
/// length), so every prefix inside `P` sorts in `P.first ..= P.last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    /// Network address, host order.
    net: u32,
    /// Prefix length, 0..=32.
    len: u8,
}

impl Cidr {
    /// The prefix of `len` bits containing `addr` (`len` is clamped to 32).
    #[must_use]
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Self {
            net: u32::from(addr) & mask(len),
            len,
        }
    }

    /// The network address.
    #[must_use]
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.net)
    }

    /// The prefix length.
    #[must_use]
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// The last address inside.
    #[must_use]
    pub fn last(self) -> u32 {
        self.net | !mask(self.len)
    }

    /// Whether `addr` is inside.
    #[must_use]
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.len) == self.net
    }

    /// Whether every address of `self` is inside `outer`.
    #[must_use]
    pub fn is_subset_of(self, outer: Self) -> bool {
        self.len >= outer.len && self.net & mask(outer.len) == outer.net
    }
}

/// The netmask of a prefix length.
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses an IPv4 CIDR exactly as the API server validated it
    /// (`skep_api::validation::cidr::parse_cidr`, Go's `ParseCIDRSloppy`:
    /// leading zeros allowed, host bits cleared); an IPv4-mapped IPv6
    /// network (`::ffff:a.b.c.d/len`, `len` ≥ 96) is the IPv4 network it
    /// maps. Other IPv6 networks are an error: the datapath is IPv4 only.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || CidrError::Parse { text: text.into() };
        let net = skep_api::validation::cidr::parse_cidr(text).ok_or_else(err)?;
        match net.addr {
            IpAddr::V4(addr) => Ok(Self::new(addr, net.prefix)),
            IpAddr::V6(addr) => match (addr.to_ipv4_mapped(), net.prefix.checked_sub(96)) {
                (Some(addr), Some(len)) => Ok(Self::new(addr, len)),
                _ => Err(err()),
            },
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// A set of CIDRs answering containment questions without a scan.
#[derive(Clone, Debug, Default)]
pub struct CidrSet {
    sorted: BTreeSet<Cidr>,
    /// Which prefix lengths occur, so a longest match tries only those.
    lens: BTreeSet<u8>,
}

impl CidrSet {
    /// Adds a CIDR.
    pub fn insert(&mut self, cidr: Cidr) {
        self.lens.insert(cidr.len);
        self.sorted.insert(cidr);
    }

    /// Every CIDR, in order.
    pub fn iter(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.sorted.iter().copied()
    }

    /// The longest CIDR of the set containing `addr`, as the ipcache LPM
    /// lookup would find it.
    #[must_use]
    pub fn longest_containing(&self, addr: Ipv4Addr) -> Option<Cidr> {
        self.lens
            .iter()
            .rev()
            .map(|&len| Cidr::new(addr, len))
            .find(|c| self.sorted.contains(c))
    }

    /// Every CIDR of the set inside `outer` (including `outer` itself).
    pub fn subsets_of(&self, outer: Cidr) -> impl Iterator<Item = Cidr> + '_ {
        let hi = Cidr {
            net: outer.last(),
            len: 32,
        };
        self.sorted
            .range(outer..=hi)
            .copied()
            .filter(move |c| c.is_subset_of(outer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parse_clears_host_bits_and_rejects_garbage() {
        assert_eq!(c("10.1.2.3/16"), Cidr::new(Ipv4Addr::new(10, 1, 0, 0), 16));
        assert_eq!(c("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert_eq!(c("0.0.0.0/0").last(), u32::MAX);
        // As the API server accepts them: leading zeros, IPv4-mapped IPv6.
        assert_eq!(c("010.0.0.1/08"), Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert_eq!(
            c("::ffff:10.1.2.3/112"),
            Cidr::new(Ipv4Addr::new(10, 1, 0, 0), 16)
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/8",
            "x/8",
            "10.0.0.0/-1",
            "::ffff:10.0.0.0/64",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn subset_and_contains_agree_with_brute_force_on_small_prefixes() {
        // Every prefix of 10.0.0.0/29 against every other, by address sets.
        let all: Vec<Cidr> = (29..=32)
            .flat_map(|len| (0..8u8).map(move |i| Cidr::new(Ipv4Addr::new(10, 0, 0, i), len)))
            .collect();
        let addrs = |p: Cidr| -> Vec<u32> { (p.net..=p.last()).collect() };
        for &p in &all {
            for &q in &all {
                let brute = addrs(p).iter().all(|&a| q.contains(Ipv4Addr::from(a)));
                assert_eq!(p.is_subset_of(q), brute, "{p} ⊆ {q}");
            }
        }
    }

    #[test]
    fn set_finds_longest_match_and_subsets() {
        let mut set = CidrSet::default();
        for s in [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.2.0.0/16",
            "192.168.0.0/16",
        ] {
            set.insert(c(s));
        }
        assert_eq!(
            set.longest_containing(Ipv4Addr::new(10, 1, 2, 9)),
            Some(c("10.1.2.0/24"))
        );
        assert_eq!(
            set.longest_containing(Ipv4Addr::new(10, 1, 3, 9)),
            Some(c("10.1.0.0/16"))
        );
        assert_eq!(
            set.longest_containing(Ipv4Addr::new(10, 9, 3, 9)),
            Some(c("10.0.0.0/8"))
        );
        assert_eq!(set.longest_containing(Ipv4Addr::new(11, 0, 0, 1)), None);
        let inside: Vec<String> = set
            .subsets_of(c("10.0.0.0/8"))
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            inside,
            ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16"]
        );
        let inside: Vec<String> = set
            .subsets_of(c("10.1.0.0/15"))
            .map(|c| c.to_string())
            .collect();
        assert_eq!(inside, ["10.1.0.0/16", "10.1.2.0/24"]);
        assert_eq!(set.subsets_of(c("0.0.0.0/0")).count(), 5);
    }
}
