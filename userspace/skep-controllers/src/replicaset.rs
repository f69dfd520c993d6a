//! The ReplicaSet controller: keeps `spec.replicas` pods matching the
//! selector, adopting orphans and releasing pods that stopped matching
//! (`ownerReferences` with `controller: true`), deleting the least useful
//! pods first (unscheduled, then pending, then not ready), and reporting
//! the counts in `status`.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use skep_api::delete::DeleteOptions;
use skep_objects::Objects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::events::{EventRecorder, EventType, object_ref};
use crate::informer::{Informer, Informers, object_key, split_key};
use crate::util::{
    controller_ref, label_selector, meta_key, now, owner_ref, pod_active, pod_available, pod_ready,
    pod_ready_since, selects,
};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// Most pods created or deleted in one reconcile (`burstReplicas`).
const BURST: usize = 500;

/// Keeps ReplicaSets' pods.
pub struct ReplicaSetController {
    objects: Objects,
    events: EventRecorder,
}

/// The `metadata` of a cached object.
pub(crate) fn meta_of(obj: &Value) -> Option<ObjectMeta> {
    obj.get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
}

/// Queues the owners (of kind `owner_kind`) of a dependent that changed:
/// its controller, or for an orphan every owner in its namespace whose
/// selector matches it (it may be adopted).
pub(crate) fn enqueue_owners(
    queue: &WorkQueue,
    owners: &Informer,
    owner_kind: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) {
    for obj in [old, new].into_iter().flatten() {
        let Some(meta) = meta_of(obj) else { continue };
        let ns = meta.namespace.clone().unwrap_or_default();
        match controller_ref(&meta) {
            Some(r) if r.kind == owner_kind => queue.add(format!("{ns}/{}", r.name)),
            Some(_) => {}
            None => {
                for owner in owners.list() {
                    if skep_api::object::namespace(&owner) != ns {
                        continue;
                    }
                    let sel = owner
                        .get("spec")
                        .and_then(|s| s.get("selector"))
                        .and_then(|s| serde_json::from_value(s.clone()).ok());
                    if selects(&label_selector(sel.as_ref()), meta.labels.as_ref()) {
                        queue.add(object_key(&owner));
                    }
                }
            }
        }
    }
}

impl ReplicaSetController {
    /// Registers with the informers and starts the workers.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let rss = informers.of_type::<ReplicaSet>();
        let pods = informers.of_type::<Pod>();
        {
            let queue = queue.clone();
            rss.add_handler(Box::new(move |old, new| {
                if let Some(obj) = new.or(old) {
                    queue.add(object_key(obj));
                }
            }));
        }
        {
            let queue = queue.clone();
            let rss = Arc::clone(&rss);
            pods.add_handler(Box::new(move |old, new| {
                enqueue_owners(&queue, &rss, "ReplicaSet", old, new);
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            events: EventRecorder::new(objects.clone(), "replicaset-controller"),
        });
        spawn_workers(
            &controller,
            &queue,
            vec![rss, pods],
            config.workers,
            shutdown,
        )
    }

    /// Adopts matching orphans and releases owned pods that stopped
    /// matching; returns the pods this ReplicaSet controls.
    async fn claim_pods(
        &self,
        rs: &ReplicaSet,
        pods: Vec<Pod>,
    ) -> Result<Vec<Pod>, ControllerError> {
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let sel = label_selector(rs.spec.as_ref().map(|s| &s.selector));
        let mut owned = Vec::new();
        for mut pod in pods {
            let matches = selects(&sel, pod.metadata.labels.as_ref());
            match controller_ref(&pod.metadata).map(|r| r.uid == uid) {
                Some(true) if matches => owned.push(pod),
                Some(true) => {
                    if let Some(refs) = pod.metadata.owner_references.as_mut() {
                        refs.retain(|r| r.uid != uid);
                    }
                    tracing::info!(pod = %meta_key(&pod.metadata), "releasing pod that no longer matches");
                    self.update_pod(&pod, "release pod").await?;
                }
                None if matches
                    && pod.metadata.deletion_timestamp.is_none()
                    && rs.metadata.deletion_timestamp.is_none() =>
                {
                    pod.metadata
                        .owner_references
                        .get_or_insert_with(Vec::new)
                        .push(owner_ref::<ReplicaSet>(&rs.metadata));
                    tracing::info!(pod = %meta_key(&pod.metadata), "adopting pod");
                    if let Some(adopted) = self.update_pod(&pod, "adopt pod").await? {
                        owned.push(adopted);
                    }
                }
                _ => {}
            }
        }
        Ok(owned)
    }

    async fn update_pod(
        &self,
        pod: &Pod,
        action: &'static str,
    ) -> Result<Option<Pod>, ControllerError> {
        match self.objects.update_typed(pod, "", Self::NAME).await {
            Ok(pod) => Ok(Some(pod)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(ControllerError::api(action, meta_key(&pod.metadata), err)),
        }
    }

    async fn create_pods(&self, rs: &ReplicaSet, count: usize) -> Result<(), ControllerError> {
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        let template_meta = template.metadata.unwrap_or_default();
        let rs_name = rs.metadata.name.clone().unwrap_or_default();
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{rs_name}-")),
                namespace: rs.metadata.namespace.clone(),
                labels: template_meta.labels,
                annotations: template_meta.annotations,
                finalizers: template_meta.finalizers,
                owner_references: Some(vec![owner_ref::<ReplicaSet>(&rs.metadata)]),
                ..ObjectMeta::default()
            },
            spec: template.spec,
            status: None,
        };
        for _ in 0..count.min(BURST) {
            match self.objects.create_typed(&pod, Self::NAME).await {
                Ok(created) => {
                    let name = created.metadata.name.unwrap_or_default();
                    self.events
                        .record(
                            &object_ref(rs),
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {name}"),
                        )
                        .await;
                }
                Err(err) => {
                    self.events
                        .record(
                            &object_ref(rs),
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {err}"),
                        )
                        .await;
                    return Err(ControllerError::api(
                        "create pod for",
                        meta_key(&rs.metadata),
                        err,
                    ));
                }
            }
        }
        Ok(())
    }

