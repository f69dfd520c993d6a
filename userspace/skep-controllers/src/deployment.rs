//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled with `RollingUpdate`
//! (`maxSurge`/`maxUnavailable`) or `Recreate`, numbered by the
//! `deployment.kubernetes.io/revision` annotation that `kubectl rollout
//! history|undo` read, pruned to `revisionHistoryLimit`, with the status
//! and the Progressing/Available conditions `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skep_api::StatusReason;
use skep_api::delete::{DeleteOptions, Propagation};
use skep_objects::Objects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::events::{EventRecorder, EventType, object_ref};
use crate::informer::{Informers, object_key, split_key};
use crate::replicaset::{enqueue_owners, meta_of};
use crate::util::{controller_ref, label_selector, meta_key, now, owner_ref, selects};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// Revision of a ReplicaSet (and of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before it was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Replicas plus surge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells ReplicaSets (and their pods) of one Deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Annotations of a Deployment not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Rolls Deployments out through ReplicaSets.
pub struct DeploymentController {
    objects: Objects,
    events: EventRecorder,
}

/// Kubernetes' `rand.SafeEncodeString` alphabet (no vowels, no 0/1/3).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-1a 32 of its JSON (keys
/// sorted) and the collision count, in Kubernetes' safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_string(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |b: u8| {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    };
    json.bytes().for_each(&mut feed);
    if let Some(c) = collision_count {
        c.to_le_bytes().into_iter().for_each(&mut feed);
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The template without the `pod-template-hash` label, for comparing.
fn without_hash(template: Option<&PodTemplateSpec>) -> serde_json::Value {
    let mut t = template.cloned().unwrap_or_default();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    serde_json::to_value(t).unwrap_or_default()
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(
    rs: &ReplicaSet,
    f: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>,
) -> i32 {
    rs.status.as_ref().and_then(f).unwrap_or(0)
}

/// Resolves `maxSurge`/`maxUnavailable` against `replicas` (surge rounds
/// up, unavailable down; both zero means one unavailable).
fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let resolve = |v: Option<&IntOrString>, up: bool| -> i32 {
        match v {
            None => {
                // Defaults are 25% each.
                let x = replicas * 25;
                if up { (x + 99) / 100 } else { x / 100 }
            }
            Some(IntOrString::Int(i)) => *i,
            Some(IntOrString::String(s)) => {
                let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(0);
                let x = replicas * pct;
                if up { (x + 99) / 100 } else { x / 100 }
            }
        }
    };
    let surge = resolve(rolling.max_surge.as_ref(), true);
    let unavailable = resolve(rolling.max_unavailable.as_ref(), false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(replicas))
    }
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// Sets a condition, keeping `lastTransitionTime` when the status is the
/// same and `lastUpdateTime` when nothing changed.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) {
    let at = Some(Time(now()));
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(&message)
        {
            return;
        }
        if c.status != status {
            c.last_transition_time.clone_from(&at);
        }
        status.clone_into(&mut c.status);
        c.reason = Some(reason.to_owned());
        c.message = Some(message);
        c.last_update_time = at;
        return;
    }
    conditions.push(DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_update_time: at.clone(),
        last_transition_time: at,
    });
}

/// What one reconcile found: the Deployment's ReplicaSets split into the
/// one for the current template and the others.
struct Observed {
    new: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
}

impl Observed {
    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.new.iter().chain(self.old.iter())
    }
}

