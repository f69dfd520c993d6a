//! The scheduler in `skep server`: `skep-scheduler`'s algorithm and queue,
//! fed by the shared informers (pods, nodes, namespaces), binding through
//! the `pods/binding` path of [`Objects`] — the same admission check a
//! kube-scheduler's POST gets, so a pod is never bound twice — and telling
//! users why a pod waits (`FailedScheduling` events, `PodScheduled=False`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, PodCondition};
use serde_json::{Value, json};
use skep_api::{admission, decode::Decoded};
use skep_objects::Objects;
use skep_scheduler::{BindError, Binder, PodInfo, Scheduler, SchedulerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{EventRecorder, EventType, Informers, informer::object_key};

/// The name Kubernetes' default scheduler uses; pods name it in `schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Binds through the store with the API's rules and records what happened.
pub struct ApiBinder {
    objects: Objects,
    events: Arc<EventRecorder>,
}

fn pod_ref(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
        ..ObjectReference::default()
    }
}

impl Binder for ApiBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        let binding = Decoded {
            value: json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }),
            duplicates: Vec::new(),
        };
        self.objects
            .bind(&pod.namespace, &pod.name, &binding, admission::now())
            .await
            .map_err(|err| BindError {
                pod: pod.key.clone(),
                node: node.to_owned(),
                source: Box::new(err),
            })?;
        self.events
            .record(
                &pod_ref(pod),
                EventType::Normal,
                "Scheduled",
                &format!("Successfully assigned {} to {node}", pod.key),
            )
            .await;
        Ok(())
    }

    fn failed_scheduling(&self, pod: &PodInfo, message: &str) {
        let objects = self.objects.clone();
        let events = Arc::clone(&self.events);
        let pod = pod.clone();
        let message = message.to_owned();
        tokio::spawn(async move {
            events
                .record(
                    &pod_ref(&pod),
                    EventType::Warning,
                    "FailedScheduling",
                    &message,
                )
                .await;
            if let Err(err) = mark_unschedulable(&objects, &pod, &message).await {
                tracing::debug!(pod = %pod.key, %err, "failed to set PodScheduled=False");
            }
        });
    }
}

/// Sets `PodScheduled=False, reason Unschedulable` with the scheduler's message.
async fn mark_unschedulable(
    objects: &Objects,
    pod: &PodInfo,
    message: &str,
) -> Result<(), skep_api::ApiError> {
    let mut live: Pod = objects.get_typed(&pod.namespace, &pod.name).await?;
    let status = live.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let wanted = PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_owned()),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            admission::now(),
        )),
        ..PodCondition::default()
    };
    match conditions.iter_mut().find(|c| c.type_ == "PodScheduled") {
        Some(c) if c.status == "False" && c.message.as_deref() == Some(message) => return Ok(()),
        Some(c) => *c = wanted,
        None => conditions.push(wanted),
    }
    objects
        .update_typed(&live, "status", SCHEDULER_NAME)
        .await?;
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

/// Starts the scheduler on `informers` (which the caller starts).
pub fn start(
    objects: &Objects,
    informers: &Informers,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let binder = ApiBinder {
        objects: objects.clone(),
        events: Arc::new(EventRecorder::new(objects.clone(), SCHEDULER_NAME)),
    };
    let scheduler = Scheduler::new(
        SchedulerConfig {
            scheduler_name: SCHEDULER_NAME.to_owned(),
            ..SchedulerConfig::default()
        },
        binder,
    );
    {
        let s = Arc::clone(&scheduler);
        informers
            .of_type::<Node>()
            .add_handler(Box::new(move |old, new| match (old, new) {
                (_, Some(node)) => {
                    if let Some(node) = typed::<Node>(node) {
                        s.upsert_node(&node);
                    }
                }
                (Some(node), None) => s.remove_node(skep_api::object::name(node)),
                (None, None) => {}
            }));
    }
    {
        let s = Arc::clone(&scheduler);
        informers
            .of_type::<Pod>()
            .add_handler(Box::new(move |old, new| match (old, new) {
                (_, Some(pod)) => {
                    if let Some(pod) = typed::<Pod>(pod) {
                        s.upsert_pod(pod);
                    }
                }
                (Some(pod), None) => s.remove_pod(&object_key(pod)),
                (None, None) => {}
            }));
    }
    {
        let s = Arc::clone(&scheduler);
        informers
            .of_type::<k8s_openapi::api::core::v1::Namespace>()
            .add_handler(Box::new(move |_, new| {
                if let Some(ns) = new {
                    let labels = ns["metadata"]["labels"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                                .collect()
                        })
                        .unwrap_or_default();
                    s.upsert_namespace(skep_api::object::name(ns), labels);
                }
            }));
    }
    let running = tokio::spawn(Arc::clone(&scheduler).run());
    let stop = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            scheduler.shutdown();
        })
    };
    vec![running, stop]
}
