//! The node-sync stream task: follows the control plane's watch for this
//! node (resuming from the last revision, taking a fresh snapshot on GONE),
//! is the one [`ViewWriter`] of the view, and hands each of this node's
//! pods to its worker ([`Workers`]).
//!
//! A worker is woken only when what it acts on changed
//! ([`crate::view::worker_facts_changed`]): its own status write, echoed
//! by the stream, refreshes the copy it reads next (so its next write
//! carries the current `resourceVersion`) without waking it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skep_proto::v1::WatchRequest;
use skep_proto::v1::node_sync_client::NodeSyncClient;
use skep_proto::v1::watch_event::Type as EventKind;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::view::{Map, ViewWriter, worker_facts_changed};

/// What a pod worker is handed: its pod's latest copy, `None` once the pod
/// left the node.
pub type PodSlot = watch::Receiver<Option<Arc<Pod>>>;

/// Starts the worker of pod `uid`.
pub type SpawnWorker = Box<dyn Fn(String, PodSlot) -> JoinHandle<()> + Send>;

/// A running pod worker.
struct WorkerHandle {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
    /// The pod left the view: the handle goes once the task has torn it down.
    gone: bool,
}

/// This node's pod workers, by pod UID.
pub struct Workers {
    spawn: SpawnWorker,
    handles: HashMap<String, WorkerHandle>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("pods", &self.handles.len())
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// No workers yet; `spawn` starts one.
    #[must_use]
    pub fn new(spawn: SpawnWorker) -> Self {
        Self {
            spawn,
            handles: HashMap::new(),
        }
    }

    /// Hands pod `uid`'s latest copy (`None`: it left the node) to its
    /// worker, starting one for a new pod. The worker is woken only when
    /// the pod's spec, deletion or downward-API metadata changed; its own
    /// status echo only refreshes the copy.
    pub fn hand_off(&mut self, uid: &str, pod: Option<&Arc<Pod>>) {
        self.handles
            .retain(|_, w| !(w.gone && w.task.is_finished()));
        match (self.handles.get_mut(uid), pod) {
            (Some(w), Some(pod)) => {
                if w.task.is_finished() {
                    // The worker finished (pod deleted): no restart for a stale copy.
                    return;
                }
                w.tx.send_if_modified(|current| {
                    let wake = current
                        .as_ref()
                        .is_none_or(|c| worker_facts_changed(c, pod));
                    *current = Some(Arc::clone(pod));
                    wake
                });
            }
            (Some(w), None) => {
                w.tx.send_replace(None);
                w.gone = true;
            }
            (None, Some(pod)) => {
                let (tx, rx) = watch::channel(Some(Arc::clone(pod)));
                let task = (self.spawn)(uid.to_owned(), rx);
                self.handles.insert(
                    uid.to_owned(),
                    WorkerHandle {
                        tx,
                        task,
                        gone: false,
                    },
                );
            }
            (None, None) => {}
        }
    }

    /// Hands every pod of a fresh snapshot to its worker and ends the
    /// workers of pods it no longer has.
    pub fn reconcile(&mut self, pods: &Map<String, Pod>) {
        for (uid, pod) in pods.iter() {
            self.hand_off(uid, Some(pod));
        }
        let gone: Vec<String> = self
            .handles
            .keys()
            .filter(|uid| !pods.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.hand_off(&uid, None);
        }
    }

