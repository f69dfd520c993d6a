//! core/v1 ServiceAccount: an identity for processes in pods. Upstream's
//! validation is its metadata's (the name a DNS subdomain), which the
//! generic checks do; the printer shows how many secrets it lists.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::tokenrequest::TOKEN_SUBRESOURCE;
use super::{ALL_VERBS, Strategy};
use crate::field::FieldError;
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, object_name};
use crate::typed::{TypedError, round_trip};

/// The `ServiceAccount` resource.
pub static SERVICE_ACCOUNT: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    namespaced: true,
    short_names: &["sa"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[TOKEN_SUBRESOURCE],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &ServiceAccountStrategy,
};

/// The rules of [`SERVICE_ACCOUNT`].
#[derive(Debug)]
struct ServiceAccountStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Secrets",
        "string",
        0,
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
    ),
    AGE,
];

impl Strategy for ServiceAccountStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::ServiceAccount>(value)
    }

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        // `ValidateServiceAccount` checks only the metadata.
        Vec::new()
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let secrets = obj
            .get("secrets")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![object_name(obj), secrets.into(), creation_age(obj, now)]
    }
}
