//! Privilege-escalation prevention for writes to RBAC objects
//! (`ConfirmNoEscalation` in `pkg/registry/rbac/validation/rule.go`,
//! `pkg/registry/rbac/escalation_check.go`, and the policy-based storages in
//! `pkg/registry/rbac/{role,clusterrole,rolebinding,clusterrolebinding}/policybased`).
//!
//! A user may write a role only with rules they hold themselves, unless they
//! are in `system:masters` or may `escalate` on that role; a user may bind a
//! role only if they hold its rules, unless in `system:masters` or allowed to
//! `bind` it.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};

use crate::RBAC_GROUP;
use crate::attributes::{Attributes, ResourceAttributes, UserInfo};
use crate::covers::{compact_rules, covers};
use crate::forbidden::Forbidden;
use crate::gofmt::{quote, quote_list};
use crate::policy::{Policy, RoleRefError};
use crate::rule::{compact_string, resource_rule, url_rule};

/// A user asked to grant rules they do not hold.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EscalationError {
    /// Upstream's text: `user "jane" (groups=[…]) is attempting to grant RBAC
    /// permissions not currently held:` and one compact rule per line.
    pub message: String,
    /// The rules not held, broken down to one verb/resource/name each.
    pub missing: Vec<PolicyRule>,
}

/// Why a binding write is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BindingWriteError {
    /// The bound role does not exist (upstream answers 404 NotFound for
    /// `roles`/`clusterroles` with the role's name).
    #[error("failed to resolve the bound role: {0}")]
    RoleRef(#[source] RoleRefError),
    /// The user may not grant the role's rules (403).
    #[error(transparent)]
    Forbidden(Forbidden),
}

/// Everything (`cluster-admin`'s rules): needed to write an aggregationRule.
fn full_authority() -> [PolicyRule; 2] {
    [
        resource_rule(&["*"], &["*"], &["*"]),
        url_rule(&["*"], &["*"]),
    ]
}

impl Policy {
    /// Whether `user`'s rules in `namespace` cover `requested`
    /// (`ConfirmNoEscalation`); the error carries upstream's message.
    pub fn confirm_no_escalation(
        &self,
        user: &UserInfo,
        namespace: &str,
        requested: &[PolicyRule],
    ) -> Result<(), EscalationError> {
        let owner = self.rules_for(user, namespace);
        let (covered, missing) = covers(&owner.rules, requested);
        if covered {
            return Ok(());
        }
        let described: BTreeSet<String> =
            compact_rules(&missing).iter().map(compact_string).collect();
        let mut message = format!(
            "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
            quote(&user.name),
            quote_list(&user.groups),
            described.into_iter().collect::<Vec<_>>().join("\n")
        );
        if let Some(errors) = owner.error_message() {
            // Upstream prints its one-element []error with %v.
            let _ = write!(message, "; resolution errors: [{errors}]");
        }
        Err(EscalationError { message, missing })
    }

    /// Whether `user` may write a Role or ClusterRole with `rules`
    /// (`policybased.Storage.Create`/`Update` of roles and clusterroles).
    ///
    /// `request` is the write as routed: group `rbac.authorization.k8s.io`,
    /// resource `roles` or `clusterroles`, the name from the URL (empty on
    /// create) and namespace; `object_name` names the object in the error.
    /// `aggregation` is whether the new or the old ClusterRole has an
    /// aggregationRule with selectors, which needs full authority. Updates
    /// that only touch garbage-collection fields (owner references,
    /// finalizers) skip this check upstream; the caller decides that.
    pub fn check_role_write(
        &self,
        user: &UserInfo,
        request: &ResourceAttributes,
        object_name: &str,
        rules: &[PolicyRule],
        aggregation: bool,
    ) -> Result<(), Forbidden> {
        if user.is_superuser() || self.role_escalation_authorized(user, request) {
            return Ok(());
        }
        let forbidden =
            |detail: &str| Forbidden::new(RBAC_GROUP, &request.resource, object_name, detail);
        self.confirm_no_escalation(user, &request.namespace, rules)
            .map_err(|e| forbidden(&e.message))?;
        if aggregation
            && self
                .confirm_no_escalation(user, &request.namespace, &full_authority())
                .is_err()
        {
            return Err(forbidden(
                "must have cluster-admin privileges to use the aggregationRule",
            ));
        }
        Ok(())
    }

    /// Whether `user` may create or update a binding named `binding_name` in
    /// `binding_namespace` (empty: a ClusterRoleBinding) to `role_ref`
    /// (`policybased.Storage.Create`/`Update` of rolebindings and
    /// clusterrolebindings).
    pub fn check_binding_write(
        &self,
        user: &UserInfo,
        binding_namespace: &str,
        binding_name: &str,
        role_ref: &RoleRef,
    ) -> Result<(), BindingWriteError> {
        if user.is_superuser() || self.binding_authorized(user, role_ref, binding_namespace) {
            return Ok(());
        }
        let rules = self
            .role_ref_rules(role_ref, binding_namespace)
            .map_err(BindingWriteError::RoleRef)?;
        let resource = if binding_namespace.is_empty() {
            "clusterrolebindings"
        } else {
            "rolebindings"
        };
        self.confirm_no_escalation(user, binding_namespace, rules)
            .map_err(|e| {
                BindingWriteError::Forbidden(Forbidden::new(
                    RBAC_GROUP,
                    resource,
                    binding_name,
                    &e.message,
                ))
            })
    }

    /// Whether `user` may `escalate` the role the request writes
    /// (`RoleEscalationAuthorized`); only for `roles`/`clusterroles` of
    /// `rbac.authorization.k8s.io`.
    pub fn role_escalation_authorized(
        &self,
        user: &UserInfo,
        request: &ResourceAttributes,
    ) -> bool {
        let is_role = request.api_group == RBAC_GROUP
            && (request.resource == "roles" || request.resource == "clusterroles");
        is_role
            && self
                .authorize(&Attributes::resource(
                    user.clone(),
                    "escalate",
                    ResourceAttributes {
                        subresource: String::new(),
                        ..request.clone()
                    },
                ))
                .is_allowed()
    }

    /// Whether `user` may `bind` the referenced role in `binding_namespace`
    /// (`BindingAuthorized`).
    pub fn binding_authorized(
        &self,
        user: &UserInfo,
        role_ref: &RoleRef,
        binding_namespace: &str,
    ) -> bool {
        let resource = match role_ref.kind.as_str() {
            "ClusterRole" => "clusterroles",
            "Role" => "roles",
            _ => return false,
        };
        let attrs = Attributes::resource(
            user.clone(),
            "bind",
            ResourceAttributes {
                api_group: role_ref.api_group.clone(),
                resource: resource.to_owned(),
                subresource: String::new(),
                name: role_ref.name.clone(),
                namespace: binding_namespace.to_owned(),
            },
        );
        self.authorize(&attrs).is_allowed()
    }
}

#[cfg(test)]
#[path = "escalation_test.rs"]
mod tests;
