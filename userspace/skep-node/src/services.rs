//! What the node's service maps should hold: a pure function from the
//! agent's view (Services and EndpointSlices) to the datapath's
//! [`ServiceSpec`]s, one per frontend, plus the task that keeps the pinned
//! maps equal to it.
//!
//! Like kube-proxy: every port of every `ClusterIP` Service (headless and
//! `ExternalName` ones have no virtual IP) gets the endpoints of its
//! EndpointSlices that are ready and not terminating, each at the slice's
//! port of the same name (the endpoints controller already resolved named
//! target ports per slice). `NodePort` ports also get a frontend at this
//! node's address, and every `externalIP` one per port; with
//! `externalTrafficPolicy: Local` those keep only this node's endpoints.
//! Once the agent's DNS server is bound, the cluster DNS address points at
//! it instead of at the kube-dns Service's endpoints.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use skep_datapath::{Protocol, ServiceMap, ServiceSpec};

use tokio::sync::watch;

use crate::metrics::{Cause, SyncLoop, SyncRuns};
use crate::view::{Concern, View, ViewReader};

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The DNS port.
const DNS_PORT: u16 = 53;

/// What, besides the view, decides this node's service frontends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFacts<'a> {
    /// This node's name (`externalTrafficPolicy: Local` keeps its endpoints).
    pub node_name: &'a str,
    /// This node's address: where its `NodePort`s listen.
    pub node_ip: Ipv4Addr,
    /// The cluster DNS Service address.
    pub cluster_dns: Ipv4Addr,
    /// Where this node's DNS server listens, once it does.
    pub dns_addr: Option<SocketAddrV4>,
}

/// Every frontend the node's service maps should hold, sorted by frontend.
#[must_use]
pub fn desired(view: &View, node: &NodeFacts<'_>) -> Vec<ServiceSpec> {
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for ((ns, _), slice) in view.endpoint_slices.iter() {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service
            && slice.address_type == "IPv4"
        {
            slices
                .entry((ns.as_str(), service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut out: BTreeMap<skep_datapath::Frontend, ServiceSpec> = BTreeMap::new();
    for ((ns, name), service) in view.services.iter() {
        let own = slices
            .get(&(ns.as_str(), name.as_str()))
            .map_or(&[][..], Vec::as_slice);
        for spec in service_specs(ns, name, service, own, node) {
            out.insert(spec.frontend(), spec);
        }
    }
    if let Some(dns) = node.dns_addr {
        for (proto, port_name) in [(Protocol::Udp, "dns"), (Protocol::Tcp, "dns-tcp")] {
            let spec = ServiceSpec {
                name: format!("kube-system/kube-dns:{port_name}"),
                vip: node.cluster_dns,
                port: DNS_PORT,
                proto,
                backends: vec![dns],
                affinity_timeout: None,
                external: false,
                local_only: false,
            };
            out.insert(spec.frontend(), spec);
        }
    }
    out.into_values().collect()
}

/// The frontends of one Service: each port at the `ClusterIP`, at the node's
/// address for a `NodePort`, and at each `externalIP`.
fn service_specs(
    ns: &str,
    name: &str,
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeFacts<'_>,
) -> Vec<ServiceSpec> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let (Some(proto), Ok(number)) = (protocol(port), u16::try_from(port.port)) else {
            continue;
        };
        let port_name = port.name.as_deref().filter(|n| !n.is_empty());
        let label = format!(
            "{ns}/{name}:{}",
            port_name.map_or_else(|| number.to_string(), str::to_owned)
        );
        let backends = backends(slices, port_name, proto, None);
        let frontend = |vip: Ipv4Addr, port: u16, external: bool| {
            let local = external && local_only;
            ServiceSpec {
                name: label.clone(),
                vip,
                port,
                proto,
                backends: if local {
                    self::backends(slices, port_name, proto, Some(node.node_name))
                } else {
                    backends.clone()
                },
                affinity_timeout,
                external,
                local_only: local,
            }
        };
        // A headless Service ("None") has no virtual IP to balance.
        if let Some(vip) = cluster_ip {
            out.push(frontend(vip, number, false));
        }
        let node_port = port.node_port.and_then(|p| u16::try_from(p).ok());
        if let Some(node_port) = node_port.filter(|p| *p != 0) {
            out.push(frontend(node.node_ip, node_port, true));
        }
        for ip in &external_ips {
            out.push(frontend(*ip, number, true));
        }
    }
    out
}

/// A Service or EndpointSlice port's protocol (TCP when unset).
fn protocol_of(protocol: Option<&str>) -> Option<Protocol> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn protocol(port: &ServicePort) -> Option<Protocol> {
    protocol_of(port.protocol.as_deref())
}

/// Whether an endpoint may get new connections: ready (unset counts as
/// ready, per the EndpointSlice API) and not terminating.
fn serves_new_connections(endpoint: &Endpoint) -> bool {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    ready && !terminating
}

/// The backends of the Service port named `port_name` (None: unnamed) in
/// `slices`, sorted; only endpoints on node `only_node` when given.
fn backends(
    slices: &[&EndpointSlice],
    port_name: Option<&str>,
    proto: Protocol,
    only_node: Option<&str>,
) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().filter(|n| !n.is_empty()) == port_name
                && protocol_of(p.protocol.as_deref()) == Some(proto)
        });
        let Some(target) = target
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if !serves_new_connections(endpoint) {
                continue;
            }
            if let Some(node) = only_node
                && endpoint.node_name.as_deref() != Some(node)
            {
                continue;
            }
            out.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                    .map(|ip| SocketAddrV4::new(ip, target)),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// How long a burst of changes is gathered before the maps are synced.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How soon a failed sync is retried.
