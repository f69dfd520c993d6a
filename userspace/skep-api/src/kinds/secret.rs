//! core/v1 Secret: write-only `stringData`.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy};
use crate::defaults::root;
use crate::field::FieldError;
use crate::object::{default_field, ensure_object, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::config;

/// The `Secret` resource.
pub static SECRET: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &SecretStrategy,
};

/// The rules of [`SECRET`].
#[derive(Debug)]
struct SecretStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    ("Type", "string", 0, "The type of the secret"),
    (
        "Data",
        "string",
        0,
        "The number of entries in the secret's data",
    ),
    AGE,
];

impl Strategy for SecretStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Secret>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        config::validate_secret(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        config::validate_config_update(new, old, true)
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        fold_string_data(obj);
    }

    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        fold_string_data(new);
    }

    fn defaults(&self, obj: &mut Value) {
        default_field(root(obj), "type", "Opaque");
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["type"]
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);

        let count = obj
            .get("data")
            .and_then(Value::as_object)
            .map_or(0, serde_json::Map::len);
        vec![
            name,
            str_or_empty(obj, &["type"]).into(),
            count.into(),
            created,
        ]
    }
}

/// Secret `stringData` is write-only: merge it into `data` (base64).
fn fold_string_data(obj: &mut Value) {
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let data = ensure_object(obj, &["data"]);
    for (k, v) in string_data {
        let bytes = v.as_str().unwrap_or("").as_bytes().to_vec();
        if let Ok(encoded) = serde_json::to_value(k8s_openapi::ByteString(bytes)) {
            data.insert(k, encoded);
        }
    }
}
