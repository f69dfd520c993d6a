//! API objects in the store.
//!
//! kube-apiserver keeps its storage layer (`pkg/registry`) apart from its
//! HTTP handlers; this crate is skep's. Every write of a Kubernetes object —
//! from kubectl through the REST API, from the scheduler binding a pod, from
//! a controller updating a status — goes through [`Objects`], so admission
//! (defaulting, validation, immutable fields), managedFields, namespace
//! checks, compare-and-swap and the store-key layout live in one place.
//! Errors are [`ApiError`]s: the `Status` a REST client would get.
#![deny(missing_docs)]

mod keys;
mod list;
pub mod serviceaccount;
mod services;
mod typed;
mod watch;
mod write;

pub use keys::{key, prefix};
pub use list::{ListOptions, decode_continue, encode_continue};
pub use services::{CLUSTER_IP_PREFIX, NODE_PORT_PREFIX};
pub use typed::{Typed, TypedEvent, TypedWatch, info_of};
pub use watch::{Filter, ObjectWatch};
pub use write::{Deleted, WriteOptions, Written};

use serde_json::Value;
use skep_api::service_alloc::ServiceRanges;
use skep_api::{ApiError, ResourceInfo, object};
use skep_store::{KeyValue, ReadConsistency, Store, StoreError};

/// Reads and writes API objects in the store, with the API's rules.
#[derive(Clone)]
pub struct Objects {
    store: Store,
    service_ranges: ServiceRanges,
    service_account_admission: bool,
}

impl Objects {
    /// Objects kept in `store`, Services allocated from the default ranges.
    pub fn new(store: Store) -> Self {
        Self::with_service_ranges(store, ServiceRanges::default())
    }

    /// Objects kept in `store`, Services allocated from `service_ranges`.
    pub fn with_service_ranges(store: Store, service_ranges: ServiceRanges) -> Self {
        Self {
            store,
            service_ranges,
            service_account_admission: false,
        }
    }

    /// These objects with the `ServiceAccount` admission plugin on (as the
    /// API server and the controllers run it) or off (tests of other
    /// things that create pods in namespaces without accounts): see
    /// [`serviceaccount`].
    #[must_use]
    pub fn with_service_account_admission(mut self, on: bool) -> Self {
        self.service_account_admission = on;
        self
    }

    /// The store underneath, for what is not about one object (revisions).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The object `namespace/name` with its `resourceVersion`, or `NotFound`.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.try_get(info, namespace, name)
            .await?
            .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))
    }

    /// The object `namespace/name` with its `resourceVersion`, if it exists.
    pub async fn try_get(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let kv = self
            .store
            .get(key(info, namespace, name), ReadConsistency::Linearizable)
            .await
            .map_err(|e| store_error(info, name, e))?;
        kv.as_ref().map(output).transpose()
    }

    /// The objects `(kind, namespace, name)`, each if it exists, read at one
    /// revision behind at most one read barrier: `Linearizable` gives what
    /// one [`Objects::try_get`] per object would, for the price of one;
    /// `Local` what this replica has applied, with no barrier (every write
    /// this replica acknowledged, and at most a replication delay behind
    /// the leader on a follower: fresher than upstream's informer caches).
    pub async fn try_get_many(
        &self,
        wanted: &[(&ResourceInfo, &str, &str)],
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<Value>>, ApiError> {
        let keys: Vec<bytes::Bytes> = wanted
            .iter()
            .map(|(info, namespace, name)| key(info, namespace, name).into())
            .collect();
        let kvs =
            self.store
                .get_many(&keys, consistency)
                .await
                .map_err(|e| match wanted.first() {
                    Some((info, _, name)) => store_error(info, name, e),
                    None => ApiError::internal(e),
                })?;
        kvs.iter()
            .map(|kv| kv.as_ref().map(output).transpose())
            .collect()
    }
}

/// Maps a store failure to the API error a client expects.
pub fn store_error(info: &ResourceInfo, name: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(info.group, info.plural, name),
        StoreError::NotFound { .. } => ApiError::not_found(info.group, info.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict_modified(info.group, info.plural, name),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(requested, compacted),
        other => {
            tracing::error!(err = %other, kind = info.kind, %name, "store failure");
            ApiError::internal(other)
        }
    }
}

/// An object as stored, with its `resourceVersion` from the store.
pub fn output(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    object::set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// The bytes stored for `obj`: the resourceVersion is the store's revision,
/// so it is never stored inside the object.
fn stored_bytes(obj: &Value) -> Result<Vec<u8>, ApiError> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).map_err(ApiError::internal)
}

#[cfg(test)]
mod objects_test;
#[cfg(test)]
mod services_test;
