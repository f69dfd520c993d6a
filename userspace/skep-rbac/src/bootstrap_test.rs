use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::RoleBinding;

use super::*;
use crate::aggregation::aggregate_all;
use crate::attributes::{Attributes, ResourceAttributes, UserInfo};
use crate::policy::Policy;

fn names<T>(items: &[T], name: impl Fn(&T) -> Option<&String>) -> Vec<String> {
    items.iter().filter_map(name).cloned().collect()
}

#[test]
fn metadata_and_names() {
    let roles = cluster_roles();
    let role_names = names(&roles, |r| r.metadata.name.as_ref());
    let mut sorted = role_names.clone();
    sorted.sort();
    assert_eq!(role_names, sorted, "name order");
    for r in &roles {
        let labels = r.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels
                .get("kubernetes.io/bootstrapping")
                .map(String::as_str),
            Some("rbac-defaults")
        );
        let annotations = r.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(
            annotations
                .get("rbac.authorization.kubernetes.io/autoupdate")
                .map(String::as_str),
            Some("true")
        );
    }
    let bindings = cluster_role_bindings();
    let role_set: BTreeSet<String> = role_names.into_iter().collect();
    for b in &bindings {
        assert!(
            role_set.contains(&b.role_ref.name),
            "{} binds a bootstrap role",
            b.role_ref.name
        );
        assert_eq!(b.metadata.name, Some(b.role_ref.name.clone()));
    }
    // The aggregate labels upstream puts on edit and view.
    let label = |name: &str, key: &str| {
        roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .and_then(|r| r.metadata.labels.as_ref()?.get(key).cloned())
    };
    assert_eq!(label("edit", AGGREGATE_TO_ADMIN).as_deref(), Some("true"));
    assert_eq!(label("view", AGGREGATE_TO_EDIT).as_deref(), Some("true"));
    assert_eq!(
        label("system:aggregate-to-view", AGGREGATE_TO_VIEW).as_deref(),
        Some("true")
    );
}

#[test]
fn serializes_like_upstream_yaml() {
    let roles = cluster_roles();
    let view = serde_json::to_value(roles.last().expect("view")).expect("json");
    assert_eq!(
        view,
        serde_json::json!({
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]},
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
                "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", "rbac.authorization.k8s.io/aggregate-to-edit": "true"},
                "name": "view",
            },
        })
    );
    let public = serde_json::to_value(&cluster_role_bindings()[4]).expect("json");
    assert_eq!(
        public["subjects"],
        serde_json::json!([
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"},
        ])
    );
}

fn bootstrapped() -> Policy {
    let mut roles = cluster_roles();
    aggregate_all(&mut roles).expect("bootstrap selectors are valid");
    Policy::from_objects([], roles, [], cluster_role_bindings())
}

#[test]
fn what_the_defaults_allow() {
    let policy = bootstrapped();
    let url = |groups: &[&str], path: &str| {
        policy
            .authorize(&Attributes::non_resource(
                UserInfo::new("u", groups),
                "get",
                path,
            ))
            .is_allowed()
    };
    assert!(url(&["system:unauthenticated"], "/healthz"));
    assert!(url(&["system:unauthenticated"], "/version"));
    assert!(!url(&["system:unauthenticated"], "/apis"));
    assert!(url(&["system:authenticated"], "/apis/apps/v1"));
    assert!(url(&["system:authenticated"], "/openapi/v3"));
    assert!(!url(&["system:authenticated"], "/metrics"));
    assert!(url(&["system:monitoring"], "/metrics"));
    assert!(url(&["system:monitoring"], "/readyz/etcd"));
    assert!(url(&["system:serviceaccounts"], "/openid/v1/jwks"));
    assert!(url(&["system:masters"], "/anything"));

    let create = |groups: &[&str], group: &str, resource: &str| {
        policy
            .authorize(&Attributes::resource(
                UserInfo::new("u", groups),
                "create",
                ResourceAttributes {
                    api_group: group.into(),
                    resource: resource.into(),
                    ..ResourceAttributes::default()
                },
            ))
            .is_allowed()
    };
    assert!(create(
        &["system:authenticated"],
        "authorization.k8s.io",
        "selfsubjectaccessreviews"
    ));
    assert!(create(
        &["system:authenticated"],
        "authorization.k8s.io",
        "selfsubjectrulesreviews"
    ));
    assert!(create(
        &["system:authenticated"],
        "authentication.k8s.io",
        "selfsubjectreviews"
    ));
    assert!(!create(&["system:authenticated"], "", "pods"));
    assert!(create(&["system:masters"], "", "pods"));
}

#[test]
fn aggregated_admin_edit_view() {
    let mut policy = bootstrapped();
    for (name, role) in [("alice", "admin"), ("ed", "edit"), ("vi", "view")] {
        policy.upsert_role_binding(RoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{role}")),
                namespace: Some("team".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: RBAC_GROUP.into(),
                kind: "ClusterRole".into(),
                name: role.into(),
            },
            subjects: Some(vec![subject("User", name, None)]),
        });
    }
    let can = |user: &str, verb: &str, group: &str, resource: &str, sub: &str| {
        policy
            .authorize(&Attributes::resource(
                UserInfo::new(user, &["system:authenticated"]),
                verb,
                ResourceAttributes {
                    api_group: group.into(),
                    resource: resource.into(),
                    subresource: sub.into(),
                    name: String::new(),
                    namespace: "team".into(),
                },
            ))
            .is_allowed()
    };
    assert!(can("vi", "list", "", "pods", ""));
    assert!(can("vi", "get", "", "pods", "log"));
    assert!(!can("vi", "get", "", "secrets", ""));
    assert!(!can("vi", "create", "", "pods", ""));
    assert!(can("ed", "get", "", "secrets", ""));
    assert!(can("ed", "create", "apps", "deployments", ""));
    assert!(can("ed", "create", "", "pods", "exec"));
    assert!(!can("ed", "create", RBAC_GROUP, "rolebindings", ""));
    assert!(can("alice", "create", RBAC_GROUP, "rolebindings", ""));
    assert!(can("alice", "list", "", "pods", ""));
    assert!(!can("alice", "list", "", "nodes", ""));
}
