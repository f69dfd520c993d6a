//! The tokens controller (kube-controller-manager's
//! `serviceaccount-token-controller`, `tokens_controller.go`): a Secret of
//! type `kubernetes.io/service-account-token` that a user creates, naming a
//! ServiceAccount in its `kubernetes.io/service-account.name` annotation, is
//! filled with a legacy (non-expiring) token, the cluster CA and the
//! namespace, and gets the ServiceAccount's UID annotation. Such a secret
//! whose ServiceAccount is gone (or was recreated with another UID) is
//! deleted, and deleting a ServiceAccount deletes its token secrets.
//!
//! The signer and the CA are handed in ([`TokenIssuer`]); the API server
//! owns the key.

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use skep_api::delete::DeleteOptions;
use skep_objects::Objects;
use skep_tokens::{LegacyClaims, ObjectRef, TokenSigner};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::informer::{Informer, Informers, object_key, split_key};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// The Secret type of ServiceAccount tokens.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Annotation naming the token's ServiceAccount.
pub const SERVICE_ACCOUNT_NAME_KEY: &str = "kubernetes.io/service-account.name";
/// Annotation holding the token's ServiceAccount UID.
pub const SERVICE_ACCOUNT_UID_KEY: &str = "kubernetes.io/service-account.uid";
/// `data` key of the token.
pub const TOKEN_KEY: &str = "token";
/// `data` key of the cluster CA.
pub const ROOT_CA_KEY: &str = "ca.crt";
/// `data` key of the namespace.
pub const NAMESPACE_KEY: &str = "namespace";

/// Queue key prefix of a secret to fill or delete.
const SECRET_PREFIX: &str = "secret:";
/// Queue key prefix of a deleted ServiceAccount (`ns/name/uid`).
const ACCOUNT_PREFIX: &str = "serviceaccount:";

/// What the controller signs with and puts in `ca.crt`.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    /// The API server's service account token signer.
    pub signer: Arc<TokenSigner>,
    /// The cluster CA certificate (PEM); empty leaves `ca.crt` alone.
    pub root_ca_pem: String,
}

/// Fills and cleans up legacy ServiceAccount token secrets.
pub struct TokensController {
    objects: Objects,
    issuer: TokenIssuer,
    secrets: Arc<Informer>,
}

