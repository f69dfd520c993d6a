//! Pod network sandboxes: a named network namespace per pod, wired to the
//! node namespace by a veth pair, Calico style.
//!
//! Layout: the namespace is bind-mounted at `<run_dir>/netns/<pod-uid>`
//! (`run_dir` is normally `/run/skep/<node>`; not `/run/netns`, so several
//! test nodes on one machine never see each other's pods). The host end of
//! the veth is `skep<11 hex of FNV-1a(uid)>` and stays in the node namespace
//! with `proxy_arp=1` and a route `<podIP>/32 dev skepXXXX`; the pod end is
//! `eth0` with `<podIP>/32` and `default via 169.254.1.1 dev eth0 onlink`.
//! The pod also gets a permanent neighbour entry for 169.254.1.1 pointing at
//! the host end's MAC, so the gateway resolves even when the node namespace
//! has no route covering 169.254.1.1 (proxy ARP needs one).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{self, NetnsError};
use crate::timing;

/// The link-local gateway every pod routes through.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Errors from sandbox setup and teardown.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Namespace creation, entry or removal failed.
    #[error("failed to handle network namespace of pod {uid}")]
    Netns {
        /// Pod UID.
        uid: String,
        /// Underlying error.
        #[source]
        source: NetnsError,
    },
    /// A netlink request failed.
    #[error("failed to {op} for pod {uid}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// Pod UID.
        uid: String,
        /// Underlying error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link expected to exist was not found.
    #[error("failed to find link {name} for pod {uid}")]
    MissingLink {
        /// Link name.
        name: String,
        /// Pod UID.
        uid: String,
    },
    /// A file (sysctl, /etc/hosts …) could not be written.
    #[error("failed to {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

/// Where sandboxes live and which host roots they use.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Per-node run directory; namespaces go in `<run_dir>/netns/`.
    pub run_dir: PathBuf,
    /// procfs mount, normally `/proc` (sysctls are written under it).
    pub proc_root: PathBuf,
    /// The node's network namespace, or `None` for the caller's own.
    pub node_netns: Option<PathBuf>,
}

/// What a created sandbox is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// Bind-mounted network namespace file (give it to the OCI runtime).
    pub netns_path: PathBuf,
    /// Host-side veth name in the node namespace.
    pub host_veth: String,
    /// Pod IP on `eth0`.
    pub ip: Ipv4Addr,
    /// Index of the host-side veth in the node namespace.
    pub host_ifindex: u32,
    /// MAC of the host-side veth (the pod's gateway neighbour).
    pub host_mac: [u8; 6],
    /// MAC of the pod's `eth0`.
    pub pod_mac: [u8; 6],
}

/// Creates and tears down pod network sandboxes.
#[derive(Debug, Clone)]
pub struct SandboxManager {
    cfg: SandboxConfig,
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn short_hash(uid: &str) -> String {
    let mut s = String::with_capacity(16);
    let _ = write!(s, "{:016x}", fnv1a(uid.as_bytes()));
    s.truncate(11);
    s
}

/// The host-side veth name for pod `uid` (`skep` + 11 hex digits, 15 chars).
pub fn host_veth_name(uid: &str) -> String {
    format!("skep{}", short_hash(uid))
}

/// The pod end's name inside the pod namespace.
const POD_IFNAME: &str = "eth0";

/// The temporary name earlier agents gave the pod end before they moved it
/// into the pod namespace and renamed it `eth0` (cleared with leftovers).
fn peer_veth_name(uid: &str) -> String {
    format!("skpp{}", short_hash(uid))
}

fn netlink_err(op: &'static str, uid: &str) -> impl FnOnce(rtnetlink::Error) -> SandboxError {
    let uid = uid.to_owned();
    move |source| SandboxError::Netlink { op, uid, source }
}

/// Whether a netlink error is "no such device/entry" (ENODEV/ENOENT/ESRCH).
fn is_not_found(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg)
        if matches!(msg.raw_code().abs(), libc::ENODEV | libc::ENOENT | libc::ESRCH))
}

async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => mac.as_slice().try_into().ok(),
        _ => None,
    })
}

