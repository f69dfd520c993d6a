//! Writes: admission, managedFields, namespace checks and compare-and-swap,
//! the same for a REST client and for skep's own control loops.

use serde_json::Value;
use skep_api::{
    ApiError, ResourceInfo,
    admission::{self, AdmitOptions, Admitted},
    apply as server_side_apply,
    decode::Decoded,
    delete::{self as deletion, DeleteOptions, DeleteOutcome},
    kinds, object,
    registry::Serving,
};

use skep_store::StoreError;

use crate::services::TxnFailed;
use crate::{Objects, key, output, store_error, stored_bytes};

/// How a write is made.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Who writes (`managedFields[].manager`).
    pub manager: String,
    /// Field validation and the time to stamp.
    pub admit: AdmitOptions,
    /// `dryRun=All`: admit but do not store.
    pub dry_run: bool,
}

impl WriteOptions {
    /// A real write by `manager`, stamped now, with strict validation.
    pub fn by(manager: &str) -> Self {
        Self {
            manager: manager.to_owned(),
            admit: AdmitOptions::default(),
            dry_run: false,
        }
    }
}

/// A written object (with its new `resourceVersion`) and any warnings.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as stored.
    pub object: Value,
    /// `Warning`s for the client (unknown fields under `fieldValidation=Warn`).
    pub warnings: Vec<String>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is gone; this was its last state.
    Removed(Value),
    /// Finalizers or a grace period hold it: it is marked for deletion.
    Marked(Value),
    /// It was already being deleted as asked.
    Unchanged(Value),
}

impl Objects {
    /// Admits and stores a new object of `info` in `namespace`.
    #[tracing::instrument(skip_all, fields(kind = info.kind, %namespace))]
    pub async fn create(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        body: Decoded,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut admitted = admission::admit_create(info, namespace, body, &opts.admit)?;
        server_side_apply::record_update(
            info,
            None,
            &mut admitted.object,
            &opts.manager,
            "",
            opts.admit.now,
        );
        self.store_new(info, admitted, opts.dry_run).await
    }

