use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::subject::{GROUP_KIND, USER_KIND, subject};

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: (!ns.is_empty()).then(|| ns.into()),
        ..ObjectMeta::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta("", name),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// jane: `pods` get/list in every namespace, `configmaps` everything in
/// `dev`, and `bind` of the ClusterRole `view` in `dev`.
fn policy() -> Policy {
    let mut bind_view = resource_rule(&["bind"], &[RBAC_GROUP], &["clusterroles"]);
    bind_view.resource_names = Some(vec!["view".into()]);
    Policy::from_objects(
        [Role {
            metadata: meta("dev", "cm"),
            rules: Some(vec![
                resource_rule(&["*"], &[""], &["configmaps"]),
                bind_view,
                resource_rule(&["escalate"], &[RBAC_GROUP], &["roles"]),
            ]),
        }],
        [
            cluster_role(
                "pod-reader",
                vec![resource_rule(&["get", "list"], &[""], &["pods"])],
            ),
            cluster_role(
                "view",
                vec![resource_rule(
                    &["get", "list", "watch"],
                    &["", "apps"],
                    &["*"],
                )],
            ),
            cluster_role(
                "secrets",
                vec![resource_rule(
                    &["get", "delete"],
                    &[""],
                    &["secrets", "pods"],
                )],
            ),
        ],
        [RoleBinding {
            metadata: meta("dev", "jane-cm"),
            role_ref: role_ref("Role", "cm"),
            subjects: Some(vec![subject(USER_KIND, "jane", None)]),
        }],
        [ClusterRoleBinding {
            metadata: meta("", "readers"),
            role_ref: role_ref("ClusterRole", "pod-reader"),
            subjects: Some(vec![subject(GROUP_KIND, "readers", None)]),
        }],
    )
}

fn jane() -> UserInfo {
    UserInfo::new("jane", &["readers", "system:authenticated"])
}

#[test]
fn held_rules_may_be_granted() {
    let p = policy();
    assert_eq!(
        p.confirm_no_escalation(&jane(), "", &[resource_rule(&["list"], &[""], &["pods"])]),
        Ok(())
    );
    assert_eq!(
        p.confirm_no_escalation(&jane(), "dev", &[resource_rule(&["update", "get"], &[""], &["configmaps", "pods"])])
            .map_err(|e| e.message),
        Err(r#"user "jane" (groups=["readers" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:
{APIGroups:[""], Resources:["pods"], Verbs:["update"]}"#
            .to_owned())
    );
}

#[test]
fn missing_rules_are_compacted_and_sorted() {
    let p = policy();
    let mut named = resource_rule(&["get"], &["apps"], &["deployments"]);
    named.resource_names = Some(vec!["web".into()]);
    let err = p
        .confirm_no_escalation(
            &jane(),
            "",
            &[
                resource_rule(&["watch", "delete", "list"], &[""], &["pods", "configmaps"]),
                named,
                url_rule(&["get"], &["/metrics"]),
            ],
        )
        .expect_err("escalates");
    assert_eq!(
        err.message,
        r#"user "jane" (groups=["readers" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:
{APIGroups:[""], Resources:["configmaps"], Verbs:["watch" "delete" "list"]}
{APIGroups:[""], Resources:["pods"], Verbs:["watch" "delete"]}
{APIGroups:["apps"], Resources:["deployments"], ResourceNames:["web"], Verbs:["get"]}
{NonResourceURLs:["/metrics"], Verbs:["get"]}"#
    );
    assert_eq!(err.missing.len(), 7);
}

#[test]
fn resolution_errors_are_appended() {
    let mut p = policy();
    p.upsert_cluster_role_binding(ClusterRoleBinding {
        metadata: meta("", "dangling"),
        role_ref: role_ref("ClusterRole", "gone"),
        subjects: Some(vec![subject(USER_KIND, "jane", None)]),
    });
    let err = p
        .confirm_no_escalation(
            &UserInfo::new("jane", &[]),
            "",
            &[resource_rule(&["get"], &[""], &["nodes"])],
        )
        .expect_err("escalates");
    assert_eq!(
        err.message,
        r#"user "jane" (groups=[]) is attempting to grant RBAC permissions not currently held:
{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}; resolution errors: [clusterrole.rbac.authorization.k8s.io "gone" not found]"#
    );
}