fn connect(uid: &str) -> Result<Handle, SandboxError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| SandboxError::Io {
        op: "open netlink socket",
        path: PathBuf::from(uid),
        source,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn delete_link_if_present(
    handle: &Handle,
    name: &str,
    uid: &str,
) -> Result<bool, SandboxError> {
    let Some(link) = link_by_name(handle, name)
        .await
        .map_err(netlink_err("look up link", uid))?
    else {
        return Ok(false);
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(netlink_err("delete link", uid)(e)),
    }
}

impl SandboxManager {
    /// A manager using `cfg`.
    pub fn new(cfg: SandboxConfig) -> Self {
        Self { cfg }
    }

    /// Where pod `uid`'s network namespace is bind-mounted.
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.cfg.run_dir.join("netns").join(uid)
    }

    /// The directory holding all pod namespace files of this node.
    pub fn netns_dir(&self) -> PathBuf {
        self.cfg.run_dir.join("netns")
    }

    /// Builds pod `uid`'s sandbox with address `ip`. Leftovers of an earlier
    /// half-built attempt are torn down first. On failure, whatever was built
    /// is removed again.
    #[tracing::instrument(skip_all, fields(pod_uid = %uid, %ip))]
    pub async fn create(&self, uid: &str, ip: Ipv4Addr) -> Result<PodNetwork, SandboxError> {
        let began = Instant::now();
        // The namespace is made first and removed last: without its file
        // there is nothing of an earlier attempt to clear.
        if self.netns_path(uid).exists() {
            self.teardown(uid).await?;
            timing::phase("sandbox_clear", began);
        }
        match self.build(uid, ip).await {
            Ok(net) => {
                timing::phase("sandbox", began);
                tracing::info!(host_veth = %net.host_veth, "pod sandbox ready");
                Ok(net)
            }
            Err(err) => {
                tracing::warn!(%err, "pod sandbox setup failed, tearing down");
                if let Err(cleanup) = self.teardown(uid).await {
                    tracing::error!(err = %cleanup, "failed to clean up half-built sandbox");
                }
                Err(err)
            }
        }
    }

    async fn build(&self, uid: &str, ip: Ipv4Addr) -> Result<PodNetwork, SandboxError> {
        let netns_path = self.netns_path(uid);
        let host = host_veth_name(uid);
        let began = Instant::now();
        netns::create(&netns_path, &self.cfg.proc_root).map_err(|source| SandboxError::Netns {
            uid: uid.to_owned(),
            source,
        })?;
        timing::phase("netns", began);
        let began = Instant::now();

        // Node side: veth pair (the pod end made in the pod namespace),
        // proxy_arp, host route.
        let (host_ifindex, host_mac) = {
            let (uid, host, proc_root) = (uid.to_owned(), host.clone(), self.cfg.proc_root.clone());
            let ns = netns_path.clone();
            self.in_node(uid.clone(), move || node_side(uid, host, ns, proc_root, ip))
                .await?
        };

        timing::phase("veth_node_side", began);
        let began = Instant::now();
        // Pod side: lo, eth0's address, gateway neighbour, default route.
        let uid2 = uid.to_owned();
        let run = netns::run_in(Some(netns_path.clone()), move || {
            pod_side(uid2, ip, host_mac.to_vec())
        })
        .await;
        let pod_mac = flatten(uid, run)?;
        timing::phase("veth_pod_side", began);

        Ok(PodNetwork {
            netns_path,
            host_veth: host,
            ip,
            host_ifindex,
            host_mac,
            pod_mac,
        })
    }

    async fn in_node<F, Fut, T>(&self, uid: String, f: F) -> Result<T, SandboxError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SandboxError>>,
        T: Send + 'static,
    {
        let run = netns::run_in(self.cfg.node_netns.clone(), f).await;
        flatten(&uid, run)
    }

    /// What pod `uid`'s existing sandbox (built by an earlier agent) is made
    /// of, or `None` if its veth or namespace is missing.
    pub async fn inspect(
        &self,
        uid: &str,
        ip: Ipv4Addr,
    ) -> Result<Option<PodNetwork>, SandboxError> {
        let netns_path = self.netns_path(uid);
        if !netns_path.exists() {
            return Ok(None);
        }
        let host = host_veth_name(uid);
        let (owned, name) = (uid.to_owned(), host.clone());
        let host_side = self
            .in_node(owned.clone(), move || async move {
                let handle = connect(&owned)?;
                let link = link_by_name(&handle, &name)
                    .await
                    .map_err(netlink_err("look up host veth", &owned))?;
                Ok(link.and_then(|l| Some((l.header.index, link_mac(&l)?))))
            })
            .await?;
        let Some((host_ifindex, host_mac)) = host_side else {
            return Ok(None);
        };
        let owned = uid.to_owned();
        let run = netns::run_in(Some(netns_path.clone()), move || async move {
            let handle = connect(&owned)?;
            let link = link_by_name(&handle, "eth0")
                .await
                .map_err(netlink_err("look up pod eth0", &owned))?;
            Ok(link.as_ref().and_then(link_mac))
        })
        .await;
        let Some(pod_mac) = flatten(uid, run)? else {
            return Ok(None);
        };
        Ok(Some(PodNetwork {
            netns_path,
            host_veth: host,
            ip,
            host_ifindex,
            host_mac,
            pod_mac,
        }))
    }

    /// Removes pod `uid`'s veth (and with it the host route), namespace and
    /// its bind mount. Safe on a half-built or already removed sandbox.
    #[tracing::instrument(skip_all, fields(pod_uid = %uid))]
    pub async fn teardown(&self, uid: &str) -> Result<(), SandboxError> {
        let host = host_veth_name(uid);
        let peer = peer_veth_name(uid);
        let owned = uid.to_owned();
        let removed = self
            .in_node(owned.clone(), move || async move {
                let handle = connect(&owned)?;
                let a = delete_link_if_present(&handle, &host, &owned).await?;
                let b = delete_link_if_present(&handle, &peer, &owned).await?;
                Ok(a || b)
            })
            .await?;
        if removed {
            tracing::debug!("removed pod veth");
        }
        netns::remove(&self.netns_path(uid)).map_err(|source| SandboxError::Netns {
            uid: uid.to_owned(),
            source,
        })
    }
}

