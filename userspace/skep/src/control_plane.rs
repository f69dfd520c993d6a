//! The control plane as `skep server` and `skep up` run it: the store in
//! `<data-dir>/store`, the API server on `--listen`, the admin kubeconfig in
//! `<data-dir>/kubeconfig`, and the scheduler and controllers in-process.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use skep_apiserver::{ApiServer, ApiServerConfig};
use skep_apiserver::{Ipv4Cidr, PortRange, ServiceRanges};
use skep_controllers::{CancellationToken, ControllerConfig};
use skep_objects::Objects;
use skep_store::{Store, StoreConfig};

/// Flags shared by `skep server` and `skep up`.
#[derive(Clone, Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// Directory for the cluster's state: store, certificates, kubeconfig.
    #[arg(long, default_value = "/var/lib/skep")]
    pub data_dir: PathBuf,
    /// Address the Kubernetes API listens on (HTTPS); all of the host's
    /// addresses by default, as kube-apiserver's `--bind-address`.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// The address pods reach the API server at through the `kubernetes`
    /// Service (kube-apiserver's flag of that name; also put in the serving
    /// certificate). By default the listen address, or when that is
    /// `0.0.0.0` the node's address (`skep up`: its `--node-ip`), else the
    /// host's first non-loopback IPv4 address.
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<IpAddr>,
    /// Extra DNS names or IPs for the API server's certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// How long a node may go without a heartbeat before it is marked
    /// `NotReady` and tainted (kube-controller-manager's flag of that name).
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node heartbeats are checked.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// The block Service cluster IPs come from (kube-apiserver's flag of
    /// that name); the first IP is the `kubernetes` Service's, the tenth
    /// the cluster DNS's.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: Ipv4Cidr,
    /// The range `NodePort` Services' node ports come from (kube-apiserver's
    /// flag of that name).
    #[arg(long, value_name = "FIRST-LAST", default_value = "30000-32767")]
    pub service_node_port_range: PortRange,
    /// Serve requests without credentials as `system:anonymous` (allowed
    /// only what RBAC grants: by default the health and version endpoints);
    /// `--anonymous-auth=false` answers them 401.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub anonymous_auth: bool,
    /// The issuer of service account tokens, also the API audience
    /// (kube-apiserver's flag of that name, as kubeadm sets it).
    #[arg(long, value_name = "URL", default_value = skep_apiserver::sa_tokens::DEFAULT_ISSUER)]
    pub service_account_issuer: String,
}

impl ControlPlaneArgs {
    /// The Service IP and node port ranges these flags ask for.
    fn service_ranges(&self) -> ServiceRanges {
        ServiceRanges {
            cluster_ip: self.service_cluster_ip_range,
            node_ports: self.service_node_port_range,
        }
    }

    /// The controllers' settings these flags ask for.
    fn controller_config(&self) -> ControllerConfig {
        ControllerConfig {
            node_monitor_grace_period: self.node_monitor_grace_period,
            node_monitor_period: self.node_monitor_period,
            ..ControllerConfig::default()
        }
    }
}

/// A duration the way Kubernetes' flags write one: `500ms`, `40s`, `5m`,
/// `1h` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 40s or 500ms"))?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    if n == 0 {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(Duration::from_millis(n.saturating_mul(millis)))
}

/// Runs the control plane until `shutdown` completes, then stops the store
/// cleanly. `started` runs once the API server is bound (`skep up` starts
/// its node agent there).
pub async fn run(
    args: &ControlPlaneArgs,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(&ApiServer) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("failed to create data dir {}", args.data_dir.display()))?;
    let store = Store::open(StoreConfig::single(args.data_dir.join("store")))
        .await
        .context("failed to open the store")?;
    let server = ApiServer::bind(
        &ApiServerConfig {
            data_dir: args.data_dir.clone(),
            listen: args.listen,
            advertise_address: args.advertise_address.or_else(|| {
                args.listen
                    .ip()
                    .is_unspecified()
                    .then(skep_node::agent::first_ipv4)
                    .flatten()
                    .map(IpAddr::from)
            }),
            server_names: args.tls_sans.clone(),
            service_ranges: args.service_ranges(),
            anonymous_auth: args.anonymous_auth,
            service_account_issuer: args.service_account_issuer.clone(),
        },
        store.clone(),
    )
    .await
    .context("failed to start the API server")?;
    tracing::info!(
        address = server.address(),
        "control plane ready: kubectl --kubeconfig {}",
        server.kubeconfig().display()
    );
    let stop_loops = CancellationToken::new();
    let controllers = ControllerConfig {
        root_ca: Some(server.ca_pem().into()),
        ..args.controller_config()
    };
    let loops = skep_controllers::run(
        &Objects::with_service_ranges(store.clone(), args.service_ranges())
            .with_service_account_admission(true),
        &controllers,
        Some(skep_controllers::tokens::TokenIssuer {
            signer: server.service_account_tokens().signer().clone(),
            root_ca_pem: server.ca_pem().to_owned(),
        }),
        &stop_loops,
    );
    started(&server)?;
    server.serve(shutdown).await;
    stop_loops.cancel();
    let _ = loops.await;
    store.shutdown().await.context("failed to stop the store")?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tracing::warn!("cannot listen for SIGTERM; only Ctrl-C stops skep");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// A multi-threaded tokio runtime for the long-running commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_like_kubernetes_flags() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
    }
}
