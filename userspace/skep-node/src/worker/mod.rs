//! One pod's worker (the kubelet's pod worker): a task driven by its pod's
//! desired state (a watch channel fed by node-sync, woken only when the
//! pod's spec, downward-API metadata or deletion changed), by the node's
//! lifecycle events ([`Pleg`]: one of its containers started or exited),
//! and by timers of its own: the next due probe and the end of a restart
//! back-off. It builds the pod's network (address, sandbox, datapath
//! entry), pulls images, runs init containers in order and then the
//! containers, restarts them per `restartPolicy` with CrashLoopBackOff
//! back-off, runs probes, hands the status it computes to the
//! [`StatusManager`], and tears the pod down on deletion.
//!
//! A worker depends only on [`PodParts`]: a [`ContainerRuntime`], a
//! [`PodNetworkManager`], an [`ImageSource`], the [`NodeApi`] (final
//! delete), the [`EventRecorder`], the [`StatusManager`], the [`Pleg`] and
//! a [`ViewReader`] for ConfigMaps and Secrets; all have fakes, so the
//! worker is unit-tested without root (`worker_test.rs`).

mod ctr;
mod start;
mod status;
#[cfg(test)]
mod worker_test;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skep_runtime::runtime::{ContainerState, RuntimeError};
use skep_runtime::sandbox::write_pod_files;
use skep_runtime::{ContainerRuntime, PodNetworkError, PodNetworks};
use tokio::time::Instant;

use self::ctr::{Ctr, arm_probes, ts};
use crate::api::{EventRecorder, NodeApi};
use crate::images::ImageSource;
use crate::node_sync::PodSlot;
use crate::pleg::Pleg;
use crate::pod_network::PodNetworkManager;
use crate::podspec;
use crate::probe::ProbeState;
use crate::projected::{self, Tokens};
use crate::status_manager::StatusManager;
use crate::token::TokenManager;
use crate::view::{Concern, ViewReader};

/// How often the same volume set-up failure is recorded again as an event.
const MOUNT_EVENT_EVERY: Duration = Duration::from_secs(10);

/// How soon a pod whose network or volumes could not be set up tries again
/// (volumes also when ConfigMaps, Secrets or claims change).
const SETUP_RETRY: Duration = Duration::from_secs(1);

/// Grace period when a pod leaves the node without being deleted.
const LEFT_NODE_GRACE: Duration = Duration::from_secs(2);

/// What a worker needs to know of its node.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The node's address (`status.hostIP`, downward API).
    pub node_ip: Ipv4Addr,
    /// The cluster DNS address pods' resolv.conf names.
    pub cluster_dns: Ipv4Addr,
    /// The cluster domain.
    pub cluster_domain: String,
    /// The node's own resolv.conf (for `dnsPolicy: Default`).
    pub node_resolv_conf: PathBuf,
    /// Where pods' files live, one directory per pod UID.
    pub pods_dir: PathBuf,
    /// First restart back-off (doubles up to `backoff_max`).
    pub backoff_base: Duration,
    /// Longest restart back-off.
    pub backoff_max: Duration,
}

/// Pods' cgroups, removed when a pod is torn down (the runtime removes
/// each container's; the pod's own directory is the agent's).
pub trait PodCgroups: Send + Sync {
    /// Removes pod `uid`'s cgroup in every hierarchy; missing is fine.
    fn remove(&self, uid: &str);
}

/// No cgroups to remove (tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCgroups;

impl PodCgroups for NoCgroups {
    fn remove(&self, _uid: &str) {}
}

/// Errors of tearing a pod down.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    /// Its containers could not be listed or removed.
    #[error("failed to remove the containers of pod {uid}")]
    Runtime {
        /// The pod UID.
        uid: String,
        /// The cause.
        #[source]
        source: RuntimeError,
    },
    /// Its network could not be torn down.
    #[error("failed to tear down the network of pod {uid}")]
    Network {
        /// The pod UID.
        uid: String,
        /// The cause.
        #[source]
        source: PodNetworkError,
    },
    /// Its directory could not be removed.
    #[error("failed to remove {}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a pod worker uses, built once by the agent (or a test).
