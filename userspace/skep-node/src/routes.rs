//! Routes to the pods of other nodes: no NAT, no overlay.
//!
//! Every node owns a pod CIDR (`spec.podCIDR`, from the control plane's
//! node IPAM). An agent installs, in its node's main routing table, one
//! route per other node: `<their pod CIDR> via <their InternalIP>`. A packet
//! from a local pod to a pod elsewhere leaves through the underlay with the
//! pod's own source address, and the receiving node delivers it through the
//! `/32` route its sandbox installed for the destination pod. The receiving
//! pod sees the sender's pod IP.
//!
//! The routes are the source of truth for forwarding: the eBPF fast path
//! (`bpf_fib_lookup` + `bpf_redirect_neigh` on the pod veths) will look them
//! up instead of keeping its own copy, so a route change is seen by both.
//!
//! The routes carry protocol [`ROUTE_PROTOCOL`] (`ip route show proto 83`),
//! which tells the agent which routes are its own: after a restart it
//! reconciles against the kernel and removes those of nodes that left,
//! without touching anyone else's routes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use skep_runtime::ipam::parse_cidr;

use crate::metrics::{Cause, SyncLoop, SyncRuns};
use crate::view::{Concern, ViewReader};

/// The route protocol number skep's node routes carry (free in iproute2's
/// `rt_protos`; `ip route show proto 83` lists them).
pub const ROUTE_PROTOCOL: u8 = 83;

/// An IPv4 network: address with the host bits clear, and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length (0–32).
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; `None` for anything else (IPv6 included).
    pub fn parse(s: &str) -> Option<Self> {
        parse_cidr(s)
            .ok()
            .map(|(addr, prefix)| Self { addr, prefix })
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(self, other: Self) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The routes to other nodes: pod CIDR → next hop (the node's `InternalIP`).
pub type NodeRoutes = BTreeMap<Cidr, Ipv4Addr>;

/// A node's IPv4 pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`).
pub fn pod_cidrs(node: &Node) -> Vec<Cidr> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    let listed = spec.pod_cidrs.iter().flatten();
    let cidrs: Vec<Cidr> = listed.filter_map(|c| Cidr::parse(c)).collect();
    if cidrs.is_empty() {
        spec.pod_cidr
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .collect()
    } else {
        cidrs
    }
}

/// A node's `InternalIP` (IPv4).
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The routes node `own` needs to reach the pods of every other node in
/// `nodes`. Nodes being deleted, without a pod CIDR or without an IPv4
/// `InternalIP` get none; a CIDR overlapping one of `own`'s is never routed
/// away; when two nodes claim overlapping CIDRs, the first by name wins.
pub fn desired<'a>(own: &str, nodes: impl IntoIterator<Item = &'a Node>) -> NodeRoutes {
    let mut nodes: Vec<&Node> = nodes.into_iter().collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let own_cidrs: Vec<Cidr> = nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() == Some(own))
        .flat_map(|n| pod_cidrs(n))
        .collect();
    let mut routes = NodeRoutes::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name == own || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(via) = internal_ip(node) else {
            continue;
        };
        for cidr in pod_cidrs(node) {
            let taken = own_cidrs
                .iter()
                .chain(routes.keys())
                .any(|c| c.overlaps(cidr));
            if taken {
                tracing::warn!(node = %name, %cidr, "pod CIDR overlaps another node's; not routed");
                continue;
            }
            routes.insert(cidr, via);
        }
    }
    routes
}

/// Errors from reading or changing the routing table.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The netlink socket could not be opened.
    #[error("failed to open a netlink socket")]
    Socket {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("failed to {op} route {cidr}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The route's destination (empty for a dump).
        cidr: String,
        /// The cause.
        #[source]
        source: rtnetlink::Error,
    },
}

/// The kernel seam: the node's routes with protocol [`ROUTE_PROTOCOL`].
pub trait RouteTable {
    /// The routes skep installed.
    fn list(&self) -> impl Future<Output = Result<NodeRoutes, RouteError>> + Send;
    /// Installs or changes the route to `cidr`.
    fn replace(
        &self,
        cidr: Cidr,
        via: Ipv4Addr,
    ) -> impl Future<Output = Result<(), RouteError>> + Send;
    /// Removes the route to `cidr`; missing is fine.
    fn delete(&self, cidr: Cidr) -> impl Future<Output = Result<(), RouteError>> + Send;
}

/// The main routing table of the calling process's network namespace,
/// through rtnetlink.
#[derive(Debug, Clone)]
pub struct NetlinkRoutes {
    handle: Handle,
}

impl NetlinkRoutes {
    /// Opens a netlink socket (in the namespace of the calling thread) and
    /// drives it on the current tokio runtime.
    pub fn connect() -> Result<Self, RouteError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| RouteError::Socket { source })?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Installs (or keeps) `unreachable <cidr> proto 83`: the node's route
    /// for the Service CIDR, so a virtual IP the socket load-balancer did not
    /// translate fails at once (`EHOSTUNREACH`) instead of leaving the node.
    /// [`sync`] never lists or removes it (it has no next hop).
    pub async fn replace_unreachable(&self, cidr: Cidr) -> Result<(), RouteError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.addr, cidr.prefix)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .kind(RouteType::Unreachable)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|source| RouteError::Netlink {
                op: "install unreachable",
                cidr: cidr.to_string(),
                source,
            })
    }
}

