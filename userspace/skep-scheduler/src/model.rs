//! The scheduler's compiled view of pods and nodes: selectors, affinity
//! terms, tolerations and requests parsed once from the `k8s-openapi` objects
//! so that filtering a node is a few map lookups.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint as K8sTaint,
    Toleration as K8sToleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::resources::{PodRequests, Resources, parse_units};

/// Labels as they appear on objects.
pub type Labels = BTreeMap<String, String>;

/// The operator of one selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Value is one of the values.
    In,
    /// Value is none of the values (or the key is absent).
    NotIn,
    /// Key present.
    Exists,
    /// Key absent.
    DoesNotExist,
    /// Integer value greater than the single value.
    Gt,
    /// Integer value less than the single value.
    Lt,
    /// An invalid requirement: matches nothing.
    Invalid,
}

/// One `key op values` requirement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// Label key (or field name for `matchFields`).
    pub key: String,
    /// Operator.
    pub op: Op,
    /// Values, sorted.
    pub values: Vec<String>,
}

impl Requirement {
    fn new(key: &str, op: &str, values: Option<&Vec<String>>) -> Self {
        let mut values: Vec<String> = values.cloned().unwrap_or_default();
        values.sort();
        values.dedup();
        let op = match op {
            "In" if !values.is_empty() => Op::In,
            "NotIn" if !values.is_empty() => Op::NotIn,
            "Exists" if values.is_empty() => Op::Exists,
            "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
            "Gt" if values.len() == 1 && values[0].parse::<i64>().is_ok() => Op::Gt,
            "Lt" if values.len() == 1 && values[0].parse::<i64>().is_ok() => Op::Lt,
            _ => Op::Invalid,
        };
        Self {
            key: key.to_owned(),
            op,
            values,
        }
    }

    /// Whether a (possibly absent) value satisfies the requirement.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        match self.op {
            Op::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
            Op::Invalid => false,
        }
    }

    /// Whether labels satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }
}

/// A compiled `metav1.LabelSelector`: requirements `AND`ed; `nothing` for a
/// null selector (matches no object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    /// The requirements, `AND`ed (empty: everything).
    pub requirements: Vec<Requirement>,
    /// A null selector matches nothing.
    pub nothing: bool,
}

impl Selector {
    /// Compiles a label selector; `None` matches nothing, like
    /// `metav1.LabelSelectorAsSelector(nil)`.
    pub fn from_label_selector(s: Option<&LabelSelector>) -> Self {
        let Some(s) = s else {
            return Self {
                requirements: Vec::new(),
                nothing: true,
            };
        };
        let mut requirements = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: k.clone(),
                op: Op::In,
                values: vec![v.clone()],
            });
        }
        for e in s.match_expressions.iter().flatten() {
            requirements.push(Requirement::new(&e.key, &e.operator, e.values.as_ref()));
        }
        Self {
            requirements,
            nothing: false,
        }
    }

    /// Whether labels satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// A compiled `NodeSelectorTerm` (expressions on labels, fields on
/// `metadata.name`); an empty term matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    /// Label requirements.
    pub expressions: Vec<Requirement>,
    /// Field requirements (only `metadata.name` is valid).
    pub fields: Vec<Requirement>,
}

impl NodeTerm {
    fn from_term(t: &NodeSelectorTerm) -> Self {
        let conv = |v: &Option<Vec<NodeSelectorRequirement>>| -> Vec<Requirement> {
            v.iter()
                .flatten()
                .map(|r| Requirement::new(&r.key, &r.operator, r.values.as_ref()))
                .collect()
        };
        let mut fields = conv(&t.match_fields);
        for f in &mut fields {
            if f.key != "metadata.name" || !matches!(f.op, Op::In | Op::NotIn) {
                f.op = Op::Invalid;
            }
        }
        Self {
            expressions: conv(&t.match_expressions),
            fields,
        }
    }

    /// Whether a node with these labels and name satisfies the term.
    pub fn matches(&self, labels: &Labels, name: &str) -> bool {
        if self.expressions.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.expressions.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| r.matches_value(Some(name)))
    }
}

/// A taint's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Do not schedule new pods.
    NoSchedule,
    /// Avoid scheduling new pods (scoring only).
    PreferNoSchedule,
    /// Do not schedule; evict running pods.
    NoExecute,
    /// Unknown effect string.
    Other,
}

