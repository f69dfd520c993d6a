//! core/v1 Service: allocated fields survive updates.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{ALL_VERBS, Strategy, status};
use crate::defaults::{array_mut, as_map};
use crate::field::FieldError;
use crate::object::{array, default_field, ensure_object, get, get_i64, get_str, str_or_empty};
use crate::patch::schema::ListStrategy;
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, map_selector, none_if_empty, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;
use crate::validation::{names, network};

/// The `Service` resource.
pub static SERVICE: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    namespaced: true,
    short_names: &["svc"],
    categories: &["all"],
    verbs: ALL_VERBS,
    subresources: &[status("", "v1", "Service")],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &ServiceStrategy,
};

/// The rules of [`SERVICE`].
#[derive(Debug)]
struct ServiceStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Type",
        "string",
        0,
        "type determines how the Service is exposed.",
    ),
    (
        "Cluster-IP",
        "string",
        0,
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    (
        "External-IP",
        "string",
        0,
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    (
        "Port(s)",
        "string",
        0,
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    (
        "Selector",
        "string",
        1,
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

impl Strategy for ServiceStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::core::v1::Service>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        network::validate_service(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        network::validate_service_update(new, old)
    }

    fn name_rule(&self) -> Option<NameFn> {
        Some(names::dns1035_label)
    }

    /// Allocated addresses and node ports the update leaves out are kept;
    /// fields the new type does not use are dropped.
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        let spec = ensure_object(new, &["spec"]);
        for key in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
            if spec.get(key).is_none_or(Value::is_null)
                && let Some(v) = get(old, &["spec", key])
            {
                spec.insert(key.into(), v.clone());
            }
        }
        crate::service_alloc::keep_allocated_node_ports(new, old);
        crate::service_alloc::drop_type_dependent_fields(new, old);
    }

    fn defaults(&self, obj: &mut Value) {
        default_service(obj);
    }

    fn initial_status(&self, obj: &mut Value) {
        default_field(ensure_object(obj, &["status"]), "loadBalancer", json!({}));
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["spec", "ports"] => ListStrategy::MergeByKey("port"),
            _ => ListStrategy::Replace,
        }
    }

    fn granular_map(&self, path: &[&str]) -> bool {
        path == ["spec", "selector"]
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = object_name(obj);
        let created = creation_age(obj, now);
        vec![
            name,
            str_or_empty(obj, &["spec", "type"]).into(),
            none_if_empty(str_or_empty(obj, &["spec", "clusterIP"])).into(),
            service_external_ip(obj).into(),
            service_ports(obj).into(),
            created,
            map_selector(get(obj, &["spec", "selector"])).into(),
        ]
    }
}

fn default_service(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "type", "ClusterIP");
    default_field(spec, "sessionAffinity", "None");
    let svc_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if svc_type != "ExternalName" {
        default_field(spec, "internalTrafficPolicy", "Cluster");
        default_field(spec, "ipFamilyPolicy", "SingleStack");
        default_field(spec, "ipFamilies", json!(["IPv4"]));
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        default_field(spec, "externalTrafficPolicy", "Cluster");
    }
    if svc_type == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", true);
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        default_field(
            spec,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    for port in array_mut(spec, "ports") {
        let port = as_map(port);
        default_field(port, "protocol", "TCP");
        if let Some(p) = port.get("port").cloned() {
            // Go's `SetDefaults_Service`: a zero or empty targetPort is unset.
            if port
                .get("targetPort")
                .is_some_and(|t| *t == json!(0) || *t == json!(""))
            {
                port.remove("targetPort");
            }
            default_field(port, "targetPort", p);
        }
    }
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = array(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_or_empty(svc, &["spec", "type"]) {
        "ExternalName" => str_or_empty(svc, &["spec", "externalName"]).to_owned(),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = array(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                })
                .collect();
            ips.extend(external);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ if !external.is_empty() => external.join(","),
        _ => "<none>".into(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = array(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = get_i64(p, &["port"]).unwrap_or(0);
            let proto = get_str(p, &["protocol"]).unwrap_or("TCP");
            match get_i64(p, &["nodePort"]).filter(|n| *n != 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    none_if_empty(&ports.join(","))
}
