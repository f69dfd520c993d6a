//! `rbac.authorization.k8s.io` rules (`pkg/apis/rbac/validation`): policy
//! rules, aggregation selectors, role references and subjects, shared by
//! Role, ClusterRole, RoleBinding and ClusterRoleBinding.

use serde_json::Value;

use super::meta::validate_label_selector;
use super::names;
use crate::field::{FieldError, FieldPath, render_value};
use crate::object::{array, get, str_or_empty};

/// The RBAC API group, the only `roleRef.apiGroup` (and User/Group subject
/// `apiGroup`) accepted.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// `ValidateRBACName`: role and binding names are path segments.
pub fn rbac_name(name: &str) -> Vec<String> {
    names::path_segment_name(name)
}

/// `ValidatePolicyRule` for every entry of `rules` (`namespaced`: a Role's).
pub fn validate_rules(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let path = FieldPath::new("rules");
    array(obj, &["rules"])
        .iter()
        .enumerate()
        .flat_map(|(i, rule)| validate_policy_rule(rule, namespaced, &path.index(i)))
        .collect()
}

/// `ValidatePolicyRule`: verbs required; a rule is about either resources
/// (apiGroups and resources required) or non-resource URLs (cluster-wide
/// only, and nothing else).
pub fn validate_policy_rule(rule: &Value, namespaced: bool, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let len = |key: &str| array(rule, &[key]).len();
    if len("verbs") == 0 {
        errs.push(FieldError::required(
            &path.child("verbs"),
            "verbs must contain at least one value",
        ));
    }
    if len("nonResourceURLs") > 0 {
        let urls = get(rule, &["nonResourceURLs"]).cloned().unwrap_or_default();
        if namespaced {
            errs.push(FieldError::invalid(
                &path.child("nonResourceURLs"),
                urls.clone(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if len("apiGroups") > 0 || len("resources") > 0 || len("resourceNames") > 0 {
            errs.push(FieldError::invalid(
                &path.child("nonResourceURLs"),
                urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return errs;
    }
    if len("apiGroups") == 0 {
        errs.push(FieldError::required(
            &path.child("apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if len("resources") == 0 {
        errs.push(FieldError::required(
            &path.child("resources"),
            "resource rules must supply at least one resource",
        ));
    }
    errs
}

/// A ClusterRole's `aggregationRule`: at least one selector, each valid.
pub fn validate_aggregation_rule(obj: &Value) -> Vec<FieldError> {
    let Some(rule) = get(obj, &["aggregationRule"]).filter(|r| !r.is_null()) else {
        return Vec::new();
    };
    let path = FieldPath::new("aggregationRule").child("clusterRoleSelectors");
    let selectors = array(rule, &["clusterRoleSelectors"]);
    let mut errs = Vec::new();
    if selectors.is_empty() {
        errs.push(FieldError::required(
            &path,
            "at least one clusterRoleSelector required if aggregationRule is non-nil",
        ));
    }
    for (i, selector) in selectors.iter().enumerate() {
        errs.extend(validate_label_selector(selector, &path.index(i)));
    }
    errs
}

/// `ValidateRoleBinding` / `ValidateClusterRoleBinding` beyond metadata:
/// the role reference (`kinds` it may name) and each subject.
pub fn validate_binding(obj: &Value, kinds: &[&str], namespaced: bool) -> Vec<FieldError> {
    let role_ref = FieldPath::new("roleRef");
    let mut errs = Vec::new();
    let api_group = str_or_empty(obj, &["roleRef", "apiGroup"]);
    if api_group != GROUP {
        errs.push(FieldError::not_supported(
            &role_ref.child("apiGroup"),
            api_group,
            &[GROUP],
        ));
    }
    let kind = str_or_empty(obj, &["roleRef", "kind"]);
    if !kinds.contains(&kind) {
        errs.push(FieldError::not_supported(
            &role_ref.child("kind"),
            kind,
            kinds,
        ));
    }
    let name = str_or_empty(obj, &["roleRef", "name"]);
    if name.is_empty() {
        errs.push(FieldError::required(&role_ref.child("name"), ""));
    } else {
        for msg in rbac_name(name) {
            errs.push(FieldError::invalid(&role_ref.child("name"), name, msg));
        }
    }
    let subjects = FieldPath::new("subjects");
    for (i, subject) in array(obj, &["subjects"]).iter().enumerate() {
        errs.extend(validate_subject(subject, namespaced, &subjects.index(i)));
    }
    errs
}

/// `ValidateRoleBindingSubject`: a ServiceAccount (core group, namespace
/// required in a ClusterRoleBinding), User or Group (RBAC group).
pub fn validate_subject(subject: &Value, namespaced: bool, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_or_empty(subject, &["name"]);
    let api_group = str_or_empty(subject, &["apiGroup"]);
    if name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    }
    match str_or_empty(subject, &["kind"]) {
        "ServiceAccount" => {
            if !name.is_empty() {
                for msg in names::dns1123_subdomain(name) {
                    errs.push(FieldError::invalid(&path.child("name"), name, msg));
                }
            }
            if !api_group.is_empty() {
                errs.push(FieldError::not_supported(
                    &path.child("apiGroup"),
                    api_group,
                    &[""],
                ));
            }
            if !namespaced && str_or_empty(subject, &["namespace"]).is_empty() {
                errs.push(FieldError::required(&path.child("namespace"), ""));
            }
        }
        "User" | "Group" => {
            if api_group != GROUP {
                errs.push(FieldError::not_supported(
                    &path.child("apiGroup"),
                    api_group,
                    &[GROUP],
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &path.child("kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
    errs
}

/// The update rule of both binding kinds: `roleRef` is immutable.
pub fn validate_role_ref_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let role_ref = |obj: &Value| {
        ["apiGroup", "kind", "name"].map(|k| str_or_empty(obj, &["roleRef", k]).to_owned())
    };
    let [api_group, kind, name] = role_ref(new);
    if [api_group.clone(), kind.clone(), name.clone()] == role_ref(old) {
        return Vec::new();
    }
    // Go prints the internal struct with `%#v`.
    let rendered = format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        render_value(&api_group.into()),
        render_value(&kind.into()),
        render_value(&name.into())
    );
    vec![FieldError::invalid_raw(
        &FieldPath::new("roleRef"),
        rendered,
        "cannot change roleRef",
    )]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn names_are_path_segments() {
        assert!(rbac_name("system:controller:foo").is_empty());
        assert!(rbac_name("Upper_Case.ok").is_empty());
        assert_eq!(rbac_name(".."), ["may not be '..'"]);
        assert_eq!(
            rbac_name("a/b%c"),
            ["may not contain '/'", "may not contain '%'"]
        );
    }

    #[test]
    fn policy_rules() {
        let role = json!({"rules": [
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
            {"apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"]},
        ]});
        assert_eq!(
            messages(&validate_rules(&role, true)),
            [
                "rules[1].verbs: Required value: verbs must contain at least one value",
                "rules[2].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[2].resources: Required value: resource rules must supply at least one resource",
            ]
        );
    }

    #[test]
    fn non_resource_urls_only_cluster_wide_and_alone() {
        let urls = json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        assert!(validate_rules(&urls, false).is_empty());
        assert_eq!(
            messages(&validate_rules(&urls, true)),
            [
                "rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"
            ]
        );
        let both = json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"], "resources": ["pods"]}]});
        assert_eq!(
            messages(&validate_rules(&both, false)),
            [
                "rules[0].nonResourceURLs: Invalid value: []string{\"/x\"}: rules cannot apply to both regular resources and non-resource URLs"
            ]
        );
    }

    #[test]
    fn aggregation_rule_needs_valid_selectors() {
        assert!(validate_aggregation_rule(&json!({})).is_empty());
        assert_eq!(
            messages(&validate_aggregation_rule(&json!({"aggregationRule": {}}))),
            [
                "aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"
            ]
        );
        let bad = json!({"aggregationRule": {"clusterRoleSelectors": [
            {"matchExpressions": [{"key": "a", "operator": "In"}]}
        ]}});
        assert_eq!(
            messages(&validate_aggregation_rule(&bad)),
            [
                "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            ]
        );
    }

    #[test]
    fn role_refs_and_subjects() {
        let ok = json!({
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "system:controller:foo"},
            "subjects": [
                {"kind": "User", "apiGroup": GROUP, "name": "alice"},
                {"kind": "Group", "apiGroup": GROUP, "name": "system:masters"},
                {"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"},
            ],
        });
        assert!(validate_binding(&ok, &["Role", "ClusterRole"], true).is_empty());
        assert!(validate_binding(&ok, &["ClusterRole"], false).is_empty());

        let bad = json!({
            "roleRef": {"apiGroup": "rbac", "kind": "Role", "name": "a/b"},
            "subjects": [
                {"kind": "ServiceAccount", "apiGroup": GROUP, "name": "Bad"},
                {"kind": "User", "name": ""},
                {"kind": "Robot", "name": "r"},
            ],
        });
        assert_eq!(
            messages(&validate_binding(&bad, &["ClusterRole"], false)),
            [
                "roleRef.apiGroup: Unsupported value: \"rbac\": supported values: \"rbac.authorization.k8s.io\"",
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "roleRef.name: Invalid value: \"a/b\": may not contain '/'",
                "subjects[0].name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                "subjects[0].apiGroup: Unsupported value: \"rbac.authorization.k8s.io\": supported values: \"\"",
                "subjects[0].namespace: Required value",
                "subjects[1].name: Required value",
                "subjects[1].apiGroup: Unsupported value: \"\": supported values: \"rbac.authorization.k8s.io\"",
                "subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        let missing = json!({"roleRef": {"apiGroup": GROUP, "kind": "Role"}});
        assert_eq!(
            messages(&validate_binding(&missing, &["Role", "ClusterRole"], true)),
            ["roleRef.name: Required value"]
        );
    }

    #[test]
    fn role_ref_is_immutable() {
        let old = json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"}});
        assert!(validate_role_ref_update(&old, &old).is_empty());
        let new = json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "edit"}});
        assert_eq!(
            messages(&validate_role_ref_update(&new, &old)),
            [
                "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"edit\"}: cannot change roleRef"
            ]
        );
    }
}
