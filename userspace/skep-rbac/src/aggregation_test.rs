//! Cases after upstream's clusterroleaggregation_controller_test.go.

use k8s_openapi::api::rbac::v1::AggregationRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::rule::resource_rule;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn role(name: &str, l: &[(&str, &str)], rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(l)),
            ..ObjectMeta::default()
        },
        rules: Some(rules),
        aggregation_rule: None,
    }
}

fn match_labels(l: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(l)),
        match_expressions: None,
    }
}

fn aggregating(name: &str, l: &[(&str, &str)], selectors: Vec<LabelSelector>) -> ClusterRole {
    ClusterRole {
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(selectors),
        }),
        rules: None,
        ..role(name, l, Vec::new())
    }
}

fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

#[test]
fn selectors() {
    let l = labels(&[("tier", "web"), ("env", "prod")]);
    let sel = |exprs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: None,
        match_expressions: Some(exprs),
    };
    assert_eq!(selector_matches(&LabelSelector::default(), &l), Ok(true));
    assert_eq!(
        selector_matches(&match_labels(&[("tier", "web")]), &l),
        Ok(true)
    );
    assert_eq!(
        selector_matches(&match_labels(&[("tier", "db")]), &l),
        Ok(false)
    );
    assert_eq!(
        selector_matches(&sel(vec![req("env", "In", &["prod", "qa"])]), &l),
        Ok(true)
    );
    assert_eq!(
        selector_matches(&sel(vec![req("env", "NotIn", &["prod"])]), &l),
        Ok(false)
    );
    assert_eq!(
        selector_matches(&sel(vec![req("team", "NotIn", &["a"])]), &l),
        Ok(true)
    );
    assert_eq!(
        selector_matches(&sel(vec![req("team", "DoesNotExist", &[])]), &l),
        Ok(true)
    );
    assert_eq!(
        selector_matches(&sel(vec![req("tier", "Exists", &[])]), &l),
        Ok(true)
    );
    assert!(matches!(
        selector_matches(&sel(vec![req("tier", "In", &[])]), &l),
        Err(SelectorError::Values { .. })
    ));
    assert_eq!(
        selector_matches(&sel(vec![req("tier", "Gt", &["1"])]), &l).map_err(|e| e.to_string()),
        Err(r#""Gt" is not a valid label selector operator"#.to_owned())
    );
}

#[test]
fn union_in_name_order_without_duplicates_or_self() {
    let get_pods = resource_rule(&["get"], &[""], &["pods"]);
    let list_pods = resource_rule(&["list"], &[""], &["pods"]);
    let get_nodes = resource_rule(&["get"], &[""], &["nodes"]);
    let target = aggregating(
        "agg",
        &[("foo", "bar")],
        vec![
            match_labels(&[("foo", "bar")]),
            match_labels(&[("foo", "other")]),
        ],
    );
    let all = vec![
        target.clone(),
        role(
            "b",
            &[("foo", "bar")],
            vec![list_pods.clone(), get_pods.clone()],
        ),
        role("a", &[("foo", "bar")], vec![get_pods.clone()]),
        role(
            "c",
            &[("foo", "other")],
            vec![get_nodes.clone(), get_pods.clone()],
        ),
        role(
            "d",
            &[("foo", "nope")],
            vec![resource_rule(&["*"], &["*"], &["*"])],
        ),
    ];
    assert_eq!(
        aggregated_rules(&target, &all),
        Ok(Some(vec![get_pods.clone(), list_pods, get_nodes]))
    );
    assert_eq!(aggregated_rules(&all[1], &all), Ok(None));
    // A rule that differs only in a missing versus empty list is the same rule.
    let mut empty_names = get_pods.clone();
    empty_names.resource_names = Some(Vec::new());
    assert!(same_rules(&[get_pods], &[empty_names]));
}

#[test]
fn chains_settle() {
    let mut roles = crate::bootstrap::cluster_roles();
    roles.push(role(
        "crd-viewer",
        &[("rbac.authorization.k8s.io/aggregate-to-view", "true")],
        vec![resource_rule(
            &["get", "list", "watch"],
            &["example.com"],
            &["widgets"],
        )],
    ));
    let changed = aggregate_all(&mut roles).expect("valid selectors");
    assert_eq!(changed, ["admin", "edit", "view"]);
    let rules_of = |name: &str| {
        roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .and_then(|r| r.rules.clone())
            .expect("role with rules")
    };
    let widgets = resource_rule(&["get", "list", "watch"], &["example.com"], &["widgets"]);
    // view ⊂ edit ⊂ admin, each including the CRD's rule.
    for name in ["view", "edit", "admin"] {
        assert!(rules_of(name).contains(&widgets), "{name}");
    }
    let (view, edit, admin) = (rules_of("view"), rules_of("edit"), rules_of("admin"));
    assert!(crate::covers::covers(&edit, &view).0);
    assert!(crate::covers::covers(&admin, &edit).0);
    assert!(!crate::covers::covers(&view, &edit).0);
    // Running again changes nothing.
    assert_eq!(aggregate_all(&mut roles), Ok(Vec::new()));
}
