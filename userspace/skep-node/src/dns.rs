//! The agent's cluster DNS: a [`skep_dns`] server on `listen` (default
//! `<node IP>:53`) answering for the pods of this node. Once bound it
//! publishes its address (the service sync points the cluster DNS address
//! there) and rebuilds its records from the view every time its Services or
//! EndpointSlices change ([`Concern::Services`]). Names outside the
//! cluster domain go to the node's own resolvers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use skep_dns::{DnsServer, Records, ResolvConf, ServerConfig};
use tokio::sync::watch;

use crate::metrics::{Cause, SyncLoop, SyncRuns};
use crate::view::{Concern, View, ViewReader};

/// How long each upstream resolver gets before the next is tried (and, after
/// the last, the pod gets SERVFAIL).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's resolv.conf: upstreams for the DNS server, and what `Default`
/// pods get.
pub const NODE_RESOLV_CONF: &str = "/etc/resolv.conf";

/// How the node's DNS server runs.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where it listens; `None` is `<node IP>:53`.
    pub listen: Option<SocketAddr>,
    /// This node's address.
    pub node_ip: Ipv4Addr,
    /// The cluster DNS Service address (never an upstream: it leads here).
    pub cluster_dns: Ipv4Addr,
    /// The cluster domain it answers for.
    pub cluster_domain: String,
}

/// Serves cluster DNS until aborted; a failure to bind is logged and leaves
/// the node without cluster DNS (pods still run). The bound address is sent
/// on `bound`. Each rebuild is counted in `runs`.
#[tracing::instrument(skip_all, fields(domain = %cfg.cluster_domain))]
pub async fn run(
    cfg: DnsConfig,
    view: ViewReader,
    bound: watch::Sender<Option<SocketAddrV4>>,
    runs: SyncRuns,
) {
    let listen = cfg
        .listen
        .unwrap_or_else(|| SocketAddr::from((cfg.node_ip, 53)));
    // Never forward to itself: not to its own address, nor to the cluster
    // DNS address that leads back to it.
    let exclude = [
        listen.ip(),
        IpAddr::V4(cfg.node_ip),
        IpAddr::V4(cfg.cluster_dns),
    ];
    let upstreams = ResolvConf::read(Path::new(NODE_RESOLV_CONF)).upstreams(&exclude);
    let config = ServerConfig {
        listen,
        upstreams: upstreams.clone(),
        forward_timeout: FORWARD_TIMEOUT,
    };
    let mut changed = view.changes(Concern::Services);
    // Only the cluster domain can fail a build: checked once, here.
    let first = match records(&cfg.cluster_domain, &view.snapshot()) {
        Ok(records) => records,
        Err(err) => {
            tracing::error!(%err, "failed to start cluster DNS");
            return;
        }
    };
    let server = match DnsServer::bind(config, first).await {
        Ok(server) => server,
        Err(err) => {
            tracing::error!(%err, "failed to start cluster DNS; pods on this node cannot resolve Services");
            return;
        }
    };
    let addr = server.local_addr();
    if let SocketAddr::V4(v4) = addr {
        bound.send_replace(Some(v4));
    }
    tracing::info!(%addr, ?upstreams, "cluster DNS listening");
    let handle = server.records();
    let rebuild = async {
        while changed.changed().await.is_ok() {
            runs.count(SyncLoop::Dns, Cause::Change);
            if let Ok(records) = records(&cfg.cluster_domain, &view.snapshot()) {
                handle.set(records);
            }
        }
    };
    tokio::select! {
        result = server.run() => {
            if let Err(err) = result {
                tracing::error!(%err, "cluster DNS stopped");
            }
        }
        () = rebuild => {}
    }
}

/// The records of the view's Services and EndpointSlices.
fn records(domain: &str, view: &View) -> Result<Records, skep_dns::RecordsError> {
    Records::build(
        domain,
        view.services.values().map(AsRef::as_ref),
        view.endpoint_slices.values().map(AsRef::as_ref),
    )
}
