//! The network-policy maps from userspace: what the agent writes after
//! compiling `NetworkPolicy` objects (policy endpoints, ipcache, rules,
//! names), what it reads back after a restart, the verdict counters, and the
//! judged flows the programs report through a ring buffer (`skep flows`).
//!
//! The ABI (keys, values, prefix lengths) is `skep_ebpf_common::policy`;
//! this module only adds incremental writes and typed reads. Every call is
//! one map operation, so the agent can apply a diff entry by entry. Order
//! matters for a consistent view: write rules and ipcache entries before the
//! policy endpoint that makes a pod isolated, and remove the endpoint first.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd, AsRawFd as _, BorrowedFd},
    path::Path,
    time::Duration,
};

use aya::maps::{
    HashMap as BpfHashMap, Map, MapData, MapError, PerCpuHashMap, RingBuf,
    lpm_trie::{Key, LpmTrie},
};
use skep_ebpf_common::{
    Direction, ENDPOINT_NAME_LEN, EndpointKey, EndpointName, Family, IPCACHE_PREFIX_HOST,
    MetricsValue, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_PORT, PeerIdentity, PolicyCounterKey,
    PolicyEndpoint, PolicyFlow, PolicyKey, PolicyName, PolicyValue, PolicyVerdict, map,
};

use crate::{DatapathError, metrics::protocol_name, name, pinned};

/// One verdict counter of a local pod, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyCounter {
    /// The local pod.
    pub endpoint: Ipv4Addr,
    /// Which of its directions was judged.
    pub direction: Direction,
    /// What was decided.
    pub verdict: PolicyVerdict,
    /// Packets.
    pub packets: u64,
    /// Bytes, counting from the Ethernet header.
    pub bytes: u64,
}

/// The pinned policy maps of one node, opened for reading and writing.
pub struct PolicyMaps {
    endpoints: BpfHashMap<MapData, EndpointKey, PolicyEndpoint>,
    ipcache: LpmTrie<MapData, u32, PeerIdentity>,
    rules: LpmTrie<MapData, PolicyKey, PolicyValue>,
    counters: PerCpuHashMap<MapData, PolicyCounterKey, MetricsValue>,
    policy_names: BpfHashMap<MapData, u32, PolicyName>,
    peer_names: BpfHashMap<MapData, EndpointKey, PolicyName>,
}

impl std::fmt::Debug for PolicyMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyMaps").finish_non_exhaustive()
    }
}

fn err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| pinned::map_err(name, source)
}

fn hash<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, DatapathError> {
    BpfHashMap::try_from(Map::HashMap(pinned::open(pin_dir, name)?)).map_err(err(name))
}

fn lpm<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<LpmTrie<MapData, K, V>, DatapathError> {
    LpmTrie::try_from(Map::LpmTrie(pinned::open(pin_dir, name)?)).map_err(err(name))
}

const fn endpoint_key(ip: Ipv4Addr) -> EndpointKey {
    EndpointKey {
        address: u32::from_ne_bytes(ip.octets()),
        family: Family::Ipv4 as u8,
        pad: [0; 3],
    }
}

