//! The agent's network-policy sync: keeps this node's pinned policy maps
//! equal to what [`skep_policy::compile`] makes of the view (every pod's
//! policy facts, every Namespace and `NetworkPolicy`).
//!
//! After every change of the view's policy inputs ([`Concern::Policy`]: a
//! Namespace's labels, a `NetworkPolicy`, a pod's policy facts; a burst
//! gathered for [`DEBOUNCE`]) it compiles, diffs against what the maps hold and writes
//! only the difference, in an order that never denies a flow the old or the
//! new state allows ([`apply`]). On start it reads the current state back
//! from the pinned maps, so a restarted agent reconciles without flushing,
//! and it loads the identity allocation from `<data dir>/policy/identities.json`
//! (rewritten atomically whenever it changes) so the ids the maps hold keep
//! their meaning across restarts. Until the view has synced once the maps
//! are left as the last agent left them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use skep_datapath::DatapathError;
use skep_datapath::policy::PolicyMaps;
use skep_ebpf_common::policy::{PeerIdentity, PolicyEndpoint, PolicyKey, PolicyValue};
use skep_policy::{Identities, PolicyDiff, PolicyPod, PolicyState};

use crate::metrics::{Cause, SyncLoop, SyncRuns};
use crate::view::{Concern, View, ViewReader};

/// How long a burst of changes is gathered before the maps are synced.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How soon a failed sync is retried.
const RETRY: Duration = Duration::from_secs(1);

