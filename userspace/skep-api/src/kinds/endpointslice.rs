//! discovery.k8s.io/v1 EndpointSlice.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy};
use crate::defaults::{array_mut, as_map, root};
use crate::field::{FieldError, FieldPath};
use crate::object::{array, default_field, get_i64, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, list_endpoints, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::network;

/// The `EndpointSlice` resource.
pub static ENDPOINT_SLICE: ResourceInfo = ResourceInfo {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &EndpointSliceStrategy,
};

/// The rules of [`ENDPOINT_SLICE`].
#[derive(Debug)]
struct EndpointSliceStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "AddressType",
        "string",
        0,
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    (
        "Ports",
        "string",
        0,
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    (
        "Endpoints",
        "string",
        0,
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

impl Strategy for EndpointSliceStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::discovery::v1::EndpointSlice>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        network::validate_endpoint_slice(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if new.get("addressType") == old.get("addressType") {
            return Vec::new();
        }
        vec![FieldError::invalid(
            &FieldPath::new("addressType"),
            new.get("addressType").cloned().unwrap_or_default(),
            "field is immutable",
        )]
    }

    fn defaults(&self, obj: &mut Value) {
        for port in array_mut(root(obj), "ports") {
            default_field(as_map(port), "protocol", "TCP");
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);

        let ports: Vec<String> = array(obj, &["ports"])
            .iter()
            .map(|p| get_i64(p, &["port"]).map_or_else(|| "<unset>".to_owned(), |n| n.to_string()))
            .collect();
        let addrs: Vec<String> = array(obj, &["endpoints"])
            .iter()
            .flat_map(|e| {
                array(e, &["addresses"])
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let ports = if ports.is_empty() {
            "<unset>".to_owned()
        } else {
            ports.join(",")
        };
        vec![
            name,
            str_or_empty(obj, &["addressType"]).into(),
            ports.into(),
            list_endpoints(&addrs).into(),
            created,
        ]
    }
}
