//! rbac.authorization.k8s.io/v1 RoleBinding: grants a Role or ClusterRole
//! to subjects in one namespace. Upstream's `ValidateRoleBinding` (role
//! reference, subjects) and `ValidateRoleBindingUpdate` (`roleRef` is
//! immutable); printed with the role as `Kind/name` and, wide, the subjects.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{ALL_VERBS, Strategy};
use crate::field::FieldError;
use crate::object::{array, str_or_empty};
use crate::registry::{ResourceInfo, Serving};
use crate::table::{AGE, Column, NAME, creation_age, object_name};
use crate::typed::{TypedError, round_trip};
use crate::validation::meta::NameFn;
use crate::validation::rbac;

/// The `RoleBinding` resource.
pub static ROLE_BINDING: ResourceInfo = ResourceInfo {
    group: rbac::GROUP,
    version: "v1",
    kind: "RoleBinding",
    plural: "rolebindings",
    singular: "rolebinding",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[],
    tracks_generation: false,
    serving: Serving::Stored,
    strategy: &RoleBindingStrategy,
};

/// The rules of [`ROLE_BINDING`].
#[derive(Debug)]
struct RoleBindingStrategy;

const COLUMNS: &[Column] = &[
    NAME,
    (
        "Role",
        "string",
        0,
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
    ),
    AGE,
    ("Users", "string", 1, "Users in the roleBinding"),
    ("Groups", "string", 1, "Groups in the roleBinding"),
    (
        "ServiceAccounts",
        "string",
        1,
        "ServiceAccounts in the roleBinding",
    ),
];

impl Strategy for RoleBindingStrategy {
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        round_trip::<k8s_openapi::api::rbac::v1::RoleBinding>(value)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        rbac::validate_binding(obj, &["Role", "ClusterRole"], true)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        rbac::validate_role_ref_update(new, old)
    }

    fn name_rule(&self) -> Option<NameFn> {
        Some(rbac::rbac_name)
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        binding_row(obj, now)
    }
}

/// A binding's row (`printRoleBinding`, `printClusterRoleBinding`): name,
/// `Kind/name` of the role, age, then users, groups and service accounts
/// (`namespace/name`) each joined with `", "` (`rbac.SubjectsStrings`).
pub(super) fn binding_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_or_empty(obj, &["roleRef", "kind"]),
        str_or_empty(obj, &["roleRef", "name"])
    );
    let (mut users, mut groups, mut service_accounts) = (Vec::new(), Vec::new(), Vec::new());
    for subject in array(obj, &["subjects"]) {
        let name = str_or_empty(subject, &["name"]);
        match str_or_empty(subject, &["kind"]) {
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{name}", str_or_empty(subject, &["namespace"])));
            }
            "User" => users.push(name.to_owned()),
            "Group" => groups.push(name.to_owned()),
            _ => {}
        }
    }
    vec![
        object_name(obj),
        role.into(),
        creation_age(obj, now),
        users.join(", ").into(),
        groups.join(", ").into(),
        service_accounts.join(", ").into(),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::{validate_create, validate_update};

    fn binding(role: &str) -> Value {
        json!({
            "metadata": {"name": "system:controller:foo", "namespace": "team"},
            "roleRef": {"apiGroup": rbac::GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [
                {"kind": "ServiceAccount", "name": "default", "namespace": "team"},
                {"kind": "User", "apiGroup": rbac::GROUP, "name": "alice"},
                {"kind": "User", "apiGroup": rbac::GROUP, "name": "bob"},
                {"kind": "Group", "apiGroup": rbac::GROUP, "name": "devs"},
            ],
        })
    }

    #[test]
    fn names_with_colons_are_accepted() {
        assert!(validate_create(&ROLE_BINDING, &binding("view")).is_empty());
    }

    #[test]
    fn role_ref_cannot_change() {
        let errs = validate_update(&ROLE_BINDING, &binding("edit"), &binding("view"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].to_string().ends_with(": cannot change roleRef"));
        assert!(validate_update(&ROLE_BINDING, &binding("view"), &binding("view")).is_empty());
    }

    #[test]
    fn row_shows_role_and_subjects() {
        let row = binding_row(&binding("view"), Timestamp::UNIX_EPOCH);
        assert_eq!(
            row,
            [
                json!("system:controller:foo"),
                json!("ClusterRole/view"),
                json!("<unknown>"),
                json!("alice, bob"),
                json!("devs"),
                json!("team/default"),
            ]
        );
    }
}
