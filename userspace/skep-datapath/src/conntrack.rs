//! Reading the packet-level conntrack the `NodePort` programs keep: what
//! `skep bpf ct list` prints, like `cilium bpf ct list global`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, Map};
use skep_ebpf_common::{
    CT_FLAG_CLOSING, CT_FLAG_POLICY_EGRESS, CT_FLAG_POLICY_INGRESS, CT_FLAG_REPLY,
    CT_FLAG_SEEN_REPLY, CT_FLAG_SNAT, CtKey, CtValue, Family, RevNatKey, ServiceName, ct_expired,
    ct_timeout_ns, map,
};

use crate::{DatapathError, Protocol, pinned};

/// One direction of a tracked flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtEntry {
    /// The IP protocol number.
    pub proto: u8,
    /// Source of the packets this entry matches.
    pub src: SocketAddrV4,
    /// Their destination.
    pub dst: SocketAddrV4,
    /// The source they are translated to.
    pub nat_src: SocketAddrV4,
    /// The destination they are translated to.
    pub nat_dst: SocketAddrV4,
    /// `CT_FLAG_*` bits.
    pub flags: u8,
    /// The backend the flow goes to (0: none).
    pub backend_id: u32,
    /// The service (`namespace/name:port`), when the names map knows it.
    pub service: Option<String>,
    /// Time since the entry's last packet.
    pub idle: Duration,
    /// Time left before it expires; `None` once expired (the datapath
    /// ignores it and the LRU reclaims it).
    pub expires_in: Option<Duration>,
}

impl CtEntry {
    /// Whether this entry is the reply direction (the backend's packets).
    #[must_use]
    pub const fn is_reply(&self) -> bool {
        self.flags & CT_FLAG_REPLY != 0
    }

    /// Whether a TCP FIN or RST closed the flow.
    #[must_use]
    pub const fn is_closing(&self) -> bool {
        self.flags & CT_FLAG_CLOSING != 0
    }

    /// Whether the datapath would still use the entry.
    #[must_use]
    pub const fn is_live(&self) -> bool {
        self.expires_in.is_some()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

fn addr(address: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(address)), u16::from_be(port))
}

/// Every entry of the conntrack pinned in `pin_dir`, with service names,
/// sorted by tuple. Reads only: safe next to a running agent.
pub fn list_pinned(pin_dir: &Path) -> Result<Vec<CtEntry>, DatapathError> {
    let ct: BpfHashMap<_, CtKey, CtValue> =
        BpfHashMap::try_from(Map::LruHashMap(pinned::open(pin_dir, map::CT)?))
            .map_err(|e| pinned::map_err(map::CT, e))?;
    let names: BpfHashMap<_, RevNatKey, ServiceName> =
        BpfHashMap::try_from(Map::HashMap(pinned::open(pin_dir, map::SERVICE_NAMES)?))
            .map_err(|e| pinned::map_err(map::SERVICE_NAMES, e))?;
    let now = monotonic_ns();
    let mut service_names: HashMap<u16, Option<String>> = HashMap::new();
    let mut entries = Vec::new();
    for item in ct.iter() {
        // An entry the LRU evicts while we iterate ends the walk early with
        // an error from the kernel; what was read stays valid.
        let Ok((key, value)) = item else { break };
        if key.family != Family::Ipv4 as u8 {
            continue;
        }
        let service = if value.rev_nat_id == 0 {
            None
        } else {
            service_names
                .entry(value.rev_nat_id)
                .or_insert_with(|| {
                    let key = RevNatKey {
                        rev_nat_id: value.rev_nat_id,
                        family: Family::Ipv4 as u8,
                        pad: 0,
                    };
                    names.get(&key, 0).ok().map(|name| decode(&name))
                })
                .clone()
        };
        let idle_ns = now.saturating_sub(value.last_seen_ns);
        let expires_in = (!ct_expired(&value, key.proto, now)).then(|| {
            Duration::from_nanos(ct_timeout_ns(key.proto, value.flags).saturating_sub(idle_ns))
        });
        entries.push(CtEntry {
            proto: key.proto,
            src: addr(key.src_addr, key.src_port),
            dst: addr(key.dst_addr, key.dst_port),
            nat_src: addr(value.nat_src_addr, value.nat_src_port),
            nat_dst: addr(value.nat_dst_addr, value.nat_dst_port),
            flags: value.flags,
            backend_id: value.backend_id,
            service,
            idle: Duration::from_nanos(idle_ns),
            expires_in,
        });
    }
    entries.sort_by_key(|e| (e.proto, e.src, e.dst));
    Ok(entries)
}

