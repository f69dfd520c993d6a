//! One scheduling cycle like kube-scheduler's default profile: `PreFilter`
//! (per-pod pre-computation), `Filter` (`NodeUnschedulable`, `NodeName`,
//! `TaintToleration`, `NodeAffinity`, `NodeResourcesFit`, `PodTopologySpread`,
//! `InterPodAffinity`)
//! over a rotating sample of nodes sized by the adaptive
//! `percentageOfNodesToScore`, then `Score` (`TaintToleration`,
//! `NodeAffinity`, `NodeResourcesFit` least-allocated,
//! `NodeResourcesBalancedAllocation`, `InterPodAffinity`, default
//! `PodTopologySpread`) and a random pick among the best.

use std::collections::{BTreeMap, HashMap};

use crate::cache::{Cache, NodeId, NodeInfo, TermGroup, TermKind, insufficient};
use crate::model::{AffinityTerm, Effect, NodeSpecInfo, PodInfo, SpreadConstraint, Taint};

/// Highest score a plugin gives a node (kube's `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;
/// Nodes below which every node is scored (kube's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Lower bound of the adaptive percentage (kube's `minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;
/// The toleration key of the unschedulable taint.
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";
/// The node label used as the default spreading domain per node.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Filter plugins, as bits, so a failed pod remembers which plugins
/// rejected nodes (the queue uses it to decide which events may help).
pub mod plugin {
    /// `NodeUnschedulable`.
    pub const NODE_UNSCHEDULABLE: u8 = 1;
    /// `NodeName`.
    pub const NODE_NAME: u8 = 1 << 1;
    /// `TaintToleration`.
    pub const TAINT_TOLERATION: u8 = 1 << 2;
    /// `NodeAffinity`.
    pub const NODE_AFFINITY: u8 = 1 << 3;
    /// `NodeResourcesFit`.
    pub const NODE_RESOURCES_FIT: u8 = 1 << 4;
    /// `InterPodAffinity`.
    pub const INTER_POD_AFFINITY: u8 = 1 << 5;
    /// `PodTopologySpread`.
    pub const POD_TOPOLOGY_SPREAD: u8 = 1 << 6;
}

/// Why a node was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Node is cordoned and the pod does not tolerate it.
    Unschedulable,
    /// `spec.nodeName` names another node.
    NodeName,
    /// A `NoSchedule`/`NoExecute` taint the pod does not tolerate.
    Taint {
        /// Taint key.
        key: String,
        /// Taint value.
        value: String,
    },
    /// `nodeSelector` or required node affinity does not match.
    NodeAffinity,
    /// Requests exceed what is left (kube reasons).
    Resources(Vec<String>),
    /// Placing the pod here would exceed a `DoNotSchedule` spread's skew.
    Spread,
    /// The node lacks a `DoNotSchedule` spread's topology label.
    SpreadMissingLabel,
    /// An existing pod's required anti-affinity rejects this pod here.
    ExistingAntiAffinity,
    /// The pod's required anti-affinity rejects this node.
    AntiAffinity,
    /// The pod's required affinity is not satisfied on this node.
    Affinity,
}

impl Rejection {
    /// The plugin bit.
    pub fn plugin(&self) -> u8 {
        match self {
            Self::Unschedulable => plugin::NODE_UNSCHEDULABLE,
            Self::NodeName => plugin::NODE_NAME,
            Self::Taint { .. } => plugin::TAINT_TOLERATION,
            Self::NodeAffinity => plugin::NODE_AFFINITY,
            Self::Resources(_) => plugin::NODE_RESOURCES_FIT,
            Self::Spread | Self::SpreadMissingLabel => plugin::POD_TOPOLOGY_SPREAD,
            Self::ExistingAntiAffinity | Self::AntiAffinity | Self::Affinity => {
                plugin::INTER_POD_AFFINITY
            }
        }
    }

