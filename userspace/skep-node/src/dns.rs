//! The agent's cluster DNS: a [`skep_dns`] server on `dns_listen` (default
//! `<node IP>:53`) answering for the pods of this node. Once bound it
//! records its address in `Shared::dns_addr` (the service sync points the
//! cluster DNS address there) and rebuilds its records from the view every
//! time `cluster_changed` moves. Names outside the cluster domain go to the
//! node's own resolvers.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use skep_dns::{DnsServer, Records, ResolvConf, ServerConfig};

use crate::agent::{Shared, lock_view};

/// How long each upstream resolver gets before the next is tried (and, after
/// the last, the pod gets SERVFAIL).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's resolv.conf: upstreams for the DNS server, and what `Default`
/// pods get.
pub const NODE_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Serves cluster DNS until aborted; a failure to bind is logged and leaves
/// the node without cluster DNS (pods still run).
pub async fn run(shared: Arc<Shared>) {
    let cfg = &shared.cfg;
    let listen = cfg
        .dns_listen
        .unwrap_or_else(|| SocketAddr::from((shared.node_ip, 53)));
    // Never forward to itself: not to its own address, nor to the cluster
    // DNS address that leads back to it.
    let exclude = [
        listen.ip(),
        IpAddr::V4(shared.node_ip),
        IpAddr::V4(cfg.cluster_dns),
    ];
    let upstreams = ResolvConf::read(Path::new(NODE_RESOLV_CONF)).upstreams(&exclude);
    let config = ServerConfig {
        listen,
        upstreams: upstreams.clone(),
        forward_timeout: FORWARD_TIMEOUT,
    };
    // Only the cluster domain can fail a build: checked once, here.
    let first = match records(&shared) {
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
        let _ = shared.dns_addr.set(v4);
        // The service sync points the cluster DNS address here: nudge it now.
        shared.cluster_changed.send_modify(|_| ());
    }
    tracing::info!(%addr, domain = %cfg.cluster_domain, ?upstreams, "cluster DNS listening");
    let handle = server.records();
    let mut changed = shared.cluster_changed.subscribe();
    let rebuild = async {
        while changed.changed().await.is_ok() {
            if let Ok(records) = records(&shared) {
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
fn records(shared: &Shared) -> Result<Records, skep_dns::RecordsError> {
    let view = lock_view(shared);
    Records::build(
        &shared.cfg.cluster_domain,
        view.services.values(),
        view.endpoint_slices.values(),
    )
}
