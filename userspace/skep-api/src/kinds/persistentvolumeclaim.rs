//! core/v1 PersistentVolumeClaim.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy, status};
use crate::field::FieldError;
use crate::object::{array, default_field, ensure_object, get_str, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, access_modes, creation_age, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::storage;

/// The `PersistentVolumeClaim` resource.
pub static PERSISTENT_VOLUME_CLAIM: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    namespaced: true,
    short_names: &["pvc"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[status("", "v1", "PersistentVolumeClaim")],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &PersistentVolumeClaimStrategy,
};

/// The rules of [`PERSISTENT_VOLUME_CLAIM`].
#[derive(Debug)]
struct PersistentVolumeClaimStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Status",
        "string",
        0,
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    (
        "Volume",
        "string",
        0,
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    (
        "Capacity",
        "string",
        0,
        "capacity represents the actual resources of the underlying volume.",
    ),
    (
        "Access Modes",
        "string",
        0,
        "accessModes contains the desired access modes the volume should have.",
    ),
    (
        "StorageClass",
        "string",
        0,
        "storageClassName is the name of the StorageClass required by the claim.",
    ),
    (
        "VolumeAttributesClass",
        "string",
        0,
        "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.",
    ),
    AGE,
    (
        "VolumeMode",
        "string",
        1,
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

impl Strategy for PersistentVolumeClaimStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        storage::validate_pvc(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        storage::validate_pvc_update(new, old)
    }

    fn defaults(&self, obj: &mut Value) {
        default_field(ensure_object(obj, &["spec"]), "volumeMode", "Filesystem");
    }

    fn initial_status(&self, obj: &mut Value) {
        default_field(ensure_object(obj, &["status"]), "phase", "Pending");
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);

        let bound = !str_or_empty(obj, &["spec", "volumeName"]).is_empty();
        let (capacity, modes) = if bound {
            (
                str_or_empty(obj, &["status", "capacity", "storage"]).to_owned(),
                access_modes(array(obj, &["status", "accessModes"])),
            )
        } else {
            (String::new(), String::new())
        };
        vec![
            name,
            str_or_empty(obj, &["status", "phase"]).into(),
            str_or_empty(obj, &["spec", "volumeName"]).into(),
            capacity.into(),
            modes.into(),
            str_or_empty(obj, &["spec", "storageClassName"]).into(),
            get_str(obj, &["spec", "volumeAttributesClassName"])
                .unwrap_or("<unset>")
                .into(),
            created,
            str_or_empty(obj, &["spec", "volumeMode"]).into(),
        ]
    }
}
