//! Matching one `PolicyRule` against a request
//! (`pkg/apis/rbac/v1/evaluation_helpers.go`, `RuleAllows` in
//! `plugin/pkg/auth/authorizer/rbac/rbac.go`).

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::attributes::{Attributes, Request};
use crate::gofmt::quote_list;

/// `*`: every verb, API group, resource or non-resource URL.
pub const ALL: &str = "*";

fn list(v: Option<&Vec<String>>) -> &[String] {
    v.map_or(&[], Vec::as_slice)
}

/// Whether the rule names `verb` or `*` (`VerbMatches`).
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

/// Whether the rule names `group` or `*` (`APIGroupMatches`).
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    list(rule.api_groups.as_ref())
        .iter()
        .any(|g| g == ALL || g == group)
}

/// Whether the rule covers `combined` (`resource` or `resource/subresource`)
/// (`ResourceMatches`): `*`, an exact match, or `*/subresource` for a
/// subresource request. There is no `resource/*` form: `pods/*` matches only a
/// subresource literally named `*`.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    list(rule.resources.as_ref()).iter().any(|r| {
        r == ALL
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// Whether the rule allows the object `name` (`ResourceNameMatches`): a rule
/// without resourceNames allows every name, one with them only those (so never
/// an unnamed list or create).
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    let names = list(rule.resource_names.as_ref());
    names.is_empty() || names.iter().any(|n| n == name)
}

/// Whether the rule covers the non-resource `path` (`NonResourceURLMatches`):
/// `*`, an exact match, or a prefix ending in `*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    list(rule.non_resource_urls.as_ref()).iter().any(|u| {
        u == ALL || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// Whether one rule allows the request (`RuleAllows`).
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    if !verb_matches(rule, &attrs.verb) {
        return false;
    }
    match &attrs.request {
        Request::Resource(r) => {
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            api_group_matches(rule, &r.api_group)
                && resource_matches(rule, &combined, &r.subresource)
                && resource_name_matches(rule, &r.name)
        }
        Request::NonResource { path } => non_resource_url_matches(rule, path),
    }
}

/// Whether any of the rules allows the request (`RulesAllow`).
pub fn rules_allow(attrs: &Attributes, rules: &[PolicyRule]) -> bool {
    rules.iter().any(|r| rule_allows(attrs, r))
}

/// The compact form used in escalation messages (`CompactString`), e.g.
/// `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`; empty fields are left out.
pub fn compact_string(rule: &PolicyRule) -> String {
    let mut parts = Vec::new();
    let mut field = |label: &str, v: &[String]| {
        if !v.is_empty() {
            parts.push(format!("{label}:{}", quote_list(v)));
        }
    };
    field("APIGroups", list(rule.api_groups.as_ref()));
    field("Resources", list(rule.resources.as_ref()));
    field("NonResourceURLs", list(rule.non_resource_urls.as_ref()));
    field("ResourceNames", list(rule.resource_names.as_ref()));
    field("Verbs", &rule.verbs);
    format!("{{{}}}", parts.join(", "))
}

/// A rule with the given verbs, API groups and resources (a test and
/// bootstrap-policy convenience, like upstream's `NewRule(...).Groups(...).Resources(...)`).
pub fn resource_rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        ..PolicyRule::default()
    }
}

/// A rule with the given verbs on non-resource URLs.
pub fn url_rule(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        non_resource_urls: Some(strings(urls)),
        ..PolicyRule::default()
    }
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
#[path = "rule_test.rs"]
mod tests;