fn decode(name: &ServiceName) -> String {
    let len = name
        .bytes
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(name.bytes.len());
    String::from_utf8_lossy(&name.bytes[..len]).into_owned()
}

/// The flags as words: `reply`, `seen-reply`, `closing`, `snat`, `allowed`.
fn flag_words(flags: u8) -> String {
    let words: Vec<&str> = [
        (CT_FLAG_REPLY, "reply"),
        (CT_FLAG_SEEN_REPLY, "seen-reply"),
        (CT_FLAG_CLOSING, "closing"),
        (CT_FLAG_SNAT, "snat"),
        (CT_FLAG_POLICY_EGRESS, "egress-allowed"),
        (CT_FLAG_POLICY_INGRESS, "ingress-allowed"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, word)| *word)
    .collect();
    if words.is_empty() {
        "-".to_owned()
    } else {
        words.join(",")
    }
}

struct Endpoint<'a>(SocketAddrV4, &'a BTreeMap<Ipv4Addr, String>);

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1.get(self.0.ip()) {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The conntrack as a table, one direction per line: protocol, tuple →
/// translated tuple, service, flags, idle and remaining time. `pods` names
/// addresses (pod IP → `namespace/name`) where the caller knows them.
#[must_use]
pub fn format_table(entries: &[CtEntry], pods: &BTreeMap<Ipv4Addr, String>) -> String {
    use fmt::Write as _;
    let mut out = format!(
        "{:<5} {:<50} {:<50} {:<28} {:<30} {:>8} {:>9}\n",
        "PROTO", "TUPLE", "TRANSLATED", "SERVICE", "FLAGS", "IDLE", "EXPIRES"
    );
    for entry in entries {
        let proto = Protocol::from_number(entry.proto)
            .map_or_else(|| entry.proto.to_string(), |p| p.to_string());
        let expires = entry
            .expires_in
            .map_or_else(|| "expired".to_owned(), |d| format!("{}s", d.as_secs()));
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<5} {:<50} {:<50} {:<28} {:<30} {:>7}s {:>9}",
            proto,
            format!(
                "{} -> {}",
                Endpoint(entry.src, pods),
                Endpoint(entry.dst, pods)
            ),
            format!(
                "{} -> {}",
                Endpoint(entry.nat_src, pods),
                Endpoint(entry.nat_dst, pods)
            ),
            entry.service.as_deref().unwrap_or("-"),
            flag_words(entry.flags),
            entry.idle.as_secs(),
            expires
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_services_pods_and_state() {
        let backend = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 5), 8080);
        let entry = CtEntry {
            proto: 6,
            src: backend,
            dst: SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 40000),
            nat_src: SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 30080),
            nat_dst: SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 100), 40000),
            flags: CT_FLAG_REPLY | CT_FLAG_SNAT | CT_FLAG_CLOSING,
            backend_id: 3,
            service: Some("default/web:http".into()),
            idle: Duration::from_secs(2),
            expires_in: Some(Duration::from_secs(8)),
        };
        let expired = CtEntry {
            proto: 17,
            service: None,
            flags: 0,
            expires_in: None,
            ..entry.clone()
        };
        let pods = BTreeMap::from([(*backend.ip(), "default/web-1".to_owned())]);
        let table = format_table(&[entry, expired], &pods);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("PROTO"));
        assert!(
            lines[1].starts_with("TCP")
                && lines[1].contains("10.244.1.5:8080(default/web-1) -> 192.168.0.1:40000")
                && lines[1].contains("192.168.0.1:30080 -> 192.168.0.100:40000")
                && lines[1].contains("default/web:http")
                && lines[1].contains("reply,closing,snat")
                && lines[1].ends_with("8s"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("UDP") && lines[2].ends_with("expired"),
            "{}",
            lines[2]
        );
    }
}