/// Node-side half of a sandbox, run in the node namespace: the veth pair,
/// host end up, its pod end made as `eth0` right in the pod namespace (one
/// request: no move, which waits for an RCU grace period, and no rename),
/// `proxy_arp`, host route. Returns the host end's index and MAC address.
async fn node_side(
    uid: String,
    host: String,
    ns: PathBuf,
    proc_root: PathBuf,
    ip: Ipv4Addr,
) -> Result<(u32, [u8; 6]), SandboxError> {
    let handle = connect(&uid)?;
    enable_forwarding(&proc_root)?;
    let ns_file = fs::File::open(&ns).map_err(|source| SandboxError::Io {
        op: "open namespace file",
        path: ns.clone(),
        source,
    })?;
    // Not `up` here: a veth end cannot open before its peer is linked
    // (ENOTCONN); the pod side brings it up.
    let pod_end = LinkUnspec::new_with_name(POD_IFNAME)
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    handle
        .link()
        .add(
            LinkVeth::new(&host, POD_IFNAME)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(pod_end)))
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink_err("create veth pair", &uid))?;
    write_sysctl(
        &proc_root.join(format!("sys/net/ipv4/conf/{host}/proxy_arp")),
        "1",
    )?;
    let link = link_by_name(&handle, &host)
        .await
        .map_err(netlink_err("look up host veth", &uid))?
        .ok_or_else(|| SandboxError::MissingLink {
            name: host.clone(),
            uid: uid.clone(),
        })?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(ip, 32)
                .output_interface(link.header.index)
                .scope(rtnetlink::packet_route::route::RouteScope::Link)
                .build(),
        )
        .replace()
        .execute()
        .await
        .map_err(netlink_err("add host route to pod", &uid))?;
    let mac = link_mac(&link).ok_or_else(|| SandboxError::MissingLink {
        name: format!("{host} (mac)"),
        uid: uid.clone(),
    })?;
    Ok((link.header.index, mac))
}

/// Pod-side half of a sandbox, run in the pod namespace: lo up, the pod IP
/// on `eth0`, `eth0` up, gateway neighbour, default route. Returns `eth0`'s MAC
/// address.
async fn pod_side(uid: String, ip: Ipv4Addr, host_mac: Vec<u8>) -> Result<[u8; 6], SandboxError> {
    let handle = connect(&uid)?;
    handle
        .link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .map_err(netlink_err("bring lo up", &uid))?;
    let link = link_by_name(&handle, POD_IFNAME)
        .await
        .map_err(netlink_err("look up pod veth", &uid))?
        .ok_or_else(|| SandboxError::MissingLink {
            name: POD_IFNAME.to_owned(),
            uid: uid.clone(),
        })?;
    let index = link.header.index;
    handle
        .address()
        .add(index, IpAddr::V4(ip), 32)
        .execute()
        .await
        .map_err(netlink_err("add pod address", &uid))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink_err("bring eth0 up", &uid))?;
    handle
        .neighbours()
        .add(index, IpAddr::V4(POD_GATEWAY))
        .link_layer_address(&host_mac)
        .state(NeighbourState::Permanent)
        .execute()
        .await
        .map_err(netlink_err("add gateway neighbour", &uid))?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(POD_GATEWAY)
                .output_interface(index)
                .onlink()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink_err("add default route", &uid))?;
    link_mac(&link).ok_or_else(|| SandboxError::MissingLink {
        name: format!("{POD_IFNAME} (mac)"),
        uid,
    })
}

