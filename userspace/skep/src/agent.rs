//! `skep agent`: the node agent alone (kubelet role), talking to a
//! control plane through its node kubeconfig; `skep up` runs the same loop
//! in-process.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use skep_datapath::preflight;
use skep_node::agent::AgentConfig;
use skep_node::routes::Cidr;

use crate::control_plane;

/// Flags of the agent loop, shared by `skep agent` and `skep up`.
#[derive(Debug, clap::Args)]
pub struct AgentFlags {
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's `InternalIP` address (default: the first non-loopback IPv4).
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// Seconds between node heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// First container restart back-off in milliseconds (doubles to 300 s).
    #[arg(long, default_value_t = 10_000)]
    pub restart_backoff_ms: u64,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    /// The per-container shim binary (default: `skep-shim` next to this
    /// `skep` executable).
    #[arg(long)]
    pub shim: Option<PathBuf>,
    /// A registry reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Port of the node's HTTPS endpoint for logs and exec (0: any free one;
    /// the one taken is reported in the Node's status).
    #[arg(long, default_value_t = skep_proto::DEFAULT_KUBELET_PORT)]
    pub kubelet_port: u16,
    /// Where the datapath pins its maps and links (default:
    /// `/sys/fs/bpf/skep/<node>`).
    #[arg(long)]
    pub bpf_pin_dir: Option<PathBuf>,
    /// Entries of each LRU map (conntrack, socket reverse NAT, affinity) when
    /// the maps are created (default: 0.25 % of memory, 16 Ki to 4 Mi).
    #[arg(long)]
    pub bpf_lru_entries: Option<u32>,
    /// The cgroup v2 directory the socket load-balancer attaches to, created
    /// if missing (default: `<cgroup2 mount>/skep/<node>`, where pods live).
    #[arg(long)]
    pub socket_lb_cgroup: Option<PathBuf>,
    /// The Service `ClusterIP` range, routed `unreachable` on the node.
    #[arg(long, default_value = "10.96.0.0/12", value_parser = parse_cidr)]
    pub service_cidr: Cidr,
    /// The cluster DNS Service address pods resolve through.
    #[arg(long, default_value_t = skep_node::agent::DEFAULT_CLUSTER_DNS)]
    pub cluster_dns: Ipv4Addr,
    /// The cluster domain the node's DNS answers for.
    #[arg(long, default_value = "cluster.local", value_parser = parse_domain)]
    pub cluster_domain: String,
    /// Where the node's DNS server listens, UDP and TCP (default:
    /// `<node IP>:53`; port 0 picks a free one).
    #[arg(long)]
    pub dns_listen: Option<std::net::SocketAddr>,
    /// Where Prometheus scrapes `GET /metrics` over plain HTTP (default:
    /// `<node IP>:9962`, Cilium's agent port; `off`: nowhere).
    #[arg(long)]
    pub metrics_listen: Option<skep_node::metrics::MetricsListen>,
}

fn parse_domain(s: &str) -> Result<String, String> {
    skep_dns::Records::build(s, [], [])
        .map(|_| s.trim_end_matches('.').to_owned())
        .map_err(|err| format!("not a DNS domain name ({err}): {s}"))
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s).ok_or_else(|| format!("not an IPv4 CIDR (a.b.c.d/n): {s}"))
}

impl AgentFlags {
    /// The node name: the flag, else the hostname.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_owned())
        })
    }

    /// The shim binary: `--shim`, else `skep-shim` next to this executable.
    pub fn shim(&self) -> anyhow::Result<PathBuf> {
        find_shim(self.shim.as_deref())
    }

    /// The agent configuration for state in `data_dir`.
    pub fn config(&self, data_dir: PathBuf, kubeconfig: PathBuf) -> anyhow::Result<AgentConfig> {
        let mut cfg = AgentConfig::new(&self.node_name(), data_dir, kubeconfig);
        cfg.node_ip = self.node_ip;
        cfg.heartbeat = Duration::from_secs(self.heartbeat_seconds.max(1));
        cfg.backoff_base = Duration::from_millis(self.restart_backoff_ms.max(1));
        cfg.runc.clone_from(&self.runc);
        cfg.insecure_registries
            .clone_from(&self.insecure_registries);
        cfg.kubelet_listen.set_port(self.kubelet_port);
        cfg.shim = self.shim()?;
        let node = self.node_name();
        cfg.bpf_pin_dir = self
            .bpf_pin_dir
            .clone()
            .unwrap_or_else(|| skep_datapath::default_pin_dir(Path::new("/sys/fs/bpf"), &node));
        cfg.socket_lb_cgroup = if let Some(dir) = &self.socket_lb_cgroup {
            dir.clone()
        } else {
            let mounts = preflight::mounts(&preflight::Host::system())?;
            preflight::cgroup2_mount(&mounts)?.join("skep").join(&node)
        };
        cfg.bpf_lru_entries = self.bpf_lru_entries;
        cfg.service_cidr = self.service_cidr;
        cfg.cluster_dns = self.cluster_dns;
        cfg.cluster_domain.clone_from(&self.cluster_domain);
        cfg.dns_listen = self.dns_listen;
        cfg.metrics_listen = self
            .metrics_listen
            .unwrap_or(skep_node::metrics::MetricsListen::NodeIp);
        Ok(cfg)
    }
}

/// The container shim: `flag` if given, else `skep-shim` next to this
/// `skep` executable; an error naming the path when it is not there.
pub fn find_shim(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let shim = match flag {
        Some(shim) => shim.to_owned(),
        None => std::env::current_exe()
            .context("failed to find the skep executable")?
            .with_file_name(skep_runtime::shim::BINARY),
    };
    if !shim.is_file() {
        anyhow::bail!(
            "no container shim at {} (build it beside skep: cargo build -p skep-shim; or pass --shim)",
            shim.display()
        );
    }
    Ok(shim)
}

/// Arguments of `skep agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Node state: images/, pods/, ipam/, runtime/ (runc root), run/.
    #[arg(long, default_value = "/var/lib/skep")]
    data_dir: PathBuf,
    /// The node's kubeconfig (written by the control plane for this node).
    #[arg(long)]
    kubeconfig: PathBuf,
    #[command(flatten)]
    flags: AgentFlags,
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let cfg = args
        .flags
        .config(args.data_dir.clone(), args.kubeconfig.clone())?;
    control_plane::runtime()?.block_on(async {
        skep_node::agent::run(cfg, control_plane::shutdown_signal())
            .await
            .context("node agent failed")
    })
}
