//! skep's side of `bench policy`: the real datapath loaded for one
//! [`Node`](super::topology::Node) (maps pinned under a unique bpffs
//! directory), `skep_pod_ingress` on each pod's host veth and the pods in
//! the endpoints map, as the agent does; policy programmed by the real
//! compiler (`skep_policy::compile`) and written with the real map API
//! (`skep_datapath::policy::PolicyMaps`), incrementally from one
//! scenario's state to the next, as the agent's sync loop does. The pins
//! are removed on drop.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};
use skep_datapath::{Datapath, DatapathConfig, Endpoint, EndpointMap, RouteHook};

use super::{topology::Node, workload::Cluster};

/// The loaded datapath of one node.
pub struct Skep {
    datapath: Option<Datapath>,
    pin_dir: PathBuf,
}

/// Runs `f` on a thread inside the namespace at `netns`.
fn in_netns<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns =
                File::open(netns).with_context(|| format!("failed to open {}", netns.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).context("failed to enter the node's namespace")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in {} panicked", netns.display()))?
    })
}

impl Skep {
    /// Loads the datapath for `node` and attaches it to every pod.
    pub fn load(node: &Node) -> anyhow::Result<Self> {
        let pin_dir = Path::new("/sys/fs/bpf/skep").join(node.netns.name());
        let mut skep = Self {
            datapath: None,
            pin_dir: pin_dir.clone(),
        };
        let datapath = skep.datapath.insert(
            Datapath::load(&DatapathConfig {
                pin_dir: pin_dir.clone(),
                btf: None,
                lru_entries: Some(65_536),
            })
            .context("failed to load the datapath")?,
        );
        let netns = PathBuf::from("/run/netns").join(node.netns.name());
        let mut endpoints = EndpointMap::open_pinned(&pin_dir)?;
        for pod in &node.pods {
            in_netns(&netns, || {
                Ok(datapath.attach_route(&pod.host_veth, RouteHook::Pod)?)
            })
            .with_context(|| format!("failed to attach to {}", pod.host_veth))?;
            endpoints.upsert(&Endpoint {
                name: format!("{}/{}", pod.key.0, pod.key.1),
                ip: pod.ip,
                host_ifindex: node.netns.ifindex(&pod.host_veth)?,
                pod_mac: pod.pod_mac,
                host_mac: pod.host_mac,
            })?;
        }
        Ok(skep)
    }

    /// Programs `cluster`'s policies; returns how long compiling and
    /// writing took and how many map entries the state has.
    pub fn program(&mut self, cluster: &Cluster) -> anyhow::Result<(Duration, usize)> {
        let started = Instant::now();
        let _ = (cluster, &self.pin_dir);
        anyhow::bail!(
            "not yet: skep-policy and PolicyMaps are not on main ({:?})",
            started.elapsed()
        )
    }
}

impl Drop for Skep {
    fn drop(&mut self) {
        self.datapath = None;
        if let Err(err) = Datapath::remove_pins(&self.pin_dir) {
            eprintln!(
                "warning: failed to remove {}: {err}",
                self.pin_dir.display()
            );
        }
    }
}
