//! skep's side of `bench policy`: the real datapath loaded for one
//! [`Node`](super::topology::Node) (maps pinned under a unique bpffs
//! directory), `skep_pod_ingress` on each pod's host veth and the pods in
//! the endpoints map, as the agent does; policy programmed by the real
//! compiler (`skep_policy::compile`) and written with the real map API
//! (`skep_datapath::policy::PolicyMaps`), incrementally from one
//! scenario's state to the next with the agent's own
//! [`skep_node::policy::apply`] and [`skep_node::policy::read_state`].
//! `skep_pod_ingress` is pinned too ([`Skep::prog_pin`]), for the client to
//! read its run statistics. The pins are removed on drop.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};
use skep_datapath::{
    Datapath, DatapathConfig, Endpoint, EndpointMap, RouteHook, policy::PolicyMaps,
};
use skep_node::policy;
use skep_policy::{Identities, PolicyPod, PolicyState};

use super::{
    topology::Node,
    workload::{self, Cluster},
};

/// The loaded datapath of one node.
pub struct Skep {
    datapath: Option<Datapath>,
    pin_dir: PathBuf,
    /// The identity allocator the agent would persist.
    ids: Identities,
    /// What the policy maps hold.
    current: PolicyState,
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
            ids: Identities::default(),
            current: PolicyState::default(),
        };
        let prog_pin = skep.prog_pin();
        let datapath = skep.datapath.insert(
            Datapath::load(&DatapathConfig {
                pin_dir: pin_dir.clone(),
                btf: None,
                lru_entries: Some(65_536),
            })
            .context("failed to load the datapath")?,
        );
        datapath.pin_program(RouteHook::Pod.program(), &prog_pin)?;
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

    /// Where `skep_pod_ingress` (on every pod's host veth) is pinned.
    pub fn prog_pin(&self) -> PathBuf {
        self.pin_dir.join("prog_pod_ingress")
    }

    /// Programs `cluster`'s policies: compiles them and writes the change
    /// from the previous scenario's state; returns how long that took and
    /// how many entries the policy maps hold.
    pub fn program(&mut self, cluster: &Cluster) -> anyhow::Result<(Duration, usize)> {
        let started = Instant::now();
        let pods: Vec<PolicyPod> = cluster
            .pods
            .iter()
            .filter_map(PolicyPod::from_pod)
            .collect();
        let desired = skep_policy::compile(
            workload::NODE,
            &pods,
            &cluster.namespaces,
            &cluster.policies,
            &mut self.ids,
        );
        let mut maps = PolicyMaps::open(&self.pin_dir)?;
        if let Err(err) = policy::apply(&mut maps, &self.current.diff(&desired)) {
            // Half written: what the maps hold is the next diff's start.
            self.current = policy::read_state(&maps)?;
            return Err(err.into());
        }
        let took = started.elapsed();
        let entries = desired.endpoints.len() + desired.ipcache.len() + desired.rules.len();
        self.current = desired;
        Ok((took, entries))
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
