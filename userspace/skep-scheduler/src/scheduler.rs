//! The scheduler: feeds watch events into the cache and queue, runs
//! scheduling cycles one at a time (like kube-scheduler) and binding cycles
//! concurrently through a pluggable [`Binder`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::algorithm::Algorithm;
use crate::cache::Cache;
use crate::model::{Labels, PodInfo};
use crate::queue::{ClusterEvent, QueueConfig, QueuedPod, SchedulingQueue};

/// A failed binding.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind pod {pod} to node {node}")]
pub struct BindError {
    /// `namespace/name`.
    pub pod: String,
    /// Node name.
    pub node: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Writes scheduling decisions back to the cluster. The real one POSTs the
/// `binding` subresource and records events through the API.
pub trait Binder: Send + Sync + 'static {
    /// Binds `pod` to `node`. On error the reservation is released and the
    /// pod retried after backoff.
    fn bind(&self, pod: &PodInfo, node: &str)
    -> impl Future<Output = Result<(), BindError>> + Send;

    /// Reports that no node fits (a `FailedScheduling` event with
    /// `message`, and the pod's `PodScheduled=False` condition).
    fn failed_scheduling(&self, pod: &PodInfo, message: &str) {
        let _ = (pod, message);
    }
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods with this `spec.schedulerName` are ours.
    pub scheduler_name: String,
    /// Percentage of nodes to score (0: kube's adaptive default).
    pub percentage_of_nodes_to_score: u32,
    /// Queue timings.
    pub queue: QueueConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            scheduler_name: "default-scheduler".to_owned(),
            percentage_of_nodes_to_score: 0,
            queue: QueueConfig::default(),
        }
    }
}

/// Counters.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Pods assumed onto a node.
    pub scheduled: AtomicU64,
    /// Bindings that succeeded.
    pub bound: AtomicU64,
    /// Attempts where no node fit.
    pub unschedulable: AtomicU64,
    /// Bindings that failed.
    pub bind_errors: AtomicU64,
}

/// Ties cache, queue, algorithm and binder together.
pub struct Scheduler<B: Binder> {
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
    algorithm: Mutex<Algorithm>,
    binder: Arc<B>,
    /// Pods whose binding succeeded, confirmed in the cache at the start of
    /// the next scheduling cycle so binding tasks never wait for the cache
    /// lock the scheduling cycle holds.
    confirmed: Mutex<Vec<(String, String)>>,
    config: SchedulerConfig,
    /// Counters.
    pub stats: SchedulerStats,
}