fn flatten<T>(
    uid: &str,
    run: Result<Result<T, SandboxError>, NetnsError>,
) -> Result<T, SandboxError> {
    run.map_err(|source| SandboxError::Netns {
        uid: uid.to_owned(),
        source,
    })?
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(|source| SandboxError::Io {
        op: "write sysctl",
        path: path.to_owned(),
        source,
    })
}

/// Turns on IPv4 forwarding in the (node) namespace of the calling thread:
/// pod-to-pod traffic is routed through the node.
pub fn enable_forwarding(proc_root: &Path) -> Result<(), SandboxError> {
    let path = proc_root.join("sys/net/ipv4/ip_forward");
    if fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    write_sysctl(&path, "1")
}

/// DNS settings written into a pod's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    /// `nameserver` lines.
    pub nameservers: Vec<IpAddr>,
    /// `search` domains.
    pub searches: Vec<String>,
    /// `options` (e.g. `ndots:5`).
    pub options: Vec<String>,
}

/// Paths of the per-pod files to bind-mount into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    /// The pod's `/etc/hosts`.
    pub hosts: PathBuf,
    /// The pod's `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// Writes `hosts`, `resolv.conf` and `hostname` for a pod into `dir`
/// (replaced atomically, not synced: they are written again with every
/// sandbox).
pub fn write_pod_files(
    dir: &Path,
    hostname: &str,
    ip: Ipv4Addr,
    dns: &DnsConfig,
) -> Result<PodFiles, SandboxError> {
    let began = Instant::now();
    let io_err = |op, path: &Path| {
        let path = path.to_owned();
        move |source| SandboxError::Io { op, path, source }
    };
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let hosts = dir.join("hosts");
    let contents = format!(
        "# Kubernetes-managed hosts file (skep).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
    );
    crate::files::write_replace(&hosts, contents.as_bytes()).map_err(io_err("write", &hosts))?;
    let resolv_conf = dir.join("resolv.conf");
    let mut contents = String::new();
    for ns in &dns.nameservers {
        let _ = writeln!(contents, "nameserver {ns}");
    }
    if !dns.searches.is_empty() {
        let _ = writeln!(contents, "search {}", dns.searches.join(" "));
    }
    if !dns.options.is_empty() {
        let _ = writeln!(contents, "options {}", dns.options.join(" "));
    }
    crate::files::write_replace(&resolv_conf, contents.as_bytes())
        .map_err(io_err("write", &resolv_conf))?;
    // /etc/hostname, as the kubelet mounts it.
    let hostname_file = dir.join("hostname");
    crate::files::write_replace(&hostname_file, format!("{hostname}\n").as_bytes())
        .map_err(io_err("write", &hostname_file))?;
    timing::phase("pod_files", began);
    Ok(PodFiles { hosts, resolv_conf })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_short_and_stable() {
        let a = host_veth_name("7c1f4b2e-0000-4000-8000-000000000001");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("skep"));
        assert_eq!(a, host_veth_name("7c1f4b2e-0000-4000-8000-000000000001"));
        assert_ne!(a, host_veth_name("7c1f4b2e-0000-4000-8000-000000000002"));
        assert_eq!(peer_veth_name("x").len(), 15);
        // FNV-1a test vector: stable across releases.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn pod_files_content() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let files = write_pod_files(
            dir.path(),
            "web-0",
            Ipv4Addr::new(10, 244, 3, 7),
            &DnsConfig {
                nameservers: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))],
                searches: vec![
                    "default.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            },
        )?;
        let hosts = fs::read_to_string(&files.hosts)?;
        assert!(hosts.contains("10.244.3.7\tweb-0\n"), "{hosts}");
        assert!(hosts.contains("127.0.0.1\tlocalhost"));
        assert_eq!(
            fs::read_to_string(&files.resolv_conf)?,
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        Ok(())
    }
}
