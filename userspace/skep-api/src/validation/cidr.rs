//! CIDR values read the way kube-apiserver reads its legacy CIDR fields
//! (`ipBlock.cidr`, `ipBlock.except`): `netutils.ParseCIDRSloppy` with the
//! `StrictIPCIDRValidation` gate off (its default through v1.33). That
//! accepts what the strict parsers refuse — IPv4 octets and prefix lengths
//! with leading zeros (`010.0.0.0/08` is `10.0.0.0/8`), host bits after the
//! prefix (`10.0.0.1/24` is `10.0.0.0/24`) — so the same manifests that
//! Kubernetes stores are stored here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `must be a valid CIDR value, …`: the detail of an unparsable CIDR.
pub const CIDR_DETAIL: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// A parsed CIDR as Go's `net.IPNet`: the network address (host bits
/// cleared) and the prefix length in the family of the text (an IPv6 text
/// has a length out of 128 even when it spells an IPv4-mapped address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length (Go's `Mask.Size()`).
    pub prefix: u8,
}

impl IpNet {
    /// Go's `IPNet.Contains`: IPv4-mapped IPv6 networks and addresses
    /// compare as the IPv4 ones they map.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, prefix) = match self.addr.to_canonical() {
            IpAddr::V4(v4) if self.addr.is_ipv6() => {
                (IpAddr::V4(v4), self.prefix.saturating_sub(96))
            }
            other => (other, self.prefix),
        };
        match (net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, prefix) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, prefix) == net,
            _ => false,
        }
    }
}

/// Parse `ip/prefix` like `netutils.ParseCIDRSloppy`; `None` when Go would
/// return an error.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let (ip, len) = s.split_once('/')?;
    let (addr, bits) = match parse_ipv4(ip) {
        Some(v4) => (IpAddr::V4(v4), 32),
        None => (IpAddr::V6(parse_ipv6(ip)?), 128),
    };
    let prefix = decimal(len).filter(|n| *n <= bits)?;
    let prefix = u8::try_from(prefix).ok()?;
    let addr = match addr {
        IpAddr::V4(a) => IpAddr::V4(mask_v4(a, prefix)),
        IpAddr::V6(a) => IpAddr::V6(mask_v6(a, prefix)),
    };
    Some(IpNet { addr, prefix })
}

/// A run of decimal digits (leading zeros allowed), as Go's `dtoi`.
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.bytes().try_fold(0u32, |n, b| {
        n.checked_mul(10)?
            .checked_add(u32::from(b - b'0'))
            .filter(|n| *n < 0x00FF_FFFF)
    })
}

/// Dotted-quad IPv4 with leading zeros allowed in octets (the pre-Go-1.17
/// parser that `ParseIPSloppy` keeps).
fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        *octet = u8::try_from(decimal(parts.next()?)?).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// IPv6, with a trailing embedded IPv4 read as sloppily as [`parse_ipv4`].
fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    match s.rsplit_once(':') {
        Some((head, tail)) if tail.contains('.') => {
            let v4 = parse_ipv4(tail)?;
            format!("{head}:{v4}").parse().ok()
        }
        _ => s.parse().ok(),
    }
}

fn mask_v4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(a) & mask)
}

fn mask_v6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(u128::from(a) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        parse_cidr(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_like_parse_cidr_sloppy() {
        assert_eq!(net("10.1.2.3/8").addr, IpAddr::from([10, 0, 0, 0]));
        assert_eq!(net("010.001.0.0/016").prefix, 16);
        assert_eq!(net("010.001.0.0/016").addr, IpAddr::from([10, 1, 0, 0]));
        assert_eq!(net("0.0.0.0/0").prefix, 0);
        assert_eq!(
            net("2001:db8::1/64").addr,
            IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0))
        );
        assert_eq!(net("::/0").prefix, 0);
        assert_eq!(net("::ffff:010.0.0.0/104").prefix, 104);
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0.0/8",
            "256.0.0.0/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
            "2001:db8::/129",
            "2001:db8:::/64",
            "fe80::1%eth0/64",
            "10.0.0.0/99999999999",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad:?} should not parse");
        }
    }

    #[test]
    fn contains_like_go() {
        let v4 = net("10.0.0.0/8");
        assert!(v4.contains(net("10.1.0.0/16").addr));
        assert!(!v4.contains(net("11.0.0.0/16").addr));
        assert!(!v4.contains(net("2001:db8::/64").addr));
        assert!(v4.contains(net("::ffff:10.1.0.0/112").addr));
        assert!(net("::ffff:10.0.0.0/104").contains(net("10.1.0.0/16").addr));
        let v6 = net("2001:db8::/32");
        assert!(v6.contains(net("2001:db8:1::/48").addr));
        assert!(!v6.contains(net("10.0.0.0/8").addr));
        assert!(net("::/0").contains(net("2001:db8::/32").addr));
        assert!(net("0.0.0.0/0").contains(net("192.168.0.0/16").addr));
    }
}
