//! Cases from upstream's `TestAuthorizer` (rbac_test.go) and rule_test.go, the
//! reason texts, and the subject index.

use std::sync::atomic::Ordering;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::attributes::ResourceAttributes;
use crate::rule::{resource_rule, url_rule};
use crate::subject::{SERVICE_ACCOUNT_KIND, subject};

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: (!ns.is_empty()).then(|| ns.into()),
        ..ObjectMeta::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: crate::RBAC_GROUP.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

/// Subjects as upstream's tests write them: `User:jane`, `Group:devs`,
/// `ServiceAccount:ns:name` (namespace may be empty).
fn subjects(specs: &[&str]) -> Vec<Subject> {
    specs
        .iter()
        .map(|s| {
            let (kind, rest) = s.split_once(':').expect("kind:name");
            if kind == SERVICE_ACCOUNT_KIND {
                let (ns, name) = rest.split_once(':').expect("ns:name");
                subject(kind, name, (!ns.is_empty()).then_some(ns))
            } else {
                subject(kind, rest, None)
            }
        })
        .collect()
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta("", name),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

fn role(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: meta(ns, name),
        rules: Some(rules),
    }
}

fn crb(name: &str, role: &str, who: &[&str]) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta("", name),
        role_ref: role_ref("ClusterRole", role),
        subjects: Some(subjects(who)),
    }
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, who: &[&str]) -> RoleBinding {
    RoleBinding {
        metadata: meta(ns, name),
        role_ref: role_ref(kind, role),
        subjects: Some(subjects(who)),
    }
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo::new(name, groups)
}

fn res(who: UserInfo, verb: &str, resource: &str, sub: &str, ns: &str) -> Attributes {
    Attributes::resource(
        who,
        verb,
        ResourceAttributes {
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            ..ResourceAttributes::default()
        },
    )
}

fn allowed(policy: &Policy, attrs: &Attributes) -> bool {
    policy.authorize(attrs).is_allowed()
}

#[test]
fn cluster_role_bound_in_a_namespace() {
    let policy = Policy::from_objects(
        [],
        [cluster_role(
            "admin",
            vec![
                resource_rule(&["*"], &["*"], &["*"]),
                url_rule(&["*"], &["*"]),
            ],
        )],
        [rb(
            "ns1",
            "b",
            "ClusterRole",
            "admin",
            &["User:admin", "Group:admins"],
        )],
        [],
    );
    for attrs in [
        res(user("admin", &[]), "get", "Pods", "", "ns1"),
        res(user("admin", &[]), "watch", "Pods", "", "ns1"),
        res(user("admin", &["group1"]), "watch", "Foobar", "", "ns1"),
        res(user("joe", &["admins"]), "watch", "Foobar", "", "ns1"),
        res(
            user("joe", &["group1", "admins"]),
            "watch",
            "Foobar",
            "",
            "ns1",
        ),
    ] {
        assert!(allowed(&policy, &attrs), "{attrs:?}");
    }
    for attrs in [
        res(user("admin", &[]), "GET", "Pods", "", "ns2"),
        res(user("admin", &[]), "GET", "Nodes", "", ""),
        res(user("admin", &["admins"]), "GET", "Pods", "", "ns2"),
        res(user("admin", &["admins"]), "GET", "Nodes", "", ""),
        // A RoleBinding never grants non-resource URLs.
        Attributes::non_resource(user("admin", &[]), "get", "/healthz"),
    ] {
        assert!(!allowed(&policy, &attrs), "{attrs:?}");
    }
}

#[test]
fn non_resource_urls_via_cluster_role_bindings() {
    let policy = Policy::from_objects(
        [],
        [
            cluster_role(
                "non-resource-url-getter",
                vec![url_rule(&["get"], &["/apis"])],
            ),
            cluster_role("non-resource-url", vec![url_rule(&["*"], &["/apis"])]),
            cluster_role(
                "non-resource-url-prefix",
                vec![url_rule(&["get"], &["/apis/*"])],
            ),
        ],
        [],
        [
            crb("a", "non-resource-url-getter", &["User:foo", "Group:bar"]),
            crb("b", "non-resource-url", &["User:admin", "Group:admin"]),
            crb(
                "c",
                "non-resource-url-prefix",
                &["User:prefixed", "Group:prefixed"],
            ),
        ],
    );
    let url = |name: &str, groups: &[&str], verb: &str, path: &str| {
        Attributes::non_resource(user(name, groups), verb, path)
    };
    for attrs in [
        url("foo", &[], "get", "/apis"),
        url("", &["bar"], "get", "/apis"),
        url("admin", &[], "get", "/apis"),
        url("", &["admin"], "watch", "/apis"),
        url("prefixed", &[], "get", "/apis/v1"),
        url("", &["prefixed"], "get", "/apis/v1/foobar"),
    ] {
        assert!(allowed(&policy, &attrs), "{attrs:?}");
    }
    for attrs in [
        url("foo", &[], "watch", "/apis"),
        url("", &["bar"], "watch", "/apis"),
        url("foo", &[], "get", "/api/v1"),
        url("admin", &[], "get", "/api/v1"),
        url("prefixed", &[], "get", "/api/v1"),
        url("", &["prefixed"], "get", "/api/v1"),
    ] {
        assert!(!allowed(&policy, &attrs), "{attrs:?}");
    }
}

