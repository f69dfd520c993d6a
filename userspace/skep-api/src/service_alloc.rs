//! Service cluster IP and node port allocation rules, after kube-apiserver's
//! `ipallocator` and `portallocator`: the ranges, what a Service asks for
//! and holds, picking a free value, and the errors upstream returns. Pure:
//! the store side (reserving keys atomically with the Service) lives in
//! `skep-objects`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde_json::{Value, json};

use crate::field::{FieldError, FieldPath};
use crate::object::{array, ensure_object, get, get_i64, str_or_empty};
use crate::status::ApiError;

/// An IPv4 CIDR block such as `10.96.0.0/12` (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    base: u32,
    prefix: u8,
}

/// Why a range flag did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not `a.b.c.d/n`, or too small to hold a service.
    #[error("failed to parse the service IP range {text:?}: {why}")]
    Cidr {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not `first-last` with `first <= last`.
    #[error("failed to parse the node port range {text:?}: expected FIRST-LAST, like 30000-32767")]
    Ports {
        /// The text given.
        text: String,
    },
}

impl Ipv4Cidr {
    /// How many addresses the block spans.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The address at `offset` from the network address.
    pub fn nth(self, offset: u64) -> Option<Ipv4Addr> {
        (offset < self.size())
            .then(|| u32::try_from(offset).ok())
            .flatten()
            .map(|o| Ipv4Addr::from(self.base + o))
    }

