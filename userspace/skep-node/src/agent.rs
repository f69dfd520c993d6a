//! The node agent loop (the kubelet role): registers the Node and keeps its
//! heartbeat, follows the node-sync watch (resuming from the last revision,
//! starting over on GONE), keeps the node's view in memory, and runs one
//! [`crate::worker`] task per pod bound here. On start it adopts what
//! already runs and removes pods that are no longer bound to this node.
//!
//! The agent talks to the control plane only through `skep-proto`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, DaemonEndpoint, Event, EventSource, Node, NodeAddress, NodeCondition,
    NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use skep_proto::v1::node_sync_client::NodeSyncClient;
use skep_proto::v1::watch_event::Type as EventKind;
use skep_proto::v1::write_request::Op;
use skep_proto::v1::{WatchRequest, WriteRequest};
use skep_runtime::cleanup::{self, NodeParts};
use skep_runtime::ipam::Ipam;
use skep_runtime::runtime::{Runtime, RuntimeConfig};
use skep_runtime::sandbox::{SandboxConfig, SandboxManager};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::podspec::Sources;

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

/// What the node knows of the cluster: the kinds the node-sync stream sends.
#[derive(Debug, Default)]
pub struct View {
    /// This node.
    pub node: Option<Node>,
    /// Every Node by name, this one included; other nodes' copies are only
    /// as fresh as their routing facts (pod CIDRs, addresses).
    pub nodes: HashMap<String, Node>,
    /// Pods bound here, by UID.
    pub pods: HashMap<String, Pod>,
    /// Every pod of the cluster (this node's too), by UID, as far as
    /// network policy needs it: metadata (namespace, name, uid, labels),
    /// `spec.nodeName`, `spec.hostNetwork`, the containers' names and
    /// ports, `status.phase`/`podIP`/`podIPs` (node sync's `PodPeer`).
    pub peer_pods: HashMap<String, Pod>,
    /// ConfigMaps by (namespace, name).
    pub config_maps: HashMap<(String, String), ConfigMap>,
    /// Secrets by (namespace, name).
    pub secrets: HashMap<(String, String), Secret>,
    /// PersistentVolumeClaims the pods here use, by (namespace, name).
    pub claims: HashMap<(String, String), PersistentVolumeClaim>,
    /// PersistentVolumes those claims are bound to, by name.
    pub volumes: HashMap<String, PersistentVolume>,
    /// Every Service, by (namespace, name): the datapath and DNS serve them.
    pub services: HashMap<(String, String), Service>,
    /// Every EndpointSlice, by (namespace, name).
    pub endpoint_slices: HashMap<(String, String), EndpointSlice>,
    /// Every Namespace, by name (policy selects namespaces by label).
    pub namespaces: HashMap<String, k8s_openapi::api::core::v1::Namespace>,
    /// Every NetworkPolicy, by (namespace, name).
    pub network_policies: HashMap<(String, String), NetworkPolicy>,
}

/// Inserts or removes one namespaced object of a kind the view keys by
/// (namespace, name); bodies that do not parse are ignored.
fn apply_namespaced<T: serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>>(
    map: &mut HashMap<(String, String), T>,
    deleted: bool,
    object: &[u8],
) {
    let Ok(o) = serde_json::from_slice::<T>(object) else {
        return;
    };
    let m = o.metadata();
    let k = (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    );
    if deleted {
        map.remove(&k);
    } else {
        map.insert(k, o);
    }
}

impl View {
    /// The ConfigMaps, Secrets and claims of `namespace`, and the volumes.
    pub fn sources(&self, namespace: &str) -> Sources {
        Sources {
            claims: self
                .claims
                .iter()
                .filter(|((ns, _), _)| ns == namespace)
                .map(|((_, n), v)| (n.clone(), v.clone()))
                .collect(),
            volumes: self.volumes.clone(),
            config_maps: self
                .config_maps
                .iter()
                .filter(|((ns, _), _)| ns == namespace)
                .map(|((_, n), v)| (n.clone(), v.clone()))
                .collect(),
            secrets: self
                .secrets
                .iter()
                .filter(|((ns, _), _)| ns == namespace)
                .map(|((_, n), v)| (n.clone(), v.clone()))
                .collect(),
        }
    }

