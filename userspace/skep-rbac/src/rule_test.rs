//! Cases from upstream's `TestRuleMatches` (rbac_test.go).

use super::*;
use crate::attributes::{ResourceAttributes, UserInfo};

fn res(verb: &str, group: &str, resource: &str, subresource: &str) -> Attributes {
    Attributes::resource(
        UserInfo::default(),
        verb,
        ResourceAttributes {
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            ..ResourceAttributes::default()
        },
    )
}

fn url(verb: &str, path: &str) -> Attributes {
    Attributes::non_resource(UserInfo::default(), verb, path)
}

fn check(rule: &PolicyRule, cases: &[(Attributes, bool)]) {
    for (attrs, want) in cases {
        assert_eq!(rule_allows(attrs, rule), *want, "{rule:?} on {attrs:?}");
    }
}

#[test]
fn star_verb_exact_other() {
    let rule = resource_rule(&["*"], &["group1"], &["resource1"]);
    check(
        &rule,
        &[
            (res("verb1", "group1", "resource1", ""), true),
            (res("verb1", "group2", "resource1", ""), false),
            (res("verb1", "group1", "resource2", ""), false),
            (res("verb2", "group1", "resource1", ""), true),
            (res("verb2", "group2", "resource2", ""), false),
        ],
    );
}

#[test]
fn star_group_exact_other() {
    let rule = resource_rule(&["verb1"], &["*"], &["resource1"]);
    check(
        &rule,
        &[
            (res("verb1", "group1", "resource1", ""), true),
            (res("verb1", "group2", "resource1", ""), true),
            (res("verb1", "group1", "resource2", ""), false),
            (res("verb2", "group1", "resource1", ""), false),
        ],
    );
}

#[test]
fn star_resource_exact_other() {
    let rule = resource_rule(&["verb1"], &["group1"], &["*"]);
    check(
        &rule,
        &[
            (res("verb1", "group1", "resource1", ""), true),
            (res("verb1", "group2", "resource1", ""), false),
            (res("verb1", "group1", "resource2", ""), true),
            (res("verb2", "group1", "resource1", ""), false),
            // `*` covers subresources too.
            (res("verb1", "group1", "resource1", "status"), true),
        ],
    );
}

#[test]
fn tuple_expansion() {
    let rule = resource_rule(
        &["verb1", "verb2"],
        &["group1", "group2"],
        &["resource1", "resource2"],
    );
    for verb in ["verb1", "verb2"] {
        for group in ["group1", "group2"] {
            for resource in ["resource1", "resource2"] {
                assert!(rule_allows(&res(verb, group, resource, ""), &rule));
            }
        }
    }
}

#[test]
fn subresource_expansion() {
    let rule = resource_rule(&["*"], &["*"], &["resource1/subresource1"]);
    check(
        &rule,
        &[
            (res("verb1", "group1", "resource1", "subresource1"), true),
            (res("verb1", "group2", "resource1", "subresource2"), false),
            (res("verb1", "group1", "resource2", "subresource1"), false),
            (res("verb2", "group1", "resource1", "subresource1"), true),
            (res("verb1", "group1", "resource1", ""), false),
        ],
    );
}

#[test]
fn star_slash_subresource_and_no_resource_slash_star() {
    let rule = resource_rule(&["get"], &[""], &["*/scale", "pods/*"]);
    check(
        &rule,
        &[
            (res("get", "", "deployments", "scale"), true),
            (res("get", "", "anything", "scale"), true),
            (res("get", "", "deployments", ""), false),
            (res("get", "", "deployments", "xscale"), false),
            // `pods/*` is not a wildcard over pods' subresources.
            (res("get", "", "pods", "status"), false),
            (res("get", "", "pods", "*"), true),
        ],
    );
    // Without a subresource in the rule, `pods` does not cover `pods/status`.
    let plain = resource_rule(&["*"], &["*"], &["pods"]);
    assert!(!rule_allows(&res("get", "", "pods", "status"), &plain));
}

#[test]
fn resource_names() {
    let mut rule = resource_rule(&["get"], &[""], &["configmaps"]);
    rule.resource_names = Some(vec!["a".into(), "b".into()]);
    let mut named = res("get", "", "configmaps", "");
    if let Request::Resource(r) = &mut named.request {
        r.name = "a".into();
    }
    assert!(rule_allows(&named, &rule));
    // An unnamed request (list, or create) is not allowed by a named rule.
    assert!(!rule_allows(&res("get", "", "configmaps", ""), &rule));
    rule.resource_names = Some(Vec::new());
    assert!(rule_allows(&res("get", "", "configmaps", ""), &rule));
}

#[test]
fn non_resource_urls() {
    check(
        &url_rule(&["verb1"], &["*"]),
        &[
            (url("verb1", "/foo"), true),
            (url("verb1", "/foo/bar"), true),
            (url("verb1", "/"), true),
            (url("verb2", "/foo"), false),
        ],
    );
    check(
        &url_rule(&["verb1"], &["/foo"]),
        &[
            (url("verb1", "/foo"), true),
            (url("verb1", "/foo/bar"), false),
            (url("verb1", "/foo/"), false),
        ],
    );
    check(
        &url_rule(&["verb1"], &["/foo/*"]),
        &[
            (url("verb1", "/foo"), false),
            (url("verb1", "/foo/"), true),
            (url("verb1", "/foo/bar"), true),
            (url("verb1", "/foo/bar/baz"), true),
            (url("verb1", "/foobar"), false),
        ],
    );
    // A resource rule never matches a non-resource request, and vice versa.
    assert!(!rule_allows(
        &url("get", "/api"),
        &resource_rule(&["*"], &["*"], &["*"])
    ));
    assert!(!rule_allows(
        &res("get", "", "pods", ""),
        &url_rule(&["*"], &["*"])
    ));
}

#[test]
fn compact_strings() {
    assert_eq!(
        compact_string(&resource_rule(&["get", "list"], &[""], &["pods"])),
        r#"{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}"#
    );
    assert_eq!(
        compact_string(&url_rule(&["get"], &["/healthz"])),
        r#"{NonResourceURLs:["/healthz"], Verbs:["get"]}"#
    );
    let mut named = resource_rule(&["get"], &["apps"], &["deployments"]);
    named.resource_names = Some(vec!["web".into()]);
    assert_eq!(
        compact_string(&named),
        r#"{APIGroups:["apps"], Resources:["deployments"], ResourceNames:["web"], Verbs:["get"]}"#
    );
}
