//! ClusterRole aggregation: an aggregated role's rules are the union of the
//! rules of the ClusterRoles its selectors match
//! (`pkg/controller/clusterroleaggregation/clusterroleaggregation_controller.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// A label selector that cannot be evaluated (`LabelSelectorAsSelector` errors).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The operator is not In, NotIn, Exists or DoesNotExist.
    #[error("{} is not a valid label selector operator", crate::gofmt::quote(.0))]
    Operator(String),
    /// In/NotIn without values, or Exists/DoesNotExist with some.
    #[error("invalid values for operator {operator} on key {key}")]
    Values {
        /// The requirement's key.
        key: String,
        /// The requirement's operator.
        operator: String,
    },
}

fn requirement_matches(
    req: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let values = req.values.as_deref().unwrap_or_default();
    let bad_values = || SelectorError::Values {
        key: req.key.clone(),
        operator: req.operator.clone(),
    };
    let value = labels.get(&req.key);
    match req.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(bad_values()),
        "Exists" | "DoesNotExist" if !values.is_empty() => Err(bad_values()),
        "In" => Ok(value.is_some_and(|v| values.contains(v))),
        "NotIn" => Ok(value.is_none_or(|v| !values.contains(v))),
        "Exists" => Ok(value.is_some()),
        "DoesNotExist" => Ok(value.is_none()),
        op => Err(SelectorError::Operator(op.to_owned())),
    }
}

/// Whether `labels` match `selector` (`metav1.LabelSelectorAsSelector` then
/// `Matches`): every matchLabels pair and every matchExpressions requirement
/// must hold; an empty selector matches everything.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let mut matched = true;
    for (k, v) in selector.match_labels.iter().flatten() {
        matched &= labels.get(k) == Some(v);
    }
    for req in selector.match_expressions.iter().flatten() {
        // Evaluate all requirements so an invalid one is reported even when
        // an earlier one already failed, as converting the selector does.
        matched &= requirement_matches(req, labels)?;
    }
    Ok(matched)
}

/// Rule equality as `equality.Semantic.DeepEqual` sees it: a missing list and
/// an empty one are the same.
fn same_rule(a: &PolicyRule, b: &PolicyRule) -> bool {
    let l = |v: &Option<Vec<String>>| v.as_deref().unwrap_or_default().to_vec();
    a.verbs == b.verbs
        && l(&a.api_groups) == l(&b.api_groups)
        && l(&a.resources) == l(&b.resources)
        && l(&a.resource_names) == l(&b.resource_names)
        && l(&a.non_resource_urls) == l(&b.non_resource_urls)
}

/// Whether the two rule lists are equal as upstream compares them.
pub fn same_rules(a: &[PolicyRule], b: &[PolicyRule]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_rule(x, y))
}

/// The rules `target` aggregates from `all` (`syncClusterRole`), or `None`
/// if it has no aggregationRule. For each selector in turn, the matching
/// ClusterRoles other than `target` are taken in name order and each rule not
/// already present is appended.
pub fn aggregated_rules(
    target: &ClusterRole,
    all: &[ClusterRole],
) -> Result<Option<Vec<PolicyRule>>, SelectorError> {
    let Some(rule) = &target.aggregation_rule else {
        return Ok(None);
    };
    let mut sorted: Vec<&ClusterRole> = all.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let no_labels = BTreeMap::new();
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in rule.cluster_role_selectors.iter().flatten() {
        for role in &sorted {
            if role.metadata.name == target.metadata.name {
                continue;
            }
            let labels = role.metadata.labels.as_ref().unwrap_or(&no_labels);
            if !selector_matches(selector, labels)? {
                continue;
            }
            for r in role.rules.iter().flatten() {
                if !rules.iter().any(|have| same_rule(have, r)) {
                    rules.push(r.clone());
                }
            }
        }
    }
    Ok(Some(rules))
}

/// Fills in the rules of every aggregated ClusterRole in `roles`, repeating
/// until nothing changes so chains (view → edit → admin) settle, as the
/// controller's repeated syncs do. Returns the names of the roles changed.
///
/// A cycle of aggregations that never settles is cut off after as many rounds
/// as there are aggregated roles, plus one.
pub fn aggregate_all(roles: &mut [ClusterRole]) -> Result<Vec<String>, SelectorError> {
    let aggregated = roles
        .iter()
        .filter(|r| r.aggregation_rule.is_some())
        .count();
    let mut changed = Vec::new();
    for _ in 0..=aggregated {
        let mut round = false;
        for i in 0..roles.len() {
            let Some(fresh) = aggregated_rules(&roles[i], roles)? else {
                continue;
            };
            if !same_rules(&fresh, roles[i].rules.as_deref().unwrap_or_default()) {
                roles[i].rules = Some(fresh);
                let name = roles[i].metadata.name.clone().unwrap_or_default();
                if !changed.contains(&name) {
                    changed.push(name);
                }
                round = true;
            }
        }
        if !round {
            break;
        }
    }
    Ok(changed)
}

#[cfg(test)]
#[path = "aggregation_test.rs"]
mod tests;