    /// Applies one node-sync event; `own` is this node's name.
    fn apply(&mut self, own: &str, kind: &str, deleted: bool, object: &[u8]) {
        match kind {
            "Node" => {
                if let Ok(n) = serde_json::from_slice::<Node>(object) {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    if name == own {
                        self.node = (!deleted).then(|| n.clone());
                    }
                    if deleted {
                        self.nodes.remove(&name);
                    } else {
                        self.nodes.insert(name, n);
                    }
                }
            }
            "Pod" | "PodPeer" => {
                if let Ok(p) = serde_json::from_slice::<Pod>(object) {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    let pods = if kind == "Pod" {
                        &mut self.pods
                    } else {
                        &mut self.peer_pods
                    };
                    if deleted {
                        pods.remove(&uid);
                    } else {
                        pods.insert(uid, p);
                    }
                }
            }
            "ConfigMap" => apply_namespaced(&mut self.config_maps, deleted, object),
            "Secret" => apply_namespaced(&mut self.secrets, deleted, object),
            "PersistentVolumeClaim" => apply_namespaced(&mut self.claims, deleted, object),
            "Service" => apply_namespaced(&mut self.services, deleted, object),
            "EndpointSlice" => apply_namespaced(&mut self.endpoint_slices, deleted, object),
            "NetworkPolicy" => apply_namespaced(&mut self.network_policies, deleted, object),
            "Namespace" => {
                if let Ok(n) =
                    serde_json::from_slice::<k8s_openapi::api::core::v1::Namespace>(object)
                {
                    let k = n.metadata.name.clone().unwrap_or_default();
                    if deleted {
                        self.namespaces.remove(&k);
                    } else {
                        self.namespaces.insert(k, n);
                    }
                }
            }
            "PersistentVolume" => {
                if let Ok(v) = serde_json::from_slice::<PersistentVolume>(object) {
                    let k = v.metadata.name.clone().unwrap_or_default();
                    if deleted {
                        self.volumes.remove(&k);
                    } else {
                        self.volumes.insert(k, v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// What every task of the agent shares.
pub struct Shared {
    /// The configuration.
    pub cfg: AgentConfig,
    /// The node-sync client.
    pub client: NodeSyncClient<Channel>,
    /// The node's view, kept by the watch.
    pub view: Mutex<View>,
    /// The containers.
    pub runtime: Runtime,
    /// Pod network sandboxes.
    pub sandboxes: SandboxManager,
    /// Pod IPs; opened once the node has its pod CIDR.
    pub ipam: OnceLock<Ipam>,
    /// Images.
    pub images: skep_image::Store,
    /// The node's address.
    pub node_ip: Ipv4Addr,
    /// The latest Node object written or watched.
    pub node: Mutex<Option<Node>>,
    /// Woken when a Node changed: the routes to other nodes are re-synced.
    pub nodes_changed: tokio::sync::Notify,
    /// Sends the store revision after every change to a Service,
    /// EndpointSlice, Namespace, NetworkPolicy, local Pod or any pod's
    /// policy facts (`PodPeer`) (and after each
    /// snapshot): the datapath and DNS re-read the view when it moves.
    pub cluster_changed: watch::Sender<u64>,
    /// The loaded eBPF datapath: its programs stay loaded while it lives (TC
    /// attachments made through it too); the socket load-balancer's cgroup
    /// links and the maps are pinned, so they outlive a killed agent.
    pub datapath: Mutex<skep_datapath::Datapath>,
    /// Where the agent's DNS server listens, set once it is bound; the
    /// service sync points the cluster DNS address there.
    pub dns_addr: OnceLock<std::net::SocketAddrV4>,
}

impl Shared {
    /// Where pod `uid`'s files live.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(uid)
    }

    fn pods_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("pods")
    }

    fn run_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("run")
    }

    /// The parts [`cleanup`] works on; `None` before the pod CIDR is known.
    pub fn parts<'a>(
        &'a self,
        pods_dir: &'a std::path::Path,
        run_dir: &'a std::path::Path,
    ) -> Option<NodeParts<'a>> {
        Some(NodeParts {
            runtime: &self.runtime,
            sandboxes: &self.sandboxes,
            ipam: self.ipam.get()?,
            pods_dir,
            run_dir,
            proc_root: std::path::Path::new("/proc"),
            node_netns: None,
        })
    }

    /// Tears pod `uid` down completely (rootfs mounts first).
    pub async fn remove_pod(
        &self,
        uid: &str,
        grace: Duration,
    ) -> Result<(), cleanup::CleanupError> {
        let (pods_dir, run_dir) = (self.pods_dir(), self.run_dir());
        let Some(parts) = self.parts(&pods_dir, &run_dir) else {
            return Ok(());
        };
        // Stop the containers before their root filesystems go away.
        if let Ok(list) = self.runtime.list_pod(uid).await {
            for c in &list {
                let _ = self.runtime.stop(&c.meta.id, grace).await;
            }
        }
        unmount_rootfs_all(&self.pod_dir(uid));
        let ip = parts.ipam.get(uid).ok().flatten();
        crate::endpoints::remove(self, uid, ip);
        cleanup::remove_pod(parts, uid, grace).await
    }

    /// Sends a write; returns the stored object.
    pub async fn write(
        &self,
        op: Op,
        kind: &str,
        namespace: &str,
        name: &str,
        subresource: &str,
        object: Vec<u8>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut client = self.client.clone();
        let resp = client
            .write(WriteRequest {
                op: op.into(),
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                subresource: subresource.to_owned(),
                object,
            })
            .await?;
        Ok(resp.into_inner().object)
    }

    /// Records an Event about `pod` (best effort, in the background).
    pub fn event(self: &Arc<Self>, pod: &Pod, warning: bool, reason: &str, message: String) {
        let now = now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{nanos:x}")),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.cfg.node_name.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.cfg.node_name.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Event::default()
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(body) = serde_json::to_vec(&event) else {
                return;
            };
            if let Err(err) = this.write(Op::Create, "Event", &ns, "", "", body).await {
                tracing::debug!(%err, "failed to record event");
            }
        });
    }
}

