//! The endpoints map from userspace: which pods live on this node and how the
//! routing programs hand a packet to each (host veth, MACs), plus their names
//! for `skep bpf routes`, and the routing counters.
//!
//! Each pod is one key in two pinned maps: the endpoint itself (read by the
//! programs) and its `namespace/pod` name (read only by userspace). An upsert
//! writes the name first and the endpoint last; a removal deletes the
//! endpoint first, so the programs never see a half-written pod.

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray};
use skep_ebpf_common::{
    ENDPOINT_NAME_LEN, EndpointKey, EndpointName, EndpointValue, Family, MetricsValue, RouteAction,
    map,
};

use crate::{name, pinned};

/// Why an endpoint-map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointMapError {
    /// A map is not pinned where it should be (datapath never loaded?).
    #[error("failed to open map {name}: nothing pinned at {path}")]
    MissingMap {
        /// Map name.
        name: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The kernel refused a map operation.
    #[error("failed to {operation} in map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What was being done.
        operation: &'static str,
        /// What aya reported.
        #[source]
        source: Box<MapError>,
    },
    /// The endpoint name does not fit the names map.
    #[error("failed to add endpoint {name}: name longer than {max} bytes")]
    NameTooLong {
        /// Endpoint name.
        name: String,
        /// The limit.
        max: usize,
    },
}

/// A pod on this node as the routing programs see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `namespace/pod`.
    pub name: String,
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// Index of the pod's host-side veth in the node namespace.
    pub host_ifindex: u32,
    /// MAC of the pod's `eth0`.
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (the pod's gateway).
    pub host_mac: [u8; 6],
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The pinned endpoint maps.
pub struct EndpointMap {
    endpoints: BpfHashMap<MapData, EndpointKey, EndpointValue>,
    names: BpfHashMap<MapData, EndpointKey, EndpointName>,
}

impl fmt::Debug for EndpointMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointMap").finish_non_exhaustive()
    }
}

fn map_err(name: &'static str, operation: &'static str) -> impl Fn(MapError) -> EndpointMapError {
    move |source| EndpointMapError::Map {
        name,
        operation,
        source: Box::new(source),
    }
}

fn open_data(pin_dir: &Path, name: &'static str) -> Result<MapData, EndpointMapError> {
    pinned::open_with(
        pin_dir,
        name,
        |path| EndpointMapError::MissingMap { name, path },
        map_err(name, "open pinned map"),
    )
}

fn open_hash<V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<BpfHashMap<MapData, EndpointKey, V>, EndpointMapError> {
    let data = open_data(pin_dir, name)?;
    BpfHashMap::try_from(Map::HashMap(data)).map_err(map_err(name, "open pinned map"))
}

const fn key(ip: Ipv4Addr) -> EndpointKey {
    EndpointKey {
        address: u32::from_ne_bytes(ip.octets()),
        family: Family::Ipv4 as u8,
        pad: [0; 3],
    }
}

impl EndpointMap {
    /// Opens the maps pinned in `pin_dir` by [`crate::Datapath::load`].
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, EndpointMapError> {
        Ok(Self {
            endpoints: open_hash(pin_dir, map::ENDPOINTS)?,
            names: open_hash(pin_dir, map::ENDPOINT_NAMES)?,
        })
    }

    /// Every endpoint in the maps pinned in `pin_dir`, by address; reads only.
    pub fn list_pinned(pin_dir: &Path) -> Result<Vec<Endpoint>, EndpointMapError> {
        Self::open_pinned(pin_dir)?.list()
    }

    /// Adds the endpoint or brings it up to date (the name first, then the
    /// endpoint the programs read).
    #[tracing::instrument(skip_all, fields(pod = %endpoint.name, ip = %endpoint.ip))]
    pub fn upsert(&mut self, endpoint: &Endpoint) -> Result<(), EndpointMapError> {
        let Some(bytes) = name::encode(&endpoint.name) else {
            return Err(EndpointMapError::NameTooLong {
                name: endpoint.name.clone(),
                max: ENDPOINT_NAME_LEN,
            });
        };
        let key = key(endpoint.ip);
        let name = EndpointName { bytes };
        self.names
            .insert(key, name, 0)
            .map_err(map_err(map::ENDPOINT_NAMES, "insert"))?;
        let value = EndpointValue {
            host_ifindex: endpoint.host_ifindex,
            pod_mac: endpoint.pod_mac,
            host_mac: endpoint.host_mac,
            flags: 0,
        };
        self.endpoints
            .insert(key, value, 0)
            .map_err(map_err(map::ENDPOINTS, "insert"))?;
        tracing::debug!(host_ifindex = endpoint.host_ifindex, "endpoint programmed");
        Ok(())
    }

    /// Removes the endpoint at `ip` (the programs stop delivering to it at
    /// once). Returns whether it existed.
    #[tracing::instrument(skip(self))]
    pub fn remove(&mut self, ip: Ipv4Addr) -> Result<bool, EndpointMapError> {
        let key = key(ip);
        let existed = match self.endpoints.remove(&key) {
            Ok(()) => true,
            Err(err) if pinned::is_missing(&err) => false,
            Err(err) => return Err(map_err(map::ENDPOINTS, "delete")(err)),
        };
        match self.names.remove(&key) {
            Ok(()) => {}
            Err(err) if pinned::is_missing(&err) => {}
            Err(err) => return Err(map_err(map::ENDPOINT_NAMES, "delete")(err)),
        }
        Ok(existed)
    }

