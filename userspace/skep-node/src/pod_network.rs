//! The pod-network manager: a pod's address, sandbox and datapath entry as
//! one setup and one teardown. Addresses and sandboxes come from a
//! [`PodNetworks`] (opened once the node has its pod CIDR); the entry in the
//! routing datapath goes through a [`DatapathEntry`], the real one being
//! [`crate::endpoints::Endpoints`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};

use skep_runtime::sandbox::PodNetwork;
use skep_runtime::{PodNetworkError, PodNetworks};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
///
/// Programming the datapath entry (attaching a TCX link waits for an RCU
/// grace period, ~10 ms) runs beside the pod's container start rather than
/// before it: nothing in the pod needs it (the kernel forwards without it),
/// and [`PodNetworkManager::settle`] waits for it before the pod is reported.
pub struct PodNetworkManager<N> {
    networks: OnceLock<N>,
    opened: watch::Sender<bool>,
    datapath: Arc<dyn DatapathEntry>,
    /// Datapath entries being programmed, by pod UID.
    pending: Mutex<HashMap<String, JoinHandle<()>>>,
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
            pending: Mutex::new(HashMap::new()),
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

    /// Gives pod `uid` (named `name`) its address and sandbox and starts
    /// programming its datapath entry ([`PodNetworkManager::settle`] waits
    /// for that).
    pub async fn setup(&self, uid: &str, name: &str) -> Result<PodNetwork, PodNetworkError> {
        let net = self.ready().await.setup(uid).await?;
        self.add_entry(uid, name, &net);
        Ok(net)
    }

    /// Programs pod `uid`'s datapath entry on a blocking thread.
    fn add_entry(&self, uid: &str, name: &str, net: &PodNetwork) {
        let datapath = Arc::clone(&self.datapath);
        let (name, net) = (name.to_owned(), net.clone());
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || span.in_scope(|| datapath.add(&name, &net)));
        // An earlier entry still being programmed finishes on its own; the
        // newer one (the same pod, added again) is the one waited for.
        crate::lock(&self.pending).insert(uid.to_owned(), task);
    }

    /// Waits until pod `uid`'s datapath entry, if one is being programmed,
    /// is in place.
    pub async fn settle(&self, uid: &str) {
        let task = crate::lock(&self.pending).remove(uid);
        if let Some(task) = task
            && let Err(err) = task.await
        {
            tracing::warn!(%err, "programming the pod's datapath entry failed");
        }
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
        self.add_entry(uid, name, &net);
        Ok(Some(net))
    }

    /// Removes pod `uid`'s datapath entry, sandbox and address. Before the
    /// networks are open there is nothing of the pod to remove.
    pub async fn teardown(&self, uid: &str) -> Result<Option<Ipv4Addr>, PodNetworkError> {
        let Some(networks) = self.networks.get() else {
            return Ok(None);
        };
        let ip = networks.address(uid)?;
        // Removed after it is in place, never before.
        self.settle(uid).await;
        self.datapath.remove(uid, ip);
        networks.teardown(uid).await?;
        Ok(ip)
    }
}