/// Unmounts every container rootfs below `<pod_dir>/containers`.
pub fn unmount_rootfs_all(pod_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("containers")) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(err) = skep_image::unmount_rootfs(&entry.path()) {
            tracing::warn!(%err, dir = %entry.path().display(), "failed to unmount rootfs");
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

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok()
}

fn disk_total(path: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks() * st.fragment_size())
}

/// The conditions a healthy node reports, with `now` as heartbeat.
fn conditions(now: Timestamp, old: Option<&[NodeCondition]>) -> Vec<NodeCondition> {
    let mk = |type_: &str, status: &str, reason: &str, message: &str| {
        let transition = old
            .and_then(|o| o.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(transition),
        }
    };
    vec![
        mk(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        mk(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        mk(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        mk(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// The Node this agent registers.
pub fn node_object(cfg: &AgentConfig, node_ip: Ipv4Addr) -> Node {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mem_kib = meminfo_total().unwrap_or(0);
    let disk = disk_total(&cfg.data_dir).unwrap_or(0);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let resources: std::collections::BTreeMap<String, Quantity> = [
        ("cpu", cpus.to_string()),
        ("memory", format!("{mem_kib}Ki")),
        ("pods", "110".to_owned()),
        ("ephemeral-storage", disk.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v)))
    .collect();
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", cfg.node_name.as_str()),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", arch),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: node_ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: cfg.node_name.clone(),
                },
            ]),
            conditions: Some(conditions(now(), None)),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(cfg.kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch.into(),
                operating_system: "linux".into(),
                kernel_version: kernel,
                os_image: "Debian GNU/Linux".into(),
                container_runtime_version: "runc://skep".into(),
                kubelet_version: format!("v1.32.0-skep.{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                machine_id: machine_id.clone(),
                system_uuid: machine_id,
                boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            }),
            ..NodeStatus::default()
        }),
    }
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
    let sandboxes = SandboxManager::new(SandboxConfig {
        run_dir: cfg.data_dir.join("run"),
        proc_root: "/proc".into(),
        node_netns: None,
    });
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
    let shared = Arc::new(Shared {
        cfg,
        client,
        view: Mutex::new(View::default()),
        runtime,
        sandboxes,
        ipam: OnceLock::new(),
        images,
        node_ip,
        node: Mutex::new(None),
        nodes_changed: tokio::sync::Notify::new(),
        cluster_changed: watch::Sender::new(0),
        datapath: Mutex::new(datapath),
        dns_addr: OnceLock::new(),
    });
    tracing::info!(%node_ip, "node agent starting");
    crate::endpoints::attach_underlay(&shared, node_ip);
    let heartbeat = tokio::spawn(heartbeat_loop(Arc::clone(&shared)));
    let sync = tokio::spawn(sync_loop(Arc::clone(&shared)));
    let routes = tokio::spawn(route_loop(Arc::clone(&shared)));
    let dns = tokio::spawn(crate::dns::run(Arc::clone(&shared)));
    let services = tokio::spawn(crate::services::sync_loop(Arc::clone(&shared)));
    let policy = tokio::spawn(crate::policy::sync_loop(Arc::clone(&shared)));
    let metrics = tokio::spawn(crate::metrics::serve(Arc::clone(&shared)));
    let server = node_server.map(|s| tokio::spawn(s.serve(Arc::clone(&shared))));
    shutdown.await;
    heartbeat.abort();
    sync.abort();
    routes.abort();
    dns.abort();
    services.abort();
    policy.abort();
    metrics.abort();
    if let Some(server) = server {
        server.abort();
    }
    tracing::info!("node agent stopped; pods keep running");
    Ok(())
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

