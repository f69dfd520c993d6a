//! NetworkPolicy validation, ported from kube-apiserver's
//! `pkg/apis/networking/validation` (`ValidateNetworkPolicySpec`,
//! `ValidateNetworkPolicyPort`, `ValidateNetworkPolicyPeer`,
//! `ValidateIPBlock`) with its field paths, error types, messages and
//! order. The policy compiler (skep-policy) skips content it cannot use;
//! this is what keeps such content out of the store in the first place.
//!
//! Updates go through the same checks (`ValidateNetworkPolicyUpdate` only
//! re-validates the spec). Upstream's two update leniencies have nothing to
//! relax here: CIDRs are read sloppily whatever the old object held (the
//! `StrictIPCIDRValidation` gate is off), and label selector values are not
//! checked (see [`meta::validate_label_selector`]).

use serde_json::Value;

use super::cidr::{CIDR_DETAIL, parse_cidr};
use super::meta;
use super::names;
use super::pod::validate_port_number;
use crate::field::{FieldError, FieldPath};
use crate::object::{array, str_or_empty};

/// `NetworkPolicyPort.protocol` values, in upstream's (unsorted) order.
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
/// `spec.policyTypes` values, in upstream's order.
const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];

/// `ValidateNetworkPolicy` minus the metadata (checked for every kind):
/// the spec of a NetworkPolicy object.
pub fn validate_network_policy(obj: &Value) -> Vec<FieldError> {
    validate_network_policy_spec(
        obj.get("spec").unwrap_or(&Value::Null),
        &FieldPath::new("spec"),
    )
}

/// `ValidateNetworkPolicySpec`: the pod selector, every rule's ports and
/// peers (ingress before egress), then the policy types.
pub fn validate_network_policy_spec(spec: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(sel) = present(spec, "podSelector") {
        errs.extend(meta::validate_label_selector(
            sel,
            &path.child("podSelector"),
        ));
    }
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in array(spec, &[dir]).iter().enumerate() {
            let rule_path = path.child(dir).index(i);
            for (j, port) in array(rule, &["ports"]).iter().enumerate() {
                validate_port(port, &rule_path.child("ports").index(j), &mut errs);
            }
            for (j, peer) in array(rule, &[peers]).iter().enumerate() {
                validate_peer(peer, &rule_path.child(peers).index(j), &mut errs);
            }
        }
    }
    let types = array(spec, &["policyTypes"]);
    if types.len() > POLICY_TYPES.len() {
        errs.push(FieldError::invalid_raw(
            &path.child("policyTypes"),
            go_string_slice("networking.PolicyType", types),
            "may not specify more than two policyTypes",
        ));
        return errs;
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if !POLICY_TYPES.contains(&t) {
            errs.push(FieldError::not_supported(
                &path.child("policyTypes").index(i),
                t,
                POLICY_TYPES,
            ));
        }
    }
    errs
}

/// `ValidateNetworkPolicyPort`: protocol, a numeric port or a port name,
/// and `endPort` only after a numeric `port` it does not undercut.
pub fn validate_port(port: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(p) = port.get("protocol").and_then(Value::as_str)
        && !PROTOCOLS.contains(&p)
    {
        errs.push(FieldError::not_supported(
            &path.child("protocol"),
            p,
            PROTOCOLS,
        ));
    }
    let end = port.get("endPort").and_then(Value::as_i64);
    let end_path = path.child("endPort");
    match port.get("port") {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            validate_port_number(n, &path.child("port"), errs);
            if let Some(end) = end {
                if end < n {
                    errs.push(FieldError::invalid(
                        &end_path,
                        end,
                        "must be greater than or equal to `port`",
                    ));
                }
                validate_port_number(end, &end_path, errs);
            }
        }
        Some(Value::String(name)) => {
            if let Some(end) = end {
                errs.push(FieldError::invalid(
                    &end_path,
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for msg in names::port_name(name) {
                errs.push(FieldError::invalid(&path.child("port"), name.as_str(), msg));
            }
        }
        _ => {
            if let Some(end) = end {
                errs.push(FieldError::invalid(
                    &end_path,
                    end,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

/// `ValidateNetworkPolicyPeer`: selectors and ipBlock each checked, then
/// exactly one kind of peer (pod and namespace selectors may combine).
pub fn validate_peer(peer: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let mut kinds = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = present(peer, key) {
            kinds += 1;
            errs.extend(meta::validate_label_selector(sel, &path.child(key)));
        }
    }
    let block = present(peer, "ipBlock");
    if let Some(block) = block {
        kinds += 1;
        validate_ip_block(block, &path.child("ipBlock"), errs);
    }
    if kinds == 0 {
        errs.push(FieldError::required(path, "must specify a peer"));
    } else if kinds > 1 && block.is_some() {
        errs.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
}

/// `ValidateIPBlock`: `cidr` required and a CIDR (IPv4 or IPv6); each
/// `except` a CIDR strictly inside it (same family, longer prefix).
pub fn validate_ip_block(block: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let cidr_path = path.child("cidr");
    let cidr = str_or_empty(block, &["cidr"]);
    if cidr.is_empty() {
        errs.push(FieldError::required(&cidr_path, ""));
        return;
    }
    let Some(net) = parse_cidr(cidr) else {
        errs.push(FieldError::invalid(&cidr_path, cidr, CIDR_DETAIL));
        return;
    };
    for (i, except) in array(block, &["except"]).iter().enumerate() {
        let except_path = path.child("except").index(i);
        let except = except.as_str().unwrap_or("");
        let Some(inner) = parse_cidr(except) else {
            errs.push(FieldError::invalid(&except_path, except, CIDR_DETAIL));
            continue;
        };
        if !net.contains(inner.addr) || net.prefix >= inner.prefix {
            errs.push(FieldError::invalid(
                &except_path,
                except,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

/// A field that is set: Go's non-nil pointer.
fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|v| !v.is_null())
}

/// Go's `%#v` of a slice of a named string type: `[]T{"a", "b"}`.
fn go_string_slice(type_name: &str, items: &[Value]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|v| format!("{:?}", v.as_str().unwrap_or("")))
        .collect();
    format!("[]{type_name}{{{}}}", quoted.join(", "))
}

#[cfg(test)]
#[path = "netpol_test.rs"]
mod tests;