const RETRY: Duration = Duration::from_secs(1);

/// What the service sync needs besides the view.
#[derive(Clone, Debug)]
pub struct ServiceSync {
    /// Where the service maps are pinned.
    pub pin_dir: PathBuf,
    /// This node's name.
    pub node_name: String,
    /// This node's address.
    pub node_ip: Ipv4Addr,
    /// The cluster DNS Service address.
    pub cluster_dns: Ipv4Addr,
}

/// Keeps the pinned service maps equal to [`desired`]: opens them (rebuilding
/// the last agent's state from the pins, so nothing is flushed), then syncs
/// after every change of the view's Services and EndpointSlices (a burst
/// gathered for [`DEBOUNCE`]) and of `dns_addr` (where the node's DNS
/// server listens, once it does), writing only what changed. Until the
/// view has synced once the maps are left as the last agent left them.
/// Failures are logged and retried. Each run is counted in `runs`.
#[tracing::instrument(skip_all, fields(node = %cfg.node_name))]
pub async fn sync_loop(
    cfg: ServiceSync,
    view: ViewReader,
    mut dns_addr: watch::Receiver<Option<SocketAddrV4>>,
    runs: SyncRuns,
) {
    let mut map = loop {
        match ServiceMap::open_pinned(&cfg.pin_dir) {
            Ok(map) => break map,
            Err(err) => {
                tracing::error!(?err, "failed to open the service maps; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let mut changed = view.changes(Concern::Services);
    let mut dns_open = true;
    let mut last: Option<Vec<ServiceSpec>> = None;
    let mut failed = false;
    let mut cause = Cause::Change;
    loop {
        // Nothing to do until the view is synced once: an empty view would
        // remove the last agent's services.
        if *changed.borrow_and_update() != 0 {
            runs.count(SyncLoop::Services, cause);
            let facts = NodeFacts {
                node_name: &cfg.node_name,
                node_ip: cfg.node_ip,
                cluster_dns: cfg.cluster_dns,
                dns_addr: *dns_addr.borrow_and_update(),
            };
            let want = desired(&view.snapshot(), &facts);
            if failed || last.as_ref() != Some(&want) {
                match map.sync(&want) {
                    Ok(()) => {
                        let backends: usize = want.iter().map(|s| s.backends.len()).sum();
                        tracing::info!(frontends = want.len(), backends, "service maps synced");
                        failed = false;
                        last = Some(want);
                    }
                    Err(err) => {
                        tracing::error!(?err, "failed to sync the service maps; retrying");
                        failed = true;
                    }
                }
            }
        }
        // Wake on a change (gathering a burst), or to retry a failure.
        let woken = async {
            loop {
                tokio::select! {
                    r = changed.changed() => return r.is_ok(),
                    r = dns_addr.changed(), if dns_open => {
                        if r.is_ok() {
                            return true;
                        }
                        // No DNS server (it failed to start): nothing more to follow.
                        dns_open = false;
                    }
                }
            }
        };
        let wait = if failed {
            tokio::time::timeout(RETRY, woken).await.ok()
        } else {
            Some(woken.await)
        };
        cause = match wait {
            Some(true) => {
                tokio::time::sleep(DEBOUNCE).await;
                Cause::Change
            }
            Some(false) => return,
            None => Cause::Retry,
        };
    }
}

#[cfg(test)]
#[path = "services_test.rs"]
mod tests;
