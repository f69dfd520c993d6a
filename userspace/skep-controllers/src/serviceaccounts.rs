//! The ServiceAccounts controller (kube-controller-manager's
//! `serviceaccount-controller`): every active namespace has a ServiceAccount
//! named `default`, made when the namespace appears and made again when it
//! is deleted. A terminating namespace is left alone (its content is being
//! deleted).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skep_api::StatusReason;
use skep_objects::Objects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ControllerError;
use crate::informer::{Informers, object_key};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

/// Keeps a `default` ServiceAccount in every active namespace.
pub struct ServiceAccountsController {
    objects: Objects,
}

impl ServiceAccountsController {
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
                if let Some(obj) = new {
                    queue.add(object_key(obj));
                }
            }));
        }
        let accounts = informers.of_type::<ServiceAccount>();
        {
            let queue = queue.clone();
            accounts.add_handler(Box::new(move |old, new| {
                if new.is_none()
                    && let Some(old) = old
                    && skep_api::object::name(old) == DEFAULT
                {
                    queue.add(skep_api::object::namespace(old).to_owned());
                }
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
        });
        spawn_workers(
            &controller,
            &queue,
            vec![namespaces, accounts],
            config.workers,
            shutdown,
        )
    }
}

impl Reconciler for ServiceAccountsController {
    const NAME: &'static str = "serviceaccount-controller";

    #[tracing::instrument(skip_all, fields(namespace = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        if crate::util::active_namespace(&self.objects, key)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let existing = self
            .objects
            .try_get_typed::<ServiceAccount>(key, DEFAULT)
            .await
            .map_err(|e| ControllerError::api("get service account", key, e))?;
        if existing.is_some() {
            return Ok(None);
        }
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT.to_owned()),
                namespace: Some(key.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match self.objects.create_typed(&account, Self::NAME).await {
            Ok(_) => tracing::info!("default service account created"),
            // Made meanwhile, or the namespace began terminating.
            Err(err)
                if matches!(
                    err.reason,
                    StatusReason::AlreadyExists | StatusReason::Forbidden | StatusReason::NotFound
                ) => {}
            Err(err) => {
                return Err(ControllerError::api(
                    "create service account",
                    format!("{key}/{DEFAULT}"),
                    err,
                ));
            }
        }
        Ok(None)
    }
}