fn request(resource: &str, name: &str, namespace: &str) -> ResourceAttributes {
    ResourceAttributes {
        api_group: RBAC_GROUP.into(),
        resource: resource.into(),
        subresource: String::new(),
        name: name.into(),
        namespace: namespace.into(),
    }
}

#[test]
fn role_writes() {
    let p = policy();
    let secrets = [resource_rule(&["get"], &[""], &["secrets"])];
    // Rules not held: forbidden, as the clusterroles storage words it.
    let err = p
        .check_role_write(
            &jane(),
            &request("clusterroles", "", ""),
            "s",
            &secrets,
            false,
        )
        .expect_err("escalates");
    assert_eq!(
        err.message,
        r#"clusterroles.rbac.authorization.k8s.io "s" is forbidden: user "jane" (groups=["readers" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:
{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#
    );
    assert_eq!(
        (err.group.as_str(), err.resource.as_str(), err.name.as_str()),
        (RBAC_GROUP, "clusterroles", "s")
    );
    // system:masters may do anything.
    let root = UserInfo::new("root", &["system:masters"]);
    assert!(
        p.check_role_write(&root, &request("clusterroles", "", ""), "s", &secrets, true)
            .is_ok()
    );
    // `escalate` on roles in dev lets jane write any Role there.
    assert!(
        p.check_role_write(&jane(), &request("roles", "", "dev"), "r", &secrets, false)
            .is_ok()
    );
    assert!(
        p.check_role_write(&jane(), &request("roles", "", "prod"), "r", &secrets, false)
            .is_err()
    );
    // Held rules are fine, but an aggregationRule needs everything.
    let held = [resource_rule(&["get"], &[""], &["pods"])];
    assert!(
        p.check_role_write(&jane(), &request("clusterroles", "", ""), "a", &held, false)
            .is_ok()
    );
    assert_eq!(
        p.check_role_write(&jane(), &request("clusterroles", "", ""), "a", &held, true)
            .map_err(|e| e.message),
        Err(r#"clusterroles.rbac.authorization.k8s.io "a" is forbidden: must have cluster-admin privileges to use the aggregationRule"#.to_owned())
    );
}

#[test]
fn binding_writes() {
    let p = policy();
    // jane holds pod-reader's rules: she may bind it anywhere.
    assert_eq!(
        p.check_binding_write(&jane(), "", "b", &role_ref("ClusterRole", "pod-reader")),
        Ok(())
    );
    // She does not hold `view`, but may `bind` it in dev — and only there.
    assert_eq!(
        p.check_binding_write(&jane(), "dev", "b", &role_ref("ClusterRole", "view")),
        Ok(())
    );
    let Err(BindingWriteError::Forbidden(f)) =
        p.check_binding_write(&jane(), "prod", "b", &role_ref("ClusterRole", "view"))
    else {
        panic!("binding view in prod must be forbidden");
    };
    assert_eq!(
        f.message,
        r#"rolebindings.rbac.authorization.k8s.io "b" is forbidden: user "jane" (groups=["readers" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:
{APIGroups:[""], Resources:["*"], Verbs:["get" "list" "watch"]}
{APIGroups:["apps"], Resources:["*"], Verbs:["get" "list" "watch"]}"#
    );
    let Err(BindingWriteError::Forbidden(f)) =
        p.check_binding_write(&jane(), "", "crb", &role_ref("ClusterRole", "secrets"))
    else {
        panic!("binding secrets must be forbidden");
    };
    assert_eq!(
        f.message,
        r#"clusterrolebindings.rbac.authorization.k8s.io "crb" is forbidden: user "jane" (groups=["readers" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:
{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}
{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}"#
    );
    // A missing role is its own error.
    assert_eq!(
        p.check_binding_write(&jane(), "dev", "b", &role_ref("Role", "nope")),
        Err(BindingWriteError::RoleRef(RoleRefError::RoleNotFound {
            name: "nope".into()
        }))
    );
    // system:masters binds anything, even what does not exist yet.
    let root = UserInfo::new("root", &["system:masters"]);
    assert_eq!(
        p.check_binding_write(&root, "dev", "b", &role_ref("Role", "nope")),
        Ok(())
    );
}
