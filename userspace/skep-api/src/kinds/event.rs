//! core/v1 Event.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy};
use crate::field::FieldError;
use crate::object::{get_i64, get_str, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{Column, age, object_name};
use crate::typed::{TypedError, round_trip};

/// The `Event` resource.
pub static EVENT: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &EventStrategy,
};

/// The rules of [`EVENT`].
#[derive(Debug)]
struct EventStrategy;

const COLUMNS: &[Column] = &[
    (
        "Last Seen",
        "string",
        0,
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    (
        "Type",
        "string",
        0,
        "Type of this event (Normal, Warning), new types could be added in the future.",
    ),
    (
        "Reason",
        "string",
        0,
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    (
        "Object",
        "string",
        0,
        "The object that this event is about.",
    ),
    (
        "Subobject",
        "string",
        1,
        "The subobject that this event is about.",
    ),
    ("Source", "string", 1, "The component reporting this event."),
    (
        "Message",
        "string",
        0,
        "A human-readable description of the status of this operation.",
    ),
    (
        "First Seen",
        "string",
        1,
        "The time at which the event was first recorded.",
    ),
    (
        "Count",
        "string",
        1,
        "The number of times this event has occurred.",
    ),
    (
        "Name",
        "string",
        1,
        "Name must be unique within a namespace.",
    ),
];

impl Strategy for EventStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Event>(value)
    }

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        let field = if field == "source" {
            "source.component"
        } else {
            field
        };
        crate::selector::field_string(obj, field, "")
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        event_row(obj, now)
    }
}

fn event_row(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = get_str(ev, &["firstTimestamp"]).or_else(|| get_str(ev, &["eventTime"]));
    let last = get_str(ev, &["series", "lastObservedTime"])
        .or_else(|| get_str(ev, &["lastTimestamp"]))
        .or(first);
    let kind = str_or_empty(ev, &["involvedObject", "kind"]).to_lowercase();
    let source = {
        let c = str_or_empty(ev, &["source", "component"]);
        let h = str_or_empty(ev, &["source", "host"]);
        let c = if c.is_empty() {
            str_or_empty(ev, &["reportingComponent"])
        } else {
            c
        };
        if h.is_empty() {
            c.to_owned()
        } else {
            format!("{c}, {h}")
        }
    };
    let count = get_i64(ev, &["series", "count"])
        .or_else(|| get_i64(ev, &["count"]))
        .unwrap_or(1);
    vec![
        age(last, now).into(),
        str_or_empty(ev, &["type"]).into(),
        str_or_empty(ev, &["reason"]).into(),
        format!("{kind}/{}", str_or_empty(ev, &["involvedObject", "name"])).into(),
        str_or_empty(ev, &["involvedObject", "fieldPath"]).into(),
        source.into(),
        str_or_empty(ev, &["message"]).trim().into(),
        age(first, now).into(),
        count.to_string().into(),
        object_name(ev),
    ]
}
