//! Builders for nodes and pods in unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, NodeSpec, NodeStatus, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity,
    PodSpec, PreferredSchedulingTerm, ResourceRequirements, Taint, Toleration,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

pub fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A node with `cpu`, `memory` and 110 pods allocatable, labelled
/// `kubernetes.io/hostname=<name>` plus `extra`.
pub fn node(name: &str, cpu: &str, memory: &str, extra: &[(&str, &str)]) -> Node {
    let mut l = labels(extra);
    l.insert("kubernetes.io/hostname".to_owned(), name.to_owned());
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(l),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(memory.to_owned())),
                ("pods".to_owned(), Quantity("110".to_owned())),
            ])),
            ..Default::default()
        }),
    }
}

pub fn taint(node: &mut Node, key: &str, value: &str, effect: &str) {
    node.spec
        .get_or_insert_with(Default::default)
        .taints
        .get_or_insert_with(Vec::new)
        .push(Taint {
            key: key.to_owned(),
            value: (!value.is_empty()).then(|| value.to_owned()),
            effect: effect.to_owned(),
            time_added: None,
        });
}

/// A pending pod in `default` requesting `cpu`/`memory` ("" = none).
pub fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
    let mut req = BTreeMap::new();
    if !cpu.is_empty() {
        req.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
    }
    if !memory.is_empty() {
        req.insert("memory".to_owned(), Quantity(memory.to_owned()));
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".to_owned(),
                resources: Some(ResourceRequirements {
                    requests: Some(req),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

pub fn spec(p: &mut Pod) -> &mut PodSpec {
    p.spec.get_or_insert_with(Default::default)
}

pub fn with_labels(mut p: Pod, l: &[(&str, &str)]) -> Pod {
    p.metadata.labels = Some(labels(l));
    p
}

pub fn in_namespace(mut p: Pod, ns: &str) -> Pod {
    p.metadata.namespace = Some(ns.to_owned());
    p
}

pub fn bound_to(mut p: Pod, node: &str) -> Pod {
    spec(&mut p).node_name = Some(node.to_owned());
    p
}

pub fn owned_by(mut p: Pod, uid: &str) -> Pod {
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "ReplicaSet".to_owned(),
        name: "rs".to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        ..Default::default()
    }]);
    p
}

pub fn tolerate(p: &mut Pod, key: &str, op: &str, value: &str, effect: &str) {
    spec(p)
        .tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: (!key.is_empty()).then(|| key.to_owned()),
            operator: Some(op.to_owned()),
            value: (!value.is_empty()).then(|| value.to_owned()),
            effect: (!effect.is_empty()).then(|| effect.to_owned()),
            toleration_seconds: None,
        });
}

pub fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: op.to_owned(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn affinity(p: &mut Pod) -> &mut Affinity {
    spec(p).affinity.get_or_insert_with(Default::default)
}

/// Required node affinity: `terms` `OR`ed, each a list of expressions `AND`ed.
pub fn require_node_terms(p: &mut Pod, terms: Vec<NodeSelectorTerm>) {
    affinity(p)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: terms,
    });
}

pub fn expr_term(exprs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(exprs),
        match_fields: None,
    }
}

pub fn prefer_node(p: &mut Pod, weight: i32, exprs: Vec<NodeSelectorRequirement>) {
    affinity(p)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(PreferredSchedulingTerm {
            weight,
            preference: expr_term(exprs),
        });
}

pub fn pod_term(sel: &[(&str, &str)], topology: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(labels(sel)),
            match_expressions: None,
        }),
        topology_key: topology.to_owned(),
        ..Default::default()
    }
}

pub fn require_affinity(p: &mut Pod, term: PodAffinityTerm) {
    affinity(p)
        .pod_affinity
        .get_or_insert_with(PodAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(term);
}

pub fn require_anti_affinity(p: &mut Pod, term: PodAffinityTerm) {
    affinity(p)
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(term);
}

pub fn prefer_affinity(p: &mut Pod, weight: i32, term: PodAffinityTerm) {
    affinity(p)
        .pod_affinity
        .get_or_insert_with(PodAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(WeightedPodAffinityTerm {
            weight,
            pod_affinity_term: term,
        });
}

pub fn prefer_anti_affinity(p: &mut Pod, weight: i32, term: PodAffinityTerm) {
    affinity(p)
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(WeightedPodAffinityTerm {
            weight,
            pod_affinity_term: term,
        });
}

pub fn spread(p: &mut Pod, key: &str, max_skew: i32, hard: bool, sel: &[(&str, &str)]) {
    spec(p)
        .topology_spread_constraints
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::TopologySpreadConstraint {
            label_selector: Some(LabelSelector {
                match_labels: Some(labels(sel)),
                match_expressions: None,
            }),
            max_skew,
            topology_key: key.to_owned(),
            when_unsatisfiable: if hard {
                "DoNotSchedule"
            } else {
                "ScheduleAnyway"
            }
            .to_owned(),
            ..Default::default()
        });
}
