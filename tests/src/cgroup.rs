//! Visiting a node's cgroup: the lab's socket load-balancer programs are
//! attached to each node's cgroup (pods are below it), so a test's client
//! sockets must be created from inside it to be load-balanced like a pod's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;

static LEAVES: AtomicUsize = AtomicUsize::new(0);

/// This process, moved into a fresh leaf below a node's cgroup until dropped
/// (then back home, and the leaf removed). A socket keeps the cgroup it was
/// created in, so sockets made during the visit stay the node's after it.
/// The whole process moves (cgroup v2 moves thread groups): create only the
/// sockets meant for the node while visiting.
#[derive(Debug)]
pub struct CgroupVisit {
    home: PathBuf,
    leaf: PathBuf,
}

impl CgroupVisit {
    /// Moves this process into a new leaf of `node_cgroup`
    /// (`<cgroup2 mount>/skep/<node>`).
    pub fn enter(node_cgroup: &Path) -> anyhow::Result<Self> {
        let root = node_cgroup
            .parent()
            .and_then(Path::parent)
            .context("node cgroup has no grandparent")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("no cgroup v2 line in /proc/self/cgroup")?;
        let home = root.join(rel.trim_start_matches('/'));
        let leaf = node_cgroup.join(format!(
            "e2e-client-{}-{}",
            std::process::id(),
            LEAVES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&leaf).with_context(|| format!("create {}", leaf.display()))?;
        let visit = Self { home, leaf };
        std::fs::write(
            visit.leaf.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .context("move into the node's cgroup")?;
        Ok(visit)
    }
}

impl Drop for CgroupVisit {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        ) {
            eprintln!(
                "warning: failed to move back to {}: {err}",
                self.home.display()
            );
        }
        let _ = std::fs::remove_dir(&self.leaf);
    }
}
