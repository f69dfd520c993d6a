//! The node lifecycle controller: a node whose agent stops posting
//! heartbeats (the Ready condition's `lastHeartbeatTime`) for the grace
//! period gets its Ready condition set to Unknown (`NodeStatusUnknown`)
//! and the `node.kubernetes.io/unreachable` NoSchedule and NoExecute
//! taints (`not-ready` when the agent itself says Ready=False); the pods
//! of a node that is not Ready are marked Ready=False (Services drop
//! them), and pods on a NoExecute-tainted node are evicted (deleted) once their toleration
//! runs out (`tolerationSeconds`, 300s by skep-api's defaulting), so their
//! owners recreate them elsewhere.
//!
//! Heartbeats are judged by when this controller saw them change, not by
//! their timestamps, so clock skew between nodes does not matter.
//! Leases (`kube-node-lease`) are not served by skep yet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use skep_api::delete::DeleteOptions;
use skep_api::kinds;
use skep_objects::{Filter, ListOptions, Objects};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ControllerConfig;
use crate::error::{ControllerError, is_not_found};
use crate::events::{EventRecorder, EventType, object_ref};
use crate::util::now;

/// Taint of a node whose agent stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node whose agent reports it not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

const NAME: &str = "node-lifecycle-controller";

/// What was last seen of a node's heartbeat, and when.
struct Seen {
    heartbeat: Option<Timestamp>,
    at: Instant,
}

/// Watches node heartbeats, taints silent nodes and evicts their pods.
pub struct NodeLifecycleController {
    objects: Objects,
    events: EventRecorder,
    grace: Duration,
    seen: HashMap<String, Seen>,
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Whether `toleration` tolerates `taint`.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    match toleration.operator.as_deref() {
        Some("Exists") => toleration
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            toleration.key.as_deref() == Some(taint.key.as_str())
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// How long after the taints were added the pod must go: `None` if it
/// tolerates them forever, `Some(0)` if it does not tolerate one.
fn eviction_delay(pod: &Pod, taints: &[&Taint]) -> Option<i64> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut delay: Option<i64> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        // The shortest of the matching tolerations' seconds; none set is forever.
        if let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() {
            delay = Some(delay.map_or(secs, |d| d.min(secs)));
        }
    }
    delay
}