    /// How many workers are running or tearing down.
    #[must_use]
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// Follows the node-sync stream until aborted: applies its events to
/// `writer`, hands this node's pods to `workers`, and calls `on_snapshot`
/// each time a fresh snapshot is in (the agent removes orphans then).
#[tracing::instrument(skip_all, fields(node = %node_name))]
pub async fn run(
    client: NodeSyncClient<Channel>,
    node_name: String,
    mut writer: ViewWriter,
    mut workers: Workers,
    on_snapshot: impl Fn(),
) {
    let reader = writer.reader();
    let mut revision = 0u64;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut client = client.clone();
        let req = WatchRequest {
            node_name: node_name.clone(),
            from_revision: revision,
        };
        // A snapshot cut off halfway is taken again from the start.
        if revision == 0 || writer.in_snapshot() {
            revision = 0;
            writer.begin_snapshot();
        }
        match client.watch(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                backoff = Duration::from_millis(200);
                loop {
                    let ev = match stream.message().await {
                        Ok(Some(ev)) => ev,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(%err, "node-sync stream failed");
                            break;
                        }
                    };
                    let kind = EventKind::try_from(ev.r#type).unwrap_or(EventKind::Bookmark);
                    match kind {
                        EventKind::Gone => {
                            tracing::info!("revision compacted; taking a fresh snapshot");
                            revision = 0;
                            break;
                        }
                        EventKind::Bookmark => revision = revision.max(ev.revision),
                        EventKind::Synced => {
                            revision = revision.max(ev.revision);
                            let snapshot = writer.synced(revision);
                            tracing::info!(revision, snapshot, "node view synced");
                            if snapshot {
                                on_snapshot();
                                workers.reconcile(&reader.pods());
                            }
                        }
                        EventKind::Added | EventKind::Modified | EventKind::Deleted => {
                            revision = revision.max(ev.revision);
                            let deleted = kind == EventKind::Deleted;
                            let applied = writer.apply(revision, &ev.kind, deleted, &ev.object);
                            if let Some(uid) = applied.local_pod {
                                tracing::debug!(
                                    target: "skep_startup",
                                    pod_uid = %uid,
                                    phase = "delivered",
                                    end_us = skep_runtime::timing::now_us()
                                );
                                let pods = reader.pods();
                                workers.hand_off(&uid, pods.get(&uid));
                            }
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "failed to open the node-sync stream"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    fn pod(rv: &str, annotation: &str, deleting: bool, restarts: i32) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": "p", "namespace": "a", "uid": "u1", "resourceVersion": rv,
                "annotations": {"note": annotation}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "busybox",
                "imageID": "", "ready": true, "restartCount": restarts}]},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
            v["metadata"]["deletionGracePeriodSeconds"] = json!(1);
        }
        Arc::new(serde_json::from_value(v).unwrap_or_default())
    }

    /// Workers whose tasks never end; their slots are kept for the test.
    fn workers() -> (Workers, Arc<Mutex<Vec<PodSlot>>>) {
        let slots = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&slots);
        let spawn: SpawnWorker = Box::new(move |_uid, rx| {
            kept.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(rx);
            tokio::spawn(std::future::pending())
        });
        (Workers::new(spawn), slots)
    }

    fn woken(slot: &mut PodSlot) -> bool {
        let woken = slot.has_changed().unwrap_or(false);
        slot.borrow_and_update();
        woken
    }

    #[tokio::test]
    async fn a_worker_is_woken_by_its_pods_changes_not_by_its_own_status_echo() {
        let (mut workers, slots) = workers();
        workers.hand_off("u1", Some(&pod("1", "a", false, 0)));
        let mut slot = slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(0);
        assert!(!woken(&mut slot), "a new worker starts with its pod");

        // Its status writes come back with new resourceVersions.
        workers.hand_off("u1", Some(&pod("2", "a", false, 0)));
        workers.hand_off("u1", Some(&pod("3", "a", false, 1)));
        assert!(!woken(&mut slot));
        let rv = slot
            .borrow()
            .as_ref()
            .and_then(|p| p.metadata.resource_version.clone());
        assert_eq!(rv.as_deref(), Some("3"), "the copy is still the newest");

        workers.hand_off("u1", Some(&pod("4", "b", false, 1)));
        assert!(woken(&mut slot), "annotations feed the downward API");
        workers.hand_off("u1", Some(&pod("5", "b", true, 1)));
        assert!(woken(&mut slot), "deletion");
        workers.hand_off("u1", None);
        assert!(woken(&mut slot));
        assert!(slot.borrow().is_none());
        assert_eq!(
            workers.len(),
            1,
            "kept until its task has torn the pod down"
        );
        assert_eq!(
            slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len(),
            0
        );
    }

    #[tokio::test]
    async fn a_snapshot_starts_new_workers_and_ends_those_of_pods_gone() {
        let (mut workers, slots) = workers();
        workers.hand_off("old", Some(&pod("1", "a", false, 0)));
        let mut pods = HashMap::new();
        pods.insert("u1".to_owned(), pod("2", "a", false, 0));
        workers.reconcile(&Arc::new(pods));
        let mut slots = slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(slots.len(), 2);
        let old = &mut slots[0];
        assert!(woken(old));
        assert!(old.borrow().is_none());
    }
}