impl TokensController {
    /// Registers with the informers and starts the workers.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        config: &ControllerConfig,
        issuer: TokenIssuer,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let secrets = informers.of_type::<Secret>();
        {
            let queue = queue.clone();
            secrets.add_handler(Box::new(move |_old, new| {
                if let Some(obj) = new
                    && skep_api::object::get_str(obj, &["type"]) == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
                {
                    queue.add(format!("{SECRET_PREFIX}{}", object_key(obj)));
                }
            }));
        }
        let accounts = informers.of_type::<ServiceAccount>();
        {
            let queue = queue.clone();
            accounts.add_handler(Box::new(move |old, new| {
                if new.is_none()
                    && let Some(old) = old
                {
                    let uid = skep_api::object::str_or_empty(old, &["metadata", "uid"]);
                    queue.add(format!("{ACCOUNT_PREFIX}{}/{uid}", object_key(old)));
                }
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            issuer,
            secrets: Arc::clone(&secrets),
        });
        spawn_workers(
            &controller,
            &queue,
            vec![secrets, accounts],
            config.workers,
            shutdown,
        )
    }

    /// The live ServiceAccount `namespace/name`, if it exists with `uid`
    /// (any UID when `uid` is empty).
    async fn account(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<ServiceAccount>, ControllerError> {
        let account = self
            .objects
            .try_get_typed::<ServiceAccount>(namespace, name)
            .await
            .map_err(|e| {
                ControllerError::api("get service account", format!("{namespace}/{name}"), e)
            })?;
        Ok(account.filter(|a| uid.is_empty() || a.metadata.uid.as_deref() == Some(uid)))
    }

    async fn sync_secret(&self, key: &str) -> Result<Requeue, ControllerError> {
        let (namespace, name) = split_key(key);
        let Some(secret) = self
            .objects
            .try_get_typed::<Secret>(namespace, name)
            .await
            .map_err(|e| ControllerError::api("get secret", key, e))?
        else {
            return Ok(None);
        };
        if secret.type_.as_deref() != Some(SERVICE_ACCOUNT_TOKEN_TYPE)
            || secret.metadata.deletion_timestamp.is_some()
        {
            return Ok(None);
        }
        let annotation = |k: &str| {
            secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let (account_name, account_uid) = (
            annotation(SERVICE_ACCOUNT_NAME_KEY),
            annotation(SERVICE_ACCOUNT_UID_KEY),
        );
        let account = if account_name.is_empty() {
            None
        } else {
            self.account(namespace, &account_name, &account_uid).await?
        };
        if let Some(account) = account {
            return self.fill(secret, &account).await;
        }
        tracing::info!(service_account = %account_name, "token secret has no service account; deleting");
        let uid = secret.metadata.uid.clone().unwrap_or_default();
        self.delete_secret(namespace, name, uid).await
    }

    /// Adds what is missing (`ca.crt` when it differs, `namespace`, the
    /// token) and the service account annotations.
    async fn fill(
        &self,
        mut secret: Secret,
        account: &ServiceAccount,
    ) -> Result<Requeue, ControllerError> {
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone().unwrap_or_default();
        let data = secret.data.get_or_insert_with(Default::default);
        let ca = self.issuer.root_ca_pem.as_bytes();
        let needs_ca = !ca.is_empty() && data.get(ROOT_CA_KEY).is_none_or(|v| v.0 != ca);
        let needs_namespace = data.get(NAMESPACE_KEY).is_none_or(|v| v.0.is_empty());
        let needs_token = data.get(TOKEN_KEY).is_none_or(|v| v.0.is_empty());
        if !needs_ca && !needs_namespace && !needs_token {
            return Ok(None);
        }
        if needs_ca {
            data.insert(ROOT_CA_KEY.to_owned(), ByteString(ca.to_vec()));
        }
        if needs_namespace {
            data.insert(
                NAMESPACE_KEY.to_owned(),
                ByteString(namespace.clone().into_bytes()),
            );
        }
        let account_name = account.metadata.name.clone().unwrap_or_default();
        let account_uid = account.metadata.uid.clone().unwrap_or_default();
        if needs_token {
            let claims = LegacyClaims::new(
                &namespace,
                &ObjectRef::new(&account_name, &account_uid),
                &name,
            );
            let token = self.issuer.signer.sign_legacy(&claims).map_err(|source| {
                ControllerError::Sign {
                    object: format!("{namespace}/{name}"),
                    source,
                }
            })?;
            data.insert(TOKEN_KEY.to_owned(), ByteString(token.into_bytes()));
        }
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert(SERVICE_ACCOUNT_NAME_KEY.to_owned(), account_name);
        annotations.insert(SERVICE_ACCOUNT_UID_KEY.to_owned(), account_uid);
        match self.objects.update_typed(&secret, "", Self::NAME).await {
            Ok(_) => {
                tracing::info!(
                    needs_token,
                    needs_ca,
                    needs_namespace,
                    "token secret filled"
                );
                Ok(None)
            }
            // Deleted meanwhile: nothing to fill.
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(ControllerError::api(
                "update secret",
                format!("{namespace}/{name}"),
                err,
            )),
        }
    }

    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        uid: String,
    ) -> Result<Requeue, ControllerError> {
        let options = DeleteOptions {
            precondition_uid: Some(uid),
            ..DeleteOptions::default()
        };
        match self
            .objects
            .delete_typed::<Secret>(namespace, name, &options)
            .await
        {
            Ok(_) => Ok(None),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(ControllerError::api(
                "delete secret",
                format!("{namespace}/{name}"),
                err,
            )),
        }
    }

    /// A ServiceAccount went: delete its token secrets (those naming it,
    /// with its UID or none), unless it is back with the same UID.
    async fn sync_account(&self, key: &str) -> Result<Requeue, ControllerError> {
        let (rest, uid) = key.rsplit_once('/').unwrap_or((key, ""));
        let (namespace, name) = split_key(rest);
        if self.account(namespace, name, uid).await?.is_some() {
            return Ok(None);
        }
        for secret in self.secrets.list_typed::<Secret>(namespace) {
            let annotations = secret.metadata.annotations.as_ref();
            let named = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
            let is_token = secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
                && named(SERVICE_ACCOUNT_NAME_KEY) == Some(name)
                && named(SERVICE_ACCOUNT_UID_KEY).is_none_or(|u| u.is_empty() || u == uid);
            if !is_token {
                continue;
            }
            let secret_name = secret.metadata.name.clone().unwrap_or_default();
            tracing::info!(secret = %secret_name, "service account deleted; deleting its token secret");
            self.delete_secret(
                namespace,
                &secret_name,
                secret.metadata.uid.clone().unwrap_or_default(),
            )
            .await?;
        }
        Ok(None)
    }
}

impl Reconciler for TokensController {
    const NAME: &'static str = "serviceaccount-token-controller";

    #[tracing::instrument(skip_all, fields(key = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        if let Some(secret) = key.strip_prefix(SECRET_PREFIX) {
            self.sync_secret(secret).await
        } else if let Some(account) = key.strip_prefix(ACCOUNT_PREFIX) {
            self.sync_account(account).await
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
#[path = "tokens_test.rs"]
mod tests;
