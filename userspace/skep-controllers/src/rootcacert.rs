//! The root CA certificate publisher (kube-controller-manager's
//! `root-ca-certificate-publisher-controller`): every active namespace has
//! a ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA (PEM),
//! so pods can verify the API server (the projected `kube-api-access-*`
//! volume mounts it). It is made when the namespace appears, made again
//! when deleted, and put back when someone edits its data or drops its
//! description annotation.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skep_api::StatusReason;
use skep_objects::Objects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ControllerError;
use crate::informer::{Informers, object_key};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// The ConfigMap's name.
pub const ROOT_CA_CERT_CONFIG_MAP_NAME: &str = "kube-root-ca.crt";

/// The annotation describing what the ConfigMap is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";

/// Upstream's description, word for word.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Keeps `kube-root-ca.crt` right in every active namespace.
pub struct RootCaCertPublisher {
    objects: Objects,
    root_ca: Arc<str>,
}

impl RootCaCertPublisher {
    /// Registers with the informers and starts the workers publishing
    /// `root_ca` (the cluster CA certificate, PEM).
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        root_ca: Arc<str>,
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
        let config_maps = informers.of_type::<ConfigMap>();
        {
            let queue = queue.clone();
            config_maps.add_handler(Box::new(move |old, new| {
                // Deleted or updated (a create is its own echo).
                let Some(obj) = new.filter(|_| old.is_some()).or(old) else {
                    return;
                };
                if skep_api::object::name(obj) == ROOT_CA_CERT_CONFIG_MAP_NAME {
                    queue.add(skep_api::object::namespace(obj).to_owned());
                }
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            root_ca,
        });
        spawn_workers(
            &controller,
            &queue,
            vec![namespaces, config_maps],
            config.workers,
            shutdown,
        )
    }

    fn data(&self) -> BTreeMap<String, String> {
        [("ca.crt".to_owned(), self.root_ca.to_string())].into()
    }
}

impl Reconciler for RootCaCertPublisher {
    const NAME: &'static str = "root-ca-cert-publisher";

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
            .try_get_typed::<ConfigMap>(key, ROOT_CA_CERT_CONFIG_MAP_NAME)
            .await
            .map_err(|e| ControllerError::api("get configmap", key, e))?;
        let data = self.data();
        let Some(mut cm) = existing else {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CERT_CONFIG_MAP_NAME.to_owned()),
                    namespace: Some(key.to_owned()),
                    annotations: Some(
                        [(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            return match self.objects.create_typed(&cm, Self::NAME).await {
                Ok(_) => {
                    tracing::info!("root CA configmap published");
                    Ok(None)
                }
                // The namespace is gone or terminating: nothing to do.
                // Made meanwhile: its own event brings us back.
                Err(err)
                    if matches!(
                        err.reason,
                        StatusReason::NotFound
                            | StatusReason::Forbidden
                            | StatusReason::AlreadyExists
                    ) =>
                {
                    Ok(None)
                }
                Err(err) => Err(ControllerError::api(
                    "create configmap",
                    format!("{key}/{ROOT_CA_CERT_CONFIG_MAP_NAME}"),
                    err,
                )),
            };
        };
        let described = cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
            .is_some_and(|d| !d.is_empty());
        if cm.data.as_ref() == Some(&data) && described {
            return Ok(None);
        }
        cm.data = Some(data);
        cm.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned());
        self.objects
            .update_typed(&cm, "", Self::NAME)
            .await
            .map_err(|e| {
                ControllerError::api(
                    "update configmap",
                    format!("{key}/{ROOT_CA_CERT_CONFIG_MAP_NAME}"),
                    e,
                )
            })?;
        tracing::info!("root CA configmap corrected");
        Ok(None)
    }
}