pub struct PodParts<R, N> {
    /// The node facts and timings.
    pub cfg: WorkerConfig,
    /// The containers.
    pub runtime: Arc<R>,
    /// Pod addresses, sandboxes and datapath entries.
    pub network: Arc<PodNetworkManager<N>>,
    /// Images and root filesystems.
    pub images: Arc<dyn ImageSource>,
    /// Writes pod statuses.
    pub status: StatusManager,
    /// Final deletes.
    pub api: Arc<dyn NodeApi>,
    /// Events about pods.
    pub events: EventRecorder,
    /// ConfigMaps, Secrets, claims (volumes, env, pull secrets).
    pub view: ViewReader,
    /// Container lifecycle events.
    pub pleg: Pleg,
    /// Pod cgroups.
    pub cgroups: Arc<dyn PodCgroups>,
    /// ServiceAccount tokens of projected volumes.
    pub tokens: TokenManager,
}

impl<R, N> std::fmt::Debug for PodParts<R, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodParts")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl<R: ContainerRuntime, N: PodNetworks> PodParts<R, N> {
    /// Where pod `uid`'s files live.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.cfg.pods_dir.join(uid)
    }

    /// Tears pod `uid` down completely: stops its containers (SIGTERM,
    /// `grace`, SIGKILL; all at once), unmounts their root filesystems,
    /// removes them, the pod's cgroups, its datapath entry, sandbox and
    /// address, and its directory. Safe to repeat.
    pub async fn remove_pod(&self, uid: &str, grace: Duration) -> Result<(), TeardownError> {
        let rt_err = |source| TeardownError::Runtime {
            uid: uid.to_owned(),
            source,
        };
        let containers = self.runtime.list_pod(uid).await.map_err(rt_err)?;
        let stops = containers.iter().map(|c| async {
            if let Err(err) = self.runtime.stop(&c.meta.id, grace).await {
                tracing::debug!(container = %c.meta.id, %err, "failed to stop container, removing by force");
            }
        });
        futures::future::join_all(stops).await;
        // Stopped before their root filesystems go away.
        let pod_dir = self.pod_dir(uid);
        self.images.unmount_all(&pod_dir);
        for c in &containers {
            self.runtime.remove(&c.meta.id).await.map_err(rt_err)?;
        }
        self.cgroups.remove(uid);
        self.tokens.forget_pod(uid);
        self.network
            .teardown(uid)
            .await
            .map_err(|source| TeardownError::Network {
                uid: uid.to_owned(),
                source,
            })?;
        match std::fs::remove_dir_all(&pod_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TeardownError::Io {
                    path: pod_dir,
                    source,
                });
            }
        }
        tracing::info!(pod_uid = %uid, "pod removed");
        Ok(())
    }
}

/// One pod's worker state.
struct Worker<R, N> {
    parts: Arc<PodParts<R, N>>,
    uid: String,
    /// `namespace/name`, for logs and the datapath entry.
    key: String,
    ip: Option<Ipv4Addr>,
    netns: Option<PathBuf>,
    init: Vec<Ctr>,
    main: Vec<Ctr>,
    start_time: Option<Time>,
    conditions: BTreeMap<String, PodCondition>,
    failed_message: Option<String>,
    /// The pod's volumes as host directories, once all could be set up.
    volumes: Option<HashMap<String, PathBuf>>,
    /// The last volume set-up failure and when it was last recorded.
    mount_error: Option<(String, Instant)>,
    /// When network or volume set-up failed and is to be tried again.
    setup_retry: Option<Instant>,
    /// The pod's projected or downward API volumes may be out of date:
    /// their sources or the pod changed since they were written.
    volumes_stale: bool,
    /// Whether the control plane was found to issue no tokens (said once).
    no_tokens: bool,
}