impl Effect {
    fn parse(s: &str) -> Self {
        match s {
            "NoSchedule" => Self::NoSchedule,
            "PreferNoSchedule" => Self::PreferNoSchedule,
            "NoExecute" => Self::NoExecute,
            _ => Self::Other,
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (empty when unset).
    pub value: String,
    /// Effect.
    pub effect: Effect,
}

impl Taint {
    fn from_k8s(t: &K8sTaint) -> Self {
        Self {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: Effect::parse(&t.effect),
        }
    }
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    /// Key (empty with `Exists`: every key).
    pub key: String,
    /// `Exists` (any value) rather than `Equal`.
    pub exists: bool,
    /// Value for `Equal`.
    pub value: String,
    /// Effect (`None`: every effect).
    pub effect: Option<Effect>,
}

impl Toleration {
    fn from_k8s(t: &K8sToleration) -> Self {
        Self {
            key: t.key.clone().unwrap_or_default(),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect: t
                .effect
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(Effect::parse),
        }
    }

    /// Whether this toleration tolerates `taint`, like `v1.Toleration.ToleratesTaint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        self.exists || self.value == taint.value
    }
}

/// Which namespaces an affinity term looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespaces {
    /// Listed names (the owner pod's own namespace when nothing is given).
    pub names: Vec<String>,
    /// `namespaceSelector` on namespace labels (`Some(empty)`: all).
    pub selector: Option<Selector>,
}

impl Namespaces {
    /// Whether namespace `ns` (with labels from `ns_labels`) is in the set.
    pub fn contains(&self, ns: &str, ns_labels: impl FnOnce(&str) -> Option<Labels>) -> bool {
        if self.names.iter().any(|n| n == ns) {
            return true;
        }
        match &self.selector {
            None => false,
            Some(s) if s.requirements.is_empty() && !s.nothing => true,
            Some(s) => s.matches(&ns_labels(ns).unwrap_or_default()),
        }
    }

    /// True when the set is every namespace.
    pub fn is_all(&self) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| s.requirements.is_empty() && !s.nothing)
    }
}

/// A compiled `PodAffinityTerm` resolved against its owner pod (namespace
/// defaulting and `matchLabelKeys`/`mismatchLabelKeys` merged in).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AffinityTerm {
    /// Namespaces searched.
    pub namespaces: Namespaces,
    /// Which pods the term is about.
    pub selector: Selector,
    /// Node label whose value is the topology domain.
    pub topology_key: String,
}

impl AffinityTerm {
    fn from_term(t: &PodAffinityTerm, owner_ns: &str, owner_labels: &Labels) -> Self {
        let mut selector = Selector::from_label_selector(t.label_selector.as_ref());
        if t.label_selector.is_some() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = owner_labels.get(k) {
                    selector.requirements.push(Requirement {
                        key: k.clone(),
                        op: Op::In,
                        values: vec![v.clone()],
                    });
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = owner_labels.get(k) {
                    selector.requirements.push(Requirement {
                        key: k.clone(),
                        op: Op::NotIn,
                        values: vec![v.clone()],
                    });
                }
            }
        }
        let mut names: Vec<String> = t.namespaces.clone().unwrap_or_default();
        let ns_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)));
        if names.is_empty() && ns_selector.is_none() {
            names.push(owner_ns.to_owned());
        }
        names.sort();
        names.dedup();
        Self {
            namespaces: Namespaces {
                names,
                selector: ns_selector,
            },
            selector,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether `pod` is one of the pods this term is about.
    pub fn matches_pod(
        &self,
        pod: &PodInfo,
        ns_labels: impl FnOnce(&str) -> Option<Labels>,
    ) -> bool {
        self.namespaces.contains(&pod.namespace, ns_labels) && self.selector.matches(&pod.labels)
    }
}

/// A compiled `topologySpreadConstraints` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    /// Largest allowed difference between a domain's count and the minimum.
    pub max_skew: i64,
    /// Node label whose value is the domain.
    pub topology_key: String,
    /// `DoNotSchedule` (a filter) rather than `ScheduleAnyway` (a score).
    pub hard: bool,
    /// Which pods (in the pod's namespace) are counted.
    pub selector: Selector,
    /// `minDomains`: fewer eligible domains make the global minimum 0.
    pub min_domains: Option<usize>,
    /// `nodeAffinityPolicy: Honor` (default): only nodes matching the pod's
    /// node affinity/selector are domains.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor`: nodes with untolerated taints are not.
    pub honor_taints: bool,
}

impl SpreadConstraint {
    fn from_k8s(c: &k8s_openapi::api::core::v1::TopologySpreadConstraint, labels: &Labels) -> Self {
        let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = labels.get(k) {
                selector.requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::In,
                    values: vec![v.clone()],
                });
            }
        }
        Self {
            max_skew: i64::from(c.max_skew.max(1)),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable == "DoNotSchedule",
            selector,
            min_domains: c
                .min_domains
                .and_then(|m| usize::try_from(m).ok())
                .filter(|&m| m > 0),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }
}

