//! Removing a whole pod (containers, cgroups, sandbox, IP, state) and
//! listing whatever a node left behind.

use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;

use crate::ipam::{Ipam, IpamError};
use crate::netns::{self, NetnsError};
use crate::runtime::{Runtime, RuntimeError};
use crate::sandbox::{SandboxError, SandboxManager};

/// Errors from pod removal and leftover listing.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// A container could not be stopped or removed.
    #[error("failed to remove containers of pod {uid}")]
    Runtime {
        /// Pod UID.
        uid: String,
        /// Underlying error.
        #[source]
        source: Box<RuntimeError>,
    },
    /// The network sandbox could not be torn down.
    #[error("failed to tear down sandbox of pod {uid}")]
    Sandbox {
        /// Pod UID.
        uid: String,
        /// Underlying error.
        #[source]
        source: Box<SandboxError>,
    },
    /// The IP allocation could not be released or listed.
    #[error("failed to handle ip allocation of pod {uid}")]
    Ipam {
        /// Pod UID (empty when listing).
        uid: String,
        /// Underlying error.
        #[source]
        source: IpamError,
    },
    /// A directory could not be read or removed.
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
    /// Listing links in the node namespace failed.
    #[error("failed to list links in the node namespace")]
    Links {
        /// Underlying error.
        #[source]
        source: NetnsError,
    },
    /// A netlink dump failed.
    #[error("failed to dump links")]
    Netlink {
        /// Underlying error.
        #[source]
        source: rtnetlink::Error,
    },
}

/// The parts of one node that hold pod state.
#[derive(Debug, Clone, Copy)]
pub struct NodeParts<'a> {
    /// Container runtime.
    pub runtime: &'a Runtime,
    /// Network sandboxes.
    pub sandboxes: &'a SandboxManager,
    /// Pod IP allocations.
    pub ipam: &'a Ipam,
    /// Directory holding one subdirectory per pod (`hosts`, `resolv.conf`,
    /// volumes …), named by pod UID.
    pub pods_dir: &'a Path,
    /// The node's run directory (netns bind mounts live below it).
    pub run_dir: &'a Path,
    /// procfs mount, normally `/proc`.
    pub proc_root: &'a Path,
    /// The node's network namespace, `None` for the caller's own.
    pub node_netns: Option<&'a Path>,
}

/// Something a node left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A container in the runtime state directory.
    Container(String),
    /// A container runc still knows.
    RuncContainer(String),
    /// A pod cgroup directory.
    Cgroup(PathBuf),
    /// A network namespace file.
    Netns(PathBuf),
    /// A mount below the node's run directory.
    Mount(PathBuf),
    /// A pod veth (`skep…`/`skpp…`) in the node namespace.
    Link(String),
    /// An IP allocation.
    Ip(Ipv4Addr, String),
    /// A pod directory.
    PodDir(PathBuf),
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Container(id) => write!(f, "container state {id}"),
            Self::RuncContainer(id) => write!(f, "runc container {id}"),
            Self::Cgroup(p) => write!(f, "cgroup {}", p.display()),
            Self::Netns(p) => write!(f, "netns file {}", p.display()),
            Self::Mount(p) => write!(f, "mount {}", p.display()),
            Self::Link(n) => write!(f, "link {n}"),
            Self::Ip(ip, uid) => write!(f, "ip {ip} of pod {uid}"),
            Self::PodDir(p) => write!(f, "pod dir {}", p.display()),
        }
    }
}

/// Removes pod `uid` completely: stops its containers (SIGTERM, `grace`,
/// SIGKILL), removes them, its cgroups in every hierarchy, its network
/// sandbox, its IP and its pod directory. Safe to repeat.
#[tracing::instrument(skip_all, fields(pod_uid = %uid))]
pub async fn remove_pod(
    node: NodeParts<'_>,
    uid: &str,
    grace: Duration,
) -> Result<(), CleanupError> {
    let rt_err = |source| CleanupError::Runtime {
        uid: uid.to_owned(),
        source: Box::new(source),
    };
    let containers = node.runtime.list_pod(uid).await.map_err(rt_err)?;
    for c in &containers {
        if let Err(err) = node.runtime.stop(&c.meta.id, grace).await {
            tracing::warn!(container = %c.meta.id, %err, "failed to stop container, removing by force");
        }
        node.runtime.remove(&c.meta.id).await.map_err(rt_err)?;
    }
    remove_pod_cgroups(
        &node.runtime.config().cgroup_root,
        &node.runtime.pod_cgroup(uid),
    )?;
    node.sandboxes
        .teardown(uid)
        .await
        .map_err(|source| CleanupError::Sandbox {
            uid: uid.to_owned(),
            source: Box::new(source),
        })?;
    node.ipam
        .release(uid)
        .map_err(|source| CleanupError::Ipam {
            uid: uid.to_owned(),
            source,
        })?;
    let dir = node.pods_dir.join(uid);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CleanupError::Io {
                op: "remove",
                path: dir,
                source,
            });
        }
    }
    tracing::info!("pod removed");
    Ok(())
}