/// The address of a key holding it as on the wire.
const fn wire_ip(address: u32) -> Ipv4Addr {
    let [a, b, c, d] = address.to_ne_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// `ip` with the bits past `prefix_len` cleared, as stored in the ipcache.
fn ipcache_key(ip: Ipv4Addr, prefix_len: u32) -> Result<Key<u32>, DatapathError> {
    if prefix_len > IPCACHE_PREFIX_HOST {
        return Err(DatapathError::PolicyPrefix {
            map: map::IPCACHE,
            prefix_len,
            min: 0,
            max: IPCACHE_PREFIX_HOST,
        });
    }
    let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
    let network = u32::from(ip) & mask;
    Ok(Key::new(prefix_len, network.to_be()))
}

/// `key` with the protocol and port bits past `prefix_len` cleared.
fn rule_key(mut key: PolicyKey, prefix_len: u32) -> Result<Key<PolicyKey>, DatapathError> {
    if !(POLICY_PREFIX_ANY_PROTO..=POLICY_PREFIX_PORT).contains(&prefix_len) {
        return Err(DatapathError::PolicyPrefix {
            map: map::POLICY,
            prefix_len,
            min: POLICY_PREFIX_ANY_PROTO,
            max: POLICY_PREFIX_PORT,
        });
    }
    let proto_bits = (prefix_len - POLICY_PREFIX_ANY_PROTO).min(8);
    let port_bits = prefix_len.saturating_sub(POLICY_PREFIX_ANY_PROTO + 8);
    key.proto &= u8::MAX.checked_shl(8 - proto_bits).unwrap_or(0);
    let port_mask = u16::MAX.checked_shl(16 - port_bits).unwrap_or(0);
    key.port = (u16::from_be(key.port) & port_mask).to_be();
    Ok(Key::new(prefix_len, key))
}

fn encode_name(name: &str) -> Result<PolicyName, DatapathError> {
    let bytes = name::encode(name).ok_or_else(|| DatapathError::NameTooLong {
        name: name.to_owned(),
        max: ENDPOINT_NAME_LEN,
    })?;
    Ok(EndpointName { bytes })
}

/// `Ok(true)` for a removed key, `Ok(false)` for a missing one.
fn removed(result: Result<(), MapError>, name: &'static str) -> Result<bool, DatapathError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if pinned::is_missing(&e) => Ok(false),
        Err(e) => Err(pinned::map_err(name, e)),
    }
}

