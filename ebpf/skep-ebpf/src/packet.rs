//! Reading packet headers from a TC context.

use aya_ebpf::programs::TcContext;
use skep_ebpf_common::Family;

/// Length of an Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
/// Offset of the protocol byte in an IPv4 header.
const IPV4_PROTOCOL_OFFSET: usize = 9;
/// Offset of the next-header byte in an IPv6 header.
const IPV6_NEXT_HEADER_OFFSET: usize = 6;

/// The family of the packet from the skb's ethertype.
#[inline(always)]
pub fn family(ctx: &TcContext) -> Family {
    // skb->protocol holds the ethertype in network byte order in its low 16 bits.
    #[allow(clippy::cast_possible_truncation, reason = "the ethertype is 16 bits")]
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    match ethertype {
        ETH_P_IP => Family::Ipv4,
        ETH_P_IPV6 => Family::Ipv6,
        _ => Family::Other,
    }
}

/// The L4 protocol number of an IP packet (0 when not IP or unreadable).
#[inline(always)]
pub fn l4_protocol(ctx: &TcContext, family: Family) -> u8 {
    let offset = match family {
        Family::Ipv4 => ETH_HLEN + IPV4_PROTOCOL_OFFSET,
        Family::Ipv6 => ETH_HLEN + IPV6_NEXT_HEADER_OFFSET,
        Family::Other => return 0,
    };
    ctx.load::<u8>(offset).unwrap_or(0)
}