#[test]
fn subresources() {
    let plain = Policy::from_objects(
        [],
        [cluster_role(
            "admin",
            vec![resource_rule(&["*"], &["*"], &["pods"])],
        )],
        [rb("ns1", "b", "ClusterRole", "admin", &["User:admin"])],
        [],
    );
    assert!(allowed(
        &plain,
        &res(user("admin", &[]), "get", "pods", "", "ns1")
    ));
    assert!(!allowed(
        &plain,
        &res(user("admin", &[]), "get", "pods", "status", "ns1")
    ));

    let sub = Policy::from_objects(
        [],
        [cluster_role(
            "admin",
            vec![
                resource_rule(&["*"], &["*"], &["pods/status"]),
                resource_rule(&["*"], &["*"], &["*/scale"]),
            ],
        )],
        [rb("ns1", "b", "ClusterRole", "admin", &["User:admin"])],
        [],
    );
    for (resource, subresource) in [
        ("pods", "status"),
        ("pods", "scale"),
        ("deployments", "scale"),
        ("anything", "scale"),
    ] {
        assert!(allowed(
            &sub,
            &res(user("admin", &[]), "get", resource, subresource, "ns1")
        ));
    }
    assert!(!allowed(
        &sub,
        &res(user("admin", &[]), "get", "pods", "", "ns1")
    ));
}

#[test]
fn allow_reasons_name_the_binding_and_subject() {
    let policy = Policy::from_objects(
        [role(
            "dev",
            "reader",
            vec![resource_rule(&["get"], &[""], &["pods"])],
        )],
        [cluster_role(
            "cluster-admin",
            vec![resource_rule(&["*"], &["*"], &["*"])],
        )],
        [
            rb("dev", "read-pods", "Role", "reader", &["User:jane"]),
            rb(
                "dev",
                "sa-read",
                "Role",
                "reader",
                &["ServiceAccount::builder"],
            ),
        ],
        [crb(
            "cluster-admin",
            "cluster-admin",
            &["Group:system:masters"],
        )],
    );
    let decision = policy.authorize(&res(
        user("root", &["system:masters"]),
        "delete",
        "nodes",
        "",
        "",
    ));
    assert_eq!(
        decision,
        Decision::Allow {
            reason: r#"RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters""#
                .into()
        }
    );
    assert_eq!(
        policy
            .authorize(&res(user("jane", &[]), "get", "pods", "", "dev"))
            .reason(),
        r#"RBAC: allowed by RoleBinding "read-pods/dev" of Role "reader" to User "jane""#
    );
    assert_eq!(
        policy
            .authorize(&res(
                user("system:serviceaccount:dev:builder", &[]),
                "get",
                "pods",
                "",
                "dev"
            ))
            .reason(),
        r#"RBAC: allowed by RoleBinding "sa-read/dev" of Role "reader" to ServiceAccount "builder/dev""#
    );
    // No opinion, and no reason, when nothing matches and nothing failed.
    assert_eq!(
        policy.authorize(&res(user("jane", &[]), "list", "pods", "", "dev")),
        Decision::NoOpinion {
            reason: String::new()
        }
    );
}

