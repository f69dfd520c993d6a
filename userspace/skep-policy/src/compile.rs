//! The compiler: cluster objects in, one node's [`PolicyState`] out.
//!
//! 1. Pods are grouped into identities (namespace, labels, named ports).
//! 2. Each `NetworkPolicy` is parsed once into selectors, peers and ports
//!    ([`ParsedPolicy`]); a policy matters to this node when its
//!    `podSelector` selects a local identity.
//! 3. The CIDRs of the policies that matter get CIDR identities; the
//!    ipcache maps them and every pod's /32 (with its longest containing
//!    CIDR's identity).
//! 4. For every local identity and every policy selecting it, each rule's
//!    peers × ports become rule entries. Peers are resolved once per rule,
//!    not per local identity.
//!
//! Rules exist only for local isolated identities, so the rules map grows
//! with the local pods and the policies selecting them, not with the
//! cluster. Malformed content the API server should have refused (an
//! unparsable CIDR, an unknown protocol, `endPort` below `port`) makes that
//! peer or port match nothing, never everything.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};
use skep_api::selector;
use skep_ebpf_common::Direction;
use skep_ebpf_common::policy::{
    IDENTITY_ANY, IPCACHE_PREFIX_HOST, POLICY_EGRESS_ISOLATED, POLICY_INGRESS_ISOLATED,
    PeerIdentity, PolicyEndpoint, PolicyKey, PolicyValue,
};

use crate::cidr::{Cidr, CidrSet};
use crate::identity::{Identities, PodIdentityKey};
use crate::pod::{NamedPort, PolicyPod, protocol_number};
use crate::ports::{PortMatch, range_blocks};
use crate::state::PolicyState;

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Compiles the policy maps of `node` from every pod, namespace and
/// network policy of the cluster. Allocates identities from `ids` (the
/// same keys keep their ids) and releases the ids it no longer needs.
#[tracing::instrument(skip_all, fields(node, pods = pods.len(), policies = policies.len()))]
pub fn compile(
    node: &str,
    pods: &[PolicyPod],
    namespaces: &[Namespace],
    policies: &[NetworkPolicy],
    ids: &mut Identities,
) -> PolicyState {
    let mut state = PolicyState::default();
    let ns_labels = namespace_labels(namespaces, pods);
    let idents = pod_identities(node, pods, ids);
    let relevant = relevant_policies(policies, &idents, ids, &mut state);
    let (cidrs, cidr_ids) = cidr_identities(&relevant, ids, &mut state);
    pod_entries(node, &idents, &cidrs, &cidr_ids, &mut state);
    let resolver = Resolver {
        idents: &idents,
        ns_labels: &ns_labels,
        cidrs: &cidrs,
        cidr_ids: &cidr_ids,
        empty: &Map::new(),
    };
    let isolation = rules(&relevant, &resolver, &mut state);
    // Endpoints: only the isolated local pods.
    state.endpoints.retain(|_, ep| {
        ep.flags = isolation.get(&ep.identity).copied().unwrap_or(0);
        ep.flags != 0
    });
    let released = ids.gc();
    tracing::debug!(
        endpoints = state.endpoints.len(),
        ipcache = state.ipcache.len(),
        rules = state.rules.len(),
        released,
        "compiled network policy"
    );
    state
}

/// Groups the cluster's pods into identities and numbers them.
fn pod_identities<'a>(node: &str, pods: &'a [PolicyPod], ids: &mut Identities) -> Vec<Ident<'a>> {
    let mut groups: BTreeMap<PodIdentityKey, Vec<&PolicyPod>> = BTreeMap::new();
    for pod in pods {
        groups.entry(PodIdentityKey::of(pod)).or_default().push(pod);
    }
    let mut idents = Vec::with_capacity(groups.len());
    for (key, members) in groups {
        let Some(id) = ids.pod(&key) else {
            tracing::error!(namespace = %key.namespace, "failed to allocate a pod identity: all in use");
            continue;
        };
        idents.push(Ident {
            id,
            local: members.iter().any(|p| p.node == node),
            labels: json_labels(&key.labels),
            key,
            members,
        });
    }
    idents
}