/// The node's view, locked.
pub(crate) fn lock_view(shared: &Shared) -> std::sync::MutexGuard<'_, View> {
    lock(&shared.view)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers the Node, then refreshes its heartbeat every `cfg.heartbeat`.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let name = shared.cfg.node_name.clone();
    loop {
        let node = node_object(&shared.cfg, shared.node_ip);
        let body = serde_json::to_vec(&node).unwrap_or_default();
        match shared.write(Op::Create, "Node", "", &name, "", body).await {
            Ok(obj) => {
                tracing::info!("node registered");
                *lock(&shared.node) = serde_json::from_slice(&obj).ok();
                break;
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                tracing::info!("node already registered");
                break;
            }
            Err(err) => {
                tracing::warn!(%err, "failed to register node; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(shared.cfg.heartbeat).await;
        }
        first = false;
        for _ in 0..5 {
            let current = lock(&shared.view)
                .node
                .clone()
                .or_else(|| lock(&shared.node).clone());
            let Some(mut node) = current else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let fresh = node_object(&shared.cfg, shared.node_ip);
            let status = node.status.get_or_insert_default();
            let old = status.conditions.take();
            let fresh_status = fresh.status.unwrap_or_default();
            status.conditions = Some(conditions(now(), old.as_deref()));
            status.capacity = fresh_status.capacity;
            status.allocatable = fresh_status.allocatable;
            status.addresses = fresh_status.addresses;
            status.node_info = fresh_status.node_info;
            status.daemon_endpoints = fresh_status.daemon_endpoints;
            let body = serde_json::to_vec(&node).unwrap_or_default();
            match shared
                .write(Op::Update, "Node", "", &name, "status", body)
                .await
            {
                Ok(obj) => {
                    *lock(&shared.node) = serde_json::from_slice(&obj).ok();
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, "heartbeat write failed; retrying from the watched copy");
                    // A conflict: the watch brings the newer copy soon.
                    *lock(&shared.node) = None;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

/// A running pod worker.
struct WorkerHandle {
    tx: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

/// Follows the node-sync stream and drives the pod workers.
async fn sync_loop(shared: Arc<Shared>) {
    let mut revision = 0u64;
    let mut backoff = Duration::from_millis(200);
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut synced_once = false;
    loop {
        let mut client = shared.client.clone();
        let req = WatchRequest {
            node_name: shared.cfg.node_name.clone(),
            from_revision: revision,
        };
        let mut in_snapshot = revision == 0;
        let snapshot = in_snapshot;
        let mut fresh = View::default();
        match client.watch(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                backoff = Duration::from_millis(200);
                loop {
                    let ev = match stream.message().await {
                        Ok(Some(ev)) => ev,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(%err, "node-sync stream failed");
                            break;
                        }
                    };
                    let kind = EventKind::try_from(ev.r#type).unwrap_or(EventKind::Bookmark);
                    match kind {
                        EventKind::Gone => {
                            tracing::info!("revision compacted; taking a fresh snapshot");
                            revision = 0;
                            break;
                        }
                        EventKind::Bookmark => revision = revision.max(ev.revision),
                        EventKind::Synced => {
                            revision = revision.max(ev.revision);
                            if in_snapshot {
                                let mut view = lock(&shared.view);
                                *view = std::mem::take(&mut fresh);
                                if let Some(n) = &view.node {
                                    *lock(&shared.node) = Some(n.clone());
                                }
                                in_snapshot = false;
                            }
                            tracing::info!(revision, "node view synced");
                            shared.nodes_changed.notify_one();
                            shared.cluster_changed.send_replace(revision);
                            if !synced_once || snapshot {
                                tokio::spawn(remove_orphans(Arc::clone(&shared)));
                                synced_once = true;
                            }
                            reconcile(&shared, &mut workers);
                        }
                        EventKind::Added | EventKind::Modified | EventKind::Deleted => {
                            revision = revision.max(ev.revision);
                            let deleted = kind == EventKind::Deleted;
                            if in_snapshot {
                                fresh.apply(&shared.cfg.node_name, &ev.kind, deleted, &ev.object);
                                continue;
                            }
                            {
                                let mut view = lock(&shared.view);
                                view.apply(&shared.cfg.node_name, &ev.kind, deleted, &ev.object);
                                if ev.kind == "Node"
                                    && let Some(n) = &view.node
                                {
                                    *lock(&shared.node) = Some(n.clone());
                                }
                            }
                            if ev.kind == "Node" {
                                shared.nodes_changed.notify_one();
                            }
                            if matches!(
                                ev.kind.as_str(),
                                "Service"
                                    | "EndpointSlice"
                                    | "Namespace"
                                    | "NetworkPolicy"
                                    | "Pod"
                                    | "PodPeer"
                            ) {
                                shared.cluster_changed.send_replace(revision);
                            }
                            // Other nodes' pods come and go often in a big
                            // cluster; they concern no worker here.
                            if ev.kind != "PodPeer" {
                                reconcile(&shared, &mut workers);
                            }
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "failed to open the node-sync stream"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Keeps the routes to other nodes' pod CIDRs ([`crate::routes`]) in step
/// with the Nodes in the view: after every Node change, and every 30 s
/// against routes someone else removed; the Service CIDR's `unreachable`
/// route likewise. Turns on IPv4 forwarding first.
async fn route_loop(shared: Arc<Shared>) {
    const RESYNC: Duration = Duration::from_secs(30);
    const RETRY: Duration = Duration::from_secs(2);
    let table = loop {
        match crate::routes::NetlinkRoutes::connect() {
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
    let mut wait = RESYNC;
    loop {
        let service_cidr = shared.cfg.service_cidr;
        if let Err(err) = table.replace_unreachable(service_cidr).await {
            tracing::error!(?err, %service_cidr, "failed to route the service CIDR unreachable");
        }
        let _ = tokio::time::timeout(wait, shared.nodes_changed.notified()).await;
        let desired = {
            let view = lock(&shared.view);
            crate::routes::desired(&shared.cfg.node_name, view.nodes.values())
        };
        wait = match crate::routes::sync(&table, &desired).await {
            Ok(report) if report.failed.is_empty() => RESYNC,
            Ok(_) => RETRY,
            Err(err) => {
                tracing::warn!(?err, "failed to read node routes; retrying");
                RETRY
            }
        };
    }
}

/// Removes pods that have state on this node but are no longer bound here.
async fn remove_orphans(shared: Arc<Shared>) {
    wait_for_ipam(&shared).await;
    let mut on_disk: HashSet<String> = HashSet::new();
    if let Ok(list) = shared.runtime.list().await {
        on_disk.extend(list.into_iter().map(|c| c.meta.pod_uid));
    }
    if let Some(ipam) = shared.ipam.get()
        && let Ok(ips) = ipam.allocated()
    {
        on_disk.extend(ips.into_iter().map(|(_, uid)| uid));
    }
    if let Ok(entries) = std::fs::read_dir(shared.pods_dir()) {
        on_disk.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned)),
        );
    }
    // Read after listing: a pod's state only exists once it was in the view.
    let bound: HashSet<String> = lock(&shared.view).pods.keys().cloned().collect();
    for uid in on_disk {
        if bound.contains(&uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, "removing pod no longer bound to this node");
        if let Err(err) = shared.remove_pod(&uid, Duration::from_secs(2)).await {
            tracing::warn!(pod_uid = %uid, %err, "failed to remove orphaned pod");
        }
    }
    // The routing datapath keeps only the pods that are left.
    if let Some(ipam) = shared.ipam.get()
        && let Ok(ips) = ipam.allocated()
    {
        crate::endpoints::reconcile(&shared, &ips.into_iter().collect());
    }
}

/// Waits until the node has a pod CIDR and opens the IPAM on it.
pub async fn wait_for_ipam(shared: &Arc<Shared>) {
    loop {
        if shared.ipam.get().is_some() {
            return;
        }
        let cidr = lock(&shared.view)
            .node
            .as_ref()
            .or(lock(&shared.node).as_ref())
            .and_then(|n| n.spec.as_ref()?.pod_cidr.clone());
        if let Some(cidr) = cidr {
            match Ipam::open(shared.cfg.data_dir.join("ipam"), &cidr) {
                Ok(ipam) => {
                    tracing::info!(%cidr, "pod CIDR assigned");
                    let _ = shared.ipam.set(ipam);
                    return;
                }
                Err(err) => tracing::error!(%err, %cidr, "failed to open IPAM"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Hands every worker its pod's latest desired state; starts and ends workers.
fn reconcile(shared: &Arc<Shared>, workers: &mut HashMap<String, WorkerHandle>) {
    let pods = lock(&shared.view).pods.clone();
    for (uid, pod) in &pods {
        if let Some(w) = workers.get(uid)
            && !w.task.is_finished()
        {
            // Wake only the workers whose pod changed: every event of the
            // stream lands here, and a woken worker looks at its containers.
            w.tx.send_if_modified(|current| {
                let same = current.as_ref().is_some_and(|c| {
                    c.metadata.resource_version == pod.metadata.resource_version
                        && c.metadata.resource_version.is_some()
                });
                if !same {
                    *current = Some(pod.clone());
                }
                !same
            });
            continue;
        }
        if workers.get(uid).is_some_and(|w| w.task.is_finished()) {
            // The worker finished (pod deleted): do not restart it for a stale copy.
            continue;
        }
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let task = tokio::spawn(crate::worker::run(Arc::clone(shared), uid.clone(), rx));
        workers.insert(uid.clone(), WorkerHandle { tx, task });
    }
    workers.retain(|uid, w| {
        if pods.contains_key(uid) {
            return true;
        }
        w.tx.send_replace(None);
        // Keep the handle until its task has torn the pod down.
        !w.task.is_finished()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_object_has_what_the_scheduler_needs() {
        let cfg = AgentConfig::new("n1", std::env::temp_dir(), "/nonexistent".into());
        let node = node_object(&cfg, Ipv4Addr::new(10, 0, 0, 1));
        let status = node.status.unwrap_or_default();
        let cap = status.capacity.unwrap_or_default();
        assert_eq!(cap.get("pods").map(|q| q.0.as_str()), Some("110"));
        assert!(
            cap.get("memory")
                .is_some_and(|q| q.0.ends_with("Ki") && q.0 != "0Ki")
        );
        assert!(cap.contains_key("cpu") && cap.contains_key("ephemeral-storage"));
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("kubernetes.io/hostname").map(String::as_str),
            Some("n1")
        );
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let conds = status.conditions.unwrap_or_default();
        let types: Vec<_> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let addrs = status.addresses.unwrap_or_default();
        assert_eq!(addrs[0].address, "10.0.0.1");
    }

    #[test]
    fn transition_times_survive_heartbeats() {
        let t0 = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let first = conditions(t0, None);
        let t1 = Timestamp::from_second(2_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let second = conditions(t1, Some(&first));
        let ready = second.iter().find(|c| c.type_ == "Ready");
        assert_eq!(
            ready.and_then(|c| c.last_transition_time.clone()),
            Some(Time(t0))
        );
        assert_eq!(
            ready.and_then(|c| c.last_heartbeat_time.clone()),
            Some(Time(t1))
        );
    }

    #[test]
    fn view_keeps_every_node_and_knows_its_own() {
        let mut view = View::default();
        let n1 = br#"{"metadata":{"name":"n1"},"spec":{"podCIDR":"10.244.1.0/24"}}"#;
        let n2 = br#"{"metadata":{"name":"n2"},"spec":{"podCIDR":"10.244.2.0/24"}}"#;
        view.apply("n1", "Node", false, n1);
        view.apply("n1", "Node", false, n2);
        assert_eq!(
            view.node.as_ref().and_then(|n| n.metadata.name.as_deref()),
            Some("n1")
        );
        assert_eq!(view.nodes.len(), 2);
        view.apply("n1", "Node", true, n2);
        assert!(view.node.is_some());
        assert_eq!(view.nodes.keys().collect::<Vec<_>>(), ["n1"]);
    }

    #[test]
    fn view_tracks_the_cluster_wide_kinds() {
        let mut view = View::default();
        let svc = br#"{"metadata":{"name":"web","namespace":"a"},"spec":{"ports":[{"port":80}]}}"#;
        view.apply("n1", "Service", false, svc);
        view.apply(
            "n1",
            "EndpointSlice",
            false,
            br#"{"metadata":{"name":"web-x","namespace":"a"},"addressType":"IPv4","endpoints":[]}"#,
        );
        view.apply("n1", "Namespace", false, br#"{"metadata":{"name":"a"}}"#);
        view.apply(
            "n1",
            "NetworkPolicy",
            false,
            br#"{"metadata":{"name":"deny","namespace":"a"},"spec":{"podSelector":{}}}"#,
        );
        view.apply("n1", "Service", false, b"not json");
        let key = ("a".to_owned(), "web".to_owned());
        assert!(view.services.contains_key(&key));
        assert_eq!(view.endpoint_slices.len(), 1);
        assert!(view.namespaces.contains_key("a"));
        assert_eq!(view.network_policies.len(), 1);
        view.apply("n1", "Service", true, svc);
        assert!(view.services.is_empty());
    }

    #[test]
    fn view_tracks_pods_and_sources() {
        let mut view = View::default();
        let pod = br#"{"metadata":{"name":"p","namespace":"a","uid":"u1"}}"#;
        view.apply("n1", "Pod", false, pod);
        view.apply(
            "n1",
            "ConfigMap",
            false,
            br#"{"metadata":{"name":"c","namespace":"a"},"data":{"k":"v"}}"#,
        );
        view.apply(
            "n1",
            "ConfigMap",
            false,
            br#"{"metadata":{"name":"c","namespace":"b"}}"#,
        );
        view.apply(
            "n1",
            "PersistentVolumeClaim",
            false,
            br#"{"metadata":{"name":"data","namespace":"a"},"spec":{"volumeName":"pv1"}}"#,
        );
        view.apply(
            "n1",
            "PersistentVolume",
            false,
            br#"{"metadata":{"name":"pv1"},"spec":{"hostPath":{"path":"/srv"}}}"#,
        );
        assert!(view.pods.contains_key("u1"));
        assert_eq!(view.sources("a").config_maps.len(), 1);
        assert_eq!(view.sources("a").claims.len(), 1);
        assert!(view.sources("b").claims.is_empty());
        assert!(view.sources("a").volumes.contains_key("pv1"));
        view.apply(
            "n1",
            "PersistentVolume",
            true,
            br#"{"metadata":{"name":"pv1"}}"#,
        );
        assert!(view.volumes.is_empty());
        view.apply("n1", "Pod", true, pod);
        assert!(view.pods.is_empty());
    }

    #[test]
    fn view_keeps_every_pods_policy_facts_apart_from_its_own_pods() {
        let mut view = View::default();
        let peer = br#"{"metadata":{"name":"p","namespace":"a","uid":"u2","labels":{"app":"db"}},
            "spec":{"nodeName":"n2","containers":[{"name":"c","ports":[{"name":"sql","containerPort":5432}]}]},
            "status":{"podIP":"10.244.2.5"}}"#;
        view.apply("n1", "PodPeer", false, peer);
        assert!(view.pods.is_empty());
        let got = view.peer_pods.get("u2").and_then(|p| p.status.as_ref());
        assert_eq!(got.and_then(|s| s.pod_ip.as_deref()), Some("10.244.2.5"));
        view.apply("n1", "PodPeer", true, peer);
        assert!(view.peer_pods.is_empty());
    }
}