impl NodeLifecycleController {
    /// Starts the periodic node monitor.
    pub fn start(
        objects: &Objects,
        config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        let mut controller = Self {
            objects: objects.clone(),
            events: EventRecorder::new(objects.clone(), NAME),
            grace: config.node_monitor_grace_period,
            seen: HashMap::new(),
        };
        let period = config.node_monitor_period;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(err) = Box::pin(controller.monitor()).await {
                    tracing::warn!(%err, "node health check failed");
                }
            }
        })
    }

    /// One pass over all nodes.
    #[tracing::instrument(skip_all)]
    async fn monitor(&mut self) -> Result<(), ControllerError> {
        let (nodes, _) = self
            .objects
            .list_typed::<Node>("", "")
            .await
            .map_err(|e| ControllerError::api("list", "nodes", e))?;
        self.seen.retain(|name, _| {
            nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(name))
        });
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            if let Err(err) = self.check(node).await {
                tracing::warn!(node = %name, err = %err, "failed to check node");
            }
        }
        Ok(())
    }

    async fn check(&mut self, mut node: Node) -> Result<(), ControllerError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let heartbeat = ready_condition(&node)
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0)
            .or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let seen = self.seen.entry(name.clone()).or_insert(Seen {
            heartbeat,
            at: Instant::now(),
        });
        if seen.heartbeat != heartbeat {
            seen.heartbeat = heartbeat;
            seen.at = Instant::now();
        }
        let silent = seen.at.elapsed() > self.grace;
        let ready_status = ready_condition(&node).map(|c| c.status.clone());
        if silent && ready_status.as_deref() != Some("Unknown") {
            tracing::warn!(node = %name, "node stopped posting status; marking Ready Unknown");
            let at = Time(now());
            let status = node.status.get_or_insert_with(Default::default);
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            if !conditions.iter().any(|c| c.type_ == "Ready") {
                conditions.push(NodeCondition {
                    type_: "Ready".into(),
                    ..NodeCondition::default()
                });
            }
            for c in conditions.iter_mut() {
                if c.status != "Unknown" {
                    c.last_transition_time = Some(at.clone());
                }
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
            }
            node = self
                .objects
                .update_typed(&node, "status", NAME)
                .await
                .map_err(|e| ControllerError::api("update status of node", &name, e))?;
            self.events
                .record(
                    &object_ref(&node),
                    EventType::Normal,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
        }
        let node = self.sync_taints(node).await?;
        let ready = ready_condition(&node).is_some_and(|c| c.status == "True");
        let has_no_execute = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|t| t.effect == "NoExecute");
        if ready && !has_no_execute {
            return Ok(());
        }
        let mut pods = self.pods_on(&name).await?;
        if !ready {
            self.mark_pods_not_ready(&name, &mut pods).await;
        }
        self.evict(&node, pods).await
    }

    /// Sets the `unreachable`/`not-ready` taints the node's Ready condition
    /// calls for; returns the node as stored.
    async fn sync_taints(&self, mut node: Node) -> Result<Node, ControllerError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let wanted = match ready_condition(&node).map(|c| c.status.as_str()) {
            Some("True") => None,
            Some("False") => Some(NOT_READY),
            _ => Some(UNREACHABLE),
        };
        let mut taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let before = taints.clone();
        taints.retain(|t| {
            !((t.key == UNREACHABLE || t.key == NOT_READY) && Some(t.key.as_str()) != wanted)
        });
        if let Some(key) = wanted {
            for effect in ["NoSchedule", "NoExecute"] {
                if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                    taints.push(Taint {
                        key: key.into(),
                        effect: effect.into(),
                        time_added: (effect == "NoExecute").then(|| Time(now())),
                        value: None,
                    });
                }
            }
        }
        if taints != before {
            tracing::info!(node = %name, taint = ?wanted, "updating node taints");
            node.spec.get_or_insert_with(Default::default).taints =
                Some(taints).filter(|t| !t.is_empty());
            node = self
                .objects
                .update_typed(&node, "", NAME)
                .await
                .map_err(|e| ControllerError::api("taint node", &name, e))?;
        }
        Ok(node)
    }

    /// The pods bound to node `name`.
    async fn pods_on(&self, name: &str) -> Result<Vec<Pod>, ControllerError> {
        let info = &kinds::POD;
        let options = ListOptions {
            filter: Some(
                Filter::parse(info, "", &format!("spec.nodeName={name}"))
                    .map_err(|e| ControllerError::api("select pods of node", name, e))?,
            ),
            ..ListOptions::default()
        };
        let (pods, _) = self
            .objects
            .list(info, "", &options)
            .await
            .map_err(|e| ControllerError::api("list pods of node", name, e))?;
        pods.into_iter()
            .map(|pod| {
                serde_json::from_value(pod).map_err(|source| ControllerError::Convert {
                    object: format!("pod on {name}"),
                    source,
                })
            })
            .collect()
    }

    /// Sets Ready=False on the pods of a node that is not Ready, so that
    /// Services stop sending them traffic before they are evicted (what
    /// kube's `MarkPodsNotReady` does); the node's kubelet, if it comes
    /// back, reports the truth again.
    async fn mark_pods_not_ready(&self, node: &str, pods: &mut [Pod]) {
        for pod in pods.iter_mut() {
            let Some(ready) = pod
                .status
                .as_mut()
                .and_then(|s| s.conditions.as_mut())
                .and_then(|c| c.iter_mut().find(|c| c.type_ == "Ready"))
                .filter(|c| c.status == "True")
            else {
                continue;
            };
            ready.status = "False".into();
            ready.last_transition_time = Some(Time(now()));
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            tracing::info!(%node, pod = %key, "marking pod of a not-ready node not ready");
            match self.objects.update_typed(&*pod, "status", NAME).await {
                Ok(updated) => *pod = updated,
                Err(err) if is_not_found(&err) => continue,
                Err(err) => {
                    tracing::warn!(%node, pod = %key, %err, "failed to mark pod not ready");
                    continue;
                }
            }
            self.events
                .record(
                    &object_ref(&*pod),
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready",
                )
                .await;
        }
    }

    /// Deletes the pods on `node` whose tolerations of its NoExecute taints ran out.
    async fn evict(&self, node: &Node, pods: Vec<Pod>) -> Result<(), ControllerError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let taints: Vec<&Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            return Ok(());
        }
        let since = taints
            .iter()
            .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
            .max()
            .unwrap_or_else(now);
        let elapsed = now().as_second() - since.as_second();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(delay) = eviction_delay(&pod, &taints) else {
                continue;
            };
            if elapsed < delay {
                continue;
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            tracing::info!(node = %name, pod = %format!("{ns}/{pod_name}"), "evicting pod from tainted node");
            self.events
                .record(
                    &object_ref(&pod),
                    EventType::Normal,
                    "TaintManagerEviction",
                    &format!("Marking for deletion Pod {ns}/{pod_name}"),
                )
                .await;
            match self
                .objects
                .delete_typed::<Pod>(&ns, &pod_name, &DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => {
                    return Err(ControllerError::api(
                        "evict pod",
                        format!("{ns}/{pod_name}"),
                        err,
                    ));
                }
            }
        }
        Ok(())
    }
}
