//! Validation of objects on create and update, per kind, with Kubernetes'
//! field paths and messages.

pub mod cidr;
pub mod config;
pub mod meta;
pub mod names;
pub mod netpol;
pub mod network;
pub mod pod;
pub mod storage;
pub mod workload;

use serde_json::Value;

use crate::field::{FieldError, FieldPath};
use crate::object::{get, get_i64};
use crate::registry::{Kind, ResourceInfo};

/// The name rule Kubernetes applies to a kind's `metadata.name`.
pub fn name_rule(kind: Kind) -> meta::NameFn {
    match kind {
        Kind::Namespace => names::dns1123_label,
        Kind::Service => names::dns1035_label,
        _ => names::dns1123_subdomain,
    }
}

/// Validate a new object (after defaulting).
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = if info.id == Kind::Scale {
        Vec::new()
    } else {
        meta::validate_object_meta(obj, info.namespaced, name_rule(info.id))
    };
    errs.extend(validate_kind(info.id, obj));
    errs
}

/// Validate an update of `old` to `new` (after defaulting): the create rules
/// plus immutable fields.
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_create(info, new);
    errs.extend(meta::validate_object_meta_update(new, old));
    match info.id {
        Kind::Pod => errs.extend(pod::validate_pod_update(new, old)),
        Kind::Deployment | Kind::ReplicaSet => {
            errs.extend(workload::validate_selector_update(new, old));
        }
        Kind::Service => errs.extend(network::validate_service_update(new, old)),
        Kind::ConfigMap => errs.extend(config::validate_config_update(new, old, false)),
        Kind::Secret => errs.extend(config::validate_config_update(new, old, true)),
        Kind::PersistentVolumeClaim => errs.extend(storage::validate_pvc_update(new, old)),
        Kind::EndpointSlice if new.get("addressType") != old.get("addressType") => {
            errs.push(FieldError::invalid(
                &FieldPath::new("addressType"),
                new.get("addressType").cloned().unwrap_or_default(),
                "field is immutable",
            ));
        }
        _ => {}
    }
    errs
}

/// Validate a status-subresource update: metadata immutables and a few status rules.
pub fn validate_status_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(new, old);
    if info.id == Kind::Deployment || info.id == Kind::ReplicaSet {
        for key in [
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "updatedReplicas",
            "observedGeneration",
        ] {
            if let Some(v) = get_i64(new, &["status", key]).filter(|v| *v < 0) {
                errs.push(FieldError::invalid(
                    &FieldPath::new("status").child(key),
                    v,
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    errs
}

fn validate_kind(kind: Kind, obj: &Value) -> Vec<FieldError> {
    match kind {
        Kind::Pod => get(obj, &["spec"]).map_or_else(
            || {
                vec![FieldError::required(
                    &FieldPath::new("spec").child("containers"),
                    "",
                )]
            },
            |spec| pod::validate_pod_spec(spec, &FieldPath::new("spec")),
        ),
        Kind::Deployment => workload::validate_deployment(obj),
        Kind::ReplicaSet => workload::validate_replicaset(obj),
        Kind::Service => network::validate_service(obj),
        Kind::Endpoints => network::validate_endpoints(obj),
        Kind::EndpointSlice => network::validate_endpoint_slice(obj),
        Kind::NetworkPolicy => netpol::validate_network_policy(obj),
        Kind::Binding => network::validate_binding(obj),
        Kind::ConfigMap => config::validate_config_map(obj),
        Kind::Secret => config::validate_secret(obj),
        Kind::PersistentVolume => storage::validate_pv(obj),
        Kind::PersistentVolumeClaim => storage::validate_pvc(obj),
        Kind::Scale => match get_i64(obj, &["spec", "replicas"]) {
            Some(r) if r < 0 => vec![FieldError::invalid(
                &FieldPath::new("spec").child("replicas"),
                r,
                "must be greater than or equal to 0",
            )],
            _ => Vec::new(),
        },
        Kind::Namespace | Kind::Node | Kind::Event => Vec::new(),
    }
}

#[cfg(test)]
#[path = "validation_test.rs"]
mod tests;