impl PolicyMaps {
    /// Opens the policy maps pinned in `pin_dir` by [`crate::Datapath::load`].
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        Ok(Self {
            endpoints: hash(pin_dir, map::POLICY_ENDPOINTS)?,
            ipcache: lpm(pin_dir, map::IPCACHE)?,
            rules: lpm(pin_dir, map::POLICY)?,
            counters: PerCpuHashMap::try_from(Map::PerCpuHashMap(pinned::open(
                pin_dir,
                map::POLICY_COUNTERS,
            )?))
            .map_err(err(map::POLICY_COUNTERS))?,
            policy_names: hash(pin_dir, map::POLICY_NAMES)?,
            peer_names: hash(pin_dir, map::PEER_NAMES)?,
        })
    }

    /// Makes the local pod at `ip` a policy endpoint (or updates its
    /// identity and isolated directions).
    #[tracing::instrument(skip(self))]
    pub fn set_endpoint(
        &mut self,
        ip: Ipv4Addr,
        endpoint: PolicyEndpoint,
    ) -> Result<(), DatapathError> {
        self.endpoints
            .insert(endpoint_key(ip), endpoint, 0)
            .map_err(err(map::POLICY_ENDPOINTS))
    }

    /// Un-isolates the local pod at `ip`. Returns whether it was isolated.
    #[tracing::instrument(skip(self))]
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<bool, DatapathError> {
        removed(
            self.endpoints.remove(&endpoint_key(ip)),
            map::POLICY_ENDPOINTS,
        )
    }

    /// Sets the identity of `ip/prefix_len` in the ipcache (32: one address).
    #[tracing::instrument(skip(self))]
    pub fn set_peer(
        &mut self,
        ip: Ipv4Addr,
        prefix_len: u32,
        identity: PeerIdentity,
    ) -> Result<(), DatapathError> {
        self.ipcache
            .insert(&ipcache_key(ip, prefix_len)?, identity, 0)
            .map_err(err(map::IPCACHE))
    }

    /// Removes `ip/prefix_len` from the ipcache. Returns whether it was there.
    #[tracing::instrument(skip(self))]
    pub fn remove_peer(&mut self, ip: Ipv4Addr, prefix_len: u32) -> Result<bool, DatapathError> {
        removed(
            self.ipcache.remove(&ipcache_key(ip, prefix_len)?),
            map::IPCACHE,
        )
    }

    /// Adds (or replaces) the rule `key/prefix_len` (between
    /// `POLICY_PREFIX_ANY_PROTO` and `POLICY_PREFIX_PORT`; bits past the
    /// prefix are cleared).
    #[tracing::instrument(skip(self))]
    pub fn set_rule(
        &mut self,
        key: PolicyKey,
        prefix_len: u32,
        value: PolicyValue,
    ) -> Result<(), DatapathError> {
        self.rules
            .insert(&rule_key(key, prefix_len)?, value, 0)
            .map_err(err(map::POLICY))
    }

    /// Removes the rule `key/prefix_len`. Returns whether it was there.
    #[tracing::instrument(skip(self))]
    pub fn remove_rule(&mut self, key: PolicyKey, prefix_len: u32) -> Result<bool, DatapathError> {
        removed(self.rules.remove(&rule_key(key, prefix_len)?), map::POLICY)
    }

    /// Names policy `id` (`namespace/name`) for flows.
    pub fn set_policy_name(&mut self, id: u32, name: &str) -> Result<(), DatapathError> {
        self.policy_names
            .insert(id, encode_name(name)?, 0)
            .map_err(err(map::POLICY_NAMES))
    }

    /// Forgets the name of policy `id`. Returns whether it had one.
    pub fn remove_policy_name(&mut self, id: u32) -> Result<bool, DatapathError> {
        removed(self.policy_names.remove(&id), map::POLICY_NAMES)
    }

    /// Names the pod at `ip` (`namespace/pod`, any node) for flows.
    pub fn set_peer_name(&mut self, ip: Ipv4Addr, name: &str) -> Result<(), DatapathError> {
        self.peer_names
            .insert(endpoint_key(ip), encode_name(name)?, 0)
            .map_err(err(map::PEER_NAMES))
    }

    /// Forgets the name of the pod at `ip`. Returns whether it had one.
    pub fn remove_peer_name(&mut self, ip: Ipv4Addr) -> Result<bool, DatapathError> {
        removed(self.peer_names.remove(&endpoint_key(ip)), map::PEER_NAMES)
    }

    /// Every policy endpoint, by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, PolicyEndpoint)>, DatapathError> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
            let (key, value) = item.map_err(err(map::POLICY_ENDPOINTS))?;
            if key.family == Family::Ipv4 as u8 {
                out.push((wire_ip(key.address), value));
            }
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Every ipcache entry as (network, prefix length, identity), sorted.
    pub fn peers(&self) -> Result<Vec<(Ipv4Addr, u32, PeerIdentity)>, DatapathError> {
        let mut out = Vec::new();
        for item in self.ipcache.iter() {
            let (key, value) = item.map_err(err(map::IPCACHE))?;
            out.push((wire_ip(key.data()), key.prefix_len(), value));
        }
        out.sort_by_key(|(ip, len, _)| (*ip, *len));
        Ok(out)
    }

    /// Every rule as (key, prefix length, value), sorted.
    pub fn rules(&self) -> Result<Vec<(PolicyKey, u32, PolicyValue)>, DatapathError> {
        let mut out = Vec::new();
        for item in self.rules.iter() {
            let (key, value) = item.map_err(err(map::POLICY))?;
            out.push((key.data(), key.prefix_len(), value));
        }
        out.sort_by_key(|(key, len, _)| (*key, *len));
        Ok(out)
    }

    /// Every policy name by id.
    pub fn policy_names(&self) -> Result<HashMap<u32, String>, DatapathError> {
        let mut out = HashMap::new();
        for item in self.policy_names.iter() {
            let (id, name) = item.map_err(err(map::POLICY_NAMES))?;
            out.insert(id, name::decode(&name.bytes));
        }
        Ok(out)
    }

    /// Every pod name by address.
    pub fn peer_names(&self) -> Result<HashMap<Ipv4Addr, String>, DatapathError> {
        let mut out = HashMap::new();
        for item in self.peer_names.iter() {
            let (key, name) = item.map_err(err(map::PEER_NAMES))?;
            out.insert(wire_ip(key.address), name::decode(&name.bytes));
        }
        Ok(out)
    }

    /// The verdict counters, summed over CPUs, sorted by endpoint, direction
    /// and verdict.
    pub fn counters(&self) -> Result<Vec<PolicyCounter>, DatapathError> {
        let mut out = Vec::new();
        for item in self.counters.iter() {
            let (key, per_cpu) = item.map_err(err(map::POLICY_COUNTERS))?;
            let (Some(direction), Some(verdict)) = (
                Direction::from_u8(key.direction),
                PolicyVerdict::from_u8(key.verdict),
            ) else {
                continue;
            };
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            out.push(PolicyCounter {
                endpoint: wire_ip(key.endpoint),
                direction,
                verdict,
                packets,
                bytes,
            });
        }
        out.sort_by_key(|c| (c.endpoint, c.direction, c.verdict));
        Ok(out)
    }
}