    /// kube-scheduler's reason strings for this rejection.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Self::Unschedulable => vec!["node(s) were unschedulable".to_owned()],
            Self::NodeName => vec!["node(s) didn't match the requested node name".to_owned()],
            Self::Taint { key, value } => {
                vec![format!("node(s) had untolerated taint {{{key}: {value}}}")]
            }
            Self::NodeAffinity => {
                vec!["node(s) didn't match Pod's node affinity/selector".to_owned()]
            }
            Self::Resources(r) => r.clone(),
            Self::Spread => vec!["node(s) didn't match pod topology spread constraints".to_owned()],
            Self::SpreadMissingLabel => vec![
                "node(s) didn't match pod topology spread constraints (missing required label)"
                    .to_owned(),
            ],
            Self::ExistingAntiAffinity => {
                vec!["node(s) didn't satisfy existing pods anti-affinity rules".to_owned()]
            }
            Self::AntiAffinity => vec!["node(s) didn't match pod anti-affinity rules".to_owned()],
            Self::Affinity => vec!["node(s) didn't match pod affinity rules".to_owned()],
        }
    }
}

/// No node fits the pod.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FitError {
    /// The kube-style message for the `FailedScheduling` event.
    pub message: String,
    /// Nodes considered.
    pub num_nodes: usize,
    /// Reason → number of nodes.
    pub reasons: BTreeMap<String, usize>,
    /// Plugins that rejected at least one node ([`plugin`] bits).
    pub plugins: u8,
}

impl FitError {
    /// Builds the error and kube's message: `0/N nodes are available: ` and
    /// the `"count reason"` strings sorted, joined by `, `, ending in `.`.
    pub fn new(num_nodes: usize, reasons: BTreeMap<String, usize>, plugins: u8) -> Self {
        let message = if num_nodes == 0 {
            "no nodes available to schedule pods".to_owned()
        } else {
            let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
        };
        Self {
            message,
            num_nodes,
            reasons,
            plugins,
        }
    }
}

/// A successful scheduling decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResult {
    /// The chosen node.
    pub node: String,
    /// Nodes run through the filters.
    pub evaluated: usize,
    /// Feasible nodes found (and scored).
    pub feasible: usize,
}

/// How many feasible nodes to look for before scoring, like kube's
/// `numFeasibleNodesToFind`: all below 100 nodes; otherwise `percentage`
/// (0: adaptive `50 - nodes/125`, at least 5%) and at least 100.
pub fn num_feasible_nodes_to_find(num_nodes: usize, percentage: u32) -> usize {
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return num_nodes;
    }
    let mut pct = percentage as usize;
    if pct == 0 {
        pct = 50usize
            .saturating_sub(num_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE);
    }
    (num_nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Counts of pods matching a term per topology value.
struct TermCounts<'a> {
    topology_key: &'a str,
    counts: HashMap<&'a str, u32>,
}

impl TermCounts<'_> {
    fn at(&self, node: &NodeSpecInfo) -> u32 {
        node.labels
            .get(self.topology_key)
            .and_then(|v| self.counts.get(v.as_str()))
            .copied()
            .unwrap_or(0)
    }
}

/// Matching pods per domain of one spread constraint, over the nodes that
/// count as domains.
struct SpreadCounts<'a> {
    topology_key: &'a str,
    max_skew: i64,
    /// 1 when the pod matches its own selector.
    self_match: i64,
    counts: HashMap<&'a str, i64>,
    /// Smallest count over the domains (0 below `minDomains`).
    min: i64,
}