/// Errors of the identities file.
#[derive(Debug, thiserror::Error)]
pub enum IdentitiesFileError {
    /// The file could not be read or written.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold identities.
    #[error("failed to parse the identities in {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Where the policy sync writes: the node's [`PolicyMaps`], or a recorder in
/// tests. One call is one map operation.
pub trait PolicySink {
    /// Makes the local pod at `ip` a policy endpoint.
    fn set_endpoint(&mut self, ip: Ipv4Addr, ep: PolicyEndpoint) -> Result<(), DatapathError>;
    /// Un-isolates the local pod at `ip`.
    fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError>;
    /// Sets the identity of `ip/len` in the ipcache.
    fn set_peer(&mut self, ip: Ipv4Addr, len: u32, id: PeerIdentity) -> Result<(), DatapathError>;
    /// Removes `ip/len` from the ipcache.
    fn remove_peer(&mut self, ip: Ipv4Addr, len: u32) -> Result<(), DatapathError>;
    /// Adds or replaces the rule `key/len`.
    fn set_rule(&mut self, key: PolicyKey, len: u32, v: PolicyValue) -> Result<(), DatapathError>;
    /// Removes the rule `key/len`.
    fn remove_rule(&mut self, key: PolicyKey, len: u32) -> Result<(), DatapathError>;
    /// Names policy `id`.
    fn set_policy_name(&mut self, id: u32, name: &str) -> Result<(), DatapathError>;
    /// Forgets policy `id`'s name.
    fn remove_policy_name(&mut self, id: u32) -> Result<(), DatapathError>;
    /// Names the pod at `ip`.
    fn set_peer_name(&mut self, ip: Ipv4Addr, name: &str) -> Result<(), DatapathError>;
    /// Forgets the name of the pod at `ip`.
    fn remove_peer_name(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError>;
}

impl PolicySink for PolicyMaps {
    fn set_endpoint(&mut self, ip: Ipv4Addr, ep: PolicyEndpoint) -> Result<(), DatapathError> {
        PolicyMaps::set_endpoint(self, ip, ep)
    }
    fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        PolicyMaps::remove_endpoint(self, ip).map(drop)
    }
    fn set_peer(&mut self, ip: Ipv4Addr, len: u32, id: PeerIdentity) -> Result<(), DatapathError> {
        PolicyMaps::set_peer(self, ip, len, id)
    }
    fn remove_peer(&mut self, ip: Ipv4Addr, len: u32) -> Result<(), DatapathError> {
        PolicyMaps::remove_peer(self, ip, len).map(drop)
    }
    fn set_rule(&mut self, key: PolicyKey, len: u32, v: PolicyValue) -> Result<(), DatapathError> {
        PolicyMaps::set_rule(self, key, len, v)
    }
    fn remove_rule(&mut self, key: PolicyKey, len: u32) -> Result<(), DatapathError> {
        PolicyMaps::remove_rule(self, key, len).map(drop)
    }
    fn set_policy_name(&mut self, id: u32, name: &str) -> Result<(), DatapathError> {
        PolicyMaps::set_policy_name(self, id, name)
    }
    fn remove_policy_name(&mut self, id: u32) -> Result<(), DatapathError> {
        PolicyMaps::remove_policy_name(self, id).map(drop)
    }
    fn set_peer_name(&mut self, ip: Ipv4Addr, name: &str) -> Result<(), DatapathError> {
        PolicyMaps::set_peer_name(self, ip, name)
    }
    fn remove_peer_name(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        PolicyMaps::remove_peer_name(self, ip).map(drop)
    }
}

/// Writes `diff` to `sink` in an order that never denies a flow both the
/// old and the new state allow: names first (flows name what they see);
/// rule upserts before ipcache upserts (a peer moves to an identity only
/// once the rules allowing it exist); both before endpoint changes (a pod
/// becomes isolated, or changes identity, only once its rules are in);
/// endpoint removals before ipcache and rule removals; names last. Stops at
/// the first failure (the caller re-reads the maps and tries again).
pub fn apply(sink: &mut impl PolicySink, diff: &PolicyDiff<'_>) -> Result<(), DatapathError> {
    for (id, name) in &diff.policy_names.upserts {
        tracing::info!(policy = %name, id, "network policy named");
        sink.set_policy_name(**id, name)?;
    }
    for (ip, name) in &diff.peer_names.upserts {
        sink.set_peer_name(**ip, name)?;
    }
    for ((key, len), value) in &diff.rules.upserts {
        sink.set_rule(*key, *len, **value)?;
    }
    for ((ip, len), id) in &diff.ipcache.upserts {
        sink.set_peer(*ip, *len, **id)?;
    }
    for (ip, ep) in &diff.endpoints.upserts {
        tracing::info!(pod_ip = %ip, identity = ep.identity, flags = ep.flags, "pod isolated");
        sink.set_endpoint(**ip, **ep)?;
    }
    for ip in &diff.endpoints.removals {
        tracing::info!(pod_ip = %ip, "pod no longer isolated");
        sink.remove_endpoint(**ip)?;
    }
    for (ip, len) in &diff.ipcache.removals {
        sink.remove_peer(*ip, *len)?;
    }
    for (key, len) in &diff.rules.removals {
        sink.remove_rule(*key, *len)?;
    }
    for ip in &diff.peer_names.removals {
        sink.remove_peer_name(**ip)?;
    }
    for id in &diff.policy_names.removals {
        tracing::info!(id, "network policy gone");
        sink.remove_policy_name(**id)?;
    }
    Ok(())
}

/// What the pinned maps hold now, as a [`PolicyState`].
pub fn read_state(maps: &PolicyMaps) -> Result<PolicyState, DatapathError> {
    Ok(PolicyState {
        endpoints: maps.endpoints()?.into_iter().collect(),
        ipcache: maps
            .peers()?
            .into_iter()
            .map(|(ip, len, id)| ((ip, len), id))
            .collect(),
        rules: maps
            .rules()?
            .into_iter()
            .map(|(key, len, v)| ((key, len), v))
            .collect(),
        policy_names: maps.policy_names()?.into_iter().collect(),
        peer_names: maps.peer_names()?.into_iter().collect(),
    })
}

/// The compiler's inputs, taken from the view: every pod's policy facts
/// (sorted by namespace and name, so equal views give equal inputs), the
/// Namespaces and the `NetworkPolicies`.
#[derive(Debug, Default, PartialEq)]
pub struct Inputs {
    /// Pods policy can judge (with an address, not on the host network).
    pub pods: Vec<PolicyPod>,
    /// Every Namespace, by name.
    pub namespaces: Vec<Namespace>,
    /// Every `NetworkPolicy`, by namespace and name.
    pub policies: Vec<NetworkPolicy>,
}

impl Inputs {
    /// Reads the inputs from `view`.
    #[must_use]
    pub fn of(view: &View) -> Self {
        let mut pods: Vec<PolicyPod> = view
            .peer_pods
            .values()
            .filter_map(|p| PolicyPod::from_pod(p))
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let namespaces: BTreeMap<_, _> = view.namespaces.iter().collect();
        let policies: BTreeMap<_, _> = view.network_policies.iter().collect();
        Self {
            pods,
            namespaces: namespaces
                .into_values()
                .map(|n| Namespace::clone(n))
                .collect(),
            policies: policies
                .into_values()
                .map(|p| NetworkPolicy::clone(p))
                .collect(),
        }
    }
}

/// The persisted identity allocation of one node.
#[derive(Debug)]
pub struct IdentitiesFile {
    path: PathBuf,
    written: Vec<u8>,
}

impl IdentitiesFile {
    /// The file at `path` and what it holds (the default allocation when it
    /// does not exist yet).
    pub fn load(path: &Path) -> Result<(Self, Identities), IdentitiesFileError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(IdentitiesFileError::Io {
                    action: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let ids = if bytes.is_empty() {
            Identities::default()
        } else {
            serde_json::from_slice(&bytes).map_err(|source| IdentitiesFileError::Parse {
                path: path.to_owned(),
                source,
            })?
        };
        Ok((
            Self {
                path: path.to_owned(),
                written: bytes,
            },
            ids,
        ))
    }

    /// Writes `ids` if they differ from what the file holds: to a temporary
    /// file beside it, synced, then renamed over it.
    pub fn save(&mut self, ids: &Identities) -> Result<bool, IdentitiesFileError> {
        let bytes = serde_json::to_vec(ids).map_err(|source| IdentitiesFileError::Parse {
            path: self.path.clone(),
            source,
        })?;
        if bytes == self.written {
            return Ok(false);
        }
        let io = |action, source| IdentitiesFileError::Io {
            action,
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
            file.write_all(&bytes).map_err(|e| io("write", e))?;
            file.sync_all().map_err(|e| io("sync", e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| io("replace", e))?;
        self.written = bytes;
        Ok(true)
    }
}

/// The identities file of an agent with state in `data_dir`.
#[must_use]
pub fn identities_path(data_dir: &Path) -> PathBuf {
    data_dir.join("policy").join("identities.json")
}

/// One node's policy sync between runs of the loop: the maps, the
/// identities, and what the maps are known to hold.
struct Sync {
    node: String,
    maps: PolicyMaps,
    ids: Identities,
    file: IdentitiesFile,
    /// What the maps hold; `None` after a failure, re-read before the next
    /// diff.
    current: Option<PolicyState>,
    /// The inputs the maps were last made equal to.
    synced: Option<Inputs>,
}

impl Sync {
    /// Compiles `inputs` and writes the difference; returns how many map
    /// operations it took.
    #[tracing::instrument(skip_all, fields(node = %self.node, pods = inputs.pods.len(), policies = inputs.policies.len()))]
    fn run(&mut self, inputs: Inputs) -> Result<usize, SyncError> {
        if self.synced.as_ref() == Some(&inputs) {
            return Ok(0);
        }
        let desired = skep_policy::compile(
            &self.node,
            &inputs.pods,
            &inputs.namespaces,
            &inputs.policies,
            &mut self.ids,
        );
        // The ids are on disk before any map holds them.
        self.file.save(&self.ids)?;
        let current = match self.current.take() {
            Some(current) => current,
            None => read_state(&self.maps)?,
        };
        let diff = current.diff(&desired);
        let ops = diff.len();
        apply(&mut self.maps, &diff)?;
        tracing::info!(
            ops,
            endpoints = desired.endpoints.len(),
            ipcache = desired.ipcache.len(),
            rules = desired.rules.len(),
            "policy maps synced"
        );
        self.current = Some(desired);
        self.synced = Some(inputs);
        Ok(ops)
    }
}

/// Why one policy sync failed.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Maps(#[from] DatapathError),
    #[error(transparent)]
    Identities(#[from] IdentitiesFileError),
}

/// What the policy sync needs besides the view.
#[derive(Clone, Debug)]
pub struct PolicySync {
    /// Where the policy maps are pinned.
    pub pin_dir: PathBuf,
    /// The agent's data directory (the identities file lives below it).
    pub data_dir: PathBuf,
    /// This node's name.
    pub node_name: String,
}

/// Keeps the pinned policy maps equal to what the view compiles to (see
/// the module doc). Failures are logged and retried. Each run is counted
/// in `runs`.
#[tracing::instrument(skip_all, fields(node = %cfg.node_name))]
pub async fn sync_loop(cfg: PolicySync, view: ViewReader, runs: SyncRuns) {
    let maps = loop {
        match PolicyMaps::open(&cfg.pin_dir) {
            Ok(maps) => break maps,
            Err(err) => {
                tracing::error!(?err, "failed to open the policy maps; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let path = identities_path(&cfg.data_dir);
    let (file, ids) = match IdentitiesFile::load(&path) {
        Ok(loaded) => loaded,
        Err(err) => {
            // New ids rewrite the maps in a safe order; only flows judged
            // meanwhile may see a wider union of the old and new rules.
            tracing::error!(
                ?err,
                "failed to load the policy identities; allocating anew"
            );
            (
                IdentitiesFile {
                    path: path.clone(),
                    written: Vec::new(),
                },
                Identities::default(),
            )
        }
    };
    let mut sync = Sync {
        node: cfg.node_name.clone(),
        maps,
        ids,
        file,
        current: None,
        synced: None,
    };
    let mut changed = view.changes(Concern::Policy);
    let mut cause = Cause::Change;
    loop {
        // Nothing to do until the view is synced once: an empty view would
        // lift every isolation the last agent left.
        let mut failed = false;
        if *changed.borrow_and_update() != 0 {
            runs.count(SyncLoop::Policy, cause);
            let inputs = Inputs::of(&view.snapshot());
            if let Err(err) = sync.run(inputs) {
                tracing::error!(?err, "failed to sync the policy maps; retrying");
                sync.current = None;
                sync.synced = None;
                failed = true;
            }
        }
        // Inputs equal to the last synced ones compile to the same maps: no
        // timer, only a change or a retry wakes this loop.
        let wait = if failed {
            tokio::time::timeout(RETRY, changed.changed()).await.ok()
        } else {
            Some(changed.changed().await)
        };
        cause = match wait {
            Some(Ok(())) => {
                tokio::time::sleep(DEBOUNCE).await;
                Cause::Change
            }
            Some(Err(_)) => return,
            None => Cause::Retry,
        };
    }
}

#[cfg(test)]
#[path = "policy_test.rs"]
mod tests;
