//! networking.k8s.io/v1 NetworkPolicy.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{ALL_VERBS, Strategy};
use crate::admission::selector_string;
use crate::defaults::{array_mut, as_map};
use crate::field::FieldError;
use crate::object::{default_field, ensure_object, get};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, none_if_empty, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::netpol;

/// The `NetworkPolicy` resource.
pub static NETWORK_POLICY: ResourceInfo = ResourceInfo {
    group: "networking.k8s.io",
    version: "v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    singular: "networkpolicy",
    namespaced: true,
    short_names: &["netpol"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: true,
    serving: Serving::Stored,
    strategy: &NetworkPolicyStrategy,
};

/// The rules of [`NETWORK_POLICY`].
#[derive(Debug)]
struct NetworkPolicyStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Pod-Selector",
        "string",
        0,
        "podSelector selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

impl Strategy for NetworkPolicyStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::networking::v1::NetworkPolicy>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        netpol::validate_network_policy(obj)
    }

    fn defaults(&self, obj: &mut Value) {
        default_network_policy(obj);
    }

    fn atomic(&self, path: &[&str]) -> bool {
        path == ["spec", "podSelector"]
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);

        let sel = get(obj, &["spec", "podSelector"])
            .map(selector_string)
            .unwrap_or_default();
        vec![name, none_if_empty(&sel).into(), created]
    }
}

fn default_network_policy(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "podSelector", json!({}));
    for dir in ["ingress", "egress"] {
        for rule in array_mut(spec, dir) {
            for port in array_mut(as_map(rule), "ports") {
                default_field(as_map(port), "protocol", "TCP");
            }
        }
    }
    if spec.get("policyTypes").is_none_or(Value::is_null) {
        let mut types = vec![json!("Ingress")];
        if spec.get("egress").is_some_and(|e| !e.is_null()) {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}