#[test]
fn missing_roles_grant_nothing_and_are_reported() {
    let mut policy = Policy::from_objects(
        [],
        [cluster_role(
            "view",
            vec![resource_rule(&["get"], &[""], &["pods"])],
        )],
        [rb("dev", "gone-role", "Role", "gone", &["User:jane"])],
        [
            crb("gone-cr", "gone", &["User:jane"]),
            crb("role-at-cluster-scope", "view", &["User:bob"]),
        ],
    );
    // A ClusterRoleBinding can only point at a ClusterRole; a Role is looked
    // up in the empty namespace and not found.
    policy.upsert_cluster_role_binding(ClusterRoleBinding {
        role_ref: role_ref("Role", "view"),
        ..crb("role-at-cluster-scope", "view", &["User:bob"])
    });
    policy.upsert_cluster_role_binding(ClusterRoleBinding {
        role_ref: role_ref("Robot", "x"),
        ..crb("weird", "x", &["User:jane"])
    });
    let d = policy.authorize(&res(user("jane", &[]), "get", "pods", "", "dev"));
    assert_eq!(
        d,
        Decision::NoOpinion {
            reason: r#"RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, unsupported role reference kind: "Robot", role.rbac.authorization.k8s.io "gone" not found]"#
                .into()
        }
    );
    assert_eq!(
        policy
            .authorize(&res(user("bob", &[]), "get", "pods", "", "dev"))
            .reason(),
        r#"RBAC: role.rbac.authorization.k8s.io "view" not found"#
    );
    // Once the role appears, the same binding grants.
    policy.upsert_role(role(
        "dev",
        "gone",
        vec![resource_rule(&["get"], &[""], &["pods"])],
    ));
    assert!(allowed(
        &policy,
        &res(user("jane", &[]), "get", "pods", "", "dev")
    ));
}

#[test]
fn groups_and_service_accounts() {
    let policy = Policy::from_objects(
        [],
        [
            cluster_role(
                "read",
                vec![resource_rule(&["get"], &[""], &["configmaps"])],
            ),
            cluster_role(
                "write",
                vec![resource_rule(&["create"], &[""], &["configmaps"])],
            ),
            cluster_role(
                "list",
                vec![resource_rule(&["list"], &[""], &["configmaps"])],
            ),
        ],
        [
            rb(
                "ci",
                "all-sa-in-ci",
                "ClusterRole",
                "write",
                &["Group:system:serviceaccounts:ci"],
            ),
            // A service account of another namespace, bound here.
            rb(
                "ci",
                "foreign-sa",
                "ClusterRole",
                "list",
                &["ServiceAccount:tools:deployer"],
            ),
        ],
        [
            crb("authenticated", "read", &["Group:system:authenticated"]),
            // No namespace: a ClusterRoleBinding's ServiceAccount subject matches nobody.
            crb("sa-without-ns", "write", &["ServiceAccount::builder"]),
        ],
    );
    let builder = user(
        "system:serviceaccount:ci:builder",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated",
        ],
    );
    let deployer = user(
        "system:serviceaccount:tools:deployer",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:tools",
            "system:authenticated",
        ],
    );
    assert!(allowed(
        &policy,
        &res(builder.clone(), "get", "configmaps", "", "anywhere")
    ));
    assert!(allowed(
        &policy,
        &res(builder.clone(), "create", "configmaps", "", "ci")
    ));
    assert!(!allowed(
        &policy,
        &res(builder.clone(), "create", "configmaps", "", "other")
    ));
    assert!(!allowed(
        &policy,
        &res(builder, "create", "configmaps", "", "")
    ));
    assert!(allowed(
        &policy,
        &res(deployer.clone(), "list", "configmaps", "", "ci")
    ));
    assert!(!allowed(
        &policy,
        &res(deployer, "list", "configmaps", "", "tools")
    ));
    assert!(!allowed(
        &policy,
        &res(
            user("anon", &["system:unauthenticated"]),
            "get",
            "configmaps",
            "",
            "ci"
        )
    ));
}

#[test]
fn updates_and_removals_are_incremental() {
    let mut policy = Policy::from_objects(
        [],
        [cluster_role(
            "read",
            vec![resource_rule(&["get"], &[""], &["pods"])],
        )],
        [],
        [crb("b", "read", &["User:jane"])],
    );
    let jane = || res(user("jane", &[]), "get", "pods", "", "x");
    let bob = || res(user("bob", &[]), "get", "pods", "", "x");
    assert!(allowed(&policy, &jane()));
    // Replacing the binding re-files it under its new subjects only.
    policy.upsert_cluster_role_binding(crb("b", "read", &["User:bob"]));
    assert!(!allowed(&policy, &jane()));
    assert!(allowed(&policy, &bob()));
    policy.remove_cluster_role("read");
    assert!(!allowed(&policy, &bob()));
    policy.upsert_cluster_role(cluster_role(
        "read",
        vec![resource_rule(&["get"], &[""], &["pods"])],
    ));
    assert!(allowed(&policy, &bob()));
    policy.remove_cluster_role_binding("b");
    assert!(!allowed(&policy, &bob()));
    assert!(policy.cluster_index.is_empty());

    policy.upsert_role(role(
        "x",
        "r",
        vec![resource_rule(&["get"], &[""], &["pods"])],
    ));
    policy.upsert_role_binding(rb("x", "rb", "Role", "r", &["User:jane", "Group:g"]));
    assert!(allowed(&policy, &jane()));
    policy.upsert_role_binding(rb("x", "rb", "Role", "r", &["Group:g"]));
    assert!(!allowed(&policy, &jane()));
    assert!(allowed(
        &policy,
        &res(user("jane", &["g"]), "get", "pods", "", "x")
    ));
    policy.remove_role_binding("x", "rb");
    assert!(policy.namespace_index.is_empty() && policy.role_bindings.is_empty());
    policy.remove_role("x", "r");
    assert!(policy.roles.is_empty());
}