/// The pod's deletion grace period: the one deletion set, else the spec's.
fn deletion_grace(pod: &Pod) -> Duration {
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(grace).unwrap_or(0))
}

/// Runs pod `uid`'s worker until the pod is deleted or leaves the node.
pub async fn run<R: ContainerRuntime + 'static, N: PodNetworks + 'static>(
    parts: Arc<PodParts<R, N>>,
    uid: String,
    mut rx: PodSlot,
) {
    let Some(first) = rx.borrow().clone() else {
        return;
    };
    let key = crate::endpoints::pod_name(&first);
    let span = tracing::info_span!("pod_worker", pod = %key, pod_uid = %uid);
    let events = parts.pleg.watch(&uid);
    let mut sources = parts.view.changes(Concern::Sources);
    let spec = first.spec.clone().unwrap_or_default();
    let mut w = Worker {
        parts: Arc::clone(&parts),
        uid: uid.clone(),
        key,
        ip: None,
        netns: None,
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Ctr::new(c, true))
            .collect(),
        main: spec.containers.iter().map(|c| Ctr::new(c, false)).collect(),
        start_time: first.status.as_ref().and_then(|s| s.start_time.clone()),
        conditions: BTreeMap::new(),
        failed_message: None,
        volumes: None,
        mount_error: None,
        setup_retry: None,
        volumes_stale: false,
        no_tokens: false,
    };
    let body = async move {
        w.adopt().await;
        tracing::debug!("worker started");
        loop {
            let pod = rx.borrow_and_update().clone();
            let Some(pod) = pod else {
                w.teardown(None, LEFT_NODE_GRACE).await;
                break;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                w.teardown(Some(&pod), deletion_grace(&pod)).await;
                break;
            }
            w.step(&pod).await;
            // The datapath entry was programmed beside the start; the pod is
            // reported once it is in place.
            w.parts.network.settle(&w.uid).await;
            w.report(&pod);
            let wake_at = w.next_wake();
            // Waiting for a volume's source, or following the sources of
            // projected and downward API volumes.
            let waits_on_sources = w.volumes.is_none() || has_projections(&pod);
            sources.borrow_and_update();
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    w.volumes_stale = true;
                }
                () = events.notified() => {}
                Ok(()) = sources.changed(), if waits_on_sources => {
                    w.volumes_stale = true;
                }
                () = sleep_until(wake_at) => {}
            }
        }
    };
    tracing::Instrument::instrument(body, span).await;
    parts.pleg.unwatch(&uid);
}

/// Whether `pod` has volumes whose content follows its sources: projected
/// and downward API volumes.
fn has_projections(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.projected.is_some() || v.downward_api.is_some())
}