/// A policy that selects a local identity: its id, itself, and the
/// indexes of the local identities it selects.
struct Relevant {
    id: u32,
    policy: ParsedPolicy,
    selected: Vec<usize>,
}

/// The policies selecting a local identity (numbered, named in `state`).
fn relevant_policies(
    policies: &[NetworkPolicy],
    idents: &[Ident<'_>],
    ids: &mut Identities,
    state: &mut PolicyState,
) -> Vec<Relevant> {
    let mut relevant = Vec::new();
    for policy in policies {
        let parsed = ParsedPolicy::parse(policy);
        if parsed.ingress.is_none() && parsed.egress.is_none() {
            continue;
        }
        let selected: Vec<usize> = idents
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.local
                    && i.key.namespace == parsed.namespace
                    && parsed.pod_selector.matches(&i.labels)
            })
            .map(|(n, _)| n)
            .collect();
        if selected.is_empty() {
            continue;
        }
        let Some(id) = ids.policy(&parsed.key) else {
            tracing::error!(policy = %parsed.key, "failed to allocate a policy id: all in use");
            continue;
        };
        state.policy_names.insert(id, parsed.key.clone());
        relevant.push(Relevant {
            id,
            policy: parsed,
            selected,
        });
    }
    relevant
}

/// Numbers every CIDR (`cidr` and `except`) of the relevant policies and
/// puts each in the ipcache as its own longest match.
fn cidr_identities(
    relevant: &[Relevant],
    ids: &mut Identities,
    state: &mut PolicyState,
) -> (CidrSet, BTreeMap<Cidr, u32>) {
    let mut cidrs = CidrSet::default();
    for r in relevant {
        for rule in r.policy.rules() {
            for peer in rule.peers.iter().flatten() {
                if let Peer::Block { cidr, except } = peer {
                    cidrs.insert(*cidr);
                    for &e in except {
                        cidrs.insert(e);
                    }
                }
            }
        }
    }
    let mut cidr_ids = BTreeMap::new();
    for cidr in cidrs.iter() {
        let Some(id) = ids.cidr(cidr) else {
            tracing::error!(%cidr, "failed to allocate a CIDR identity: all in use");
            continue;
        };
        cidr_ids.insert(cidr, id);
        let entry = PeerIdentity { pod: 0, cidr: id };
        state
            .ipcache
            .insert((cidr.addr(), u32::from(cidr.prefix_len())), entry);
    }
    (cidrs, cidr_ids)
}