#[test]
fn evaluation_looks_only_at_the_users_bindings() {
    let mut policy = Policy::new();
    policy.upsert_cluster_role(cluster_role(
        "read",
        vec![resource_rule(&["get"], &[""], &["pods"])],
    ));
    policy.upsert_role(role(
        "team-7",
        "r",
        vec![resource_rule(&["list"], &[""], &["pods"])],
    ));
    for i in 0..10_000 {
        policy.upsert_cluster_role_binding(crb(
            &format!("crb-{i}"),
            "read",
            &[&format!("User:user-{i}")],
        ));
        policy.upsert_role_binding(rb(
            &format!("team-{}", i % 10),
            &format!("rb-{i}"),
            "Role",
            "r",
            &[
                &format!("Group:group-{i}"),
                &format!("ServiceAccount::sa-{i}"),
            ],
        ));
    }
    policy.upsert_cluster_role_binding(crb("jane", "read", &["User:jane"]));
    policy.upsert_role_binding(rb("team-7", "jane-team", "Role", "r", &["Group:team"]));

    let jane = user("jane", &["team", "system:authenticated"]);
    policy.examined.store(0, Ordering::Relaxed);
    assert!(allowed(
        &policy,
        &res(jane.clone(), "get", "pods", "", "team-7")
    ));
    assert_eq!(policy.examined.load(Ordering::Relaxed), 1);

    policy.examined.store(0, Ordering::Relaxed);
    assert!(allowed(
        &policy,
        &res(jane.clone(), "list", "pods", "", "team-7")
    ));
    assert_eq!(policy.examined.load(Ordering::Relaxed), 2);

    policy.examined.store(0, Ordering::Relaxed);
    assert!(!allowed(
        &policy,
        &res(jane.clone(), "delete", "pods", "", "team-7")
    ));
    assert_eq!(policy.examined.load(Ordering::Relaxed), 2);

    policy.examined.store(0, Ordering::Relaxed);
    let sa = user("system:serviceaccount:team-7:sa-4007", &[]);
    assert!(allowed(&policy, &res(sa, "list", "pods", "", "team-7")));
    assert_eq!(policy.examined.load(Ordering::Relaxed), 1);
}

#[test]
fn rules_for_and_the_rules_review() {
    let mut mixed = resource_rule(&["get"], &[""], &["pods"]);
    mixed.non_resource_urls = Some(vec!["/x".into()]);
    let policy = Policy::from_objects(
        [role(
            "ns",
            "r",
            vec![resource_rule(&["list"], &["apps"], &["deployments"])],
        )],
        [
            cluster_role("discovery", vec![url_rule(&["get"], &["/api", "/api/*"])]),
            cluster_role("mixed", vec![mixed]),
        ],
        [
            rb("ns", "rb", "Role", "r", &["User:jane"]),
            rb("ns", "missing", "Role", "nope", &["User:jane"]),
        ],
        [
            crb("discovery", "discovery", &["Group:system:authenticated"]),
            crb("mixed", "mixed", &["User:jane"]),
        ],
    );
    let jane = user("jane", &["system:authenticated"]);
    let resolved = policy.rules_for(&jane, "ns");
    assert_eq!(resolved.rules.len(), 3);
    assert_eq!(
        resolved.errors,
        [RoleRefError::RoleNotFound {
            name: "nope".into()
        }]
    );

    let status = policy.subject_rules_review_status(&jane, "ns");
    assert!(!status.incomplete);
    assert_eq!(
        status.evaluation_error.as_deref(),
        Some(r#"role.rbac.authorization.k8s.io "nope" not found"#)
    );
    let json = serde_json::to_value(&status).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "evaluationError": "role.rbac.authorization.k8s.io \"nope\" not found",
            "incomplete": false,
            "nonResourceRules": [
                {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*"]},
                {"verbs": ["get"], "nonResourceURLs": ["/x"]},
            ],
            "resourceRules": [
                {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                {"verbs": ["list"], "apiGroups": ["apps"], "resources": ["deployments"]},
            ],
        })
    );
    // Without a namespace only ClusterRoleBindings count.
    assert_eq!(policy.rules_for(&jane, "").rules.len(), 2);
}