/// Reads the judged flows the programs write to the pinned ring buffer.
/// One reader per node at a time: the ring has one consumer position.
pub struct FlowReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for FlowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowReader").finish_non_exhaustive()
    }
}

impl FlowReader {
    /// Opens the flows ring buffer pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        let data = pinned::open(pin_dir, map::POLICY_FLOWS)?;
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(err(map::POLICY_FLOWS))?;
        Ok(Self { ring })
    }

    /// Every flow waiting now, without blocking.
    pub fn drain(&mut self) -> Vec<PolicyFlow> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<PolicyFlow>() {
                // SAFETY: the item holds at least a `PolicyFlow`'s bytes, and
                // every byte pattern is a valid `PolicyFlow` (`Pod`).
                out.push(unsafe { item.as_ptr().cast::<PolicyFlow>().read_unaligned() });
            }
        }
        out
    }

    /// The flows waiting now, or, when there are none, those that arrive
    /// within `timeout` (an empty list when none does).
    pub fn read(&mut self, timeout: Duration) -> Result<Vec<PolicyFlow>, DatapathError> {
        let flows = self.drain();
        if !flows.is_empty() {
            return Ok(flows);
        }
        let mut poll = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the call's duration.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(DatapathError::FlowPoll { source: error });
            }
        }
        Ok(self.drain())
    }
}

/// The ring buffer's descriptor: readable when flows wait (for an async
/// reactor such as tokio's `AsyncFd`; then call [`FlowReader::drain`]).
impl AsFd for FlowReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to `self.ring`, which outlives the
        // borrow.
        unsafe { BorrowedFd::borrow_raw(self.ring.as_raw_fd()) }
    }
}

/// The names a flow line shows: policies, pods of the cluster, local pods.
#[derive(Clone, Debug, Default)]
pub struct FlowNames {
    /// Policy id → `namespace/name`.
    pub policies: HashMap<u32, String>,
    /// Pod address → `namespace/pod` (every pod of the cluster; local pods
    /// from the endpoint names when missing here).
    pub pods: HashMap<Ipv4Addr, String>,
}

impl FlowNames {
    /// Reads the names maps pinned in `pin_dir` (policy and peer names, then
    /// the local endpoints' names for addresses the peers map lacks).
    pub fn load(pin_dir: &Path) -> Result<Self, DatapathError> {
        let maps = PolicyMaps::open(pin_dir)?;
        let mut pods = maps.peer_names()?;
        let endpoints: BpfHashMap<_, EndpointKey, EndpointName> =
            hash(pin_dir, map::ENDPOINT_NAMES)?;
        for item in endpoints.iter() {
            let (key, name) = item.map_err(err(map::ENDPOINT_NAMES))?;
            pods.entry(wire_ip(key.address))
                .or_insert_with(|| name::decode(&name.bytes));
        }
        Ok(Self {
            policies: maps.policy_names()?,
            pods,
        })
    }
}