/// Every pod's /32 in the ipcache (with its longest policy CIDR) and its
/// name; the local ones as (not yet flagged) endpoints.
fn pod_entries(
    node: &str,
    idents: &[Ident<'_>],
    cidrs: &CidrSet,
    cidr_ids: &BTreeMap<Cidr, u32>,
    state: &mut PolicyState,
) {
    for ident in idents {
        for pod in &ident.members {
            if let Some(other) = state.peer_names.get(&pod.ip) {
                tracing::debug!(ip = %pod.ip, first = %other, pod = %pod.key(), "two pods share an address; keeping the first");
                continue;
            }
            state.peer_names.insert(pod.ip, pod.key());
            let cidr = cidrs
                .longest_containing(pod.ip)
                .and_then(|c| cidr_ids.get(&c).copied())
                .unwrap_or(0);
            let entry = PeerIdentity {
                pod: ident.id,
                cidr,
            };
            state.ipcache.insert((pod.ip, IPCACHE_PREFIX_HOST), entry);
            if pod.node == node {
                let ep = PolicyEndpoint {
                    identity: ident.id,
                    flags: 0,
                };
                state.endpoints.insert(pod.ip, ep);
            }
        }
    }
}

/// The rule entries of every relevant policy for the local identities it
/// selects; returns the isolation flags per local identity.
fn rules(
    relevant: &[Relevant],
    resolver: &Resolver<'_>,
    state: &mut PolicyState,
) -> BTreeMap<u32, u32> {
    let mut isolation: BTreeMap<u32, u32> = BTreeMap::new();
    for r in relevant {
        for (direction, rules, flag) in [
            (
                Direction::Ingress,
                &r.policy.ingress,
                POLICY_INGRESS_ISOLATED,
            ),
            (Direction::Egress, &r.policy.egress, POLICY_EGRESS_ISOLATED),
        ] {
            let Some(rules) = rules else { continue };
            for &n in &r.selected {
                *isolation.entry(resolver.idents[n].id).or_default() |= flag;
            }
            for rule in rules {
                let peers = resolver.peers(&r.policy.namespace, rule);
                for &n in &r.selected {
                    let local = &resolver.idents[n];
                    let mut emit = |peer: u32, m: PortMatch| {
                        let mut key = PolicyKey {
                            endpoint: local.id,
                            peer,
                            direction: direction as u8,
                            proto: 0,
                            port: 0,
                        };
                        let len = m.apply(&mut key);
                        state
                            .rules
                            .entry((key, len))
                            .and_modify(|v| v.policy = v.policy.min(r.id))
                            .or_insert(PolicyValue { policy: r.id });
                    };
                    let ports = &local.key.named_ports;
                    emit_rule(direction, rule, &peers, ports, resolver.idents, &mut emit);
                }
            }
        }
    }
    isolation
}

/// Writes the entries of one rule for one local identity through `emit`
/// (peer identity, port match).
fn emit_rule(
    direction: Direction,
    rule: &Rule,
    peers: &[PeerRef],
    local_ports: &BTreeSet<NamedPort>,
    idents: &[Ident<'_>],
    emit: &mut impl FnMut(u32, PortMatch),
) {
    let Some(ports) = &rule.ports else {
        for p in peers {
            emit(p.id(), PortMatch::AnyProto);
        }
        return;
    };
    for port in ports {
        match port {
            PortSpec::Matches(matches) => {
                for peer in peers {
                    for &m in matches {
                        emit(peer.id(), m);
                    }
                }
            }
            // Ingress: the name is the local pod's own port.
            PortSpec::Named { name, proto } if direction == Direction::Ingress => {
                for m in resolve_named(local_ports, name, *proto) {
                    for p in peers {
                        emit(p.id(), m);
                    }
                }
            }
            // Egress: the name is each destination pod's port. "Any peer"
            // means every pod identity that has it; a CIDR peer has no
            // named ports (it may not be a pod at all), so matches nothing.
            PortSpec::Named { name, proto } => {
                for peer in peers {
                    match peer {
                        PeerRef::Pod(_, n) => {
                            let i = &idents[*n];
                            for m in resolve_named(&i.key.named_ports, name, *proto) {
                                emit(i.id, m);
                            }
                        }
                        PeerRef::Any => {
                            for i in idents {
                                for m in resolve_named(&i.key.named_ports, name, *proto) {
                                    emit(i.id, m);
                                }
                            }
                        }
                        PeerRef::Cidr(_) => {}
                    }
                }
            }
        }
    }
}

/// The ports a named port resolves to on a pod (one per container port of
/// that name and protocol; normally zero or one).
fn resolve_named<'a>(
    ports: &'a BTreeSet<NamedPort>,
    name: &'a str,
    proto: u8,
) -> impl Iterator<Item = PortMatch> + 'a {
    ports
        .iter()
        .filter(move |p| p.name == name && p.protocol == proto)
        .map(move |p| PortMatch::port(proto, p.port))
}

/// One pod identity being compiled.
struct Ident<'a> {
    id: u32,
    key: PodIdentityKey,
    labels: Map<String, Value>,
    /// Whether a member pod runs on this node.
    local: bool,
    members: Vec<&'a PolicyPod>,
}

/// A resolved peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PeerRef {
    /// Any address at all.
    Any,
    /// A pod identity: its id and its index in the identities.
    Pod(u32, usize),
    /// A CIDR identity.
    Cidr(u32),
}

impl PeerRef {
    /// The peer identity of its rule keys.
    fn id(self) -> u32 {
        match self {
            Self::Any => IDENTITY_ANY,
            Self::Pod(id, _) | Self::Cidr(id) => id,
        }
    }
}

/// Resolves rule peers against the cluster's identities and CIDRs.
struct Resolver<'a> {
    idents: &'a [Ident<'a>],
    ns_labels: &'a BTreeMap<String, Map<String, Value>>,
    cidrs: &'a CidrSet,
    cidr_ids: &'a BTreeMap<Cidr, u32>,
    empty: &'a Map<String, Value>,
}