fn spread_counts<'a>(
    cache: &'a Cache,
    pod: &PodInfo,
    c: &'a SpreadConstraint,
    required_keys: &[&str],
) -> SpreadCounts<'a> {
    let mut counts: HashMap<&'a str, i64> = HashMap::new();
    // Every live node with the key is a domain unless node affinity or
    // taints narrow the set: then the domains come from the label index and
    // only the matching pods' nodes are checked, instead of every node.
    let unrestricted = (!c.honor_node_affinity
        || (pod.node_selector.is_empty() && pod.required_node_terms.is_none()))
        && !c.honor_taints
        && required_keys.iter().all(|k| *k == c.topology_key);
    if unrestricted {
        for v in cache.label_domains(&c.topology_key) {
            counts.insert(v, 0);
        }
        for id in cache.candidate_pods(&pod.namespace, &c.selector) {
            let (Some(other), Some(n)) = (cache.pod_info(id), cache.pod_node(id)) else {
                continue;
            };
            if other.key == pod.key || !c.selector.matches(&other.labels) {
                continue;
            }
            if let Some(count) = cache
                .node(n)
                .label(&c.topology_key)
                .and_then(|v| counts.get_mut(v))
            {
                *count += 1;
            }
        }
        return finish_spread(pod, c, counts);
    }
    let mut eligible = vec![false; cache.node_slots()];
    for &id in cache.live_nodes() {
        let node = cache.node(id);
        let Some(spec) = node.spec.as_ref() else {
            continue;
        };
        if c.honor_node_affinity && !node_affinity_matches(pod, spec, &node.name) {
            continue;
        }
        if c.honor_taints
            && spec.taints.iter().any(|t| {
                matches!(t.effect, Effect::NoSchedule | Effect::NoExecute) && !pod.tolerates(t)
            })
        {
            continue;
        }
        if !required_keys.iter().all(|k| spec.labels.contains_key(*k)) {
            continue;
        }
        if let Some(v) = spec.labels.get(&c.topology_key) {
            eligible[id] = true;
            counts.entry(v.as_str()).or_insert(0);
        }
    }
    for id in cache.candidate_pods(&pod.namespace, &c.selector) {
        let (Some(other), Some(n)) = (cache.pod_info(id), cache.pod_node(id)) else {
            continue;
        };
        if other.key == pod.key || !eligible[n] || !c.selector.matches(&other.labels) {
            continue;
        }
        if let Some(count) = cache
            .node(n)
            .label(&c.topology_key)
            .and_then(|v| counts.get_mut(v))
        {
            *count += 1;
        }
    }
    finish_spread(pod, c, counts)
}

fn finish_spread<'a>(
    pod: &PodInfo,
    c: &'a SpreadConstraint,
    counts: HashMap<&'a str, i64>,
) -> SpreadCounts<'a> {
    let mut min = counts.values().copied().min().unwrap_or(0);
    if c.min_domains.is_some_and(|m| counts.len() < m) {
        min = 0;
    }
    SpreadCounts {
        topology_key: &c.topology_key,
        max_skew: c.max_skew,
        self_match: i64::from(c.selector.matches(&pod.labels)),
        counts,
        min,
    }
}

/// Per-pod pre-computation (kube's `PreFilter`) so each filter is a few
/// lookups per node.
pub struct PreFilter<'a> {
    pod: &'a PodInfo,
    /// `DoNotSchedule` spread constraints with their domain counts.
    spread: Vec<SpreadCounts<'a>>,
    /// Existing pods' required anti-affinity groups that match this pod.
    existing_anti: Vec<&'a TermGroup>,
    /// Per required anti-affinity term of the pod: matching pods per domain.
    anti: Vec<TermCounts<'a>>,
    /// Per required affinity term: pods matching all terms per domain.
    affinity: Vec<TermCounts<'a>>,
    /// No existing pod matches all the affinity terms.
    affinity_none: bool,
    /// The pod matches all of its own affinity terms.
    affinity_self: bool,
}

