//! core/v1 Endpoints.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy};
use crate::defaults::{array_mut, as_map, root};
use crate::field::FieldError;
use crate::object::{array, default_field, get_i64, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, list_endpoints, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::network;

/// The `Endpoints` resource.
pub static ENDPOINTS: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    namespaced: true,
    short_names: &["ep"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &EndpointsStrategy,
};

/// The rules of [`ENDPOINTS`].
#[derive(Debug)]
struct EndpointsStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Endpoints",
        "string",
        0,
        "Endpoints is the list of endpoints in the object.",
    ),
    AGE,
];

impl Strategy for EndpointsStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Endpoints>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        network::validate_endpoints(obj)
    }

    fn defaults(&self, obj: &mut Value) {
        for subset in array_mut(root(obj), "subsets") {
            for port in array_mut(as_map(subset), "ports") {
                default_field(as_map(port), "protocol", "TCP");
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);

        let mut addrs = Vec::new();
        for subset in array(obj, &["subsets"]) {
            for addr in array(subset, &["addresses"]) {
                let ip = str_or_empty(addr, &["ip"]);
                let ports = array(subset, &["ports"]);
                if ports.is_empty() {
                    addrs.push(ip.to_owned());
                }
                for p in ports {
                    addrs.push(format!("{ip}:{}", get_i64(p, &["port"]).unwrap_or(0)));
                }
            }
        }
        vec![name, list_endpoints(&addrs).into(), created]
    }
}