    async fn delete_pods(
        &self,
        rs: &ReplicaSet,
        mut active: Vec<&Pod>,
        count: usize,
    ) -> Result<(), ControllerError> {
        active.sort_by_key(|p| deletion_rank(p));
        for pod in active.into_iter().take(count.min(BURST)) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            match self
                .objects
                .delete_typed::<Pod>(ns, name, &DeleteOptions::default())
                .await
            {
                Ok(_) => {
                    self.events
                        .record(
                            &object_ref(rs),
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {name}"),
                        )
                        .await;
                }
                Err(err) if is_not_found(&err) => {}
                Err(err) => {
                    return Err(ControllerError::api(
                        "delete pod",
                        format!("{ns}/{name}"),
                        err,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Sort key: pods to delete first come first (client-go `ActivePods`):
/// unscheduled, then pending/unknown, then not ready, ready the shortest
/// time, restarted most, newest.
fn deletion_rank(pod: &Pod) -> impl Ord {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = pod_ready(pod);
    let ready_since = pod_ready_since(pod);
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        assigned,
        phase,
        ready,
        Reverse(ready_since),
        Reverse(restarts),
        Reverse(created),
    )
}

impl Reconciler for ReplicaSetController {
    const NAME: &'static str = "replicaset-controller";

    #[tracing::instrument(skip_all, fields(replicaset = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        let (ns, name) = split_key(key);
        let Some(rs) = self
            .objects
            .try_get_typed::<ReplicaSet>(ns, name)
            .await
            .map_err(|e| ControllerError::api("get replicaset", key, e))?
        else {
            return Ok(None);
        };
        let (pods, _) = self
            .objects
            .list_typed::<Pod>(ns, "")
            .await
            .map_err(|e| ControllerError::api("list pods for", key, e))?;
        let owned = self.claim_pods(&rs, pods).await?;
        let active: Vec<&Pod> = owned.iter().filter(|p| pod_active(p)).collect();
        let spec = rs.spec.clone().unwrap_or_default();
        let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        if rs.metadata.deletion_timestamp.is_none() {
            if active.len() < want {
                tracing::info!(replicaset = %key, have = active.len(), want, "creating pods");
                self.create_pods(&rs, want - active.len()).await?;
            } else if active.len() > want {
                tracing::info!(replicaset = %key, have = active.len(), want, "deleting pods");
                self.delete_pods(&rs, active.clone(), active.len() - want)
                    .await?;
            }
        }
        // Status from what was observed; the pod events of the writes above
        // bring this key back with the new counts.
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let at = now();
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let count = |f: &dyn Fn(&Pod) -> bool| -> i32 {
            i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
        };
        let status = ReplicaSetStatus {
            replicas: count(&|_| true),
            fully_labeled_replicas: Some(count(&|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                template_labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })),
            ready_replicas: Some(count(&|p| pod_ready(p))),
            available_replicas: Some(count(&|p| pod_available(p, min_ready, at))),
            observed_generation: rs.metadata.generation,
            conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        };
        let requeue = (min_ready > 0 && status.ready_replicas != status.available_replicas)
            .then(|| Duration::from_secs(u64::try_from(min_ready).unwrap_or(1)));
        if rs.status.as_ref() != Some(&status) {
            let mut updated = rs.clone();
            updated.status = Some(status);
            match self
                .objects
                .update_typed(&updated, "status", Self::NAME)
                .await
            {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(ControllerError::api("update status of", key, err)),
            }
        }
        Ok(requeue)
    }
}
