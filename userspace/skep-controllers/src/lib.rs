//! The control loops of `skep server`: in-process watchers that read the
//! API objects through shared informers and write back through
//! [`skep_objects::Objects`] — the same admission a kubectl request gets.
//!
//! Like kube-controller-manager, each controller is a reconcile function
//! over a work queue of object keys, fed by informers for the kinds it
//! reads: [`replicaset`], [`deployment`], [`endpoints`] (Endpoints and
//! EndpointSlices), [`nodelifecycle`], [`nodeipam`] (pod CIDRs), [`persistentvolume`] (claim binding),
//! [`namespace`], [`serviceaccounts`] (a `default` ServiceAccount per namespace),
//! [`clusterroleaggregation`] (aggregated ClusterRoles' rules),
//! [`tokens`] (legacy ServiceAccount token secrets),
//! [`rootcacert`] (the `kube-root-ca.crt` ConfigMap per namespace)
//! and the garbage collector [`gc`], and the scheduler ([`scheduling`]).
//! [`events`] is the recorder they (and the scheduler and
//! node agent) use for what `kubectl describe` shows.
//!
//! Start them all with [`run`].
#![deny(missing_docs)]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ReplicaSet, EndpointSlice, …) are plain words in these docs"
)]

pub mod clusterroleaggregation;
pub mod deployment;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod gc;
pub mod informer;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod queue;
pub mod replicaset;
pub mod rootcacert;
pub mod scheduling;
pub mod serviceaccounts;
pub mod tokens;
mod util;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use error::ControllerError;
pub use events::{EventRecorder, EventType};
pub use informer::{Informer, Informers};
pub use queue::WorkQueue;
use skep_objects::Objects;
use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;

/// Settings of the control loops; [`Default`] is Kubernetes' defaults.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Concurrent reconciles per controller.
    pub workers: usize,
    /// How often node heartbeats are checked (`--node-monitor-period`).
    pub node_monitor_period: Duration,
    /// How long a node may go without a heartbeat before it is NotReady
    /// (`--node-monitor-grace-period`, 40s).
    pub node_monitor_grace_period: Duration,
    /// How often a terminating namespace that still has content is looked
    /// at again.
    pub namespace_recheck: Duration,
    /// The range pod CIDRs are carved from (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// The prefix length of each node's pod CIDR (`--node-cidr-mask-size`).
    pub node_cidr_mask: u8,
    /// Whether to run the scheduler ([`scheduling`]) too.
    pub scheduler: bool,
    /// The cluster CA certificate (PEM) [`rootcacert`] publishes in every
    /// namespace; without it that controller does not run.
    pub root_ca: Option<Arc<str>>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            // kube-controller-manager's default for most controllers
            // (`--concurrent-deployment-syncs`, `--concurrent-endpoint-syncs`).
            workers: 5,
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            namespace_recheck: Duration::from_secs(2),
            cluster_cidr: nodeipam::DEFAULT_CLUSTER_CIDR.to_owned(),
            node_cidr_mask: nodeipam::DEFAULT_NODE_MASK,
            scheduler: true,
            root_ca: None,
        }
    }
}

/// What a reconcile asks for next.
pub type Requeue = Option<Duration>;

/// One controller's reconcile step for a queue key.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name, for logs and as the field manager.
    const NAME: &'static str;

    /// Brings the object under `key` toward its desired state. `Ok(Some(d))`
    /// asks to look again after `d` (a deadline, a grace period).
    fn reconcile(&self, key: &str)
    -> impl Future<Output = Result<Requeue, ControllerError>> + Send;
}

/// Runs `workers` workers of `reconciler` over `queue` once `informers`
/// have synced, until `shutdown`.
pub fn spawn_workers<R: Reconciler>(
    reconciler: &Arc<R>,
    queue: &WorkQueue,
    informers: Vec<Arc<Informer>>,
    workers: usize,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    {
        let queue = queue.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            shutdown.cancelled().await;
            queue.shut_down();
        }));
    }
    let informers = Arc::new(informers);
    for _ in 0..workers.max(1) {
        let reconciler = Arc::clone(reconciler);
        let queue = queue.clone();
        let informers = Arc::clone(&informers);
        tasks.push(tokio::spawn(async move {
            for informer in informers.iter() {
                informer.wait_synced().await;
            }
            while let Some(key) = queue.get().await {
                match reconciler.reconcile(&key).await {
                    Ok(requeue) => {
                        queue.forget(&key);
                        if let Some(delay) = requeue {
                            queue.add_after(key.clone(), delay);
                        }
                    }
                    Err(err) if err.is_conflict() => {
                        tracing::debug!(controller = R::NAME, %key, %err, "stale read; retrying");
                        queue.add_rate_limited(&key);
                    }
                    Err(err) => {
                        tracing::warn!(controller = R::NAME, %key, err = %error_chain(&err), "reconcile failed; retrying");
                        queue.add_rate_limited(&key);
                    }
                }
                queue.done(&key);
            }
        }));
    }
    tasks
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Starts every control loop on `objects`; the handle finishes after
/// `shutdown` is cancelled and the loops have stopped. The tokens
/// controller runs when `tokens` gives it a signer and CA.
#[tracing::instrument(skip_all)]
pub fn run(
    objects: &Objects,
    config: &ControllerConfig,
    tokens: Option<tokens::TokenIssuer>,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    let informers = Informers::new(objects.clone());
    let mut tasks = Vec::new();
    tasks.extend(replicaset::ReplicaSetController::start(
        objects, &informers, config, shutdown,
    ));
    tasks.extend(deployment::DeploymentController::start(
        objects, &informers, config, shutdown,
    ));
    tasks.extend(endpoints::EndpointsController::start(
        objects, &informers, config, shutdown,
    ));
    tasks.extend(namespace::NamespaceController::start(
        objects, &informers, config, shutdown,
    ));
    tasks.extend(serviceaccounts::ServiceAccountsController::start(
        objects, &informers, config, shutdown,
    ));
    tasks.extend(
        clusterroleaggregation::ClusterRoleAggregationController::start(
            objects, &informers, config, shutdown,
        ),
    );
    if let Some(issuer) = tokens {
        tasks.extend(tokens::TokensController::start(
            objects, &informers, config, issuer, shutdown,
        ));
    }
    if let Some(root_ca) = &config.root_ca {
        tasks.extend(rootcacert::RootCaCertPublisher::start(
            objects,
            &informers,
            Arc::clone(root_ca),
            config,
            shutdown,
        ));
    }
    tasks.extend(gc::GarbageCollector::start(
        objects, &informers, config, shutdown,
    ));
    tasks.extend(nodeipam::NodeIpamController::start(
        objects, &informers, config, shutdown,
    ));
    tasks.extend(persistentvolume::PersistentVolumeController::start(
        objects, &informers, config, shutdown,
    ));
    tasks.push(nodelifecycle::NodeLifecycleController::start(
        objects, config, shutdown,
    ));
    if config.scheduler {
        tasks.extend(scheduling::start(objects, &informers, shutdown));
    }
    tasks.extend(informers.start(shutdown));
    tracing::info!(tasks = tasks.len(), "controllers started");
    tokio::spawn(async move {
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(%err, "controller task failed");
            }
        }
    })
}

#[cfg(test)]
mod lifecycle_test;
#[cfg(test)]
mod scheduling_test;
#[cfg(test)]
mod services_test;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod workloads_test;
