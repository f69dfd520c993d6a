//! The garbage collector: finishes what skep-api's delete starts for each
//! `propagationPolicy`.
//! - Background (the default): the owner is removed at once; dependents
//!   whose owners are all gone are deleted here.
//! - Foreground: the owner keeps the `foregroundDeletion` finalizer; its
//!   dependents are deleted (in the foreground too), and once none that
//!   `blockOwnerDeletion` is left the finalizer is dropped.
//! - Orphan: the owner keeps the `orphan` finalizer; its dependents lose
//!   their references to it, then the finalizer is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;
use skep_api::decode::Decoded;
use skep_api::delete::{DeleteOptions, Propagation};
use skep_api::{ResourceInfo, kinds, registry};
use skep_objects::{Objects, WriteOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::informer::{Informers, object_key, split_key};
use crate::replicaset::meta_of;
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// An object as the collector's queue names it: `plural|namespace/name`.
fn gc_key(info: &ResourceInfo, obj: &Value) -> String {
    format!("{}|{}", info.plural, object_key(obj))
}

/// The resource an owner reference points at.
fn owner_info(owner: &OwnerReference) -> Option<&'static ResourceInfo> {
    registry::by_kind(&owner.api_version, &owner.kind)
}

/// The kinds the collector follows: every served kind that can own or be owned.
fn followed() -> impl Iterator<Item = &'static ResourceInfo> {
    registry::resources()
        .iter()
        .copied()
        .filter(|r| **r != kinds::BINDING && **r != kinds::EVENT)
}

/// Owner uid → the dependents (queue keys) that reference it.
#[derive(Default)]
struct Graph {
    dependents: HashMap<String, HashSet<String>>,
}

/// Deletes dependents of deleted owners and finishes foreground and
/// orphaning deletions.
pub struct GarbageCollector {
    objects: Objects,
    graph: Arc<Mutex<Graph>>,
}