    /// The offset of `ip` in the block, if it is inside.
    pub fn offset(self, ip: Ipv4Addr) -> Option<u64> {
        let o = u64::from(u32::from(ip).wrapping_sub(self.base));
        (o < self.size()).then_some(o)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let err = |why| RangeError::Cidr {
            text: text.to_owned(),
            why,
        };
        let (ip, prefix) = text.split_once('/').ok_or_else(|| err("no /prefix"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        if !(1..=30).contains(&prefix) {
            return Err(err("the prefix length must be between 1 and 30"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Self {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// An inclusive port range such as `30000-32767`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// How many ports the range spans.
    pub fn size(self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    /// Whether `port` is inside.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let err = || RangeError::Ports {
            text: text.to_owned(),
        };
        let (first, last) = text.split_once('-').ok_or_else(err)?;
        let first: u16 = first.trim().parse().map_err(|_| err())?;
        let last: u16 = last.trim().parse().map_err(|_| err())?;
        if first == 0 || first > last {
            return Err(err());
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Where Services get their cluster IPs and node ports from
/// (`--service-cluster-ip-range`, `--service-node-port-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    /// The cluster IP block.
    pub cluster_ip: Ipv4Cidr,
    /// The node port range.
    pub node_ports: PortRange,
}

impl Default for ServiceRanges {
    /// kube-apiserver's defaults: `10.96.0.0/12` and `30000-32767`.
    fn default() -> Self {
        Self {
            cluster_ip: Ipv4Cidr {
                base: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
                prefix: 12,
            },
            node_ports: PortRange {
                first: 30000,
                last: 32767,
            },
        }
    }
}

impl ServiceRanges {
    /// The `kubernetes` Service's address: the first IP after the network.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.cluster_ip.base + 1)
    }

    /// The cluster DNS Service's address: the tenth IP, by convention.
    pub fn dns_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.cluster_ip.base + 10)
    }

    /// Picks a free cluster IP at random, never the network or broadcast
    /// address, preferring the upper part of the range so the lower one
    /// stays free for static picks (like upstream); `None` if full.
    pub fn pick_ip(&self, taken: &BTreeSet<Ipv4Addr>, random: u64) -> Option<Ipv4Addr> {
        let size = self.cluster_ip.size();
        let band = (size / 16).clamp(16, 256);
        let usable = 1..size - 1;
        pick(usable, band, random, |o| {
            self.cluster_ip.nth(o).filter(|ip| !taken.contains(ip))
        })
    }

    /// Picks a free node port at random, preferring the upper part of the
    /// range (like upstream); `None` if full.
    pub fn pick_port(&self, taken: &BTreeSet<u16>, random: u64) -> Option<u16> {
        let band = (self.node_ports.size() / 32).clamp(16, 128);
        let first = u64::from(self.node_ports.first);
        pick(0..self.node_ports.size(), band, random, |o| {
            u16::try_from(first + o).ok().filter(|p| !taken.contains(p))
        })
    }
}

/// A random number for where to start looking for a free value.
pub fn random_start() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(first)
}

/// The first free offset from a random start, in `[band, end)` first and
/// then in `[start, band)`.
fn pick<T>(
    usable: std::ops::Range<u64>,
    band: u64,
    random: u64,
    free: impl Fn(u64) -> Option<T>,
) -> Option<T> {
    let band = band.clamp(usable.start, usable.end);
    [band..usable.end, usable.start..band]
        .into_iter()
        .filter(|r| !r.is_empty())
        .find_map(|r| {
            let len = r.end - r.start;
            let start = random % len;
            (0..len).find_map(|i| free(r.start + (start + i) % len))
        })
}

/// What a Service asks for: cluster IP and node ports, per port index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wants {
    /// The cluster IP: none, any free one, or this one.
    pub cluster_ip: Want<Ipv4Addr>,
    /// Per entry of `spec.ports`: none, any free one, or this one.
    pub node_ports: Vec<Want<u16>>,
}

/// One value a Service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want<T> {
    /// Nothing (headless, ExternalName, no node port for this type).
    Nothing,
    /// Any free value from the range.
    Any,
    /// This value (given by the user, or already held).
    This(T),
}

/// Whether a Service of this spec gets node ports.
fn has_node_ports(spec: &Value) -> bool {
    match str_or_empty(spec, &["type"]) {
        "NodePort" => true,
        "LoadBalancer" => spec
            .get("allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

/// What `svc` (admitted, so defaulted and validated) asks for.
pub fn wants(svc: &Value) -> Wants {
    let spec = get(svc, &["spec"]).cloned().unwrap_or_default();
    let cluster_ip = match (
        str_or_empty(&spec, &["type"]),
        str_or_empty(&spec, &["clusterIP"]),
    ) {
        ("ExternalName", _) | (_, "None") => Want::Nothing,
        (_, "") => Want::Any,
        // Validation refused non-IPs; an IPv6 one is left alone (not allocated).
        (_, ip) => ip.parse().map_or(Want::Nothing, Want::This),
    };
    let node_ports = has_node_ports(&spec);
    let node_ports = array(&spec, &["ports"])
        .iter()
        .map(|port| match get_i64(port, &["nodePort"]).unwrap_or(0) {
            _ if !node_ports => Want::Nothing,
            0 => Want::Any,
            n => u16::try_from(n).map_or(Want::Nothing, Want::This),
        })
        .collect();
    Wants {
        cluster_ip,
        node_ports,
    }
}

/// What a stored Service holds: its cluster IP and node ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// The cluster IP, if it has an IPv4 one.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Its distinct node ports.
    pub node_ports: BTreeSet<u16>,
}

/// What `svc` holds, read from its spec.
pub fn holdings(svc: &Value) -> Holdings {
    let w = wants(svc);
    Holdings {
        cluster_ip: match w.cluster_ip {
            Want::This(ip) => Some(ip),
            Want::Nothing | Want::Any => None,
        },
        node_ports: w
            .node_ports
            .into_iter()
            .filter_map(|p| match p {
                Want::This(p) => Some(p),
                Want::Nothing | Want::Any => None,
            })
            .collect(),
    }
}

/// Writes the allocated cluster IP into `svc` with `clusterIPs`, and fills
/// `clusterIPs` from `clusterIP` (and `None` for headless) as upstream does.
pub fn set_cluster_ip(svc: &mut Value, ip: Option<Ipv4Addr>) {
    let spec = ensure_object(svc, &["spec"]);
    if let Some(ip) = ip {
        spec.insert("clusterIP".into(), ip.to_string().into());
    }
    match spec.get("clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => {
            let ips = json!([ip]);
            spec.insert("clusterIPs".into(), ips);
        }
        _ => {}
    }
}

/// Writes an allocated node port into `spec.ports[index]`.
pub fn set_node_port(svc: &mut Value, index: usize, port: u16) {
    if let Some(Value::Array(ports)) = ensure_object(svc, &["spec"]).get_mut("ports")
        && let Some(Value::Object(p)) = ports.get_mut(index)
    {
        p.insert("nodePort".into(), port.into());
    }
}

/// The `port` number of `spec.ports[index]` (ports sharing it share one
/// auto-allocated node port, like upstream).
pub fn service_port(svc: &Value, index: usize) -> i64 {
    array(svc, &["spec", "ports"])
        .get(index)
        .and_then(|p| get_i64(p, &["port"]))
        .unwrap_or(0)
}

/// On an update, drops what the new type does not have when the user left
/// it as it was (upstream's `dropTypeDependentFields`): the cluster IP on a
/// change to ExternalName, node ports on a change to ClusterIP.
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let new_type = str_or_empty(new, &["spec", "type"]).to_owned();
    if new_type == str_or_empty(old, &["spec", "type"]) {
        return;
    }
    let spec = ensure_object(new, &["spec"]);
    if new_type == "ExternalName" {
        for key in ["clusterIP", "clusterIPs"] {
            if spec.get(key) == get(old, &["spec", key]) {
                spec.remove(key);
            }
        }
        spec.remove("ipFamilies");
        spec.remove("ipFamilyPolicy");
        spec.remove("internalTrafficPolicy");
    }
    if !has_node_ports(&Value::Object(spec.clone())) {
        let old_ports = array(old, &["spec", "ports"]);
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for (i, port) in ports.iter_mut().enumerate() {
                let old_np = old_ports.get(i).and_then(|p| p.get("nodePort"));
                if let Value::Object(p) = port
                    && p.get("nodePort") == old_np
                {
                    p.remove("nodePort");
                }
            }
        }
    }
}

/// On an update that keeps node ports, gives a port sent without one the
/// node port the same port and protocol had (upstream's
/// `patchAllocatedValues`), so a `PUT` of a manifest keeps its node ports.
pub fn keep_allocated_node_ports(new: &mut Value, old: &Value) {
    let (Some(new_spec), Some(old_spec)) = (get(new, &["spec"]), get(old, &["spec"])) else {
        return;
    };
    let new_type = str_or_empty(new_spec, &["type"]);
    let same_kind = new_type.is_empty() || new_type == str_or_empty(old_spec, &["type"]);
    if !same_kind || !has_node_ports(old_spec) {
        return;
    }
    let protocol = |p: &Value| match str_or_empty(p, &["protocol"]) {
        "" => "TCP".to_owned(),
        other => other.to_owned(),
    };
    let used: BTreeSet<i64> = array(new_spec, &["ports"])
        .iter()
        .filter_map(|p| get_i64(p, &["nodePort"]))
        .collect();
    let old_ports: Vec<(i64, String, i64)> = array(old_spec, &["ports"])
        .iter()
        .filter_map(|p| {
            let np = get_i64(p, &["nodePort"])?;
            Some((get_i64(p, &["port"]).unwrap_or(0), protocol(p), np))
        })
        .collect();
    if let Some(Value::Array(ports)) = ensure_object(new, &["spec"]).get_mut("ports") {
        for port in ports.iter_mut() {
            if get_i64(port, &["nodePort"]).unwrap_or(0) != 0 {
                continue;
            }
            let key = (get_i64(port, &["port"]).unwrap_or(0), protocol(port));
            let found = old_ports.iter().find(|(p, proto, np)| {
                (*p, proto.as_str()) == (key.0, key.1.as_str()) && !used.contains(np)
            });
            if let (Some((_, _, np)), Value::Object(p)) = (found, port) {
                p.insert("nodePort".into(), (*np).into());
            }
        }
    }
}

/// `spec.clusterIPs: Invalid value: []string{"ip"}: failed to allocate IP ip: why`.
fn ip_error(ip: Ipv4Addr, why: &str) -> FieldError {
    FieldError::invalid_raw(
        &FieldPath::new("spec").child("clusterIPs"),
        format!("[]string{{\"{ip}\"}}"),
        format!("failed to allocate IP {ip}: {why}"),
    )
}

/// The requested cluster IP is outside the range.
pub fn ip_not_in_range(ip: Ipv4Addr, ranges: &ServiceRanges) -> FieldError {
    ip_error(
        ip,
        &format!(
            "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
            ranges.cluster_ip
        ),
    )
}

/// The requested cluster IP is held by another Service.
pub fn ip_already_allocated(ip: Ipv4Addr) -> FieldError {
    ip_error(ip, "provided IP is already allocated")
}

fn node_port_path(index: usize) -> FieldPath {
    FieldPath::new("spec")
        .child("ports")
        .index(index)
        .child("nodePort")
}

/// The requested node port is outside the range.
pub fn port_not_in_range(index: usize, port: u16, ranges: &ServiceRanges) -> FieldError {
    FieldError::invalid(
        &node_port_path(index),
        port,
        format!(
            "provided port is not in the valid range. The range of valid ports is {}",
            ranges.node_ports
        ),
    )
}

/// The requested node port is held by another Service.
pub fn port_already_allocated(index: usize, port: u16) -> FieldError {
    FieldError::invalid(
        &node_port_path(index),
        port,
        "provided port is already allocated",
    )
}

/// No cluster IP is free (upstream answers 500 `range is full`).
pub fn ip_range_full() -> ApiError {
    ApiError::internal("failed to allocate a serviceIP: range is full")
}

/// No node port is free (upstream answers 500 `range is full`).
pub fn port_range_full() -> ApiError {
    ApiError::internal("failed to allocate a nodePort: range is full")
}

#[cfg(test)]
#[path = "service_alloc_test.rs"]
mod tests;
