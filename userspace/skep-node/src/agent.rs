//! The node agent (the kubelet role), wired together: [`run`] opens the
//! node's parts and starts one task per job, each given only what it
//! needs:
//!
//! | task | owns | reads | woken by |
//! |---|---|---|---|
//! | [`crate::node_sync`] | the [`ViewWriter`], the pod workers | the node-sync stream | stream events |
//! | [`crate::node_status`] | the Node's registration and heartbeat | own Node copy | a timer |
//! | [`crate::services`] | the service maps | Services, EndpointSlices, DNS address | [`Concern::Services`], the DNS address |
//! | [`crate::dns`] | the DNS server | Services, EndpointSlices | [`Concern::Services`] |
//! | [`crate::policy`] | the policy maps | Namespaces, NetworkPolicies, pods' policy facts | [`Concern::Policy`] |
//! | [`crate::routes`] | the routes to other nodes | Nodes' routing facts | [`Concern::Nodes`], 30 s |
//! | [`crate::metrics`] | `/metrics` | pinned counters, local pods, [`SyncRuns`] | scrapes |
//! | [`crate::pleg`] | the last relist | the runtime's containers | 1 s |
//! | [`crate::status_manager`] | pods' last written status | pods' newest copies | workers' statuses |
//! | [`crate::worker`] (one per pod) | the pod's network and containers | its pod ([`PodParts`]) | its pod's spec or deletion, the PLEG, its probe and back-off timers |
//!
//! On start the agent adopts what already runs and removes pods that are
//! no longer bound to this node. It talks to the control plane only
//! through `skep-proto` ([`NodeApi`]).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use skep_proto::v1::node_sync_client::NodeSyncClient;
use skep_runtime::cleanup;
use skep_runtime::ipam::Ipam;
use skep_runtime::runtime::{Runtime, RuntimeConfig};
use skep_runtime::sandbox::{SandboxConfig, SandboxManager};
use skep_runtime::{HostPodNetworks, PodNetworks as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::api::{EventRecorder, NodeApi};
use crate::endpoints::Endpoints;
use crate::metrics::SyncRuns;
use crate::pleg::Pleg;
use crate::pod_network::PodNetworkManager;
use crate::server::ServerParts;
use crate::status_manager::StatusManager;
use crate::view::{Concern, ViewReader, ViewWriter};
use crate::worker::{PodCgroups, PodParts, WorkerConfig};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The node's credentials could not be read or used.
    #[error("failed to set up the node-sync client")]
    Client {
        /// The cause.
        #[source]
        source: skep_proto::ClientError,
    },
    /// A state directory or store could not be opened.
    #[error("failed to open {what}")]
    Open {
        /// What.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The eBPF datapath could not be loaded or attached.
    #[error("failed to load the datapath (pins in {pin_dir})")]
    Datapath {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The cause.
        #[source]
        source: skep_datapath::DatapathError,
    },
    /// The socket load-balancer's cgroup could not be created.
    #[error("failed to create the socket load-balancer cgroup {path}")]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name.
    pub node_name: String,
    /// The node's InternalIP (default: the first non-loopback IPv4).
    pub node_ip: Option<Ipv4Addr>,
    /// State: `images/`, `pods/`, `ipam/`, `runtime/` (runc root).
    pub data_dir: PathBuf,
    /// The node kubeconfig (`ApiServer::node_kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// The per-container shim binary (`skep-shim`).
    pub shim: PathBuf,
    /// Where cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// How often the Ready condition's heartbeat is refreshed.
    pub heartbeat: Duration,
    /// First restart back-off (doubles up to `backoff_max`).
    pub backoff_base: Duration,
    /// Longest restart back-off.
    pub backoff_max: Duration,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Where the node server (logs, exec) listens; port 0 picks a free one.
    /// The port it got is reported in `status.daemonEndpoints`.
    pub kubelet_listen: std::net::SocketAddr,
    /// The node server's port as reported (set once it is bound).
    pub kubelet_port: u16,
    /// Where the datapath's maps and links are pinned (`<bpffs>/skep/<node>`).
    pub bpf_pin_dir: PathBuf,
    /// Kernel BTF to relocate the eBPF programs against (default:
    /// `/sys/kernel/btf/vmlinux`).
    pub bpf_btf: Option<PathBuf>,
    /// Entries of each LRU map (conntrack, socket reverse NAT, affinity);
    /// `None` sizes them from memory. Applies when the maps are created.
    pub bpf_lru_entries: Option<u32>,
    /// The cgroup v2 directory the socket load-balancer is attached to: every
    /// process below it (pods, and the node's own processes placed there)
    /// reaches Services (`<cgroup2 mount>/skep/<node>`, created if missing).
    pub socket_lb_cgroup: PathBuf,
    /// The Service ClusterIP range; the node routes it `unreachable`, so a
    /// VIP the socket load-balancer does not translate never leaves the node.
    pub service_cidr: crate::routes::Cidr,
    /// The cluster DNS Service address pods' resolv.conf names (kubelet's
    /// `--cluster-dns`).
    pub cluster_dns: Ipv4Addr,
    /// The cluster domain DNS answers for (kubelet's `--cluster-domain`).
    pub cluster_domain: String,
    /// Where the node's DNS server listens (UDP and TCP); `None` is
    /// `<node IP>:53`, port 0 picks a free one.
    pub dns_listen: Option<std::net::SocketAddr>,
    /// Where Prometheus scrapes `/metrics` (default `<node IP>:9962`).
    pub metrics_listen: crate::metrics::MetricsListen,
}

impl AgentConfig {
    /// Kubernetes' defaults for `node_name` with state in `data_dir`.
    pub fn new(node_name: &str, data_dir: PathBuf, kubeconfig: PathBuf) -> Self {
        Self {
            node_name: node_name.to_owned(),
            node_ip: None,
            data_dir,
            kubeconfig,
            runc: "runc".into(),
            shim: PathBuf::from(skep_runtime::shim::BINARY),
            cgroup_root: "/sys/fs/cgroup".into(),
            heartbeat: Duration::from_secs(10),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_mins(5),
            insecure_registries: Vec::new(),
            kubelet_listen: std::net::SocketAddr::from((
                Ipv4Addr::UNSPECIFIED,
                skep_proto::DEFAULT_KUBELET_PORT,
            )),
            kubelet_port: 0,
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/skep").join(node_name),
            bpf_btf: None,
            bpf_lru_entries: None,
            socket_lb_cgroup: PathBuf::from("/sys/fs/cgroup/unified/skep").join(node_name),
            service_cidr: DEFAULT_SERVICE_CIDR,
            cluster_dns: DEFAULT_CLUSTER_DNS,
            cluster_domain: "cluster.local".into(),
            dns_listen: None,
            metrics_listen: crate::metrics::MetricsListen::NodeIp,
        }
    }
}

/// Kubernetes' default Service CIDR, `10.96.0.0/12`.
pub const DEFAULT_SERVICE_CIDR: crate::routes::Cidr = crate::routes::Cidr {
    addr: Ipv4Addr::new(10, 96, 0, 0),
    prefix: 12,
};

/// The cluster DNS address kubeadm clusters use, `10.96.0.10`.
pub const DEFAULT_CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// The pod workers' parts on this host: runc, the host's pod networks.
pub type HostPodParts = PodParts<Runtime, HostPodNetworks>;

/// Pod cgroups below the runtime's cgroup parent.
#[derive(Debug)]
struct HostCgroups {
    runtime: Arc<Runtime>,
}

impl PodCgroups for HostCgroups {
    fn remove(&self, uid: &str) {
        let root = &self.runtime.config().cgroup_root;
        if let Err(err) = cleanup::remove_pod_cgroups(root, &self.runtime.pod_cgroup(uid)) {
            tracing::warn!(%err, pod_uid = %uid, "failed to remove pod cgroups");
        }
    }
}

/// Opens the pod networks once the node has its pod CIDR (the IPAM is
/// sized by it).
async fn open_pod_networks(
    data_dir: PathBuf,
    sandbox: SandboxConfig,
    view: ViewReader,
    network: Arc<PodNetworkManager<HostPodNetworks>>,
) {
    let mut nodes = view.changes(Concern::Nodes);
    loop {
        let cidr = view.node().and_then(|n| n.spec.as_ref()?.pod_cidr.clone());
        if let Some(cidr) = cidr {
            match Ipam::open(data_dir.join("ipam"), &cidr) {
                Ok(ipam) => {
                    tracing::info!(%cidr, "pod CIDR assigned");
                    network.open(HostPodNetworks::new(ipam, SandboxManager::new(sandbox)));
                    return;
                }
                Err(err) => tracing::error!(%err, %cidr, "failed to open IPAM"),
            }
        }
        tokio::select! {
            changed = nodes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The first non-loopback IPv4 address of this machine.
pub fn first_ipv4() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let ip = ifa.address?.as_sockaddr_in()?.ip();
        (!ip.is_loopback() && !ifa.interface_name.starts_with("skep")).then_some(ip)
    })
}

/// Opens the node's parts and runs the agent until `shutdown` completes.
#[tracing::instrument(skip_all, fields(node = %cfg.node_name))]
pub async fn run(
    mut cfg: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let credentials = skep_proto::NodeCredentials::from_kubeconfig(&cfg.kubeconfig)
        .map_err(|source| AgentError::Client { source })?;
    let client = credentials
        .client()
        .map_err(|source| AgentError::Client { source })?;
    let node_server = if let Some(serving) = &credentials.serving {
        let server =
            crate::server::NodeServer::bind(cfg.kubelet_listen, &credentials.ca_pem, serving)
                .await
                .map_err(|e| AgentError::Open {
                    what: "node server",
                    source: e.into(),
                })?;
        cfg.kubelet_port = server.local_addr().map_or(0, |a| a.port());
        tracing::info!(
            port = cfg.kubelet_port,
            "node server (logs, exec) listening"
        );
        Some(server)
    } else {
        tracing::warn!(
            kubeconfig = %cfg.kubeconfig.display(),
            "the node kubeconfig has no serving certificate: logs and exec are not served"
        );
        None
    };
    let open =
        |what, source: Box<dyn std::error::Error + Send + Sync>| AgentError::Open { what, source };
    for d in ["pods", "run", "ipam"] {
        std::fs::create_dir_all(cfg.data_dir.join(d))
            .map_err(|e| open("data directory", e.into()))?;
    }
    let images = skep_image::Store::open(&cfg.data_dir.join("images"))
        .map_err(|e| open("image store", e.into()))?
        .with_insecure_registries(cfg.insecure_registries.clone());
    let runtime = Runtime::new(RuntimeConfig {
        state_dir: cfg.data_dir.join("runtime"),
        runc: cfg.runc.clone(),
        shim: cfg.shim.clone(),
        cgroup_root: cfg.cgroup_root.clone(),
        cgroup_parent: format!("skep/{}", cfg.node_name),
    })
    .map_err(|e| open("runtime", e.into()))?;
    let runtime = Arc::new(runtime);
    let sandbox_cfg = SandboxConfig {
        run_dir: cfg.data_dir.join("run"),
        proc_root: "/proc".into(),
        node_netns: None,
    };
    let node_ip = cfg
        .node_ip
        .or_else(first_ipv4)
        .unwrap_or(Ipv4Addr::LOCALHOST);
    let datapath = load_datapath(&cfg)?;
    skep_datapath::nodeport::set_node_address(&cfg.bpf_pin_dir, Some(node_ip)).map_err(
        |source| AgentError::Datapath {
            pin_dir: cfg.bpf_pin_dir.clone(),
            source,
        },
    )?;
    let endpoints = Endpoints::new(datapath, cfg.bpf_pin_dir.clone());
    tracing::info!(%node_ip, "node agent starting");
    endpoints.attach_underlay(node_ip);

    let api: Arc<dyn NodeApi> = Arc::new(client.clone());
    let writer = ViewWriter::new(&cfg.node_name);
    let view = writer.reader();
    let parts = pod_parts(&cfg, node_ip, &runtime, images, endpoints, &api, &view);
    let network = Arc::clone(&parts.network);

    let mut tasks = spawn_tasks(&cfg, client, &parts, writer);
    tasks.push(tokio::spawn(open_pod_networks(
        cfg.data_dir.clone(),
        sandbox_cfg,
        view.clone(),
        network,
    )));
    if let Some(server) = node_server {
        tasks.push(tokio::spawn(server.serve(Arc::new(ServerParts {
            view,
            runtime,
            pods_dir: cfg.data_dir.join("pods"),
            auth: crate::auth::NodeAuth::new(Arc::clone(&api), &cfg.node_name),
        }))));
    }
    shutdown.await;
    for task in &tasks {
        task.abort();
    }
    tracing::info!("node agent stopped; pods keep running");
    Ok(())
}

/// The pod workers' parts on this host.
fn pod_parts(
    cfg: &AgentConfig,
    node_ip: Ipv4Addr,
    runtime: &Arc<Runtime>,
    images: skep_image::Store,
    endpoints: Endpoints,
    api: &Arc<dyn NodeApi>,
    view: &ViewReader,
) -> Arc<HostPodParts> {
    Arc::new(PodParts {
        cfg: WorkerConfig {
            node_ip,
            cluster_dns: cfg.cluster_dns,
            cluster_domain: cfg.cluster_domain.clone(),
            node_resolv_conf: PathBuf::from(crate::dns::NODE_RESOLV_CONF),
            pods_dir: cfg.data_dir.join("pods"),
            backoff_base: cfg.backoff_base,
            backoff_max: cfg.backoff_max,
        },
        runtime: Arc::clone(runtime),
        network: Arc::new(PodNetworkManager::new(Arc::new(endpoints))),
        images: Arc::new(images),
        status: StatusManager::new(),
        api: Arc::clone(api),
        events: EventRecorder::new(Arc::clone(api), &cfg.node_name),
        view: view.clone(),
        pleg: Pleg::new(),
        cgroups: Arc::new(HostCgroups {
            runtime: Arc::clone(runtime),
        }),
        tokens: crate::token::TokenManager::new(Arc::clone(api)),
    })
}

/// Starts the agent's tasks (see the module doc), each with what it needs.
fn spawn_tasks(
    cfg: &AgentConfig,
    client: NodeSyncClient<Channel>,
    parts: &Arc<HostPodParts>,
    writer: ViewWriter,
) -> Vec<JoinHandle<()>> {
    let node_ip = parts.cfg.node_ip;
    let api = Arc::clone(&parts.api);
    let view = writer.reader();
    let runs = SyncRuns::new();
    let (dns_addr, dns_addr_rx) = watch::channel::<Option<SocketAddrV4>>(None);
    vec![
        tokio::spawn(crate::node_status::run(
            cfg.clone(),
            node_ip,
            Arc::clone(&api),
            view.clone(),
        )),
        tokio::spawn(crate::pleg::run(
            parts.pleg.clone(),
            Arc::clone(&parts.runtime),
            crate::pleg::RELIST_PERIOD,
        )),
        tokio::spawn(parts.status.clone().run(Arc::clone(&api), view.clone())),
        tokio::spawn({
            let spawn_parts = Arc::clone(parts);
            let orphans_parts = Arc::clone(parts);
            let workers = crate::node_sync::Workers::new(Box::new(move |uid, rx| {
                tokio::spawn(crate::worker::run(Arc::clone(&spawn_parts), uid, rx))
            }));
            crate::node_sync::run(client, cfg.node_name.clone(), writer, workers, move || {
                tokio::spawn(remove_orphans(Arc::clone(&orphans_parts)));
            })
        }),
        tokio::spawn(crate::routes::sync_loop(
            cfg.node_name.clone(),
            cfg.service_cidr,
            view.clone(),
            runs.clone(),
        )),
        tokio::spawn(crate::dns::run(
            crate::dns::DnsConfig {
                listen: cfg.dns_listen,
                node_ip,
                cluster_dns: cfg.cluster_dns,
                cluster_domain: cfg.cluster_domain.clone(),
            },
            view.clone(),
            dns_addr,
            runs.clone(),
        )),
        tokio::spawn(crate::services::sync_loop(
            crate::services::ServiceSync {
                pin_dir: cfg.bpf_pin_dir.clone(),
                node_name: cfg.node_name.clone(),
                node_ip,
                cluster_dns: cfg.cluster_dns,
            },
            view.clone(),
            dns_addr_rx,
            runs.clone(),
        )),
        tokio::spawn(crate::policy::sync_loop(
            crate::policy::PolicySync {
                pin_dir: cfg.bpf_pin_dir.clone(),
                data_dir: cfg.data_dir.clone(),
                node_name: cfg.node_name.clone(),
            },
            view.clone(),
            runs.clone(),
        )),
        tokio::spawn(crate::metrics::serve(
            cfg.metrics_listen,
            node_ip,
            crate::metrics::MetricsSources {
                pin_dir: cfg.bpf_pin_dir.clone(),
                view,
                runs,
            },
        )),
    ]
}

/// Loads the eBPF datapath with its maps pinned in `cfg.bpf_pin_dir` (a
/// restarted agent reuses the pinned maps as they are) and attaches the
/// socket load-balancer to `cfg.socket_lb_cgroup` through pinned links
/// (swapped atomically when already there).
fn load_datapath(cfg: &AgentConfig) -> Result<skep_datapath::Datapath, AgentError> {
    let pin_dir = cfg.bpf_pin_dir.clone();
    std::fs::create_dir_all(&cfg.socket_lb_cgroup).map_err(|source| AgentError::Cgroup {
        path: cfg.socket_lb_cgroup.clone(),
        source,
    })?;
    let err = |source| AgentError::Datapath {
        pin_dir: pin_dir.clone(),
        source,
    };
    let mut datapath = skep_datapath::Datapath::load(&skep_datapath::DatapathConfig {
        pin_dir: pin_dir.clone(),
        btf: cfg.bpf_btf.clone(),
        lru_entries: cfg.bpf_lru_entries,
    })
    .map_err(err)?;
    datapath.attach_cgroup(&cfg.socket_lb_cgroup).map_err(err)?;
    tracing::info!(
        pin_dir = %pin_dir.display(),
        cgroup = %cfg.socket_lb_cgroup.display(),
        "datapath loaded; socket load-balancer attached"
    );
    Ok(datapath)
}

/// `t` as a Kubernetes timestamp (second precision, like `metav1.Time`).
pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Now as a Kubernetes timestamp.
pub fn now() -> Timestamp {
    timestamp(std::time::SystemTime::now())
}

/// Removes pods that have state on this node but are no longer bound here.
async fn remove_orphans(parts: Arc<HostPodParts>) {
    let networks = parts.network.ready().await;
    let mut on_disk: HashSet<String> = HashSet::new();
    if let Ok(list) = parts.runtime.list().await {
        on_disk.extend(list.into_iter().map(|c| c.meta.pod_uid));
    }
    if let Ok(ips) = networks.allocations() {
        on_disk.extend(ips.into_iter().map(|(_, uid)| uid));
    }
    if let Ok(entries) = std::fs::read_dir(&parts.cfg.pods_dir) {
        on_disk.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned)),
        );
    }
    // Read after listing: a pod's state only exists once it was in the view.
    let bound = parts.view.pods();
    for uid in on_disk {
        if bound.contains_key(&uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, "removing pod no longer bound to this node");
        if let Err(err) = parts.remove_pod(&uid, Duration::from_secs(2)).await {
            tracing::warn!(pod_uid = %uid, %err, "failed to remove orphaned pod");
        }
    }
    // The routing datapath keeps only the pods that are left.
    if let Ok(ips) = networks.allocations() {
        parts
            .network
            .datapath()
            .reconcile(&ips.into_iter().collect());
    }
}