impl GarbageCollector {
    /// Registers with the informers and starts the workers.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let graph = Arc::new(Mutex::new(Graph::default()));
        let mut followed_informers = Vec::new();
        for info in followed() {
            let informer = informers.of(info);
            let queue = queue.clone();
            let graph = Arc::clone(&graph);
            informer.add_handler(Box::new(move |old, new| {
                observe(info, &queue, &graph, old, new);
            }));
            followed_informers.push(informer);
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            graph,
        });
        spawn_workers(
            &controller,
            &queue,
            followed_informers,
            config.workers,
            shutdown,
        )
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    async fn read(
        &self,
        key: &str,
    ) -> Result<Option<(&'static ResourceInfo, Value)>, ControllerError> {
        let Some((plural, object)) = key.split_once('|') else {
            return Ok(None);
        };
        let Some(info) = followed().find(|r| r.plural == plural) else {
            return Ok(None);
        };
        let (ns, name) = split_key(object);
        let obj = self
            .objects
            .try_get(info, ns, name)
            .await
            .map_err(|e| ControllerError::api("get", object, e))?;
        Ok(obj.map(|o| (info, o)))
    }

    /// Replaces `old` with `new` (metadata edits); a vanished object is fine.
    async fn write(
        &self,
        info: &ResourceInfo,
        old: &Value,
        new: Value,
        action: &'static str,
    ) -> Result<(), ControllerError> {
        let body = Decoded {
            value: new,
            duplicates: Vec::new(),
        };
        match self
            .objects
            .replace(info, "", old, body, &WriteOptions::by(Self::NAME))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(ControllerError::api(action, object_key(old), err)),
        }
    }

    async fn delete(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        propagation: Propagation,
    ) -> Result<(), ControllerError> {
        let options = DeleteOptions {
            propagation: Some(propagation),
            precondition_uid: meta_of(obj).and_then(|m| m.uid),
            ..DeleteOptions::default()
        };
        let ns = skep_api::object::namespace(obj);
        let name = skep_api::object::name(obj);
        tracing::info!(kind = info.kind, namespace = %ns, %name, ?propagation, "collecting dependent");
        match self.objects.delete(info, ns, name, &options, false).await {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) || err.reason == skep_api::StatusReason::Conflict => {
                Ok(())
            }
            Err(err) => Err(ControllerError::api(
                "delete dependent",
                object_key(obj),
                err,
            )),
        }
    }

    async fn drop_finalizer(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        finalizer: &str,
    ) -> Result<(), ControllerError> {
        let mut new = obj.clone();
        if let Some(list) = new
            .get_mut("metadata")
            .and_then(|m| m.get_mut("finalizers"))
            .and_then(Value::as_array_mut)
        {
            list.retain(|f| f != finalizer);
        }
        self.write(info, obj, new, "remove finalizer from").await
    }

    /// The live dependents of `uid`, with their reference to it.
    async fn live_dependents(
        &self,
        uid: &str,
    ) -> Result<Vec<(&'static ResourceInfo, Value, OwnerReference)>, ControllerError> {
        let mut out = Vec::new();
        for key in self.dependents_of(uid) {
            if let Some((info, dep)) = self.read(&key).await?
                && let Some(meta) = meta_of(&dep)
                && let Some(r) = meta
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .find(|r| r.uid == uid)
            {
                out.push((info, dep, r));
            }
        }
        Ok(out)
    }

    /// Owner side: a deletion waiting on this collector.
    async fn finish_deletion(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        meta: &ObjectMeta,
    ) -> Result<bool, ControllerError> {
        let uid = meta.uid.clone().unwrap_or_default();
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        if finalizers.iter().any(|f| f == ORPHAN) {
            for (dep_info, dep, _) in self.live_dependents(&uid).await? {
                let mut new = dep.clone();
                if let Some(refs) = new
                    .get_mut("metadata")
                    .and_then(|m| m.get_mut("ownerReferences"))
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                }
                self.write(dep_info, &dep, new, "orphan dependent").await?;
            }
            self.drop_finalizer(info, obj, ORPHAN).await?;
            return Ok(true);
        }
        if finalizers.iter().any(|f| f == FOREGROUND) {
            let mut blocking = 0;
            for (dep_info, dep, r) in self.live_dependents(&uid).await? {
                if skep_api::object::get(&dep, &["metadata", "deletionTimestamp"]).is_none() {
                    self.delete(dep_info, &dep, Propagation::Foreground).await?;
                }
                if r.block_owner_deletion == Some(true) {
                    blocking += 1;
                }
            }
            if blocking == 0 {
                self.drop_finalizer(info, obj, FOREGROUND).await?;
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// Keeps the graph and queues what an informer change affects.
fn observe(
    info: &'static ResourceInfo,
    queue: &WorkQueue,
    graph: &Mutex<Graph>,
    old: Option<&Value>,
    new: Option<&Value>,
) {
    let Some(obj) = new.or(old) else { return };
    let key = gc_key(info, obj);
    let old_meta = old.and_then(meta_of);
    let new_meta = new.and_then(meta_of);
    let refs = |m: &Option<ObjectMeta>| -> Vec<OwnerReference> {
        m.as_ref()
            .and_then(|m| m.owner_references.clone())
            .unwrap_or_default()
    };
    let (old_refs, new_refs) = (refs(&old_meta), refs(&new_meta));
    let ns = skep_api::object::namespace(obj).to_owned();
    {
        let mut graph = graph.lock().unwrap_or_else(PoisonError::into_inner);
        for r in &old_refs {
            if let Some(set) = graph.dependents.get_mut(&r.uid) {
                set.remove(&key);
                if set.is_empty() {
                    graph.dependents.remove(&r.uid);
                }
            }
        }
        for r in &new_refs {
            graph
                .dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(key.clone());
        }
    }
    // Owners waiting for their dependents hear about every change of one.
    for r in old_refs.iter().chain(&new_refs) {
        if let Some(owner) = owner_info(r) {
            let owner_ns = if owner.namespaced { ns.as_str() } else { "" };
            let owner_key = if owner_ns.is_empty() {
                r.name.clone()
            } else {
                format!("{owner_ns}/{}", r.name)
            };
            queue.add(format!("{}|{owner_key}", owner.plural));
        }
    }
    match &new_meta {
        Some(meta) => {
            let pending = meta
                .finalizers
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|f| f == FOREGROUND || f == ORPHAN);
            if !new_refs.is_empty() || (meta.deletion_timestamp.is_some() && pending) {
                queue.add(key);
            }
        }
        None => {
            // Deleted: its dependents may now be garbage.
            if let Some(uid) = old_meta.and_then(|m| m.uid) {
                let dependents = graph
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .dependents
                    .get(&uid)
                    .cloned()
                    .unwrap_or_default();
                for dep in dependents {
                    queue.add(dep);
                }
            }
        }
    }
}

impl Reconciler for GarbageCollector {
    const NAME: &'static str = "garbage-collector";

    #[tracing::instrument(skip_all, fields(object = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        let Some((info, obj)) = self.read(key).await? else {
            return Ok(None);
        };
        let Some(meta) = meta_of(&obj) else {
            return Ok(None);
        };
        if meta.deletion_timestamp.is_some() && self.finish_deletion(info, &obj, &meta).await? {
            return Ok(None);
        }
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() || meta.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let ns = meta.namespace.clone().unwrap_or_default();
        let (mut solid, mut gone) = (Vec::new(), Vec::new());
        let mut waiting = false;
        for r in &refs {
            let Some(owner_info) = owner_info(r) else {
                // An owner of a kind skep does not serve cannot be checked.
                solid.push(r.uid.clone());
                continue;
            };
            if owner_info.namespaced && ns.is_empty() {
                solid.push(r.uid.clone());
                continue;
            }
            let owner_ns = if owner_info.namespaced {
                ns.as_str()
            } else {
                ""
            };
            let owner = self
                .objects
                .try_get(owner_info, owner_ns, &r.name)
                .await
                .map_err(|e| ControllerError::api("get owner of", key, e))?;
            let owner_meta = owner.as_ref().and_then(meta_of);
            match owner_meta {
                Some(m) if m.uid.as_deref() == Some(r.uid.as_str()) => {
                    let foreground = m.deletion_timestamp.is_some()
                        && m.finalizers
                            .as_deref()
                            .unwrap_or_default()
                            .iter()
                            .any(|f| f == FOREGROUND);
                    if foreground {
                        waiting = true;
                        gone.push(r.uid.clone());
                    } else {
                        solid.push(r.uid.clone());
                    }
                }
                _ => gone.push(r.uid.clone()),
            }
        }
        if gone.is_empty() {
            return Ok(None);
        }
        if !solid.is_empty() {
            // Another owner still holds it: only drop the references that
            // point at owners that are gone or going.
            let mut new = obj.clone();
            if let Some(list) = new
                .get_mut("metadata")
                .and_then(|m| m.get_mut("ownerReferences"))
                .and_then(Value::as_array_mut)
            {
                list.retain(|r| {
                    !gone
                        .iter()
                        .any(|g| r.get("uid").and_then(Value::as_str) == Some(g.as_str()))
                });
            }
            self.write(info, &obj, new, "drop dangling owner references of")
                .await?;
            return Ok(None);
        }
        let propagation = if waiting {
            Propagation::Foreground
        } else if meta
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|f| f == ORPHAN)
        {
            Propagation::Orphan
        } else {
            Propagation::Background
        };
        self.delete(info, &obj, propagation).await?;
        Ok(None)
    }
}
