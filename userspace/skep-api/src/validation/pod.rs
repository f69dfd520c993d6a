//! Pod spec validation (`pkg/apis/core/validation`: `ValidatePodSpec`,
//! `ValidatePodUpdate`), shared by Pods and the templates of workloads.

use std::collections::HashSet;

use serde_json::Value;

use super::names;
use crate::field::{FieldError, FieldPath};
use crate::object::{array, get, get_i64, str_or_empty};

const RESTART_POLICIES: &[&str] = &["Always", "Never", "OnFailure"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Validate a port number field (1-65535).
pub fn validate_port_number(v: i64, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&v) {
        errs.push(FieldError::invalid(
            path,
            v,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// Validate a `protocol` field (absent is fine: it is defaulted).
pub fn validate_protocol(obj: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(p) = obj.get("protocol").and_then(Value::as_str)
        && !PROTOCOLS.contains(&p)
    {
        errs.push(FieldError::not_supported(
            &path.child("protocol"),
            p,
            PROTOCOLS,
        ));
    }
}

fn validate_containers(
    spec: &Value,
    key: &str,
    path: &FieldPath,
    volumes: &HashSet<&str>,
    seen_names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    for (i, c) in array(spec, &[key]).iter().enumerate() {
        let p = path.child(key).index(i);
        let name = str_or_empty(c, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            for msg in names::dns1123_label(name) {
                errs.push(FieldError::invalid(&p.child("name"), name, msg));
            }
            if !seen_names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        if str_or_empty(c, &["image"]).trim().is_empty() {
            errs.push(FieldError::required(&p.child("image"), ""));
        }
        if let Some(policy) = c.get("imagePullPolicy").and_then(Value::as_str)
            && !PULL_POLICIES.contains(&policy)
        {
            errs.push(FieldError::not_supported(
                &p.child("imagePullPolicy"),
                policy,
                PULL_POLICIES,
            ));
        }
        let mut port_names = HashSet::new();
        for (j, port) in array(c, &["ports"]).iter().enumerate() {
            let pp = p.child("ports").index(j);
            validate_port_number(
                get_i64(port, &["containerPort"]).unwrap_or(0),
                &pp.child("containerPort"),
                errs,
            );
            if let Some(hp) = get_i64(port, &["hostPort"]).filter(|hp| *hp != 0) {
                validate_port_number(hp, &pp.child("hostPort"), errs);
            }
            validate_protocol(port, &pp, errs);
            let pname = str_or_empty(port, &["name"]);
            if !pname.is_empty() {
                for msg in names::port_name(pname) {
                    errs.push(FieldError::invalid(&pp.child("name"), pname, msg));
                }
                if !port_names.insert(pname) {
                    errs.push(FieldError::duplicate(&pp.child("name"), pname));
                }
            }
        }
        for (j, env) in array(c, &["env"]).iter().enumerate() {
            if str_or_empty(env, &["name"]).is_empty() {
                errs.push(FieldError::required(
                    &p.child("env").index(j).child("name"),
                    "",
                ));
            }
        }
        for (j, mount) in array(c, &["volumeMounts"]).iter().enumerate() {
            let mp = p.child("volumeMounts").index(j);
            let vname = str_or_empty(mount, &["name"]);
            if vname.is_empty() {
                errs.push(FieldError::required(&mp.child("name"), ""));
            } else if !volumes.contains(vname) {
                errs.push(FieldError::not_found(&mp.child("name"), vname));
            }
            if str_or_empty(mount, &["mountPath"]).is_empty() {
                errs.push(FieldError::required(&mp.child("mountPath"), ""));
            }
        }
    }
}

/// Validate a `PodSpec` at `path` (`spec` or `spec.template.spec`).
pub fn validate_pod_spec(spec: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut volumes = HashSet::new();
    for (i, v) in array(spec, &["volumes"]).iter().enumerate() {
        let p = path.child("volumes").index(i);
        let name = str_or_empty(v, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
            continue;
        }
        for msg in names::dns1123_label(name) {
            errs.push(FieldError::invalid(&p.child("name"), name, msg));
        }
        if !volumes.insert(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        }
    }
    if array(spec, &["containers"]).is_empty() {
        errs.push(FieldError::required(&path.child("containers"), ""));
    }
    let mut seen = HashSet::new();
    validate_containers(spec, "initContainers", path, &volumes, &mut seen, &mut errs);
    validate_containers(spec, "containers", path, &volumes, &mut seen, &mut errs);
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !RESTART_POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported(
            &path.child("restartPolicy"),
            policy,
            RESTART_POLICIES,
        ));
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str)
        && !DNS_POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported(
            &path.child("dnsPolicy"),
            policy,
            DNS_POLICIES,
        ));
    }
    if let Some(d) = get_i64(spec, &["activeDeadlineSeconds"]).filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            d,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if let Some(g) = get_i64(spec, &["terminationGracePeriodSeconds"]).filter(|g| *g < 0) {
        errs.push(FieldError::invalid(
            &path.child("terminationGracePeriodSeconds"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(Value::Object(sel)) = spec.get("nodeSelector") {
        errs.extend(super::meta::validate_labels(
            Some(&Value::Object(sel.clone())),
            &path.child("nodeSelector"),
        ));
    }
    let node = str_or_empty(spec, &["nodeName"]);
    if !node.is_empty() {
        for msg in names::dns1123_subdomain(node) {
            errs.push(FieldError::invalid(&path.child("nodeName"), node, msg));
        }
    }
    errs
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate`: only images, activeDeadlineSeconds, added tolerations
/// and removed scheduling gates may change.
pub fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let (Some(new_spec), Some(old_spec)) = (get(new, &["spec"]), get(old, &["spec"])) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    let mut patched = old_spec.clone();
    for key in ["containers", "initContainers"] {
        let new_list = array(new_spec, &[key]);
        if let Some(Value::Array(list)) = patched.get_mut(key)
            && list.len() == new_list.len()
        {
            for (o, n) in list.iter_mut().zip(new_list) {
                if let (Some(o), Some(img)) = (o.as_object_mut(), n.get("image")) {
                    o.insert("image".into(), img.clone());
                }
            }
        }
    }
    if let Some(p) = patched.as_object_mut() {
        match new_spec.get("activeDeadlineSeconds") {
            Some(v) => {
                let old_d = get_i64(old_spec, &["activeDeadlineSeconds"]);
                let new_d = v.as_i64();
                if let (Some(o), Some(n)) = (old_d, new_d)
                    && n > o
                {
                    errs.push(FieldError::invalid(
                        &FieldPath::new("spec").child("activeDeadlineSeconds"),
                        n,
                        "must be less than or equal to previous value",
                    ));
                }
                p.insert("activeDeadlineSeconds".into(), v.clone());
            }
            None => {
                if p.remove("activeDeadlineSeconds").is_some() {
                    errs.push(FieldError::invalid(
                        &FieldPath::new("spec").child("activeDeadlineSeconds"),
                        Value::Null,
                        "must not update from a positive integer to nil value",
                    ));
                }
            }
        }
        let old_tol = array(old_spec, &["tolerations"]);
        let new_tol = array(new_spec, &["tolerations"]);
        if old_tol.iter().all(|t| new_tol.contains(t)) {
            p.insert("tolerations".into(), Value::Array(new_tol.to_vec()));
        }
        let old_gates = array(old_spec, &["schedulingGates"]);
        let new_gates = array(new_spec, &["schedulingGates"]);
        if new_gates.iter().all(|g| old_gates.contains(g)) {
            match new_spec.get("schedulingGates") {
                Some(g) => p.insert("schedulingGates".into(), g.clone()),
                None => p.remove("schedulingGates"),
            };
        }
        if get_i64(old_spec, &["terminationGracePeriodSeconds"]).is_some_and(|g| g < 0)
            && get_i64(new_spec, &["terminationGracePeriodSeconds"]) == Some(1)
        {
            p.insert("terminationGracePeriodSeconds".into(), 1.into());
        }
    }
    if &patched != new_spec {
        errs.push(FieldError::forbidden(
            &FieldPath::new("spec"),
            POD_UPDATE_FORBIDDEN,
        ));
    }
    errs
}