fn matching_counts<'a>(
    cache: &'a Cache,
    pod: &PodInfo,
    terms: &[&'a AffinityTerm],
    counted: &[&'a AffinityTerm],
) -> Vec<TermCounts<'a>> {
    let mut out: Vec<TermCounts<'a>> = counted
        .iter()
        .map(|t| TermCounts {
            topology_key: t.topology_key.as_str(),
            counts: HashMap::new(),
        })
        .collect();
    let Some(first) = terms.first() else {
        return out;
    };
    let ns_labels = |ns: &str| cache.namespace_labels(ns);
    let namespaces: Vec<&str> = if first.namespaces.is_all() || first.namespaces.selector.is_some()
    {
        cache
            .pod_namespaces()
            .filter(|ns| first.namespaces.contains(ns, ns_labels))
            .collect()
    } else {
        first.namespaces.names.iter().map(String::as_str).collect()
    };
    for ns in namespaces {
        for id in cache.candidate_pods(ns, &first.selector) {
            let (Some(other), Some(node)) = (cache.pod_info(id), cache.pod_node(id)) else {
                continue;
            };
            if other.key == pod.key || !terms.iter().all(|t| t.matches_pod(other, ns_labels)) {
                continue;
            }
            let node = cache.node(node);
            for c in &mut out {
                if let Some(v) = node.label(c.topology_key) {
                    *c.counts.entry(v).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

impl<'a> PreFilter<'a> {
    /// Pre-computes inter-pod affinity state for `pod`.
    pub fn new(cache: &'a Cache, pod: &'a PodInfo) -> Self {
        let ns_labels = |ns: &str| cache.namespace_labels(ns);
        let existing_anti = cache
            .term_groups()
            .filter(|g| {
                g.kind == TermKind::RequiredAntiAffinity
                    && !g.counts.is_empty()
                    && g.term.matches_pod(pod, ns_labels)
            })
            .collect();
        let anti = pod
            .anti_affinity
            .iter()
            .flat_map(|t| matching_counts(cache, pod, &[t], &[t]))
            .collect();
        let aff_terms: Vec<&AffinityTerm> = pod.affinity.iter().collect();
        let affinity = matching_counts(cache, pod, &aff_terms, &aff_terms);
        let affinity_none = affinity.iter().all(|c| c.counts.is_empty());
        let affinity_self = pod.affinity.iter().all(|t| t.matches_pod(pod, ns_labels));
        let hard: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).collect();
        let keys: Vec<&str> = hard.iter().map(|c| c.topology_key.as_str()).collect();
        let spread = hard
            .iter()
            .map(|c| spread_counts(cache, pod, c, &keys))
            .collect();
        Self {
            pod,
            spread,
            existing_anti,
            anti,
            affinity,
            affinity_none,
            affinity_self,
        }
    }

    /// Runs the filters on one node in kube's order; the first rejection.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Rejection> {
        let pod = self.pod;
        let Some(spec) = node.spec.as_ref() else {
            return Err(Rejection::NodeName);
        };
        if spec.unschedulable
            && !pod.tolerates(&Taint {
                key: UNSCHEDULABLE_TAINT_KEY.to_owned(),
                value: String::new(),
                effect: Effect::NoSchedule,
            })
        {
            return Err(Rejection::Unschedulable);
        }
        if pod.node_name.as_ref().is_some_and(|n| *n != node.name) {
            return Err(Rejection::NodeName);
        }
        if let Some(t) = spec.taints.iter().find(|t| {
            matches!(t.effect, Effect::NoSchedule | Effect::NoExecute) && !pod.tolerates(t)
        }) {
            return Err(Rejection::Taint {
                key: t.key.clone(),
                value: t.value.clone(),
            });
        }
        if !node_affinity_matches(pod, spec, &node.name) {
            return Err(Rejection::NodeAffinity);
        }
        let reasons = insufficient(node, spec, pod);
        if !reasons.is_empty() {
            return Err(Rejection::Resources(reasons));
        }
        for s in &self.spread {
            let Some(v) = spec.labels.get(s.topology_key) else {
                return Err(Rejection::SpreadMissingLabel);
            };
            let here = s.counts.get(v.as_str()).copied().unwrap_or(0);
            if here + s.self_match - s.min > s.max_skew {
                return Err(Rejection::Spread);
            }
        }
        for g in &self.existing_anti {
            if spec
                .labels
                .get(&g.term.topology_key)
                .is_some_and(|v| g.counts.contains_key(v))
            {
                return Err(Rejection::ExistingAntiAffinity);
            }
        }
        if self.anti.iter().any(|c| c.at(spec) > 0) {
            return Err(Rejection::AntiAffinity);
        }
        if !self.affinity.is_empty() {
            let ok = self
                .affinity
                .iter()
                .all(|c| spec.labels.contains_key(c.topology_key) && (c.at(spec) > 0));
            let has_keys = self
                .affinity
                .iter()
                .all(|c| spec.labels.contains_key(c.topology_key));
            if !(ok || self.affinity_none && self.affinity_self && has_keys) {
                return Err(Rejection::Affinity);
            }
        }
        Ok(())
    }
}

/// `nodeSelector` and required node affinity (terms `OR`ed).
pub fn node_affinity_matches(pod: &PodInfo, spec: &NodeSpecInfo, name: &str) -> bool {
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| spec.labels.get(k) == Some(v))
    {
        return false;
    }
    match &pod.required_node_terms {
        None => true,
        Some(terms) => terms.iter().any(|t| t.matches(&spec.labels, name)),
    }
}

/// Score weights of the default profile.
const WEIGHT_TAINT: i64 = 3;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_FIT: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_INTER_POD: i64 = 2;
const WEIGHT_SPREAD: i64 = 2;

/// One scored node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeScore {
    /// Node.
    pub node: NodeId,
    /// Weighted sum of normalized plugin scores.
    pub score: i64,
}

/// Scores feasible nodes with the default profile's plugins and weights.
#[expect(
    clippy::too_many_lines,
    reason = "one pass per plugin, kept together to read like the profile"
)]
pub fn score(cache: &Cache, pod: &PodInfo, nodes: &[NodeId]) -> Vec<NodeScore> {
    let n = nodes.len();
    let mut total = vec![0i64; n];
    let spec = |id: NodeId| cache.node(id).spec.as_ref();

    // TaintToleration: fewer untolerated PreferNoSchedule taints is better.
    let mut taints = vec![0i64; n];
    for (i, &id) in nodes.iter().enumerate() {
        if let Some(s) = spec(id) {
            taints[i] = i64::try_from(
                s.taints
                    .iter()
                    .filter(|t| {
                        t.effect == Effect::PreferNoSchedule
                            && !pod.tolerations.iter().any(|tol| {
                                tol.effect.is_none_or(|e| e == Effect::PreferNoSchedule)
                                    && tol.tolerates(t)
                            })
                    })
                    .count(),
            )
            .unwrap_or(0);
        }
    }
    let max = taints.iter().copied().max().unwrap_or(0);
    for (t, s) in total.iter_mut().zip(&taints) {
        let norm = if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE - s * MAX_NODE_SCORE / max
        };
        *t += WEIGHT_TAINT * norm;
    }

    // NodeAffinity: sum of matching preferred term weights, scaled to max.
    if !pod.preferred_node_terms.is_empty() {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|&id| {
                let node = cache.node(id);
                spec(id).map_or(0, |s| {
                    pod.preferred_node_terms
                        .iter()
                        .filter(|(_, t)| t.matches(&s.labels, &node.name))
                        .map(|(w, _)| i64::from(*w))
                        .sum()
                })
            })
            .collect();
        let max = raw.iter().copied().max().unwrap_or(0);
        if max > 0 {
            for (t, s) in total.iter_mut().zip(&raw) {
                *t += WEIGHT_NODE_AFFINITY * s * MAX_NODE_SCORE / max;
            }
        }
    }

    // NodeResourcesFit (LeastAllocated) and BalancedAllocation on cpu+memory.
    for (i, &id) in nodes.iter().enumerate() {
        let node = cache.node(id);
        let Some(s) = spec(id) else { continue };
        let cpu_req = node.non_zero_cpu + pod.requests.non_zero_milli_cpu;
        let mem_req = node.non_zero_memory + pod.requests.non_zero_memory;
        let least = |req: i64, alloc: i64| {
            if alloc <= 0 || req > alloc {
                0
            } else {
                (alloc - req) * MAX_NODE_SCORE / alloc
            }
        };
        let fit = i64::midpoint(
            least(cpu_req, s.allocatable.milli_cpu),
            least(mem_req, s.allocatable.memory),
        );
        #[expect(clippy::cast_precision_loss, reason = "ratios of resource amounts")]
        let frac = |req: i64, alloc: i64| {
            if alloc <= 0 {
                1.0
            } else {
                (req as f64 / alloc as f64).min(1.0)
            }
        };
        let std = (frac(cpu_req, s.allocatable.milli_cpu) - frac(mem_req, s.allocatable.memory))
            .abs()
            / 2.0;
        #[expect(clippy::cast_possible_truncation, reason = "score in 0..=100")]
        let balanced = ((1.0 - std) * 100.0) as i64;
        total[i] += WEIGHT_FIT * fit + WEIGHT_BALANCED * balanced;
    }

    // InterPodAffinity: preferred terms of the pod, and existing pods' terms
    // matching the pod (required affinity weight 1, preferred ± weight).
    let ns_labels = |ns: &str| cache.namespace_labels(ns);
    let mut sources: Vec<(i64, TermCounts<'_>)> = Vec::new();
    for (w, t) in &pod.preferred_affinity {
        for c in matching_counts(cache, pod, &[t], &[t]) {
            sources.push((i64::from(*w), c));
        }
    }
    for (w, t) in &pod.preferred_anti_affinity {
        for c in matching_counts(cache, pod, &[t], &[t]) {
            sources.push((-i64::from(*w), c));
        }
    }
    for g in cache.term_groups() {
        let w = match g.kind {
            TermKind::RequiredAntiAffinity => continue,
            TermKind::RequiredAffinity => 1,
            TermKind::PreferredAffinity => i64::from(g.weight),
            TermKind::PreferredAntiAffinity => -i64::from(g.weight),
        };
        if g.counts.is_empty() || !g.term.matches_pod(pod, ns_labels) {
            continue;
        }
        sources.push((
            w,
            TermCounts {
                topology_key: g.term.topology_key.as_str(),
                counts: g.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            },
        ));
    }
    if !sources.is_empty() {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|&id| {
                spec(id).map_or(0, |s| {
                    sources.iter().map(|(w, c)| w * i64::from(c.at(s))).sum()
                })
            })
            .collect();
        let max = raw.iter().copied().max().unwrap_or(0);
        let min = raw.iter().copied().min().unwrap_or(0);
        if max > min {
            for (t, s) in total.iter_mut().zip(&raw) {
                *t += WEIGHT_INTER_POD * MAX_NODE_SCORE * (s - min) / (max - min);
            }
        }
    }

    // PodTopologySpread: the pod's ScheduleAnyway constraints; without
    // constraints, the default ones below.
    if !pod.spread.is_empty() {
        for (t, s) in total.iter_mut().zip(spread_scores(cache, pod, nodes)) {
            *t += WEIGHT_SPREAD * s;
        }
    } else if let Some(owner) = pod.owner.as_ref().and_then(|o| cache.owner_counts(o)) {
        // Default: pods of the same controller, hostname (maxSkew 3) and
        // zone (maxSkew 5), ScheduleAnyway.
        #[expect(clippy::cast_precision_loss, reason = "domain counts are small")]
        let host_w = ((n + 2) as f64).ln();
        let zones = cache.zone_count();
        #[expect(clippy::cast_precision_loss, reason = "domain counts are small")]
        let zone_w = ((zones + 2) as f64).ln();
        #[expect(clippy::cast_possible_truncation, reason = "scores are small")]
        let raw: Vec<i64> = nodes
            .iter()
            .map(|&id| {
                let here = f64::from(owner.per_node.get(&id).copied().unwrap_or(0));
                let mut s = (here + 2.0) * host_w;
                if let Some(z) = cache.node(id).zone {
                    let cnt = f64::from(owner.per_zone.get(&z).copied().unwrap_or(0));
                    s += (cnt + 4.0) * zone_w;
                }
                (s * 1000.0) as i64
            })
            .collect();
        let max = raw.iter().copied().max().unwrap_or(0);
        let min = raw.iter().copied().min().unwrap_or(0);
        for (t, s) in total.iter_mut().zip(&raw) {
            let norm = if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s) / max
            };
            *t += WEIGHT_SPREAD * norm;
        }
    }

    nodes
        .iter()
        .zip(total)
        .map(|(&node, score)| NodeScore { node, score })
        .collect()
}