/// The hierarchies mounted under `cgroup_root`: each v1 controller directory
/// and the v2 `unified` one on hybrid hosts, or the root itself on pure v2.
fn hierarchies(cgroup_root: &Path) -> Vec<PathBuf> {
    let mut out = vec![cgroup_root.to_owned()];
    if let Ok(entries) = fs::read_dir(cgroup_root) {
        for entry in entries.flatten() {
            let path = entry.path();
            // Real hierarchies are directories holding cgroup.procs.
            if path.join("cgroup.procs").exists() {
                out.push(path);
            }
        }
    }
    out.retain(|p| p.join("cgroup.procs").exists());
    out.sort();
    out.dedup();
    out
}

/// Removes the pod cgroup `rel` (e.g. `skep/node/pod<uid>`) with all its
/// children from every hierarchy; missing is fine.
pub fn remove_pod_cgroups(cgroup_root: &Path, rel: &str) -> Result<(), CleanupError> {
    for hier in hierarchies(cgroup_root) {
        rmdir_tree(&hier.join(rel))?;
    }
    Ok(())
}

/// Removes a cgroup directory bottom-up (cgroup files vanish with `rmdir`).
fn rmdir_tree(dir: &Path) -> Result<(), CleanupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CleanupError::Io {
                op: "list cgroup",
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CleanupError::Io {
            op: "remove cgroup",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Everything pod-related this node still holds: containers, runc state,
/// pod cgroups below the node's cgroup parent, netns files, mounts below the
/// run directory, `skep…` links in the node namespace, IP allocations, pod
/// directories. Empty after every pod was removed.
pub async fn leftovers(node: NodeParts<'_>) -> Result<Vec<Leftover>, CleanupError> {
    let mut out = Vec::new();
    let rt_err = |source| CleanupError::Runtime {
        uid: String::new(),
        source: Box::new(source),
    };
    for c in node.runtime.list().await.map_err(rt_err)? {
        out.push(Leftover::Container(c.meta.id));
    }
    for id in node.runtime.runc_ids().map_err(rt_err)? {
        out.push(Leftover::RuncContainer(id));
    }
    let cfg = node.runtime.config();
    for hier in hierarchies(&cfg.cgroup_root) {
        let parent = hier.join(cfg.cgroup_parent.trim_matches('/'));
        for path in subdirs(&parent)? {
            out.push(Leftover::Cgroup(path));
        }
    }
    for path in files(&node.sandboxes.netns_dir())? {
        out.push(Leftover::Netns(path));
    }
    let mountinfo = node.proc_root.join("self/mountinfo");
    let text = fs::read_to_string(&mountinfo).map_err(|source| CleanupError::Io {
        op: "read",
        path: mountinfo.clone(),
        source,
    })?;
    for line in text.lines() {
        if let Some(point) = line.split(' ').nth(4) {
            let point = Path::new(point);
            if point.starts_with(node.run_dir) && point != node.run_dir {
                out.push(Leftover::Mount(point.to_owned()));
            }
        }
    }
    for name in pod_links(node.node_netns.map(Path::to_owned)).await? {
        out.push(Leftover::Link(name));
    }
    for (ip, uid) in node.ipam.allocated().map_err(|source| CleanupError::Ipam {
        uid: String::new(),
        source,
    })? {
        out.push(Leftover::Ip(ip, uid));
    }
    for path in subdirs(node.pods_dir)? {
        out.push(Leftover::PodDir(path));
    }
    Ok(out)
}

fn entries(dir: &Path, want_dirs: bool) -> Result<Vec<PathBuf>, CleanupError> {
    let list = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CleanupError::Io {
                op: "list",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out: Vec<PathBuf> = list
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() == want_dirs))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CleanupError> {
    entries(dir, true)
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, CleanupError> {
    entries(dir, false)
}

/// Names of pod veths (`skep…`, `skpp…`) in the node namespace.
pub async fn pod_links(node_netns: Option<PathBuf>) -> Result<Vec<String>, CleanupError> {
    netns::run_in(node_netns, || async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| CleanupError::Io {
            op: "open netlink socket",
            path: PathBuf::from("netlink"),
            source,
        })?;
        tokio::spawn(conn);
        let mut names = Vec::new();
        let mut links = handle.link().get().execute();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(|source| CleanupError::Netlink { source })?
        {
            for attr in link.attributes {
                if let LinkAttribute::IfName(name) = attr
                    && (name.starts_with("skep") || name.starts_with("skpp"))
                {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    })
    .await
    .map_err(|source| CleanupError::Links { source })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmdir_tree_removes_nested_dirs_and_tolerates_missing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pod = dir.path().join("skep/n/podx");
        fs::create_dir_all(pod.join("c1"))?;
        fs::create_dir_all(pod.join("c2"))?;
        rmdir_tree(&pod)?;
        assert!(!pod.exists());
        assert!(dir.path().join("skep/n").exists());
        rmdir_tree(&pod)?;
        Ok(())
    }
}