fn route_message(cidr: Cidr, via: Option<Ipv4Addr>) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.addr, cidr.prefix)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    if let Some(via) = via {
        builder = builder.gateway(via);
    }
    builder.build()
}

/// Destination and gateway of a skep route in the main table, if `msg` is one.
fn parse_route(msg: &RouteMessage) -> Option<(Cidr, Ipv4Addr)> {
    let header = &msg.header;
    if header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
        || header.table != RouteHeader::RT_TABLE_MAIN
        || header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dest = None;
    let mut via = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dest = Some(*a),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(*g),
            _ => {}
        }
    }
    Some((
        Cidr {
            addr: dest?,
            prefix: header.destination_prefix_length,
        },
        via?,
    ))
}

fn is_missing(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg)
        if matches!(msg.raw_code().abs(), libc::ESRCH | libc::ENOENT))
}

impl RouteTable for NetlinkRoutes {
    async fn list(&self) -> Result<NodeRoutes, RouteError> {
        let mut dump = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut out = NodeRoutes::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|source| RouteError::Netlink {
                op: "dump",
                cidr: String::new(),
                source,
            })?
        {
            if let Some((cidr, via)) = parse_route(&msg) {
                out.insert(cidr, via);
            }
        }
        Ok(out)
    }

    async fn replace(&self, cidr: Cidr, via: Ipv4Addr) -> Result<(), RouteError> {
        self.handle
            .route()
            .add(route_message(cidr, Some(via)))
            .replace()
            .execute()
            .await
            .map_err(|source| RouteError::Netlink {
                op: "install",
                cidr: cidr.to_string(),
                source,
            })
    }

    async fn delete(&self, cidr: Cidr) -> Result<(), RouteError> {
        match self
            .handle
            .route()
            .del(route_message(cidr, None))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(source) => Err(RouteError::Netlink {
                op: "remove",
                cidr: cidr.to_string(),
                source,
            }),
        }
    }
}

/// What one [`sync`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Routes installed or changed.
    pub installed: Vec<(Cidr, Ipv4Addr)>,
    /// Routes removed.
    pub removed: Vec<Cidr>,
    /// Routes that could not be installed or removed (retried by the next
    /// sync), with the reason.
    pub failed: Vec<(Cidr, String)>,
}

/// Makes skep's routes in `table` exactly `desired`: only what differs is
/// touched, so the routes of nodes that stay never flap. One route that
/// fails (say, a next hop the underlay cannot reach) does not stop the
/// others; it is in [`SyncReport::failed`].
pub async fn sync(table: &impl RouteTable, desired: &NodeRoutes) -> Result<SyncReport, RouteError> {
    let current = table.list().await?;
    let mut report = SyncReport::default();
    for (cidr, via) in desired {
        if current.get(cidr) == Some(via) {
            continue;
        }
        match table.replace(*cidr, *via).await {
            Ok(()) => {
                tracing::info!(%cidr, %via, "route to node pods installed");
                report.installed.push((*cidr, *via));
            }
            Err(err) => {
                tracing::warn!(%cidr, %via, ?err, "failed to install route to node pods");
                report.failed.push((*cidr, err.to_string()));
            }
        }
    }
    for cidr in current.keys().filter(|c| !desired.contains_key(c)) {
        match table.delete(*cidr).await {
            Ok(()) => {
                tracing::info!(%cidr, "route to departed node removed");
                report.removed.push(*cidr);
            }
            Err(err) => {
                tracing::warn!(%cidr, ?err, "failed to remove route to departed node");
                report.failed.push((*cidr, err.to_string()));
            }
        }
    }
    Ok(report)
}

