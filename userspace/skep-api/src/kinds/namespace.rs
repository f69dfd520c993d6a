//! core/v1 Namespace: finalized before it goes away.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{Strategy, status};
use crate::field::FieldError;
use crate::object::{array, default_field, ensure_object, get_str, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;
use crate::validation::names;

/// The `Namespace` resource.
pub static NAMESPACE: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    verbs: &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ],
    subresources: &[status("", "v1", "Namespace")],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &NamespaceStrategy,
};

/// The rules of [`NAMESPACE`].
#[derive(Debug)]
struct NamespaceStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    ("Status", "string", 0, "The status of the namespace"),
    AGE,
];

impl Strategy for NamespaceStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Namespace>(value)
    }

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn name_rule(&self) -> Option<NameFn> {
        Some(names::dns1123_label)
    }

    fn defaults(&self, obj: &mut Value) {
        default_namespace(obj);
    }

    fn initial_status(&self, obj: &mut Value) {
        default_field(ensure_object(obj, &["status"]), "phase", "Active");
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["status.phase"]
    }

    fn finalizing(&self, obj: &Value) -> bool {
        !array(obj, &["spec", "finalizers"]).is_empty()
    }

    fn begin_deletion(&self, obj: &mut Value) {
        ensure_object(obj, &["status"]).insert("phase".into(), "Terminating".into());
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);
        vec![
            name,
            str_or_empty(obj, &["status", "phase"]).into(),
            created,
        ]
    }
}

fn default_namespace(obj: &mut Value) {
    let name = get_str(obj, &["metadata", "name"]).unwrap_or("").to_owned();
    if !name.is_empty() {
        ensure_object(obj, &["metadata", "labels"])
            .insert("kubernetes.io/metadata.name".into(), name.into());
    }
    default_field(
        ensure_object(obj, &["spec"]),
        "finalizers",
        json!(["kubernetes"]),
    );
}
