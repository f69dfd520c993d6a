//! Whether one set of rules covers another
//! (`k8s.io/component-helpers/auth/rbac/validation/policy_comparator.go`), and
//! compaction of the uncovered rest for messages
//! (`pkg/registry/rbac/validation/policy_compact.go`).

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::rule::ALL;

fn list(v: Option<&Vec<String>>) -> &[String] {
    v.map_or(&[], Vec::as_slice)
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

fn one(s: &str) -> Vec<String> {
    vec![s.to_owned()]
}

/// Splits a rule into rules of one API group, resource, verb and (if any)
/// resource name each, plus one per non-resource URL and verb (`BreakdownRule`).
pub fn breakdown_rule(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let names = list(rule.resource_names.as_ref());
    for group in list(rule.api_groups.as_ref()) {
        for resource in list(rule.resources.as_ref()) {
            for verb in &rule.verbs {
                let sub = |resource_names| PolicyRule {
                    api_groups: Some(one(group)),
                    resources: Some(one(resource)),
                    verbs: vec![verb.clone()],
                    resource_names,
                    non_resource_urls: None,
                };
                if names.is_empty() {
                    out.push(sub(None));
                } else {
                    out.extend(names.iter().map(|n| sub(Some(one(n)))));
                }
            }
        }
    }
    for url in list(rule.non_resource_urls.as_ref()) {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                non_resource_urls: Some(one(url)),
                verbs: vec![verb.clone()],
                ..PolicyRule::default()
            });
        }
    }
    out
}

/// `resourceCoversAll`: `*`, every resource named, or `*/sub` for `res/sub`.
fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, ALL) || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        has(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

/// `nonResourceURLCovers`: an exact URL or a prefix ending in `*`.
fn url_covers(owner: &str, wanted: &str) -> bool {
    owner == wanted || (owner.ends_with('*') && wanted.starts_with(owner.trim_end_matches('*')))
}

/// Whether `owner` covers `sub`, a rule of at most one verb, resource and
/// name (`ruleCovers`).
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let owner_names = list(owner.resource_names.as_ref());
    let sub_names = list(sub.resource_names.as_ref());
    let names = if sub_names.is_empty() {
        owner_names.is_empty()
    } else {
        owner_names.is_empty() || has_all(owner_names, sub_names)
    };
    let owner_groups = list(owner.api_groups.as_ref());
    let owner_urls = list(owner.non_resource_urls.as_ref());
    (has(&owner.verbs, ALL) || has_all(&owner.verbs, &sub.verbs))
        && (has(owner_groups, ALL) || has_all(owner_groups, list(sub.api_groups.as_ref())))
        && resources_cover(list(owner.resources.as_ref()), list(sub.resources.as_ref()))
        && list(sub.non_resource_urls.as_ref())
            .iter()
            .all(|u| owner_urls.iter().any(|o| url_covers(o, u)))
        && names
}

/// Whether `owner` rules allow everything `servant` rules do, and the
/// broken-down servant rules they do not cover (`Covers`).
pub fn covers(owner: &[PolicyRule], servant: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let uncovered: Vec<PolicyRule> = servant
        .iter()
        .flat_map(breakdown_rule)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    (uncovered.is_empty(), uncovered)
}

/// Merges rules with one API group and one resource and nothing but verbs
/// into one rule per group/resource (`CompactRules`); the rest stay as they
/// are. Merged rules follow the others, in order of first appearance (upstream
/// uses map order; its callers sort the result).
pub fn compact_rules(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut compacted = Vec::with_capacity(rules.len());
    let mut simple: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let groups = list(rule.api_groups.as_ref());
        let resources = list(rule.resources.as_ref());
        let is_simple = list(rule.resource_names.as_ref()).is_empty()
            && list(rule.non_resource_urls.as_ref()).is_empty()
            && groups.len() == 1
            && resources.len() == 1;
        if !is_simple {
            compacted.push(rule.clone());
            continue;
        }
        let same = |r: &&mut PolicyRule| {
            list(r.api_groups.as_ref()) == groups && list(r.resources.as_ref()) == resources
        };
        if let Some(existing) = simple.iter_mut().find(|r| same(r)) {
            existing.verbs.extend(rule.verbs.iter().cloned());
        } else {
            simple.push(rule.clone());
        }
    }
    compacted.extend(simple);
    compacted
}

#[cfg(test)]
#[path = "covers_test.rs"]
mod tests;
