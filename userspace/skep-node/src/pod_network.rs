//! The pod-network manager: a pod's address, sandbox and datapath entry as
//! one setup and one teardown. Addresses and sandboxes come from a
//! [`PodNetworks`] (opened once the node has its pod CIDR); the entry in the
//! routing datapath goes through a [`DatapathEntry`], the real one being
//! [`crate::endpoints::Endpoints`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use skep_runtime::sandbox::PodNetwork;
use skep_runtime::{PodNetworkError, PodNetworks};
use tokio::sync::watch;

use crate::endpoints::Endpoints;

/// A pod's entry in the node's routing datapath. Failures are the
/// implementation's to log: without an entry the kernel still forwards.
pub trait DatapathEntry: Send + Sync {
    /// Programs pod `name` (`namespace/name`) on `net` (adding again swaps
    /// it in place).
    fn add(&self, name: &str, net: &PodNetwork);
    /// Removes pod `uid`'s entry (by address, when known) and its program.
    fn remove(&self, uid: &str, ip: Option<Ipv4Addr>);
    /// Keeps only the entries of `allocated` (address → pod UID).
    fn reconcile(&self, allocated: &BTreeMap<Ipv4Addr, String>);
}

impl DatapathEntry for Endpoints {
    fn add(&self, name: &str, net: &PodNetwork) {
        Endpoints::add(self, name, net);
    }

    fn remove(&self, uid: &str, ip: Option<Ipv4Addr>) {
        Endpoints::remove(self, uid, ip);
    }

    fn reconcile(&self, allocated: &BTreeMap<Ipv4Addr, String>) {
        Endpoints::reconcile(self, allocated);
    }
}

/// Pod networks and their datapath entries, set up and torn down as one.
/// The [`PodNetworks`] arrive once the node has its pod CIDR
/// ([`PodNetworkManager::open`]); until then setup waits.
pub struct PodNetworkManager<N> {
    networks: OnceLock<N>,
    opened: watch::Sender<bool>,
    datapath: Arc<dyn DatapathEntry>,
}

impl<N> std::fmt::Debug for PodNetworkManager<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetworkManager")
            .field("open", &self.networks.get().is_some())
            .finish_non_exhaustive()
    }
}

impl<N: PodNetworks> PodNetworkManager<N> {
    /// A manager with no networks yet, programming entries through `datapath`.
    pub fn new(datapath: Arc<dyn DatapathEntry>) -> Self {
        Self {
            networks: OnceLock::new(),
            opened: watch::channel(false).0,
            datapath,
        }
    }

    /// Hands over the node's pod networks (once; later calls are ignored).
    pub fn open(&self, networks: N) {
        if self.networks.set(networks).is_ok() {
            self.opened.send_replace(true);
        }
    }

    /// The pod networks, if open.
    pub fn get(&self) -> Option<&N> {
        self.networks.get()
    }

    /// The pod networks, waiting until they are open.
    pub async fn ready(&self) -> &N {
        let mut rx = self.opened.subscribe();
        loop {
            if let Some(n) = self.networks.get() {
                return n;
            }
            // The sender lives in `self`: this cannot fail while we wait.
            let _ = rx.changed().await;
        }
    }

    /// The datapath entries.
    pub fn datapath(&self) -> &Arc<dyn DatapathEntry> {
        &self.datapath
    }

    /// Gives pod `uid` (named `name`) its address and sandbox and programs
    /// its datapath entry.
    pub async fn setup(&self, uid: &str, name: &str) -> Result<PodNetwork, PodNetworkError> {
        let net = self.ready().await.setup(uid).await?;
        self.datapath.add(name, &net);
        Ok(net)
    }

    /// Picks up the sandbox an earlier agent built for pod `uid` (and puts
    /// it back in the datapath); `None` when it has none.
    pub async fn adopt(
        &self,
        uid: &str,
        name: &str,
    ) -> Result<Option<PodNetwork>, PodNetworkError> {
        let networks = self.ready().await;
        let Some(net) = networks.inspect(uid).await? else {
            return Ok(None);
        };
        self.datapath.add(name, &net);
        Ok(Some(net))
    }

    /// Removes pod `uid`'s datapath entry, sandbox and address. Before the
    /// networks are open there is nothing of the pod to remove.
    pub async fn teardown(&self, uid: &str) -> Result<Option<Ipv4Addr>, PodNetworkError> {
        let Some(networks) = self.networks.get() else {
            return Ok(None);
        };
        let ip = networks.address(uid)?;
        self.datapath.remove(uid, ip);
        networks.teardown(uid).await?;
        Ok(ip)
    }
}