/// Keeps the routes to other nodes' pod CIDRs in step with the Nodes in
/// the view until aborted: after every change of their routing facts
/// ([`Concern::Nodes`]), and every 30 s against routes someone else
/// removed; the Service CIDR's `unreachable` route likewise. Turns on IPv4
/// forwarding first. Until the view has synced once the routes are left as
/// the last agent left them. Each run is counted in `runs`.
#[tracing::instrument(skip_all, fields(node = %own))]
pub async fn sync_loop(own: String, service_cidr: Cidr, view: ViewReader, runs: SyncRuns) {
    const RESYNC: Duration = Duration::from_secs(30);
    const RETRY: Duration = Duration::from_secs(2);
    let table = loop {
        match NetlinkRoutes::connect() {
            Ok(table) => break table,
            Err(err) => {
                tracing::error!(?err, "failed to open netlink for node routes; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    if let Err(err) = skep_runtime::sandbox::enable_forwarding(std::path::Path::new("/proc")) {
        tracing::error!(
            ?err,
            "failed to turn on IPv4 forwarding: pods cannot reach other nodes"
        );
    }
    let mut changed = view.changes(Concern::Nodes);
    let mut wait = RESYNC;
    loop {
        if let Err(err) = table.replace_unreachable(service_cidr).await {
            tracing::error!(?err, %service_cidr, "failed to route the service CIDR unreachable");
        }
        let cause = match tokio::time::timeout(wait, changed.changed()).await {
            Ok(Ok(())) => Cause::Change,
            Ok(Err(_)) => return,
            Err(_) if wait == RETRY => Cause::Retry,
            Err(_) => Cause::Resync,
        };
        // An empty view would remove every other node's route.
        if *changed.borrow_and_update() == 0 {
            continue;
        }
        runs.count(SyncLoop::Routes, cause);
        let nodes = view.snapshot().nodes;
        let desired = desired(&own, nodes.values().map(AsRef::as_ref));
        wait = match sync(&table, &desired).await {
            Ok(report) if report.failed.is_empty() => RESYNC,
            Ok(_) => RETRY,
            Err(err) => {
                tracing::warn!(?err, "failed to read node routes; retrying");
                RETRY
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        },
                        NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.into(),
                        },
                    ]
                }),
                ..NodeStatus::default()
            }),
        }
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap_or(Cidr {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 99,
        })
    }

    #[test]
    fn routes_go_to_every_other_node_with_a_cidr_and_address() {
        let mut leaving = node("d", Some("10.244.4.0/24"), Some("10.99.0.14"));
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let nodes = [
            node("a", Some("10.244.1.0/24"), Some("10.99.0.11")),
            node("b", Some("10.244.2.0/24"), Some("10.99.0.12")),
            node("c", Some("10.244.3.0/24"), None),
            leaving,
            node("e", None, Some("10.99.0.15")),
            node("f", Some("fd00::/64"), Some("10.99.0.16")),
            node("g", Some("10.244.7.0/24"), Some("fd00::1")),
        ];
        let routes = desired("a", &nodes);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            [(cidr("10.244.2.0/24"), Ipv4Addr::new(10, 99, 0, 12))]
        );
    }

    #[test]
    fn overlapping_cidrs_are_never_routed_away() {
        let nodes = [
            node("a", Some("10.244.1.0/24"), Some("10.99.0.11")),
            node("b", Some("10.244.0.0/16"), Some("10.99.0.12")),
            node("c", Some("10.245.0.0/24"), Some("10.99.0.13")),
            node("d", Some("10.245.0.0/25"), Some("10.99.0.14")),
        ];
        let routes = desired("a", &nodes);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            [(cidr("10.245.0.0/24"), Ipv4Addr::new(10, 99, 0, 13))]
        );
        assert!(cidr("10.0.0.0/8").overlaps(cidr("10.244.3.0/24")));
        assert!(!cidr("10.244.2.0/24").overlaps(cidr("10.244.3.0/24")));
        assert!(cidr("0.0.0.0/0").overlaps(cidr("192.168.0.0/16")));
        assert_eq!(Cidr::parse("10.244.1.1/24"), None);
    }

    /// An in-memory table that records what was asked of it.
    #[derive(Default)]
    struct FakeTable {
        routes: Mutex<NodeRoutes>,
        calls: Mutex<Vec<String>>,
    }

    impl RouteTable for FakeTable {
        async fn list(&self) -> Result<NodeRoutes, RouteError> {
            Ok(self.routes.lock().map(|r| r.clone()).unwrap_or_default())
        }
        async fn replace(&self, cidr: Cidr, via: Ipv4Addr) -> Result<(), RouteError> {
            if let (Ok(mut r), Ok(mut c)) = (self.routes.lock(), self.calls.lock()) {
                r.insert(cidr, via);
                c.push(format!("replace {cidr} {via}"));
            }
            Ok(())
        }
        async fn delete(&self, cidr: Cidr) -> Result<(), RouteError> {
            if let (Ok(mut r), Ok(mut c)) = (self.routes.lock(), self.calls.lock()) {
                r.remove(&cidr);
                c.push(format!("delete {cidr}"));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn sync_touches_only_what_differs() -> anyhow::Result<()> {
        let table = FakeTable::default();
        let b = (cidr("10.244.2.0/24"), Ipv4Addr::new(10, 99, 0, 12));
        let c = (cidr("10.244.3.0/24"), Ipv4Addr::new(10, 99, 0, 13));
        let report = sync(&table, &[b, c].into_iter().collect()).await?;
        assert_eq!(report.installed, [b, c]);
        // Node c moves to a new address, node d appears, node b leaves.
        let c2 = (c.0, Ipv4Addr::new(10, 99, 0, 23));
        let d = (cidr("10.244.4.0/24"), Ipv4Addr::new(10, 99, 0, 14));
        let report = sync(&table, &[c2, d].into_iter().collect()).await?;
        assert_eq!(report.installed, [c2, d]);
        assert_eq!(report.removed, [b.0]);
        // Nothing changed: nothing is touched.
        let before = table.calls.lock().map(|c| c.len()).unwrap_or_default();
        let report = sync(&table, &[c2, d].into_iter().collect()).await?;
        assert_eq!(report, SyncReport::default());
        assert_eq!(
            table.calls.lock().map(|c| c.len()).unwrap_or_default(),
            before
        );
        Ok(())
    }
}