impl DeploymentController {
    /// Registers with the informers and starts the workers.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let deployments = informers.of_type::<Deployment>();
        let rss = informers.of_type::<ReplicaSet>();
        let pods = informers.of_type::<Pod>();
        {
            let queue = queue.clone();
            deployments.add_handler(Box::new(move |old, new| {
                if let Some(obj) = new.or(old) {
                    queue.add(object_key(obj));
                }
            }));
        }
        {
            let queue = queue.clone();
            let deployments = Arc::clone(&deployments);
            rss.add_handler(Box::new(move |old, new| {
                enqueue_owners(&queue, &deployments, "Deployment", old, new);
            }));
        }
        {
            // Recreate waits for old pods to go: their deletions matter.
            let queue = queue.clone();
            let rss = Arc::clone(&rss);
            pods.add_handler(Box::new(move |old, new| {
                if new.is_some() {
                    return;
                }
                let Some(meta) = old.and_then(meta_of) else {
                    return;
                };
                let ns = meta.namespace.clone().unwrap_or_default();
                if let Some(r) = controller_ref(&meta).filter(|r| r.kind == "ReplicaSet")
                    && let Some(rs_meta) = rss
                        .get(&format!("{ns}/{}", r.name))
                        .as_ref()
                        .and_then(meta_of)
                    && let Some(d) = controller_ref(&rs_meta).filter(|d| d.kind == "Deployment")
                {
                    queue.add(format!("{ns}/{}", d.name));
                }
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            events: EventRecorder::new(objects.clone(), "deployment-controller"),
        });
        spawn_workers(
            &controller,
            &queue,
            vec![deployments, rss, pods],
            config.workers,
            shutdown,
        )
    }

    /// The Deployment's ReplicaSets, adopting matching orphans and
    /// releasing owned ones that stopped matching.
    async fn claim(&self, d: &Deployment) -> Result<Observed, ControllerError> {
        let key = meta_key(&d.metadata);
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let sel = label_selector(d.spec.as_ref().map(|s| &s.selector));
        let (rss, _) = self
            .objects
            .list_typed::<ReplicaSet>(ns, "")
            .await
            .map_err(|e| ControllerError::api("list replicasets for", &key, e))?;
        let template = without_hash(d.spec.as_ref().map(|s| &s.template));
        let mut observed = Observed {
            new: None,
            old: Vec::new(),
        };
        for mut rs in rss {
            let matches = selects(&sel, rs.metadata.labels.as_ref());
            let owned = match controller_ref(&rs.metadata).map(|r| r.uid == uid) {
                Some(true) if matches => rs,
                Some(true) => {
                    if let Some(refs) = rs.metadata.owner_references.as_mut() {
                        refs.retain(|r| r.uid != uid);
                    }
                    self.write_rs(&rs, "release replicaset").await?;
                    continue;
                }
                None if matches
                    && d.metadata.deletion_timestamp.is_none()
                    && rs.metadata.deletion_timestamp.is_none() =>
                {
                    rs.metadata
                        .owner_references
                        .get_or_insert_with(Vec::new)
                        .push(owner_ref::<Deployment>(&d.metadata));
                    match self.write_rs(&rs, "adopt replicaset").await? {
                        Some(rs) => rs,
                        None => continue,
                    }
                }
                _ => continue,
            };
            let same =
                without_hash(owned.spec.as_ref().and_then(|s| s.template.as_ref())) == template;
            if same && observed.new.is_none() {
                observed.new = Some(owned);
            } else {
                observed.old.push(owned);
            }
        }
        observed
            .old
            .sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
        Ok(observed)
    }

    async fn write_rs(
        &self,
        rs: &ReplicaSet,
        action: &'static str,
    ) -> Result<Option<ReplicaSet>, ControllerError> {
        match self.objects.update_typed(rs, "", Self::NAME).await {
            Ok(rs) => Ok(Some(rs)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(ControllerError::api(action, meta_key(&rs.metadata), err)),
        }
    }

    /// Makes sure the ReplicaSet for the current template exists (when
    /// `create`) and carries the newest revision; `replicas` is the count a
    /// new one starts with.
    #[expect(
        clippy::too_many_lines,
        reason = "one step of Kubernetes' getNewReplicaSet, kept in one piece"
    )]
    async fn new_replica_set(
        &self,
        d: &mut Deployment,
        observed: &mut Observed,
        conditions: &mut Vec<DeploymentCondition>,
        create: bool,
        replicas: i32,
    ) -> Result<(), ControllerError> {
        let key = meta_key(&d.metadata);
        let max_old = observed.old.iter().map(revision_of).max().unwrap_or(0);
        let revision = max_old + 1;
        let (surge, _) = surge_and_unavailable(d);
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let copied: BTreeMap<String, String> = d
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .collect();
        if let Some(mut rs) = observed.new.take() {
            let old_revision = revision_of(&rs);
            let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
            annotations.extend(copied);
            if old_revision < revision {
                annotations.insert(REVISION.into(), revision.to_string());
                if old_revision > 0 {
                    let history = annotations
                        .get(REVISION_HISTORY)
                        .cloned()
                        .unwrap_or_default();
                    let history = if history.is_empty() {
                        old_revision.to_string()
                    } else {
                        format!("{history},{old_revision}")
                    };
                    annotations.insert(REVISION_HISTORY.into(), history);
                }
            }
            if rs.metadata.annotations.as_ref() != Some(&annotations) {
                rs.metadata.annotations = Some(annotations);
                if let Some(updated) = self.write_rs(&rs, "annotate replicaset").await? {
                    rs = updated;
                }
            }
            if !conditions.iter().any(|c| c.type_ == "Progressing") {
                set_condition(
                    conditions,
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!(
                        "Found new replica set \"{}\"",
                        rs.metadata.name.as_deref().unwrap_or_default()
                    ),
                );
            }
            self.set_deployment_revision(d, revision_of(&rs)).await?;
            observed.new = Some(rs);
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let spec = d.spec.clone().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut annotations = copied;
        annotations.insert(REVISION.into(), revision.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), (want + surge).to_string());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_ref::<Deployment>(&d.metadata)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let created = match self.objects.create_typed(&rs, Self::NAME).await {
            Ok(created) => created,
            Err(err) if err.reason == StatusReason::AlreadyExists => {
                // Same name, different template: a hash collision. Count it
                // so the next hash differs.
                let mut bumped = d.clone();
                bumped
                    .status
                    .get_or_insert_with(DeploymentStatus::default)
                    .collision_count = Some(collision_count.unwrap_or(0) + 1);
                self.objects
                    .update_typed(&bumped, "status", Self::NAME)
                    .await
                    .map_err(|e| ControllerError::api("count hash collision of", &key, e))?;
                return Err(ControllerError::api("create replicaset for", &key, err));
            }
            Err(err) => return Err(ControllerError::api("create replicaset for", &key, err)),
        };
        tracing::info!(deployment = %key, replicaset = %name, revision, "created new replica set");
        if replicas > 0 {
            self.events
                .record(
                    &object_ref(d),
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {name} from 0 to {replicas}"),
                )
                .await;
        }
        set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{name}\""),
        );
        self.set_deployment_revision(d, revision).await?;
        observed.new = Some(created);
        Ok(())
    }

    /// Mirrors the new ReplicaSet's revision on the Deployment.
    async fn set_deployment_revision(
        &self,
        d: &mut Deployment,
        revision: i64,
    ) -> Result<(), ControllerError> {
        let value = revision.to_string();
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            == Some(&value)
        {
            return Ok(());
        }
        let mut updated = d.clone();
        updated
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION.into(), value);
        *d = self
            .objects
            .update_typed(&updated, "", Self::NAME)
            .await
            .map_err(|e| ControllerError::api("annotate deployment", meta_key(&d.metadata), e))?;
        Ok(())
    }

    /// Scales `rs` to `replicas`, with the event kubectl describe shows.
    async fn scale(
        &self,
        d: &Deployment,
        rs: &mut ReplicaSet,
        replicas: i32,
    ) -> Result<bool, ControllerError> {
        let from = spec_replicas(rs);
        if from == replicas {
            return Ok(false);
        }
        let (surge, _) = surge_and_unavailable(d);
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let mut updated = rs.clone();
        updated
            .spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(replicas);
        let annotations = updated
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), (want + surge).to_string());
        let name = rs.metadata.name.clone().unwrap_or_default();
        if let Some(written) = self.write_rs(&updated, "scale replicaset").await? {
            *rs = written;
        }
        let direction = if replicas > from { "up" } else { "down" };
        self.events
            .record(
                &object_ref(d),
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled {direction} replica set {name} from {from} to {replicas}"),
            )
            .await;
        Ok(true)
    }

    /// One step of a rolling update; whether anything was scaled.
    async fn roll(&self, d: &Deployment, observed: &mut Observed) -> Result<bool, ControllerError> {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let (surge, max_unavailable) = surge_and_unavailable(d);
        let total: i32 = observed.all().map(spec_replicas).sum();
        // Scale the new ReplicaSet up as far as the surge allows.
        if let Some(mut new) = observed.new.take() {
            let current = spec_replicas(&new);
            let target = if current > want {
                want
            } else {
                let room = (want + surge - total).max(0);
                current + room.min(want - current)
            };
            let scaled = self.scale(d, &mut new, target).await?;
            observed.new = Some(new);
            if scaled {
                return Ok(true);
            }
        }
        // Scale old ReplicaSets down as far as availability allows.
        let min_available = want - max_unavailable;
        let new_unavailable = observed.new.as_ref().map_or(0, |n| {
            spec_replicas(n) - status_of(n, |s| s.available_replicas)
        });
        let mut budget = total - min_available - new_unavailable;
        if budget <= 0 {
            return Ok(false);
        }
        let mut scaled = false;
        // First old pods that are not available anyway.
        for rs in &mut observed.old {
            if budget <= 0 {
                break;
            }
            let replicas = spec_replicas(rs);
            let unhealthy = replicas - status_of(rs, |s| s.available_replicas);
            if replicas == 0 || unhealthy <= 0 {
                continue;
            }
            let cut = unhealthy.min(budget);
            budget -= cut;
            scaled |= self.scale(d, rs, replicas - cut).await?;
        }
        // Then available ones, keeping minAvailable.
        let available: i32 = observed
            .all()
            .map(|rs| status_of(rs, |s| s.available_replicas))
            .sum();
        let mut budget = (available - min_available).min(budget.max(0));
        for rs in &mut observed.old {
            if budget <= 0 {
                break;
            }
            let replicas = spec_replicas(rs);
            if replicas == 0 {
                continue;
            }
            let cut = replicas.min(budget);
            budget -= cut;
            scaled |= self.scale(d, rs, replicas - cut).await?;
        }
        Ok(scaled)
    }

    /// One step of a Recreate rollout: all old pods gone before new ones.
    async fn recreate(
        &self,
        d: &mut Deployment,
        observed: &mut Observed,
        conditions: &mut Vec<DeploymentCondition>,
    ) -> Result<bool, ControllerError> {
        let mut scaled = false;
        for rs in &mut observed.old {
            scaled |= self.scale(d, rs, 0).await?;
        }
        if scaled {
            return Ok(true);
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let (pods, _) = self
            .objects
            .list_typed::<Pod>(&ns, "")
            .await
            .map_err(|e| ControllerError::api("list pods for", meta_key(&d.metadata), e))?;
        let old_uids: Vec<&str> = observed
            .old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        let old_running = pods.iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
                && controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
        });
        if old_running {
            return Ok(false);
        }
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Box::pin(self.new_replica_set(d, observed, conditions, true, want)).await?;
        if let Some(mut new) = observed.new.take() {
            scaled = self.scale(d, &mut new, want).await?;
            observed.new = Some(new);
        }
        Ok(scaled)
    }

    /// Deletes fully scaled-down old ReplicaSets beyond `revisionHistoryLimit`.
    async fn clean_up(&self, d: &Deployment, observed: &Observed) -> Result<(), ControllerError> {
        let limit = usize::try_from(
            d.spec
                .as_ref()
                .and_then(|s| s.revision_history_limit)
                .unwrap_or(10),
        )
        .unwrap_or(0);
        let mut cleanable: Vec<&ReplicaSet> = observed
            .old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        if cleanable.len() <= limit {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| revision_of(rs));
        let excess = cleanable.len() - limit;
        for rs in cleanable.into_iter().take(excess) {
            let idle = spec_replicas(rs) == 0
                && status_of(rs, |s| Some(s.replicas)) == 0
                && rs.metadata.generation <= rs.status.as_ref().and_then(|s| s.observed_generation);
            if !idle {
                continue;
            }
            let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
            let name = rs.metadata.name.as_deref().unwrap_or_default();
            tracing::info!(deployment = %meta_key(&d.metadata), replicaset = %name, "pruning old replica set");
            let options = DeleteOptions {
                propagation: Some(Propagation::Background),
                ..DeleteOptions::default()
            };
            match self
                .objects
                .delete_typed::<ReplicaSet>(ns, name, &options)
                .await
            {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => {
                    return Err(ControllerError::api(
                        "prune replicaset",
                        format!("{ns}/{name}"),
                        err,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes the status and conditions; returns when to look again for
    /// the progress deadline.
    #[expect(
        clippy::too_many_lines,
        reason = "status and both conditions are computed together, like syncRolloutStatus"
    )]
    async fn sync_status(
        &self,
        d: &Deployment,
        observed: &Observed,
        mut conditions: Vec<DeploymentCondition>,
    ) -> Result<Requeue, ControllerError> {
        let spec = d.spec.clone().unwrap_or_default();
        let want = spec.replicas.unwrap_or(1);
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| -> i32 { observed.all().map(f).sum() };
        let replicas = sum(&|rs| status_of(rs, |s| Some(s.replicas)));
        let updated = observed
            .new
            .as_ref()
            .map_or(0, |n| status_of(n, |s| Some(s.replicas)));
        let ready = sum(&|rs| status_of(rs, |s| s.ready_replicas));
        let available = sum(&|rs| status_of(rs, |s| s.available_replicas));
        let old_status = d.status.clone().unwrap_or_default();
        let max_unavailable = if is_recreate(d) {
            0
        } else {
            surge_and_unavailable(d).1
        };
        if available >= want - max_unavailable {
            set_condition(
                &mut conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            );
        } else {
            set_condition(
                &mut conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            );
        }
        let new_name = observed
            .new
            .as_ref()
            .and_then(|n| n.metadata.name.clone())
            .unwrap_or_default();
        let mut requeue = None;
        let paused = spec.paused == Some(true);
        let progressing = conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .cloned();
        if paused {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            );
        } else if progressing.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused")
        {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            );
        } else if let Some(deadline) = spec.progress_deadline_seconds {
            let complete =
                updated == want && replicas == want && available == want && observed.new.is_some();
            let old_replicas =
                old_status.replicas.unwrap_or(0) - old_status.updated_replicas.unwrap_or(0);
            let made_progress = updated > old_status.updated_replicas.unwrap_or(0)
                || replicas - updated < old_replicas
                || ready > old_status.ready_replicas.unwrap_or(0)
                || available > old_status.available_replicas.unwrap_or(0);
            if complete {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                );
            } else if made_progress || progressing.is_none() {
                let message = format!("ReplicaSet \"{new_name}\" is progressing.");
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    message,
                );
                if let Some(c) = conditions.iter_mut().find(|c| c.type_ == "Progressing") {
                    c.last_update_time = Some(Time(now()));
                }
                requeue = Some(Duration::from_secs(
                    u64::try_from(deadline).unwrap_or(0) + 1,
                ));
            } else if let Some(c) =
                progressing.filter(|c| c.reason.as_deref() != Some("ProgressDeadlineExceeded"))
            {
                let since = c.last_update_time.map_or(0, |t| t.0.as_second());
                let left = since + i64::from(deadline) - now().as_second();
                if left < 0 {
                    set_condition(
                        &mut conditions,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    );
                    self.events
                        .record(
                            &object_ref(d),
                            EventType::Warning,
                            "ProgressDeadlineExceeded",
                            &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        )
                        .await;
                } else {
                    requeue = Some(Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1));
                }
            }
        }
        let status = DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((want - available).max(0)),
            observed_generation: d.metadata.generation,
            collision_count: old_status.collision_count,
            conditions: Some(conditions),
        };
        if d.status.as_ref() != Some(&status) {
            let mut written = d.clone();
            written.status = Some(status);
            match self
                .objects
                .update_typed(&written, "status", Self::NAME)
                .await
            {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => {
                    return Err(ControllerError::api(
                        "update status of",
                        meta_key(&d.metadata),
                        err,
                    ));
                }
            }
        }
        Ok(requeue)
    }
}

