//! core/v1 PersistentVolume.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy, status};
use crate::field::FieldError;
use crate::object::{array, default_field, ensure_object, get, get_str, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, access_modes, creation_age, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::storage;

/// The `PersistentVolume` resource.
pub static PERSISTENT_VOLUME: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "PersistentVolume",
    plural: "persistentvolumes",
    singular: "persistentvolume",
    namespaced: false,
    short_names: &["pv"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[status("", "v1", "PersistentVolume")],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &PersistentVolumeStrategy,
};

/// The rules of [`PERSISTENT_VOLUME`].
#[derive(Debug)]
struct PersistentVolumeStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Capacity",
        "string",
        0,
        "capacity is the description of the persistent volume's resources and capacity.",
    ),
    (
        "Access Modes",
        "string",
        0,
        "accessModes contains all ways the volume can be mounted.",
    ),
    (
        "Reclaim Policy",
        "string",
        0,
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
    ),
    (
        "Status",
        "string",
        0,
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    (
        "Claim",
        "string",
        0,
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
    ),
    (
        "StorageClass",
        "string",
        0,
        "storageClassName is the name of StorageClass to which this persistent volume belongs.",
    ),
    (
        "VolumeAttributesClass",
        "string",
        0,
        "Name of VolumeAttributesClass to which this persistent volume belongs.",
    ),
    (
        "Reason",
        "string",
        0,
        "reason is a brief CamelCase string that describes any failure.",
    ),
    AGE,
    (
        "VolumeMode",
        "string",
        1,
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
    ),
];

impl Strategy for PersistentVolumeStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::PersistentVolume>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        storage::validate_pv(obj)
    }

    fn defaults(&self, obj: &mut Value) {
        default_pv(obj);
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

        let claim = get(obj, &["spec", "claimRef"]).map_or_else(String::new, |c| {
            format!(
                "{}/{}",
                str_or_empty(c, &["namespace"]),
                str_or_empty(c, &["name"])
            )
        });
        vec![
            name,
            str_or_empty(obj, &["spec", "capacity", "storage"]).into(),
            access_modes(array(obj, &["spec", "accessModes"])).into(),
            str_or_empty(obj, &["spec", "persistentVolumeReclaimPolicy"]).into(),
            str_or_empty(obj, &["status", "phase"]).into(),
            claim.into(),
            str_or_empty(obj, &["spec", "storageClassName"]).into(),
            get_str(obj, &["spec", "volumeAttributesClassName"])
                .unwrap_or("<unset>")
                .into(),
            str_or_empty(obj, &["status", "reason"]).into(),
            created,
            str_or_empty(obj, &["spec", "volumeMode"]).into(),
        ]
    }
}

fn default_pv(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "persistentVolumeReclaimPolicy", "Retain");
    default_field(spec, "volumeMode", "Filesystem");
}