    /// Stores an admitted new object, after checking its namespace is active.
    pub async fn store_new(
        &self,
        info: &ResourceInfo,
        admitted: Admitted,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        match info.serving {
            Serving::Stored => {}
            // Create-only kinds are answered by handlers, never stored.
            Serving::CreateOnly => return Err(ApiError::method_not_allowed()),
        }
        let Admitted {
            object: mut obj,
            warnings,
            ..
        } = admitted;
        let name = object::name(&obj).to_owned();
        let ns = object::namespace(&obj).to_owned();
        if info.namespaced {
            self.ensure_namespace_active(&ns).await?;
        }
        if *info == kinds::POD && self.service_account_admission {
            self.admit_service_account(&ns, &mut obj).await?;
        }
        if *info == kinds::SERVICE {
            let object = Box::pin(self.create_service(info, &obj, dry_run)).await?;
            if !dry_run {
                tracing::info!(kind = info.kind, namespace = %ns, %name, "created");
            }
            return Ok(Written { object, warnings });
        }
        if dry_run {
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        let kv = self
            .store()
            .create(key(info, &ns, &name), stored_bytes(&obj)?)
            .await
            .map_err(|e| store_error(info, &name, e))?;
        tracing::info!(kind = info.kind, namespace = %ns, %name, revision = kv.mod_revision, "created");
        Ok(Written {
            object: output(&kv)?,
            warnings,
        })
    }

    async fn ensure_namespace_active(&self, namespace: &str) -> Result<(), ApiError> {
        let ns_info = &kinds::NAMESPACE;
        let Some(ns) = self.try_get(ns_info, "", namespace).await? else {
            return Err(ApiError::not_found("", "namespaces", namespace));
        };
        if object::get(&ns, &["metadata", "deletionTimestamp"]).is_some() {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Admits `body` as the new state of `old` (an object read with its
    /// `resourceVersion`) through `subresource` ("", "status" or "scale"),
    /// records the writer in managedFields, and stores it with
    /// compare-and-swap.
    #[tracing::instrument(skip_all, fields(kind = info.kind, namespace = object::namespace(old), name = object::name(old), %subresource))]
    pub async fn replace(
        &self,
        info: &ResourceInfo,
        subresource: &str,
        old: &Value,
        body: Decoded,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let namespace = object::namespace(old);
        let name = object::name(old);
        let a = &opts.admit;
        let mut admitted = match subresource {
            "" => admission::admit_update(info, namespace, name, body, old, a),
            "status" => admission::admit_status_update(info, namespace, name, body, old, a),
            "scale" => admission::admit_scale_update(info, namespace, name, body, old, a),
            _ => Err(ApiError::method_not_allowed()),
        }?;
        server_side_apply::record_update(
            info,
            Some(old),
            &mut admitted.object,
            &opts.manager,
            subresource,
            a.now,
        );
        self.store_replacement(info, old, admitted, opts.dry_run)
            .await
    }

    /// Stores an admitted replacement of `old` (compare-and-swap on the
    /// revision the writer named, else the one read), deleting the object
    /// instead when it is being deleted and its last finalizer went away.
    pub async fn store_replacement(
        &self,
        info: &ResourceInfo,
        old: &Value,
        admitted: Admitted,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let Admitted {
            object: new,
            warnings,
            precondition,
        } = admitted;
        if dry_run {
            return Ok(Written {
                object: new,
                warnings,
            });
        }
        let name = object::name(old);
        let expected = precondition.or_else(|| object::resource_version(old));
        let key = key(info, object::namespace(old), name);
        if deletion::ready_to_remove(info, &new) {
            let revision = if *info == kinds::SERVICE {
                Box::pin(self.delete_service(info, old, expected))
                    .await
                    .map_err(|e| match e {
                        TxnFailed::Object(e) => store_error(info, name, e),
                        TxnFailed::Api(e) => e,
                    })?
            } else {
                self.store()
                    .delete(key, expected)
                    .await
                    .map_err(|e| store_error(info, name, e))?
                    .revision
            };
            tracing::info!(kind = info.kind, %name, "finalized and deleted");
            let mut obj = new;
            object::set_resource_version(&mut obj, revision);
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        if *info == kinds::SERVICE {
            let object = Box::pin(self.replace_service(info, old, &new, expected)).await?;
            return Ok(Written { object, warnings });
        }
        let kv = self
            .store()
            .update(key, stored_bytes(&new)?, expected)
            .await
            .map_err(|e| store_error(info, name, e))?;
        Ok(Written {
            object: output(&kv)?,
            warnings,
        })
    }

    /// Binds the pod `namespace/name` to the node a `Binding` names (the
    /// `pods/binding` subresource): fails if it is already bound.
    #[tracing::instrument(skip_all, fields(%namespace, pod = %name))]
    pub async fn bind(
        &self,
        namespace: &str,
        name: &str,
        binding: &Decoded,
        now: k8s_openapi::jiff::Timestamp,
    ) -> Result<Value, ApiError> {
        let info = &kinds::POD;
        let pod = self.get(info, namespace, name).await?;
        let bound = admission::bind_pod(&pod, binding, now)?;
        let kv = self
            .store()
            .update(
                key(info, namespace, name),
                stored_bytes(&bound)?,
                object::resource_version(&pod),
            )
            .await
            .map_err(|e| store_error(info, name, e))?;
        output(&kv)
    }

    /// Deletes `namespace/name` as `options` say: now, or by marking it when
    /// finalizers or a grace period hold it.
    #[tracing::instrument(skip_all, fields(kind = info.kind, %namespace, %name))]
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<Deleted, ApiError> {
        // Like kube-apiserver's GuaranteedUpdate: a write that lost a race
        // with another writer (a controller updating status, say) is redone
        // on the fresh object. The caller's preconditions are checked again
        // each time, so a pinned resourceVersion still gets its 409.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .delete_once(info, namespace, name, options, dry_run)
                .await
            {
                Err(DeleteRace::Lost(err)) if attempt >= DELETE_ATTEMPTS => return Err(err),
                Err(DeleteRace::Lost(_)) => {
                    tracing::debug!(kind = info.kind, %name, attempt, "delete raced a write, retrying");
                }
                Err(DeleteRace::Failed(err)) => return Err(err),
                Ok(deleted) => return Ok(deleted),
            }
        }
    }

    async fn delete_once(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<Deleted, DeleteRace> {
        let obj = self.get(info, namespace, name).await?;
        let outcome = deletion::prepare_delete(info, &obj, options, admission::now())?;
        if dry_run {
            return Ok(match outcome {
                DeleteOutcome::Remove | DeleteOutcome::Unchanged => Deleted::Removed(obj),
                DeleteOutcome::Update(marked) => Deleted::Marked(marked),
            });
        }
        let key = key(info, namespace, name);
        let revision = object::resource_version(&obj);
        let lost = |e: StoreError| match e {
            StoreError::Conflict { .. } => DeleteRace::Lost(store_error(info, name, e)),
            other => DeleteRace::Failed(store_error(info, name, other)),
        };
        match outcome {
            DeleteOutcome::Remove if *info == kinds::SERVICE => {
                let deleted =
                    self.delete_service(info, &obj, revision)
                        .await
                        .map_err(|e| match e {
                            TxnFailed::Object(e) => lost(e),
                            TxnFailed::Api(e) => DeleteRace::Failed(e),
                        })?;
                tracing::info!(kind = info.kind, revision = deleted, "deleted");
                Ok(Deleted::Removed(obj))
            }
            DeleteOutcome::Remove => {
                let deleted = self.store().delete(key, revision).await.map_err(lost)?;
                tracing::info!(kind = info.kind, revision = deleted.revision, "deleted");
                Ok(Deleted::Removed(obj))
            }
            DeleteOutcome::Update(marked) => {
                let kv = self
                    .store()
                    .update(key, stored_bytes(&marked)?, revision)
                    .await
                    .map_err(lost)?;
                Ok(Deleted::Marked(output(&kv)?))
            }
            DeleteOutcome::Unchanged => Ok(Deleted::Unchanged(obj)),
        }
    }
}

/// How many times a delete is redone after losing a race with another write.
const DELETE_ATTEMPTS: u32 = 16;

/// Why one delete attempt failed: lost a compare-and-swap race (worth
/// redoing on the fresh object) or anything else (final).
enum DeleteRace {
    Lost(ApiError),
    Failed(ApiError),
}

impl From<ApiError> for DeleteRace {
    fn from(err: ApiError) -> Self {
        DeleteRace::Failed(err)
    }
}
