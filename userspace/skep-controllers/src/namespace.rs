//! The Namespace controller: a namespace being deleted (skep-api's delete
//! sets `deletionTimestamp` and phase Terminating, and keeps it while
//! `spec.finalizers` holds `kubernetes`) has everything in it deleted; once
//! it is empty the `kubernetes` finalizer is dropped and the store removes
//! the namespace.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use skep_api::delete::{DeleteOptions, Propagation};
use skep_api::{kinds, object, registry};
use skep_objects::{ListOptions, Objects};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::informer::{Informers, object_key};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// The finalizer in `spec.finalizers` this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// Empties and finalizes terminating namespaces.
pub struct NamespaceController {
    objects: Objects,
    recheck: std::time::Duration,
}

impl NamespaceController {
    /// Registers with the informers and starts the workers.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let namespaces = informers.of_type::<Namespace>();
        {
            let queue = queue.clone();
            namespaces.add_handler(Box::new(move |_old, new| {
                if let Some(obj) =
                    new.filter(|o| object::get(o, &["metadata", "deletionTimestamp"]).is_some())
                {
                    queue.add(object_key(obj));
                }
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            recheck: config.namespace_recheck,
        });
        spawn_workers(
            &controller,
            &queue,
            vec![namespaces],
            config.workers,
            shutdown,
        )
    }

    /// Deletes everything in `ns`; returns how many objects are left.
    async fn empty(&self, ns: &str) -> Result<usize, ControllerError> {
        let mut left = 0;
        let options = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..DeleteOptions::default()
        };
        for info in registry::resources()
            .iter()
            .copied()
            .filter(|r| r.namespaced && **r != kinds::BINDING)
        {
            let (items, _) = self
                .objects
                .list(info, ns, &ListOptions::default())
                .await
                .map_err(|e| ControllerError::api("list content of namespace", ns, e))?;
            left += items.len();
            for item in items {
                if object::get(&item, &["metadata", "deletionTimestamp"]).is_some() {
                    continue;
                }
                let name = object::name(&item);
                match self.objects.delete(info, ns, name, &options, false).await {
                    Ok(_) => {}
                    Err(err) if is_not_found(&err) => {}
                    Err(err) => {
                        return Err(ControllerError::api(
                            "delete namespace content",
                            format!("{ns}/{name}"),
                            err,
                        ));
                    }
                }
            }
        }
        Ok(left)
    }
}

impl Reconciler for NamespaceController {
    const NAME: &'static str = "namespace-controller";

    #[tracing::instrument(skip_all, fields(namespace = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        let Some(ns) = self
            .objects
            .try_get_typed::<Namespace>("", key)
            .await
            .map_err(|e| ControllerError::api("get namespace", key, e))?
        else {
            return Ok(None);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(None);
        }
        if self.empty(key).await? > 0 {
            // Objects held by finalizers or grace periods: look again.
            return Ok(Some(self.recheck));
        }
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if finalizers.iter().any(|f| f == FINALIZER) {
            let mut finalized = ns.clone();
            if let Some(spec) = finalized.spec.as_mut() {
                spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
            }
            tracing::info!(namespace = %key, "namespace empty; finalizing");
            match self.objects.update_typed(&finalized, "", Self::NAME).await {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(ControllerError::api("finalize namespace", key, err)),
            }
        }
        Ok(None)
    }
}