    /// Every endpoint, by address. Names missing from the names map are empty.
    pub fn list(&self) -> Result<Vec<Endpoint>, EndpointMapError> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
            let (key, value) = item.map_err(map_err(map::ENDPOINTS, "read"))?;
            if key.family != Family::Ipv4 as u8 {
                continue;
            }
            let name = self
                .names
                .get(&key, 0)
                .map(|name| name::decode(&name.bytes))
                .unwrap_or_default();
            out.push(Endpoint {
                name,
                ip: Ipv4Addr::from(key.address.to_ne_bytes()),
                host_ifindex: value.host_ifindex,
                pod_mac: value.pod_mac,
                host_mac: value.host_mac,
            });
        }
        out.sort_by_key(|e| e.ip);
        Ok(out)
    }

    /// Removes every endpoint whose address `keep` rejects (a restarted
    /// agent's reconcile against the sandboxes that exist). Returns the
    /// removed ones.
    pub fn retain(
        &mut self,
        keep: impl Fn(&Endpoint) -> bool,
    ) -> Result<Vec<Endpoint>, EndpointMapError> {
        let stale: Vec<Endpoint> = self.list()?.into_iter().filter(|e| !keep(e)).collect();
        for endpoint in &stale {
            tracing::info!(pod = %endpoint.name, ip = %endpoint.ip, "removing stale endpoint");
            self.remove(endpoint.ip)?;
        }
        Ok(stale)
    }
}

/// What the routing programs did, summed over CPUs, in [`RouteAction`] order.
pub fn read_route_counters(
    pin_dir: &Path,
) -> Result<Vec<(RouteAction, MetricsValue)>, EndpointMapError> {
    let data = open_data(pin_dir, map::ROUTE_COUNTERS)?;
    let counters: PerCpuArray<_, MetricsValue> = PerCpuArray::try_from(Map::PerCpuArray(data))
        .map_err(map_err(map::ROUTE_COUNTERS, "open pinned map"))?;
    let mut out = Vec::with_capacity(RouteAction::ALL.len());
    for action in RouteAction::ALL {
        let per_cpu = counters
            .get(&(action as u32), 0)
            .map_err(map_err(map::ROUTE_COUNTERS, "read"))?;
        let total = per_cpu
            .iter()
            .fold(MetricsValue::default(), |acc, v| MetricsValue {
                packets: acc.packets + v.packets,
                bytes: acc.bytes + v.bytes,
            });
        out.push((action, total));
    }
    Ok(out)
}

/// The endpoints as a table, one pod per line, with each host veth's name
/// from `interface_name` (for `skep bpf routes`).
#[must_use]
pub fn format_endpoints(endpoints: &[Endpoint], interface_name: impl Fn(u32) -> String) -> String {
    use fmt::Write as _;
    let mut out = format!(
        "{:<40} {:<16} {:<24} {:<18} {}\n",
        "ENDPOINT", "IP", "INTERFACE", "POD MAC", "HOST MAC"
    );
    for e in endpoints {
        let interface = format!("{} ({})", interface_name(e.host_ifindex), e.host_ifindex);
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<40} {:<16} {:<24} {:<18} {}",
            if e.name.is_empty() { "?" } else { &e.name },
            e.ip.to_string(),
            interface,
            Mac(e.pod_mac).to_string(),
            Mac(e.host_mac)
        );
    }
    out
}

/// The routing counters as a table (for `skep bpf routes`).
#[must_use]
pub fn format_route_counters(counters: &[(RouteAction, MetricsValue)]) -> String {
    use fmt::Write as _;
    let mut out = format!("{:<45} {:>12} {:>14}\n", "ACTION", "PACKETS", "BYTES");
    for (action, value) in counters {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<45} {:>12} {:>14}",
            action.name(),
            value.packets,
            value.bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_name_each_endpoint_and_action() {
        let endpoint = Endpoint {
            name: "default/web-0".into(),
            ip: Ipv4Addr::new(10, 244, 1, 7),
            host_ifindex: 12,
            pod_mac: [2, 0, 0, 0, 0, 1],
            host_mac: [2, 0, 0, 0, 0, 2],
        };
        let table = format_endpoints(&[endpoint], |i| format!("skep{i}"));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(
            lines[1].starts_with("default/web-0")
                && lines[1].contains("10.244.1.7")
                && lines[1].contains("skep12 (12)")
                && lines[1].contains("02:00:00:00:00:01")
                && lines[1].ends_with("02:00:00:00:00:02"),
            "{}",
            lines[1]
        );
        let counters = format_route_counters(&[(
            RouteAction::PodToRemote,
            MetricsValue {
                packets: 3,
                bytes: 180,
            },
        )]);
        let row = counters.lines().nth(1).unwrap_or_default();
        assert!(
            row.starts_with("pod-to-remote") && row.ends_with("3            180"),
            "{row}"
        );
    }

    #[test]
    fn keys_hold_the_address_as_on_the_wire() {
        let k = key(Ipv4Addr::new(10, 244, 1, 7));
        assert_eq!(k.address.to_ne_bytes(), [10, 244, 1, 7]);
        assert_eq!(k.family, 4);
    }

    #[test]
    fn names_and_macs_print() {
        let mut name = EndpointName {
            bytes: [0; ENDPOINT_NAME_LEN],
        };
        name.bytes[..9].copy_from_slice(b"default/a");
        assert_eq!(name::decode(&name.bytes), "default/a");
        assert_eq!(
            Mac([0x0a, 0, 0xff, 1, 2, 0x3c]).to_string(),
            "0a:00:ff:01:02:3c"
        );
    }
}
