//! PersistentVolume and PersistentVolumeClaim validation.

use serde_json::Value;

use crate::field::{FieldError, FieldPath};
use crate::object::{array, get, str_or_empty};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
/// Fields of a PV spec that are not its volume source.
const PV_NON_SOURCE: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeAttributesClassName",
    "volumeMode",
];

fn validate_access_modes(spec: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let modes = array(spec, &["accessModes"]);
    if modes.is_empty() {
        errs.push(FieldError::required(&path.child("accessModes"), ""));
    }
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(FieldError::not_supported(
                &path.child("accessModes"),
                m,
                ACCESS_MODES,
            ));
        }
    }
}

/// `ValidatePersistentVolume`.
pub fn validate_pv(obj: &Value) -> Vec<FieldError> {
    let path = FieldPath::new("spec");
    let spec = get(obj, &["spec"]).cloned().unwrap_or_default();
    let mut errs = Vec::new();
    validate_access_modes(&spec, &path, &mut errs);
    if get(&spec, &["capacity", "storage"]).is_none() {
        errs.push(FieldError::required(&path.child("capacity"), ""));
    }
    if let Some(p) = spec
        .get("persistentVolumeReclaimPolicy")
        .and_then(Value::as_str)
        && !RECLAIM_POLICIES.contains(&p)
    {
        errs.push(FieldError::not_supported(
            &path.child("persistentVolumeReclaimPolicy"),
            p,
            RECLAIM_POLICIES,
        ));
    }
    let sources = spec.as_object().map_or(0, |m| {
        m.keys()
            .filter(|k| !PV_NON_SOURCE.contains(&k.as_str()))
            .count()
    });
    if sources == 0 {
        errs.push(FieldError::required(&path, "must specify a volume type"));
    } else if sources > 1 {
        errs.push(FieldError::forbidden(
            &path,
            "may not specify more than 1 volume type",
        ));
    }
    errs
}

/// `ValidatePersistentVolumeClaim`.
pub fn validate_pvc(obj: &Value) -> Vec<FieldError> {
    let path = FieldPath::new("spec");
    let spec = get(obj, &["spec"]).cloned().unwrap_or_default();
    let mut errs = Vec::new();
    validate_access_modes(&spec, &path, &mut errs);
    if get(&spec, &["resources", "requests", "storage"]).is_none() {
        errs.push(FieldError::required(
            &path.child("resources").key("storage"),
            "",
        ));
    }
    errs
}

/// A PVC's spec is immutable except `resources.requests` and `volumeAttributesClassName`;
/// `volumeName` may be set once (binding).
pub fn validate_pvc_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut a = get(new, &["spec"]).cloned().unwrap_or_default();
    let mut b = get(old, &["spec"]).cloned().unwrap_or_default();
    for spec in [&mut a, &mut b] {
        if let Some(m) = spec.as_object_mut() {
            m.remove("volumeAttributesClassName");
            if let Some(Value::Object(r)) = m.get_mut("resources") {
                r.remove("requests");
            }
        }
    }
    if str_or_empty(old, &["spec", "volumeName"]).is_empty()
        && let Some(m) = b.as_object_mut()
        && let Some(v) = a.get("volumeName")
    {
        m.insert("volumeName".into(), v.clone());
    }
    if a == b {
        Vec::new()
    } else {
        vec![FieldError::forbidden(
            &FieldPath::new("spec"),
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        )]
    }
}
