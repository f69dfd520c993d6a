//! Cases from upstream's policy_comparator_test.go and policy_compact_test.go.

use super::*;
use crate::rule::compact_string;

/// A rule; empty fields stay `None`, as upstream's nil slices.
fn r(
    groups: &[&str],
    verbs: &[&str],
    resources: &[&str],
    names: &[&str],
    urls: &[&str],
) -> PolicyRule {
    let opt = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| (*s).to_owned()).collect());
    PolicyRule {
        api_groups: opt(groups),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        resources: opt(resources),
        resource_names: opt(names),
        non_resource_urls: opt(urls),
    }
}

fn res(groups: &[&str], verbs: &[&str], resources: &[&str]) -> PolicyRule {
    r(groups, verbs, resources, &[], &[])
}

fn urls(urls: &[&str], verbs: &[&str]) -> PolicyRule {
    r(&[], verbs, &[], &[], urls)
}

fn case(owner: &[PolicyRule], servant: &[PolicyRule], want_uncovered: &[PolicyRule]) {
    let (covered, uncovered) = covers(owner, servant);
    assert_eq!(covered, want_uncovered.is_empty(), "{servant:?}");
    assert_eq!(uncovered, want_uncovered, "{servant:?}");
}

#[test]
fn exact_and_subresource_wildcard() {
    case(
        &[res(&["v1"], &["get"], &["builds"])],
        &[res(&["v1"], &["get"], &["builds"])],
        &[],
    );
    case(
        &[res(&["v1"], &["get"], &["*/scale"])],
        &[res(&["v1"], &["get"], &["foo/scale"])],
        &[],
    );
}

#[test]
fn several_rules_cover_one_and_back() {
    let split = [
        res(&["group1"], &["delete"], &["deployments"]),
        res(&["group1"], &["delete"], &["builds"]),
        res(&["group1"], &["update"], &["builds", "deployments"]),
        res(&["group2"], &["delete"], &["deployments"]),
        res(&["group2"], &["delete"], &["builds"]),
        res(&["group2"], &["update"], &["builds", "deployments"]),
    ];
    let whole = [res(
        &["group1", "group2"],
        &["delete", "update"],
        &["builds", "deployments"],
    )];
    case(&split, &whole, &[]);
    case(&whole, &split, &[]);
}

#[test]
fn missing_single_combination() {
    case(
        &[
            res(&["v1"], &["delete", "update"], &["builds", "deployments"]),
            res(&["v1"], &["delete"], &["pods"]),
        ],
        &[res(
            &["v1"],
            &["delete", "update"],
            &["builds", "deployments", "pods"],
        )],
        &[res(&["v1"], &["update"], &["pods"])],
    );
}

#[test]
fn stars_cover_enumerations_not_the_reverse() {
    case(
        &[res(&["*"], &["get"], &["roles"])],
        &[res(&["group1", "group2"], &["get"], &["roles"])],
        &[],
    );
    case(
        &[res(&["dummy-group"], &["get"], &["roles"])],
        &[res(&["*"], &["get"], &["roles"])],
        &[res(&["*"], &["get"], &["roles"])],
    );
    case(
        &[res(&["*"], &["get"], &["roles"])],
        &[res(&["*"], &["get"], &["roles"])],
        &[],
    );
    case(
        &[res(&["v1"], &["*"], &["roles"])],
        &[res(&["v1"], &["watch", "list"], &["roles"])],
        &[],
    );
    case(
        &[res(
            &["v1"],
            &["get", "list", "watch", "create", "update", "delete", "exec"],
            &["roles"],
        )],
        &[res(&["v1"], &["*"], &["roles"])],
        &[res(&["v1"], &["*"], &["roles"])],
    );
    case(
        &[res(&["v1"], &["*"], &["roles"])],
        &[res(&["v1"], &["*"], &["roles"])],
        &[],
    );
    case(
        &[res(&["v1"], &["get"], &["*"])],
        &[res(&["v1"], &["get"], &["resourcegroup:deployments"])],
        &[],
    );
    case(
        &[res(
            &["v1"],
            &["get"],
            &["roles", "resourcegroup:deployments"],
        )],
        &[res(&["v1"], &["get"], &["*"])],
        &[res(&["v1"], &["get"], &["*"])],
    );
    case(
        &[res(&["v1"], &["get"], &["*"])],
        &[res(&["v1"], &["get"], &["*"])],
        &[],
    );
}

#[test]
fn resource_names() {
    let mut empty_names = res(&["v1"], &["get"], &["pods"]);
    empty_names.resource_names = Some(Vec::new());
    case(
        std::slice::from_ref(&empty_names),
        &[r(&["v1"], &["get"], &["pods"], &["foo", "bar"], &[])],
        &[],
    );
    case(
        &[r(&["v1"], &["get"], &["pods"], &["foo", "bar"], &[])],
        &[empty_names],
        &[res(&["v1"], &["get"], &["pods"])],
    );
}

#[test]
fn non_resource_urls() {
    case(
        &[urls(&["/apis"], &["*"])],
        &[urls(&["/apis"], &["*"])],
        &[],
    );
    case(
        &[urls(&["*"], &["*"])],
        &[urls(&["/apis", "/apis/v1", "/"], &["*"])],
        &[],
    );
    case(
        &[urls(&["/apis/*"], &["*"])],
        &[urls(&["/apis", "/apis/v1"], &["get"])],
        &[urls(&["/apis"], &["get"])],
    );
    case(
        &[urls(&["/apis/*"], &["*"])],
        &[urls(&["/apis/v1/foo", "/apis/v1"], &["get"])],
        &[],
    );
    let both = r(&["v1"], &["get"], &["builds"], &[], &["/apis"]);
    case(
        std::slice::from_ref(&both),
        std::slice::from_ref(&both),
        &[],
    );
    case(
        &[res(&["v1"], &["get"], &["builds"])],
        &[both],
        &[urls(&["/apis"], &["get"])],
    );
}

#[test]
fn compaction_merges_simple_rules_by_group_resource() {
    let rules = [
        res(&[""], &["get"], &["pods"]),
        r(&[""], &["get"], &["pods"], &["a"], &[]),
        res(&[""], &["list"], &["pods"]),
        res(&["apps"], &["get"], &["pods"]),
        urls(&["/x"], &["get"]),
        res(&[""], &["watch"], &["pods"]),
    ];
    let compacted: Vec<String> = compact_rules(&rules).iter().map(compact_string).collect();
    assert_eq!(
        compacted,
        [
            r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["get"]}"#,
            r#"{NonResourceURLs:["/x"], Verbs:["get"]}"#,
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["get" "list" "watch"]}"#,
            r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["get"]}"#,
        ]
    );
}
