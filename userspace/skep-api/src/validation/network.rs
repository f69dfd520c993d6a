//! Service, Endpoints, EndpointSlice and Binding validation.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;

use super::pod::{validate_port_number, validate_protocol};
use super::{meta, names};
use crate::field::{FieldError, FieldPath};
use crate::object::{array, get, get_i64, str_or_empty};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const IP_DETAIL: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// `ValidateService`.
pub fn validate_service(obj: &Value) -> Vec<FieldError> {
    let path = FieldPath::new("spec");
    let spec = get(obj, &["spec"]).cloned().unwrap_or_default();
    let mut errs = Vec::new();
    let svc_type = str_or_empty(&spec, &["type"]);
    if !svc_type.is_empty() && !SERVICE_TYPES.contains(&svc_type) {
        errs.push(FieldError::not_supported(
            &path.child("type"),
            svc_type,
            SERVICE_TYPES,
        ));
    }
    let cluster_ip = str_or_empty(&spec, &["clusterIP"]);
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && !is_ip(cluster_ip) {
        errs.push(FieldError::invalid(
            &path.child("clusterIPs").index(0),
            cluster_ip,
            IP_DETAIL,
        ));
    }
    if svc_type == "ExternalName" {
        let name = str_or_empty(&spec, &["externalName"]);
        if name.is_empty() {
            errs.push(FieldError::required(&path.child("externalName"), ""));
        } else {
            for msg in names::dns1123_subdomain(name.trim_end_matches('.')) {
                errs.push(FieldError::invalid(&path.child("externalName"), name, msg));
            }
        }
    }
    let ports = array(&spec, &["ports"]);
    if ports.is_empty() && !headless && svc_type != "ExternalName" {
        errs.push(FieldError::required(&path.child("ports"), ""));
    }
    let mut port_names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.child("ports").index(i);
        let name = str_or_empty(port, &["name"]);
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(FieldError::required(&p.child("name"), ""));
            }
        } else {
            for msg in names::dns1123_label(name) {
                errs.push(FieldError::invalid(&p.child("name"), name, msg));
            }
            if !port_names.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        validate_port_number(
            get_i64(port, &["port"]).unwrap_or(0),
            &p.child("port"),
            &mut errs,
        );
        validate_protocol(port, &p, &mut errs);
        match port.get("targetPort") {
            Some(Value::Number(n)) => {
                validate_port_number(n.as_i64().unwrap_or(0), &p.child("targetPort"), &mut errs);
            }
            Some(Value::String(s)) => {
                for msg in names::port_name(s) {
                    errs.push(FieldError::invalid(&p.child("targetPort"), s.as_str(), msg));
                }
            }
            _ => {}
        }
        if let Some(np) = get_i64(port, &["nodePort"]).filter(|n| *n != 0) {
            if svc_type == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    &p.child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                validate_port_number(np, &p.child("nodePort"), &mut errs);
            }
        }
    }
    if let Some(a) = spec.get("sessionAffinity").and_then(Value::as_str)
        && !["ClientIP", "None"].contains(&a)
    {
        errs.push(FieldError::not_supported(
            &path.child("sessionAffinity"),
            a,
            &["ClientIP", "None"],
        ));
    }
    errs.extend(meta::validate_labels(
        spec.get("selector"),
        &path.child("selector"),
    ));
    errs
}

/// `spec.clusterIP` may not change once set.
pub fn validate_service_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let old_ip = str_or_empty(old, &["spec", "clusterIP"]);
    let new_ip = str_or_empty(new, &["spec", "clusterIP"]);
    let to_external = str_or_empty(new, &["spec", "type"]) == "ExternalName";
    if !old_ip.is_empty() && old_ip != new_ip && !to_external {
        return vec![FieldError::invalid_raw(
            &FieldPath::new("spec").child("clusterIPs").index(0),
            format!("[]string{{{new_ip:?}}}"),
            "may not change once set",
        )];
    }
    Vec::new()
}

fn validate_endpoint_port(
    port: &Value,
    p: &FieldPath,
    need_name: bool,
    errs: &mut Vec<FieldError>,
) {
    let name = str_or_empty(port, &["name"]);
    if name.is_empty() && need_name {
        errs.push(FieldError::required(&p.child("name"), ""));
    }
    validate_port_number(
        get_i64(port, &["port"]).unwrap_or(0),
        &p.child("port"),
        errs,
    );
    validate_protocol(port, p, errs);
}

/// `ValidateEndpoints`.
pub fn validate_endpoints(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, subset) in array(obj, &["subsets"]).iter().enumerate() {
        let sp = FieldPath::new("subsets").index(i);
        for key in ["addresses", "notReadyAddresses"] {
            for (j, addr) in array(subset, &[key]).iter().enumerate() {
                let ip = str_or_empty(addr, &["ip"]);
                if !is_ip(ip) {
                    errs.push(FieldError::invalid(
                        &sp.child(key).index(j).child("ip"),
                        ip,
                        IP_DETAIL,
                    ));
                }
            }
        }
        let ports = array(subset, &["ports"]);
        for (j, port) in ports.iter().enumerate() {
            validate_endpoint_port(
                port,
                &sp.child("ports").index(j),
                ports.len() > 1,
                &mut errs,
            );
        }
    }
    errs
}

/// `ValidateEndpointSlice`.
pub fn validate_endpoint_slice(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let types = &["FQDN", "IPv4", "IPv6"];
    let address_type = str_or_empty(obj, &["addressType"]);
    if address_type.is_empty() {
        errs.push(FieldError::required(&FieldPath::new("addressType"), ""));
    } else if !types.contains(&address_type) {
        errs.push(FieldError::not_supported(
            &FieldPath::new("addressType"),
            address_type,
            types,
        ));
    }
    for (i, ep) in array(obj, &["endpoints"]).iter().enumerate() {
        let p = FieldPath::new("endpoints").index(i).child("addresses");
        let addrs = array(ep, &["addresses"]);
        if addrs.is_empty() {
            errs.push(FieldError::required(&p, "must contain at least 1 address"));
        } else if addrs.len() > 100 {
            errs.push(FieldError::too_many(&p, addrs.len(), 100));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            if matches!(address_type, "IPv4" | "IPv6") && !is_ip(a) {
                errs.push(FieldError::invalid(&p.index(j), a, IP_DETAIL));
            }
        }
    }
    for (i, port) in array(obj, &["ports"]).iter().enumerate() {
        let p = FieldPath::new("ports").index(i);
        if let Some(n) = get_i64(port, &["port"]) {
            validate_port_number(n, &p.child("port"), &mut errs);
        }
        validate_protocol(port, &p, &mut errs);
    }
    errs
}

/// `ValidatePodBinding`.
pub fn validate_binding(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let target = FieldPath::new("target");
    let kind = str_or_empty(obj, &["target", "kind"]);
    if !kind.is_empty() && kind != "Node" {
        errs.push(FieldError::not_supported(
            &target.child("kind"),
            kind,
            &["Node", "<empty>"],
        ));
    }
    if str_or_empty(obj, &["target", "name"]).is_empty() {
        errs.push(FieldError::required(&target.child("name"), ""));
    }
    errs
}
