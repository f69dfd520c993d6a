//! core/v1 ConfigMap.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::config;

/// The `ConfigMap` resource.
pub static CONFIG_MAP: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &ConfigMapStrategy,
};

/// The rules of [`CONFIG_MAP`].
#[derive(Debug)]
struct ConfigMapStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    ("Data", "string", 0, "Data contains the configuration data."),
    AGE,
];

impl Strategy for ConfigMapStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::ConfigMap>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        config::validate_config_map(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        config::validate_config_update(new, old, false)
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);

        let count = ["data", "binaryData"]
            .iter()
            .filter_map(|k| obj.get(*k).and_then(Value::as_object))
            .map(serde_json::Map::len)
            .sum::<usize>();
        vec![name, count.into(), created]
    }
}
