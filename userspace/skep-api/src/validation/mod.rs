//! Validation of objects on create and update, with Kubernetes' field paths
//! and messages: the entry points run the metadata rules and each kind's
//! [`crate::kinds::Strategy`]; the submodules hold the validators the kinds use.

pub mod cidr;
pub mod config;
pub mod meta;
pub mod names;
pub mod netpol;
pub mod network;
pub mod pod;
pub mod rbac;
pub mod review;
pub mod storage;
pub mod workload;

use serde_json::Value;

use crate::field::FieldError;
use crate::registry::ResourceInfo;

/// Validate a new object (after defaulting): metadata with the kind's name
/// rule, then the kind's own rules.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let strategy = info.strategy();
    let mut errs = strategy.name_rule().map_or_else(Vec::new, |rule| {
        meta::validate_object_meta(obj, info.namespaced, rule)
    });
    errs.extend(strategy.validate(obj));
    errs
}

/// Validate an update of `old` to `new` (after defaulting): the create rules
/// plus immutable fields.
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_create(info, new);
    errs.extend(meta::validate_object_meta_update(new, old));
    errs.extend(info.strategy().validate_update(new, old));
    errs
}

/// Validate a status-subresource update: metadata immutables and the kind's status rules.
pub fn validate_status_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(new, old);
    errs.extend(info.strategy().validate_status_update(new, old));
    errs
}

#[cfg(test)]
#[path = "validation_test.rs"]
mod tests;