impl Resolver<'_> {
    /// The peers of a rule of a policy in `namespace`, deduplicated.
    fn peers(&self, namespace: &str, rule: &Rule) -> Vec<PeerRef> {
        let Some(peers) = &rule.peers else {
            return vec![PeerRef::Any];
        };
        let mut out = BTreeSet::new();
        for peer in peers {
            match peer {
                Peer::Nothing => {}
                Peer::Pods { namespaces, pods } => {
                    for (n, ident) in self.idents.iter().enumerate() {
                        let ns_ok = match namespaces {
                            None => ident.key.namespace == namespace,
                            Some(sel) => sel.matches(
                                self.ns_labels
                                    .get(&ident.key.namespace)
                                    .unwrap_or(self.empty),
                            ),
                        };
                        if ns_ok && pods.as_ref().is_none_or(|sel| sel.matches(&ident.labels)) {
                            out.insert(PeerRef::Pod(ident.id, n));
                        }
                    }
                }
                Peer::Block { cidr, except } => {
                    // An address is in `cidr` and in no `except` exactly when
                    // its longest-match CIDR identity P has P ⊆ cidr and no
                    // except E has P ⊆ E (prefixes nest; cidr and excepts
                    // are all in the set).
                    for p in self.cidrs.subsets_of(*cidr) {
                        if except.iter().any(|&e| p.is_subset_of(e)) {
                            continue;
                        }
                        if let Some(&id) = self.cidr_ids.get(&p) {
                            out.insert(PeerRef::Cidr(id));
                        }
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

/// A parsed `NetworkPolicy`.
struct ParsedPolicy {
    /// `namespace/name`.
    key: String,
    namespace: String,
    pod_selector: selector::LabelSelector,
    /// The ingress rules if the policy isolates ingress.
    ingress: Option<Vec<Rule>>,
    /// The egress rules if the policy isolates egress.
    egress: Option<Vec<Rule>>,
}

/// One ingress or egress rule.
struct Rule {
    /// `None`: any peer (`from`/`to` missing or empty).
    peers: Option<Vec<Peer>>,
    /// `None`: any protocol and port (`ports` missing or empty).
    ports: Option<Vec<PortSpec>>,
}

/// One `from`/`to` entry.
enum Peer {
    /// Pods by selectors; a missing namespace selector means the policy's
    /// own namespace, a missing pod selector every pod.
    Pods {
        namespaces: Option<selector::LabelSelector>,
        pods: Option<selector::LabelSelector>,
    },
    /// An `ipBlock`.
    Block { cidr: Cidr, except: Vec<Cidr> },
    /// Invalid: matches nothing.
    Nothing,
}

/// One `ports` entry.
enum PortSpec {
    /// Numeric: any port of a protocol, a port, or a range as blocks
    /// (empty when invalid).
    Matches(Vec<PortMatch>),
    /// A named port of a protocol.
    Named { name: String, proto: u8 },
}

impl ParsedPolicy {
    fn parse(policy: &NetworkPolicy) -> Self {
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        let key = format!(
            "{namespace}/{}",
            policy.metadata.name.as_deref().unwrap_or_default()
        );
        let spec = policy.spec.clone().unwrap_or_default();
        // Defaulting as the API server does when policyTypes is empty:
        // Ingress always, Egress when there are egress rules.
        let types: Vec<String> = match spec.policy_types {
            Some(t) if !t.is_empty() => t,
            _ => {
                let mut t = vec!["Ingress".to_owned()];
                if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    t.push("Egress".to_owned());
                }
                t
            }
        };
        let has = |t: &str| types.iter().any(|x| x == t);
        // A missing podSelector is Go's zero value: `{}`, every pod.
        let pod_selector = compile_selector(&key, Some(&spec.pod_selector.unwrap_or_default()));
        let ingress = has("Ingress").then(|| {
            spec.ingress
                .iter()
                .flatten()
                .map(|r: &NetworkPolicyIngressRule| {
                    Rule::parse(&key, r.from.as_deref(), r.ports.as_deref())
                })
                .collect()
        });
        let egress = has("Egress").then(|| {
            spec.egress
                .iter()
                .flatten()
                .map(|r: &NetworkPolicyEgressRule| {
                    Rule::parse(&key, r.to.as_deref(), r.ports.as_deref())
                })
                .collect()
        });
        Self {
            key,
            namespace,
            pod_selector,
            ingress,
            egress,
        }
    }

    /// Every rule of both directions.
    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.ingress.iter().chain(&self.egress).flatten()
    }
}

impl Rule {
    fn parse(
        policy: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> Self {
        Self {
            peers: peers
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(|peer| Peer::parse(policy, peer)).collect()),
            ports: ports
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(|port| PortSpec::parse(policy, port)).collect()),
        }
    }
}

impl Peer {
    fn parse(policy: &str, peer: &NetworkPolicyPeer) -> Self {
        if let Some(block) = &peer.ip_block {
            let parsed = std::iter::once(&block.cidr)
                .chain(block.except.iter().flatten())
                .map(|c| c.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>();
            return match parsed {
                Ok(mut all) => {
                    let cidr = all.remove(0);
                    Self::Block { cidr, except: all }
                }
                Err(err) => {
                    tracing::warn!(policy, %err, "ipBlock matches nothing");
                    Self::Nothing
                }
            };
        }
        if peer.namespace_selector.is_none() && peer.pod_selector.is_none() {
            tracing::warn!(
                policy,
                "a peer without selectors or ipBlock matches nothing"
            );
            return Self::Nothing;
        }
        Self::Pods {
            namespaces: peer
                .namespace_selector
                .as_ref()
                .map(|s| compile_selector(policy, Some(s))),
            pods: peer
                .pod_selector
                .as_ref()
                .map(|s| compile_selector(policy, Some(s))),
        }
    }
}

impl PortSpec {
    fn parse(policy: &str, port: &NetworkPolicyPort) -> Self {
        let Some(proto) = protocol_number(port.protocol.as_deref()) else {
            tracing::warn!(policy, protocol = ?port.protocol, "unknown protocol matches nothing");
            return Self::Matches(Vec::new());
        };
        match &port.port {
            None => Self::Matches(vec![PortMatch::Proto(proto)]),
            Some(IntOrString::String(name)) => Self::Named {
                name: name.clone(),
                proto,
            },
            Some(IntOrString::Int(first)) => {
                let last = port.end_port.unwrap_or(*first);
                match (u16::try_from(*first), u16::try_from(last)) {
                    (Ok(first), Ok(last)) if first > 0 && first <= last => {
                        Self::Matches(range_blocks(proto, first, last))
                    }
                    _ => {
                        tracing::warn!(policy, first, last, "invalid port range matches nothing");
                        Self::Matches(Vec::new())
                    }
                }
            }
        }
    }
}

/// skep's label-selector matcher for a typed selector; one that cannot be
/// used (an unknown operator) selects nothing.
fn compile_selector(policy: &str, sel: Option<&LabelSelector>) -> selector::LabelSelector {
    let value = sel
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    selector::LabelSelector::from_value(&value).unwrap_or_else(|err| {
        tracing::warn!(policy, ?err, "label selector selects nothing");
        selector::LabelSelector {
            requirements: Vec::new(),
            match_nothing: true,
        }
    })
}

/// Labels as the selector matcher takes them.
fn json_labels(labels: &BTreeMap<String, String>) -> Map<String, Value> {
    labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// Every namespace's labels, with `kubernetes.io/metadata.name` added when
/// missing, including namespaces only known from their pods.
fn namespace_labels(
    namespaces: &[Namespace],
    pods: &[PolicyPod],
) -> BTreeMap<String, Map<String, Value>> {
    let mut out: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for ns in namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns
            .metadata
            .labels
            .as_ref()
            .map(json_labels)
            .unwrap_or_default();
        out.insert(name, labels);
    }
    for pod in pods {
        out.entry(pod.namespace.clone()).or_default();
    }
    for (name, labels) in &mut out {
        labels
            .entry(NAMESPACE_NAME_LABEL)
            .or_insert_with(|| Value::String(name.clone()));
    }
    out
}
