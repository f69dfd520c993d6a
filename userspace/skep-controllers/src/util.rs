//! Small helpers the control loops share: owner references, pod states,
//! selectors on typed objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use skep_api::selector;

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A controller reference to an owner of type `T`.
pub fn owner_ref<T: k8s_openapi::Resource>(meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: T::API_VERSION.to_owned(),
        kind: T::KIND.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `namespace/name` of an object, for logs and queue keys.
pub fn meta_key(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_owned(),
    }
}

/// A typed label selector as skep-api's matcher; an absent selector
/// matches nothing.
pub fn label_selector(sel: Option<&LabelSelector>) -> selector::LabelSelector {
    let value = sel
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(serde_json::Value::Null);
    selector::LabelSelector::from_value(&value).unwrap_or_else(|_| {
        // An invalid operator never passes validation; match nothing.
        selector::LabelSelector::from_value(&serde_json::Value::Null)
            .unwrap_or_else(|_| unreachable!("null selector always parses"))
    })
}

/// Whether `labels` satisfy `sel`.
pub fn selects(sel: &selector::LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    sel.matches(&map)
}

/// Whether the pod is marked for deletion.
pub fn is_terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether a pod counts toward its owner's replicas: not being deleted and
/// not finished.
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !is_terminating(&pod.metadata) && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The pod's Ready condition, if it is True.
fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
}

/// Since when the pod is Ready, if it is and the time is known.
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready_seconds` at `now`.
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    min_ready_seconds <= 0
        || pod_ready_since(pod).is_some_and(|since| {
            now.as_second() - since.as_second() >= i64::from(min_ready_seconds)
        })
}

/// Now, as the API stamps it.
pub fn now() -> Timestamp {
    skep_api::admission::now()
}

/// Namespace `name` if it exists and is not terminating (what the
/// per-namespace controllers fill: a terminating one's content is being
/// deleted).
pub async fn active_namespace(
    objects: &skep_objects::Objects,
    name: &str,
) -> Result<Option<k8s_openapi::api::core::v1::Namespace>, crate::error::ControllerError> {
    let ns = objects
        .try_get_typed::<k8s_openapi::api::core::v1::Namespace>("", name)
        .await
        .map_err(|e| crate::error::ControllerError::api("get namespace", name, e))?;
    Ok(ns.filter(|ns| {
        ns.metadata.deletion_timestamp.is_none()
            && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
    }))
}
