//! Escalation prevention on writes of RBAC objects (upstream's
//! `pkg/registry/rbac/*/policybased`): nobody creates or updates a Role or
//! ClusterRole granting more than they hold, or a binding to a role whose
//! permissions they do not hold, unless RBAC grants them `escalate` on the
//! role or `bind` on the bound role. Runs on the object about to be stored.

use k8s_openapi::api::rbac::v1::{AggregationRule, PolicyRule, RoleRef};
use serde_json::Value;
use skep_api::{ApiError, ResourceInfo};
use skep_rbac::{BindingWriteError, Forbidden, RBAC_GROUP, ResourceAttributes};
use skep_user::UserInfo;

use crate::authz::{Authorizer, forbidden_error};
use crate::request::ResourceRequest;

/// `Ok` unless writing `obj` (of `info`, through `req`) would let `user`
/// grant permissions they do not hold: then upstream's 403.
pub fn check(
    authorizer: &Authorizer,
    user: &UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    obj: &Value,
) -> Result<(), ApiError> {
    if info.group != RBAC_GROUP || !req.subresource.is_empty() || user.is_superuser() {
        return Ok(());
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(&req.name);
    let policy = authorizer.policy();
    match info.plural {
        "roles" | "clusterroles" => {
            let rules: Vec<PolicyRule> = field(obj, "rules")?.unwrap_or_default();
            let aggregation: Option<AggregationRule> = field(obj, "aggregationRule")?;
            let request = ResourceAttributes {
                api_group: RBAC_GROUP.to_owned(),
                resource: info.plural.to_owned(),
                subresource: String::new(),
                name: name.to_owned(),
                namespace: req.namespace.clone(),
            };
            policy
                .check_role_write(user, &request, name, &rules, aggregation.is_some())
                .map_err(|f| forbidden_error(&f))
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref: RoleRef = field(obj, "roleRef")?
                .ok_or_else(|| ApiError::bad_request("roleRef is required"))?;
            policy
                .check_binding_write(user, &req.namespace, name, &role_ref)
                .map_err(|e| match e {
                    BindingWriteError::Forbidden(f) => forbidden_error(&f),
                    BindingWriteError::RoleRef(err) => forbidden_error(&Forbidden::new(
                        RBAC_GROUP,
                        info.plural,
                        name,
                        &err.to_string(),
                    )),
                })
        }
        _ => Ok(()),
    }
}

fn field<T: serde::de::DeserializeOwned>(obj: &Value, name: &str) -> Result<Option<T>, ApiError> {
    obj.get(name)
        .filter(|v| !v.is_null())
        .map(|v| {
            serde_json::from_value(v.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid {name}: {e}")))
        })
        .transpose()
}