/// Everything the scheduler needs from a pod, compiled once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid` (empty when unset).
    pub uid: String,
    /// Labels.
    pub labels: Labels,
    /// `spec.nodeName` when set.
    pub node_name: Option<String>,
    /// `spec.schedulerName` (default `default-scheduler`).
    pub scheduler_name: String,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Requests.
    pub requests: PodRequests,
    /// `spec.nodeSelector`.
    pub node_selector: Vec<(String, String)>,
    /// Required node affinity terms (`OR`ed); `None` when not set.
    pub required_node_terms: Option<Vec<NodeTerm>>,
    /// Preferred node affinity terms with weights.
    pub preferred_node_terms: Vec<(i32, NodeTerm)>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Required pod affinity terms.
    pub affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms with weights.
    pub preferred_affinity: Vec<(i32, AffinityTerm)>,
    /// Preferred pod anti-affinity terms with weights.
    pub preferred_anti_affinity: Vec<(i32, AffinityTerm)>,
    /// `topologySpreadConstraints`.
    pub spread: Vec<SpreadConstraint>,
    /// UID of the controlling owner (`ownerReferences[controller=true]`),
    /// the group default spreading spreads.
    pub owner: Option<String>,
    /// The original object, for binders.
    pub pod: Arc<Pod>,
}

impl PodInfo {
    /// Compiles a pod.
    pub fn new(pod: Pod) -> Self {
        let meta = &pod.metadata;
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = meta.name.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_aff = affinity.node_affinity.unwrap_or_default();
        let required_node_terms = node_aff
            .required_during_scheduling_ignored_during_execution
            .map(|s| {
                s.node_selector_terms
                    .iter()
                    .map(NodeTerm::from_term)
                    .collect()
            });
        let preferred_node_terms = node_aff
            .preferred_during_scheduling_ignored_during_execution
            .unwrap_or_default()
            .iter()
            .filter(|p| p.weight != 0)
            .map(|p| (p.weight, NodeTerm::from_term(&p.preference)))
            .filter(|(_, t)| !(t.expressions.is_empty() && t.fields.is_empty()))
            .collect();
        let compile = |terms: Option<Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .unwrap_or_default()
                .iter()
                .map(|t| AffinityTerm::from_term(t, &namespace, &labels))
                .collect()
        };
        let compile_weighted =
            |terms: Option<Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .unwrap_or_default()
                    .iter()
                    .map(|w| {
                        (
                            w.weight,
                            AffinityTerm::from_term(&w.pod_affinity_term, &namespace, &labels),
                        )
                    })
                    .collect::<Vec<_>>()
            };
        let pa = affinity.pod_affinity.unwrap_or_default();
        let paa = affinity.pod_anti_affinity.unwrap_or_default();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let spread = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| SpreadConstraint::from_k8s(c, &labels))
            .collect();
        Self {
            key: format!("{namespace}/{name}"),
            spread,
            uid: meta.uid.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .unwrap_or_else(|| "default-scheduler".to_owned()),
            priority: spec.priority.unwrap_or(0),
            requests: PodRequests::of(&spec),
            node_selector: spec
                .node_selector
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            required_node_terms,
            preferred_node_terms,
            tolerations: spec
                .tolerations
                .iter()
                .flatten()
                .map(Toleration::from_k8s)
                .collect(),
            affinity: compile(pa.required_during_scheduling_ignored_during_execution),
            anti_affinity: compile(paa.required_during_scheduling_ignored_during_execution),
            preferred_affinity: compile_weighted(
                pa.preferred_during_scheduling_ignored_during_execution,
            ),
            preferred_anti_affinity: compile_weighted(
                paa.preferred_during_scheduling_ignored_during_execution,
            ),
            owner,
            namespace,
            name,
            labels,
            pod: Arc::new(pod),
        }
    }

    /// Whether the pod tolerates `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.tolerations.iter().any(|t| t.tolerates(taint))
    }

    /// Whether the pod has any inter-pod (anti-)affinity term.
    pub fn has_pod_affinity(&self) -> bool {
        !(self.affinity.is_empty()
            && self.anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// Everything the scheduler needs from a node, compiled once per update.
#[derive(Debug, Clone, Default)]
pub struct NodeSpecInfo {
    /// Labels.
    pub labels: Labels,
    /// Taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.allocatable` (cpu, memory, ephemeral-storage, scalars).
    pub allocatable: Resources,
    /// `status.allocatable.pods`.
    pub allowed_pods: i64,
}

impl NodeSpecInfo {
    /// Compiles a node.
    pub fn new(node: &Node) -> Self {
        let spec = node.spec.clone().unwrap_or_default();
        let alloc = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.clone().or_else(|| s.capacity.clone()))
            .unwrap_or_default();
        Self {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.taints.iter().flatten().map(Taint::from_k8s).collect(),
            unschedulable: spec.unschedulable.unwrap_or(false),
            allocatable: Resources::from_list(&alloc),
            allowed_pods: alloc
                .get("pods")
                .and_then(|q| parse_units(&q.0))
                .unwrap_or(0),
        }
    }
}