/// Sleeps until `at`, forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<R: ContainerRuntime, N: PodNetworks> Worker<R, N> {
    fn all(&mut self) -> impl Iterator<Item = &mut Ctr> {
        self.init.iter_mut().chain(self.main.iter_mut())
    }

    /// When the worker has something to do without being woken: the next
    /// due probe, the end of a back-off, a set-up retry.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let probes = self
            .init
            .iter()
            .chain(&self.main)
            .filter(|c| !c.init && c.running_since.is_some() && c.exited.is_none())
            // Only the probes a pass runs: the startup probe until it
            // passes, then readiness and liveness.
            .flat_map(|c| {
                if c.started {
                    [&c.liveness, &c.readiness]
                } else {
                    [&c.startup, &None]
                }
            })
            .flatten()
            .map(ProbeState::next_due);
        let retries = self
            .init
            .iter()
            .chain(&self.main)
            .filter_map(|c| c.retry_at)
            .filter(|t| *t > now);
        // A failed pull shows as ErrImagePull until the next pass turns
        // it into ImagePullBackOff, as the kubelet's next sync does.
        let pull_backoff = self
            .init
            .iter()
            .chain(&self.main)
            .any(|c| {
                c.pull_failed
                    && c.waiting
                        .as_ref()
                        .is_some_and(|(r, _)| r != "ImagePullBackOff")
            })
            .then(|| now + SETUP_RETRY);
        // A token due for renewal rewrites its volume.
        let token_refresh = self
            .volumes
            .as_ref()
            .and_then(|_| self.parts.tokens.refresh_at(&self.uid));
        probes
            .chain(retries)
            .chain(self.setup_retry)
            .chain(pull_backoff)
            .chain(token_refresh)
            .min()
    }

    /// Picks up containers and the sandbox an earlier agent left running
    /// (and puts the sandbox back in the routing datapath).
    async fn adopt(&mut self) {
        let Ok(list) = self.parts.runtime.list_pod(&self.uid).await else {
            return;
        };
        let uid = self.uid.clone();
        let mut adopted = false;
        for c in self.all() {
            let latest = list
                .iter()
                .filter(|s| s.meta.pod_uid == uid && s.meta.name == c.spec.name)
                .max_by_key(|s| s.meta.attempt);
            if let Some(s) = latest {
                c.id = Some(s.meta.id.clone());
                c.next_attempt = s.meta.attempt + 1;
                c.restarts = i32::try_from(s.meta.attempt).unwrap_or(i32::MAX);
                c.waiting = None;
                // Probes start over, as they do when a kubelet restarts: a
                // ready container is ready again at its next probe.
                arm_probes(c, Instant::now());
                adopted = true;
                tracing::info!(container = %s.meta.id, "adopted container");
            }
        }
        // Only a pod with something on the node can have a sandbox; a new
        // pod does not wait here for the node's pod CIDR.
        if !adopted && self.parts.network.get().is_none() {
            return;
        }
        match self.parts.network.adopt(&self.uid, &self.key).await {
            Ok(Some(net)) => {
                tracing::info!(ip = %net.ip, "adopted pod sandbox");
                self.ip = Some(net.ip);
                self.netns = Some(net.netns_path);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "failed to inspect the adopted sandbox"),
        }
    }

    /// Builds the pod's network (once): address, sandbox, datapath entry,
    /// then hosts and resolv.conf.
    async fn ensure_sandbox(&mut self, pod: &Pod) -> bool {
        if self.ip.is_some() {
            return true;
        }
        let net = match self.parts.network.setup(&self.uid, &self.key).await {
            Ok(net) => net,
            Err(err) => {
                tracing::warn!(%err, "failed to create pod sandbox");
                if matches!(err, PodNetworkError::Ipam(_)) {
                    self.failed_message = Some(err.to_string());
                }
                self.parts
                    .events
                    .record(pod, true, "FailedCreatePodSandBox", format!("{err}"));
                self.setup_retry = Some(Instant::now() + SETUP_RETRY);
                return false;
            }
        };
        let dns = crate::pod_dns::pod_dns(
            pod,
            &skep_dns::ResolvConf::read(&self.parts.cfg.node_resolv_conf),
            &crate::pod_dns::ClusterDns {
                nameservers: vec![IpAddr::V4(self.parts.cfg.cluster_dns)],
                domain: self.parts.cfg.cluster_domain.clone(),
            },
        );
        let hostname = pod.metadata.name.clone().unwrap_or_default();
        let pod_dir = self.parts.pod_dir(&self.uid);
        if let Err(err) = write_pod_files(&pod_dir, &hostname, net.ip, &dns) {
            tracing::warn!(%err, "failed to write pod files");
            self.setup_retry = Some(Instant::now() + SETUP_RETRY);
            return false;
        }
        self.ip = Some(net.ip);
        self.netns = Some(net.netns_path);
        self.failed_message = None;
        self.setup_retry = None;
        tracing::debug!(ip = %net.ip, "pod sandbox ready");
        true
    }

    /// Sets up the pod's volumes (once). Like the kubelet, a volume whose
    /// source is missing (a ConfigMap, a claim that is not bound) keeps the
    /// whole pod in ContainerCreating with a `FailedMount` event, and is
    /// retried until it appears.
    async fn ensure_volumes(&mut self, pod: &Pod) -> bool {
        if self.volumes.is_some() {
            self.refresh_volumes(pod).await;
            return true;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sources = self.parts.view.sources(&ns);
        let dir = self.parts.pod_dir(&self.uid).join("volumes");
        let prepared = match self.tokens(pod).await {
            Ok(tokens) => {
                let allocatable = self.allocatable();
                let facts = podspec::VolumeFacts {
                    tokens: &tokens,
                    allocatable: &allocatable,
                };
                podspec::prepare_volumes(pod, &dir, &sources, &facts)
            }
            Err(err) => Err(err),
        };
        self.volumes_stale = false;
        match prepared {
            Ok(v) => {
                self.volumes = Some(v);
                self.mount_error = None;
                self.setup_retry = None;
                true
            }
            Err(err) => {
                let message = match &err {
                    podspec::PodSpecError::Mount { volume, reason } => {
                        format!("MountVolume.SetUp failed for volume {volume:?} : {reason}")
                    }
                    other => format!("MountVolume.SetUp failed: {other}"),
                };
                let due = self
                    .mount_error
                    .as_ref()
                    .is_none_or(|(last, at)| *last != message || at.elapsed() >= MOUNT_EVENT_EVERY);
                if due {
                    tracing::info!(%message, "pod volumes not ready");
                    self.parts
                        .events
                        .record(pod, true, "FailedMount", message.clone());
                    self.mount_error = Some((message, Instant::now()));
                }
                self.setup_retry = Some(Instant::now() + SETUP_RETRY);
                false
            }
        }
    }

    /// The tokens of the pod's `serviceAccountToken` projections, cached
    /// or fetched. A control plane that issues no tokens (`Unimplemented`)
    /// leaves those files out, said once; any other failure is the
    /// volume's `FailedMount` (`failed to fetch token: …`, as the kubelet).
    async fn tokens(&mut self, pod: &Pod) -> Result<Tokens, podspec::PodSpecError> {
        let mut tokens = Tokens::new();
        for (volume, key) in projected::token_keys(pod) {
            match self.parts.tokens.get(&key).await {
                Ok(token) => {
                    tokens.insert(key, token);
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    if !self.no_tokens {
                        tracing::warn!(%volume, "the control plane issues no service account tokens; the volume has no token");
                        self.no_tokens = true;
                    }
                }
                Err(status) => {
                    return Err(podspec::PodSpecError::Mount {
                        volume,
                        reason: format!("failed to fetch token: {}", status.message()),
                    });
                }
            }
        }
        Ok(tokens)
    }

    /// The node's allocatable resources, for downward API resource limits.
    fn allocatable(&self) -> BTreeMap<String, String> {
        self.parts
            .view
            .node()
            .and_then(|n| n.status.as_ref()?.allocatable.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, q)| (k, q.0))
            .collect()
    }

    /// Rewrites the pod's projected and downward API volumes when their
    /// sources or the pod changed, or a token is due for renewal, as the
    /// kubelet's periodic remount does; a failure is a `FailedMount`
    /// event and the containers keep what they have.
    async fn refresh_volumes(&mut self, pod: &Pod) {
        let token_due = self
            .parts
            .tokens
            .refresh_at(&self.uid)
            .is_some_and(|t| t <= Instant::now());
        if !(self.volumes_stale || token_due) || !has_projections(pod) {
            return;
        }
        self.volumes_stale = false;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sources = self.parts.view.sources(&ns);
        let dir = self.parts.pod_dir(&self.uid).join("volumes");
        let refreshed = match self.tokens(pod).await {
            Ok(tokens) => {
                let allocatable = self.allocatable();
                let facts = podspec::VolumeFacts {
                    tokens: &tokens,
                    allocatable: &allocatable,
                };
                podspec::refresh_volumes(pod, &dir, &sources, &facts)
            }
            Err(err) => Err(err),
        };
        match refreshed {
            Ok(changed) if !changed.is_empty() => {
                tracing::debug!(volumes = ?changed, "volumes updated");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, "failed to update volumes");
                self.parts.events.record(
                    pod,
                    true,
                    "FailedMount",
                    format!("MountVolume.SetUp failed: {err}"),
                );
            }
        }
    }

    /// One pass over the pod: sandbox, volumes, init containers,
    /// containers, probes.
    async fn step(&mut self, pod: &Pod) {
        if !self.ensure_sandbox(pod).await {
            return;
        }
        if !self.ensure_volumes(pod).await {
            return;
        }
        if self.start_time.is_none() {
            self.start_time = Some(Time(crate::agent::now()));
        }
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        // Refresh what the runtime says.
        for i in 0..self.init.len() + self.main.len() {
            self.refresh(i).await;
        }
        // Init containers, in order; a failed one with Never fails the pod.
        for i in 0..self.init.len() {
            if self.init[i].done {
                continue;
            }
            let init_policy = if policy == "Always" {
                "OnFailure"
            } else {
                &policy
            };
            self.drive(true, i, pod, init_policy).await;
            if !self.init[i].done {
                return;
            }
        }
        for i in 0..self.main.len() {
            self.drive(false, i, pod, &policy).await;
        }
    }

    fn ctr(&mut self, init: bool, i: usize) -> &mut Ctr {
        if init {
            &mut self.init[i]
        } else {
            &mut self.main[i]
        }
    }

    /// Reads container `i` (init first, then main) from the runtime.
    async fn refresh(&mut self, i: usize) {
        let (init, idx) = if i < self.init.len() {
            (true, i)
        } else {
            (false, i - self.init.len())
        };
        let parts = Arc::clone(&self.parts);
        let backoff_base = parts.cfg.backoff_base;
        let backoff_max = parts.cfg.backoff_max;
        let c = self.ctr(init, idx);
        let Some(id) = c.id.clone() else {
            return;
        };
        let Ok(status) = parts.runtime.status(&id).await else {
            return;
        };
        match status.state {
            ContainerState::Running { .. } => {
                c.waiting = None;
                c.exited = None;
                c.running_since = status.started_at.or(c.running_since);
            }
            ContainerState::Exited(exit) if c.exited.is_none() => {
                let started = status.started_at.or(c.running_since);
                // The memory cgroup outlives the process until the next
                // attempt removes the container: read it now.
                let oom = parts
                    .runtime
                    .oom_killed(&status.meta.pod_uid, &status.meta.name);
                let (reason, exit_code) = if exit.error.is_some() {
                    // What containerd reports when the process never ran.
                    ("StartError", 128)
                } else if oom {
                    ("OOMKilled", exit.exit_code)
                } else if exit.exit_code == 0 {
                    ("Completed", 0)
                } else {
                    ("Error", exit.exit_code)
                };
                c.exited = Some(ContainerStateTerminated {
                    exit_code,
                    signal: exit.signal,
                    reason: Some(reason.into()),
                    message: exit.error.clone(),
                    started_at: started.map(ts),
                    finished_at: Some(ts(exit.finished_at)),
                    container_id: Some(format!("skep://{id}")),
                });
                c.running_since = None;
                c.waiting = None;
                c.ready = false;
                c.liveness = None;
                c.readiness = None;
                c.startup = None;
                if c.init && exit_code == 0 {
                    c.done = true;
                }
                // A container that ran for a while starts its back-off over.
                let ran = started
                    .and_then(|s| exit.finished_at.duration_since(s).ok())
                    .unwrap_or_default();
                c.backoff = if ran > backoff_max * 2 || c.backoff.is_zero() {
                    backoff_base
                } else {
                    (c.backoff * 2).min(backoff_max)
                };
                c.retry_at = Some(Instant::now() + c.backoff);
                tracing::info!(container = %id, code = exit_code, reason, "container exited");
            }
            _ => {}
        }
    }

    /// Starts, restarts or probes container `i`.
    async fn drive(&mut self, init: bool, i: usize, pod: &Pod, policy: &str) {
        let now = Instant::now();
        let c = self.ctr(init, i);
        let exited_code = c.exited.as_ref().map(|t| t.exit_code);
        match (c.id.is_some(), exited_code) {
            (true, None) => {
                if c.running_since.is_some() && self.probe(init, i, pod).await {
                    // Killed by its liveness probe: seen exited at once.
                    self.refresh(self.init.len() + i).await;
                }
            }
            (true, Some(code)) => {
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if !restart || (c.init && c.done) {
                    return;
                }
                if c.retry_at.is_some_and(|t| now < t) {
                    let msg = format!(
                        "back-off {}s restarting failed container={} pod={}",
                        c.backoff.as_secs(),
                        c.spec.name,
                        pod.metadata.name.as_deref().unwrap_or("")
                    );
                    if c.waiting
                        .as_ref()
                        .is_none_or(|(r, _)| r != "CrashLoopBackOff")
                    {
                        let name = c.spec.name.clone();
                        self.parts.events.record(
                            pod,
                            true,
                            "BackOff",
                            format!("Back-off restarting failed container {name}"),
                        );
                    }
                    let c = self.ctr(init, i);
                    c.waiting = Some(("CrashLoopBackOff".into(), msg));
                    return;
                }
                let c = self.ctr(init, i);
                c.last_terminated = c.exited.take();
                c.restarts += 1;
                self.start(init, i, pod).await;
            }
            (false, _) => {
                if c.retry_at.is_some_and(|t| now < t) {
                    if c.pull_failed {
                        let image = c.spec.image.clone().unwrap_or_default();
                        c.waiting = Some((
                            "ImagePullBackOff".into(),
                            format!("Back-off pulling image {image:?}"),
                        ));
                    }
                    return;
                }
                self.start(init, i, pod).await;
            }
        }
    }

    fn fail(&mut self, init: bool, i: usize, reason: &str, message: String) {
        let base = self.parts.cfg.backoff_base;
        let max = self.parts.cfg.backoff_max;
        let c = self.ctr(init, i);
        c.backoff = if c.backoff.is_zero() {
            base
        } else {
            (c.backoff * 2).min(max)
        };
        c.retry_at = Some(Instant::now() + c.backoff);
        c.waiting = Some((reason.into(), message));
    }

    /// Stops everything of the pod and, when the API deleted it, finishes
    /// the deletion.
    async fn teardown(&mut self, deleted: Option<&Pod>, grace: Duration) {
        if let Some(pod) = deleted {
            for c in self.init.iter().chain(&self.main) {
                if c.id.is_some() && c.exited.is_none() {
                    self.parts.events.record(
                        pod,
                        false,
                        "Killing",
                        format!("Stopping container {}", c.spec.name),
                    );
                }
            }
        }
        if let Err(err) = self.parts.remove_pod(&self.uid, grace).await {
            tracing::error!(%err, "failed to remove pod");
        }
        self.parts.status.forget(&self.uid);
        let Some(pod) = deleted else {
            return;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let body = br#"{"gracePeriodSeconds":0}"#.to_vec();
        for _ in 0..5 {
            match self.parts.api.delete_pod(&ns, &name, body.clone()).await {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::NotFound => break,
                Err(err) => {
                    tracing::warn!(%err, "failed to delete pod; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::info!("pod deleted");
    }
}