/// One flow as a line: direction (seen from the judged local pod) and
/// verdict, source and destination with pod names, protocol, and the
/// allowing policy, e.g.
/// `ingress denied y/b 10.244.2.7:40000 -> x/a 10.244.1.5:80 tcp policy default-deny`.
#[must_use]
pub fn format_flow(flow: &PolicyFlow, names: &FlowNames) -> String {
    let src = SocketAddrV4::new(wire_ip(flow.src_addr), u16::from_be(flow.src_port));
    let dst = SocketAddrV4::new(wire_ip(flow.dst_addr), u16::from_be(flow.dst_port));
    let name = |addr: &SocketAddrV4| names.pods.get(addr.ip()).map_or("-", String::as_str);
    let direction = Direction::from_u8(flow.direction).map_or("?", Direction::name);
    let verdict = PolicyVerdict::from_u8(flow.verdict).map_or("?", PolicyVerdict::name);
    // A denial names no policy: the endpoint is isolated in that direction
    // and none allows the flow (Kubernetes' implicit default deny).
    let policy = if flow.policy == 0 {
        if flow.verdict == PolicyVerdict::Denied as u8 {
            "default-deny".to_owned()
        } else {
            "-".to_owned()
        }
    } else {
        names
            .policies
            .get(&flow.policy)
            .cloned()
            .unwrap_or_else(|| format!("#{}", flow.policy))
    };
    format!(
        "{direction} {verdict} {} {src} -> {} {dst} {} policy {policy}",
        name(&src),
        name(&dst),
        protocol_name(flow.proto)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_clear_the_bits_past_their_prefix() {
        let key = ipcache_key(Ipv4Addr::new(10, 1, 2, 3), 16).expect("valid");
        assert_eq!(
            (key.prefix_len(), wire_ip(key.data())),
            (16, Ipv4Addr::new(10, 1, 0, 0))
        );
        let host = ipcache_key(Ipv4Addr::new(10, 1, 2, 3), 32).expect("valid");
        assert_eq!(wire_ip(host.data()), Ipv4Addr::new(10, 1, 2, 3));
        assert!(ipcache_key(Ipv4Addr::LOCALHOST, 33).is_err());
        let rule = PolicyKey {
            endpoint: 7,
            peer: 9,
            direction: 0,
            proto: 6,
            port: 0x1234_u16.to_be(),
        };
        let block = rule_key(rule, POLICY_PREFIX_PORT - 4)
            .expect("valid")
            .data();
        assert_eq!((block.proto, u16::from_be(block.port)), (6, 0x1230));
        let any_port = rule_key(rule, POLICY_PREFIX_ANY_PROTO + 8)
            .expect("valid")
            .data();
        assert_eq!((any_port.proto, any_port.port), (6, 0));
        let any = rule_key(rule, POLICY_PREFIX_ANY_PROTO)
            .expect("valid")
            .data();
        assert_eq!((any.endpoint, any.peer, any.proto, any.port), (7, 9, 0, 0));
        assert!(rule_key(rule, 71).is_err() && rule_key(rule, 97).is_err());
    }

    #[test]
    fn names_round_trip_and_refuse_overlong() {
        let name = encode_name("x/allow-80").expect("fits");
        assert_eq!(name::decode(&name.bytes), "x/allow-80");
        assert!(encode_name(&"n".repeat(ENDPOINT_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn a_flow_line_names_both_ends_and_the_policy() {
        let a = Ipv4Addr::new(10, 244, 1, 5);
        let b = Ipv4Addr::new(10, 244, 2, 7);
        let names = FlowNames {
            policies: HashMap::from([(3, "x/allow-b".to_owned())]),
            pods: HashMap::from([(a, "x/a".to_owned()), (b, "y/b".to_owned())]),
        };
        let mut flow = PolicyFlow {
            src_addr: u32::from_ne_bytes(b.octets()),
            dst_addr: u32::from_ne_bytes(a.octets()),
            src_port: 40000_u16.to_be(),
            dst_port: 80_u16.to_be(),
            proto: 6,
            direction: Direction::Ingress as u8,
            verdict: PolicyVerdict::Denied as u8,
            ..PolicyFlow::default()
        };
        assert_eq!(
            format_flow(&flow, &names),
            "ingress denied y/b 10.244.2.7:40000 -> x/a 10.244.1.5:80 tcp policy default-deny"
        );
        // b's egress, allowed by policy 3.
        flow.direction = Direction::Egress as u8;
        flow.verdict = PolicyVerdict::Allowed as u8;
        flow.policy = 3;
        assert_eq!(
            format_flow(&flow, &names),
            "egress allowed y/b 10.244.2.7:40000 -> x/a 10.244.1.5:80 tcp policy x/allow-b"
        );
    }
}
