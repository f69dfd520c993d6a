//! The same operations on k8s-openapi types, for skep's own control loops
//! (scheduler, controllers, node sync): they read and write typed objects
//! and never see JSON.

use k8s_openapi::{Metadata, Resource, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use skep_api::{ApiError, ResourceInfo, decode::Decoded, object::WatchEventType, registry};

use crate::{Deleted, Filter, ListOptions, ObjectWatch, Objects, WriteOptions};

/// A Kubernetes object type skep serves.
pub trait Typed:
    Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned + Clone + Send + Sync
{
}

impl<T> Typed for T where
    T: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned + Clone + Send + Sync
{
}

/// The served resource of `T`.
///
/// # Panics
/// If skep does not serve `T`: a programming error, caught by any test that
/// touches the caller.
pub fn info_of<T: Resource>() -> &'static ResourceInfo {
    registry::by_kind(T::API_VERSION, T::KIND).unwrap_or_else(|| {
        panic!(
            "{}/{} is not a resource skep serves",
            T::API_VERSION,
            T::KIND
        )
    })
}

fn to_typed<T: Typed>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(ApiError::internal)
}

fn to_body<T: Typed>(obj: &T) -> Result<Decoded, ApiError> {
    let mut value = serde_json::to_value(obj).map_err(ApiError::internal)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), T::API_VERSION.into());
        map.insert("kind".into(), T::KIND.into());
    }
    Ok(Decoded {
        value,
        duplicates: Vec::new(),
    })
}

/// A typed watch event.
pub type TypedEvent<T> = (WatchEventType, T);

/// A watch yielding typed objects.
pub struct TypedWatch<T> {
    inner: ObjectWatch,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T: Typed> TypedWatch<T> {
    /// The next event; see [`ObjectWatch::next`].
    pub async fn next(&mut self) -> Option<Result<TypedEvent<T>, ApiError>> {
        let event = self.inner.next().await?;
        Some(event.and_then(|(kind, value)| Ok((kind, to_typed(value)?))))
    }

    /// The revision of the last event seen.
    pub fn revision(&self) -> u64 {
        self.inner.revision()
    }
}

impl Objects {
    /// Reads a `T`.
    pub async fn get_typed<T: Typed>(&self, namespace: &str, name: &str) -> Result<T, ApiError> {
        to_typed(self.get(info_of::<T>(), namespace, name).await?)
    }

    /// Reads a `T` if it exists.
    pub async fn try_get_typed<T: Typed>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, ApiError> {
        self.try_get(info_of::<T>(), namespace, name)
            .await?
            .map(to_typed)
            .transpose()
    }

    /// Lists `T`s in `namespace` ("" for all) matching a label selector
    /// string (`""` for all), and the list's revision.
    pub async fn list_typed<T: Typed>(
        &self,
        namespace: &str,
        labels: &str,
    ) -> Result<(Vec<T>, u64), ApiError> {
        let info = info_of::<T>();
        let options = ListOptions {
            filter: Some(Filter::parse(info, labels, "")?),
            ..ListOptions::default()
        };
        let (items, meta) = self.list(info, namespace, &options).await?;
        let items = items.into_iter().map(to_typed).collect::<Result<_, _>>()?;
        Ok((items, meta.resource_version))
    }

    /// Creates a `T` (its namespace is the object's own).
    pub async fn create_typed<T: Typed>(&self, obj: &T, manager: &str) -> Result<T, ApiError> {
        let namespace = obj.metadata().namespace.clone().unwrap_or_default();
        let written = self
            .create(
                info_of::<T>(),
                &namespace,
                to_body(obj)?,
                &WriteOptions::by(manager),
            )
            .await?;
        to_typed(written.object)
    }

    /// Replaces a `T` (or its `status`), compare-and-swap on the
    /// `resourceVersion` it carries: a stale one gets `Conflict`.
    pub async fn update_typed<T: Typed>(
        &self,
        obj: &T,
        subresource: &str,
        manager: &str,
    ) -> Result<T, ApiError> {
        let info = info_of::<T>();
        let meta = obj.metadata();
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let old = self.get(info, namespace, name).await?;
        let written = self
            .replace(
                info,
                subresource,
                &old,
                to_body(obj)?,
                &WriteOptions::by(manager),
            )
            .await?;
        to_typed(written.object)
    }

    /// Deletes a `T` now (or marks it, when finalizers hold it).
    pub async fn delete_typed<T: Typed>(
        &self,
        namespace: &str,
        name: &str,
        options: &skep_api::delete::DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        self.delete(info_of::<T>(), namespace, name, options, false)
            .await
    }

    /// Watches `T`s in `namespace` ("" for all); see [`Objects::watch`].
    pub async fn watch_typed<T: Typed>(
        &self,
        namespace: &str,
        from: Option<u64>,
    ) -> Result<TypedWatch<T>, ApiError> {
        let inner = self.watch(info_of::<T>(), namespace, None, from).await?;
        Ok(TypedWatch {
            inner,
            _type: std::marker::PhantomData,
        })
    }
}