/// Normalized `ScheduleAnyway` spread scores (fewer matching pods in the
/// node's domains is better; nodes missing a topology label get 0).
fn spread_scores(cache: &Cache, pod: &PodInfo, nodes: &[NodeId]) -> Vec<i64> {
    let soft: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
    if soft.is_empty() {
        return vec![0; nodes.len()];
    }
    let keys: Vec<&str> = soft.iter().map(|c| c.topology_key.as_str()).collect();
    let counts: Vec<SpreadCounts<'_>> = soft
        .iter()
        .map(|c| spread_counts(cache, pod, c, &keys))
        .collect();
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        reason = "scores are small"
    )]
    let raw: Vec<Option<i64>> = nodes
        .iter()
        .map(|&id| {
            let spec = cache.node(id).spec.as_ref()?;
            let mut s = 0.0;
            for c in &counts {
                let v = spec.labels.get(c.topology_key)?;
                let here = c.counts.get(v.as_str()).copied().unwrap_or(0);
                let w = ((c.counts.len() + 2) as f64).ln();
                s += (here + c.max_skew - 1) as f64 * w;
            }
            Some((s * 1000.0) as i64)
        })
        .collect();
    let max = raw.iter().flatten().copied().max().unwrap_or(0);
    let min = raw.iter().flatten().copied().min().unwrap_or(0);
    raw.iter()
        .map(|r| match r {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

/// The scheduling algorithm with its rotating start index and RNG.
#[derive(Debug)]
pub struct Algorithm {
    percentage_of_nodes_to_score: u32,
    next_start: usize,
    rng: fastrand::Rng,
}

impl Algorithm {
    /// An algorithm scoring `percentage_of_nodes_to_score` percent of the
    /// nodes (0: kube's adaptive default).
    pub fn new(percentage_of_nodes_to_score: u32) -> Self {
        Self {
            percentage_of_nodes_to_score,
            next_start: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// Same, with a fixed RNG seed (reproducible tie-breaking in tests).
    pub fn with_seed(percentage_of_nodes_to_score: u32, seed: u64) -> Self {
        Self {
            percentage_of_nodes_to_score,
            next_start: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Picks a node for `pod`, or says why none fits.
    pub fn schedule(&mut self, cache: &Cache, pod: &PodInfo) -> Result<ScheduleResult, FitError> {
        let live = cache.live_nodes();
        let all = live.len();
        if all == 0 {
            return Err(FitError::new(0, BTreeMap::new(), 0));
        }
        let pre = PreFilter::new(cache, pod);
        let want = num_feasible_nodes_to_find(all, self.percentage_of_nodes_to_score);
        let mut feasible = Vec::with_capacity(want.min(all));
        let mut rejections: Vec<Rejection> = Vec::new();
        let start = self.next_start % all;
        let mut evaluated = 0;
        // A pod naming its node only needs that node checked.
        let named = pod
            .node_name
            .as_ref()
            .and_then(|n| cache.node_by_name(n))
            .filter(|n| n.spec.is_some());
        if let Some(node) = named {
            evaluated = all;
            let id = live
                .iter()
                .copied()
                .find(|&id| std::ptr::eq(cache.node(id), node));
            match (id, pre.filter(node)) {
                (Some(id), Ok(())) => feasible.push(id),
                (_, Err(r)) => rejections.push(r),
                (None, Ok(())) => {}
            }
            for _ in 1..all {
                rejections.push(Rejection::NodeName);
            }
        } else {
            for i in 0..all {
                let id = live[(start + i) % all];
                evaluated += 1;
                match pre.filter(cache.node(id)) {
                    Ok(()) => {
                        feasible.push(id);
                        if feasible.len() >= want {
                            break;
                        }
                    }
                    Err(r) => rejections.push(r),
                }
            }
            self.next_start = (start + evaluated) % all;
        }
        if feasible.is_empty() {
            let mut reasons = BTreeMap::new();
            let mut plugins = 0;
            for r in &rejections {
                plugins |= r.plugin();
                for reason in r.reasons() {
                    *reasons.entry(reason).or_insert(0) += 1;
                }
            }
            return Err(FitError::new(all, reasons, plugins));
        }
        let chosen = if feasible.len() == 1 {
            feasible[0]
        } else {
            let scores = score(cache, pod, &feasible);
            let mut best = scores[0];
            let mut ties = 1u32;
            for s in &scores[1..] {
                if s.score > best.score {
                    best = *s;
                    ties = 1;
                } else if s.score == best.score {
                    ties += 1;
                    if self.rng.u32(0..ties) == 0 {
                        best = *s;
                    }
                }
            }
            best.node
        };
        Ok(ScheduleResult {
            node: cache.node(chosen).name.clone(),
            evaluated,
            feasible: feasible.len(),
        })
    }
}

#[cfg(test)]
#[path = "algorithm_test.rs"]
mod tests;