fn gated(info: &PodInfo) -> bool {
    info.pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl<B: Binder> Scheduler<B> {
    /// A scheduler with an empty cache.
    pub fn new(config: SchedulerConfig, binder: B) -> Arc<Self> {
        Arc::new(Self {
            cache: Mutex::new(Cache::new()),
            queue: SchedulingQueue::new(config.queue),
            algorithm: Mutex::new(Algorithm::new(config.percentage_of_nodes_to_score)),
            binder: Arc::new(binder),
            confirmed: Mutex::new(Vec::new()),
            config,
            stats: SchedulerStats::default(),
        })
    }

    /// The cache (for inspection; hold the guard briefly). Bindings that
    /// succeeded are confirmed first.
    pub fn cache(&self) -> MutexGuard<'_, Cache> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let confirmed = std::mem::take(
            &mut *self
                .confirmed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (key, node) in confirmed {
            if cache
                .pod_placement(&key)
                .is_some_and(|(n, assumed)| assumed && n == node)
            {
                let _ = cache.confirm(&key);
            }
        }
        cache
    }

    /// The binder.
    pub fn binder(&self) -> &Arc<B> {
        &self.binder
    }

    /// The queue.
    pub fn queue(&self) -> &SchedulingQueue {
        &self.queue
    }

    /// A node was added or changed.
    pub fn upsert_node(&self, node: &Node) {
        let known = {
            let mut cache = self.cache();
            let known = node
                .metadata
                .name
                .as_deref()
                .and_then(|n| cache.node_by_name(n))
                .is_some_and(|n| n.spec.is_some());
            cache.upsert_node(node);
            known
        };
        self.queue.on_event(if known {
            ClusterEvent::NodeUpdate
        } else {
            ClusterEvent::NodeAdd
        });
    }

    /// A node was deleted.
    pub fn remove_node(&self, name: &str) {
        self.cache().remove_node(name);
    }

    /// A namespace was added or changed (labels for `namespaceSelector`).
    pub fn upsert_namespace(&self, name: &str, labels: Labels) {
        self.cache().set_namespace(name, labels);
        self.queue.on_event(ClusterEvent::AssignedPodUpdate);
    }

    /// A pod was added or changed: bound pods go to the cache, our pending
    /// pods to the queue, terminated pods are dropped.
    #[tracing::instrument(skip_all, fields(pod = pod.metadata.name.as_deref().unwrap_or("")))]
    pub fn upsert_pod(&self, pod: Pod) {
        let terminal = is_terminal(&pod) || pod.metadata.deletion_timestamp.is_some();
        let info = Arc::new(PodInfo::new(pod));
        if terminal {
            self.remove_pod(&info.key);
        } else if info.node_name.is_some() {
            self.queue.delete(&info.key);
            let existed = self.cache().pod_placement(&info.key).is_some();
            self.cache().upsert_pod(info);
            self.queue.on_event(if existed {
                ClusterEvent::AssignedPodUpdate
            } else {
                ClusterEvent::AssignedPodAdd
            });
        } else if gated(&info) {
            // `schedulingGates` keep the pod out of the queue until removed.
            self.queue.delete(&info.key);
        } else if info.scheduler_name == self.config.scheduler_name {
            // An update of a pod whose binding is in flight (say, its
            // status) must not schedule it a second time.
            if self.cache().pod_placement(&info.key).is_some() {
                return;
            }
            self.queue.add(info);
        }
    }

    /// A pod was deleted.
    pub fn remove_pod(&self, key: &str) {
        self.queue.delete(key);
        if self.cache().remove_pod(key) {
            self.queue.on_event(ClusterEvent::AssignedPodDelete);
        }
    }

    /// Stops [`Scheduler::run`] after the pod in progress.
    pub fn shutdown(&self) {
        self.queue.close();
    }

    /// Schedules pods until [`Scheduler::shutdown`].
    #[tracing::instrument(skip_all, fields(scheduler = %self.config.scheduler_name))]
    pub async fn run(self: Arc<Self>) {
        tracing::info!("scheduler started");
        let mut n: u32 = 0;
        while let Some(pod) = self.queue.pop().await {
            self.schedule_one(pod);
            n = n.wrapping_add(1);
            // pop() does not wait while pods are ready: let binding tasks run.
            if n.is_multiple_of(32) {
                tokio::task::yield_now().await;
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// One scheduling cycle; the binding cycle is spawned.
    fn schedule_one(self: &Arc<Self>, qp: QueuedPod) {
        let result = {
            let mut cache = self.cache();
            let decision = self
                .algorithm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .schedule(&cache, &qp.info);
            decision.map(|r| {
                let assumed = cache.assume(Arc::clone(&qp.info), &r.node);
                (r, assumed)
            })
        };
        match result {
            Err(fit) => {
                self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pod = %qp.info.key, reason = %fit.message, "pod unschedulable");
                self.binder.failed_scheduling(&qp.info, &fit.message);
                self.queue.requeue_unschedulable(&qp, fit.plugins);
            }
            Ok((r, Err(err))) => {
                tracing::warn!(pod = %qp.info.key, node = %r.node, %err, "failed to assume pod");
                self.queue.requeue_backoff(&qp);
            }
            Ok((r, Ok(()))) => {
                if !self.queue.done(&qp.info.key) {
                    // Deleted during the cycle: release, do not bind.
                    let _ = self.cache().forget(&qp.info.key);
                    return;
                }
                self.stats.scheduled.fetch_add(1, Ordering::Relaxed);
                let this = Arc::clone(self);
                tokio::spawn(async move { this.bind_cycle(qp, r.node).await });
            }
        }
    }

    async fn bind_cycle(self: Arc<Self>, qp: QueuedPod, node: String) {
        match self.binder.bind(&qp.info, &node).await {
            Ok(()) => {
                self.stats.bound.fetch_add(1, Ordering::Relaxed);
                self.confirmed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((qp.info.key.clone(), node));
            }
            Err(err) => {
                self.stats.bind_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pod = %qp.info.key, node = %node, error = %err, "binding failed");
                // Not in the cache any more: the pod was deleted (or the
                // watch saw it bound) meanwhile, so there is nothing to retry.
                if self.cache().forget(&qp.info.key).is_err() {
                    return;
                }
                self.queue.on_event(ClusterEvent::AssignedPodDelete);
                self.binder
                    .failed_scheduling(&qp.info, &format!("Binding rejected: {err}"));
                self.queue.readd_backoff(&qp);
            }
        }
    }
}

#[cfg(test)]
#[path = "scheduler_test.rs"]
mod tests;