impl Reconciler for DeploymentController {
    const NAME: &'static str = "deployment-controller";

    #[tracing::instrument(skip_all, fields(deployment = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        let (ns, name) = split_key(key);
        let Some(mut d) = self
            .objects
            .try_get_typed::<Deployment>(ns, name)
            .await
            .map_err(|e| ControllerError::api("get deployment", key, e))?
        else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let selector_empty = d.spec.as_ref().is_none_or(|s| {
            s.selector
                .match_labels
                .as_ref()
                .is_none_or(BTreeMap::is_empty)
                && s.selector
                    .match_expressions
                    .as_ref()
                    .is_none_or(Vec::is_empty)
        });
        if selector_empty {
            tracing::warn!(deployment = %key, "selecting all pods is not allowed; skipping");
            return Ok(None);
        }
        let mut observed = self.claim(&d).await?;
        let mut conditions = d
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if paused {
            // No rollout while paused; scaling still follows spec.replicas
            // when there is only one active ReplicaSet.
            Box::pin(self.new_replica_set(&mut d, &mut observed, &mut conditions, false, 0))
                .await?;
            if observed.old.iter().all(|rs| spec_replicas(rs) == 0)
                && let Some(mut new) = observed.new.take()
            {
                self.scale(&d, &mut new, want).await?;
                observed.new = Some(new);
            }
        } else if is_recreate(&d) {
            Box::pin(self.new_replica_set(&mut d, &mut observed, &mut conditions, false, 0))
                .await?;
            Box::pin(self.recreate(&mut d, &mut observed, &mut conditions)).await?;
        } else {
            let (surge, _) = surge_and_unavailable(&d);
            let total: i32 = observed.all().map(spec_replicas).sum();
            let initial = if observed.new.is_none() {
                (want + surge - total).max(0).min(want)
            } else {
                0
            };
            Box::pin(self.new_replica_set(&mut d, &mut observed, &mut conditions, true, initial))
                .await?;
            self.roll(&d, &mut observed).await?;
        }
        let complete = observed.new.as_ref().is_some_and(|n| {
            status_of(n, |s| s.available_replicas) == want && spec_replicas(n) == want
        }) && observed.old.iter().all(|rs| spec_replicas(rs) == 0);
        if complete || paused {
            self.clean_up(&d, &observed).await?;
        }
        self.sync_status(&d, &observed, conditions).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_safe_and_changes_with_collisions() {
        let t = PodTemplateSpec::default();
        let a = template_hash(&t, None);
        assert_eq!(a, template_hash(&t, None));
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{a}");
        assert_ne!(a, template_hash(&t, Some(1)));
    }

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let mut d = Deployment::default();
        let spec = d.spec.get_or_insert_with(Default::default);
        spec.replicas = Some(10);
        assert_eq!(surge_and_unavailable(&d), (3, 2));
        let spec = d.spec.get_or_insert_with(Default::default);
        spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(0)),
                max_unavailable: Some(IntOrString::String("5%".into())),
            }),
        });
        assert_eq!(surge_and_unavailable(&d), (0, 1));
    }
}
