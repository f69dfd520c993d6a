//! The iptables baseline of `bench policy`: Kubernetes `NetworkPolicy`
//! objects rendered the way Calico's Felix renders them in iptables mode,
//! as one `ipset restore` and one `iptables-restore` input for the node.
//!
//! - `FORWARD` jumps to `cali-FORWARD`, which accepts `ESTABLISHED,RELATED`
//!   first (so only a connection's first packet walks the policy), drops
//!   `INVALID`, then dispatches by interface: `cali-from-wl-dispatch`
//!   (`-i`) and `cali-to-wl-dispatch` (`-o`), each split into one
//!   sub-chain per interface-name character after `cali` as Felix splits
//!   large dispatch tables, `-g` to the endpoint's `cali-fw-<if>` (traffic
//!   from the pod: egress) or `cali-tw-<if>` (to the pod: ingress).
//! - An endpoint chain clears the accept mark, then for each policy that
//!   selects the pod in that direction jumps to its `cali-pi-<hash>`
//!   (ingress) or `cali-po-<hash>` (egress) chain and returns when the mark
//!   is set; an isolated endpoint's chain ends in `DROP`, an unisolated one
//!   returns (Calico's namespace profile allows).
//! - A policy chain has, per rule, per peer and per protocol, one rule that
//!   sets the accept mark, followed by a `RETURN` on the mark. Peers: a
//!   pod/namespace selector is a `hash:net` ipset of the selected pods'
//!   /32s (one set per distinct selector, shared); the ipBlocks of a rule
//!   that have no `except` are one `hash:net` set (Felix itself would write
//!   one rule per ipBlock; one set is the faster choice, and the one the
//!   brief asks for); an ipBlock with `except` is its CIDR plus a negated
//!   `hash:net` set of the exceptions. Ports: numbers and ranges through
//!   `multiport` (15 per rule, a range counting two); named ports through a
//!   `hash:ip,port` set of (pod, protocol:port) resolved against the
//!   destination pods (the selected pods for ingress, the peers for egress),
//!   as Felix does. A named port with an ipBlock peer matches nothing here.
//!
//! Names are hashes of what they stand for (Felix uses SHA-224 in base64;
//! the names' only job is to be unique and short enough).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

/// Felix's accept mark.
const ACCEPT_MARK: &str = "0x10000/0x10000";
/// Ports one `multiport` match takes (a range counts two).
const MULTIPORT_MAX: usize = 15;

/// 64-bit FNV-1a of `what`, as hex: stable, unique enough for names.
fn hash(what: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A pod's host interface: `cali` + 11 hex characters of a hash of
/// `namespace.name` (Felix uses SHA-1; the shape is the same).
pub fn interface(namespace: &str, name: &str) -> String {
    format!("cali{}", &hash(&format!("{namespace}.{name}"))[..11])
}

/// Whether `selector` selects `labels` (`matchLabels` and `matchExpressions`
/// with `In`, `NotIn`, `Exists`, `DoesNotExist`; an unknown operator
/// selects nothing).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// What the renderer needs of a pod.
struct PodFacts<'a> {
    namespace: &'a str,
    name: &'a str,
    ip: Ipv4Addr,
    node: Option<&'a str>,
    labels: BTreeMap<String, String>,
    /// (name, protocol, port) of every container port with a name.
    named_ports: Vec<(&'a str, &'a str, i32)>,
}

impl<'a> PodFacts<'a> {
    fn of(pod: &'a Pod) -> Option<Self> {
        let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
        let spec = pod.spec.as_ref()?;
        Some(Self {
            namespace: pod.metadata.namespace.as_deref()?,
            name: pod.metadata.name.as_deref()?,
            ip,
            node: spec.node_name.as_deref(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            named_ports: spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| {
                    Some((
                        p.name.as_deref()?,
                        p.protocol.as_deref().unwrap_or("TCP"),
                        p.container_port,
                    ))
                })
                .collect(),
        })
    }
}

/// The direction a policy chain judges.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    /// Which end of the packet the peer is.
    fn peer_end(self) -> &'static str {
        match self {
            Self::Ingress => "src",
            Self::Egress => "dst",
        }
    }
}

/// The ipsets and chains being built.
#[derive(Default)]
struct Out {
    /// Set name → (type, members).
    sets: BTreeMap<String, (&'static str, BTreeSet<String>)>,
    /// Chain name → rules (without `-A <chain>`).
    chains: BTreeMap<String, Vec<String>>,
}

impl Out {
    fn set(
        &mut self,
        kind: &'static str,
        prefix: &str,
        key: &str,
        members: BTreeSet<String>,
    ) -> String {
        let name = format!("{prefix}{}", hash(key));
        self.sets.entry(name.clone()).or_insert((kind, members));
        name
    }

    fn rule(&mut self, chain: &str, rule: String) {
        self.chains.entry(chain.to_owned()).or_default().push(rule);
    }
}

/// The cluster as the renderer sees it.
struct Cluster<'a> {
    pods: Vec<PodFacts<'a>>,
    namespace_labels: BTreeMap<&'a str, BTreeMap<String, String>>,
}

impl Cluster<'_> {
    /// The pods a (non-ipBlock) peer of a policy in `namespace` selects.
    fn peer_pods(&self, namespace: &str, peer: &NetworkPolicyPeer) -> Vec<&PodFacts<'_>> {
        self.pods
            .iter()
            .filter(|p| match &peer.namespace_selector {
                None => p.namespace == namespace,
                Some(sel) => self
                    .namespace_labels
                    .get(p.namespace)
                    .is_some_and(|labels| selects(sel, labels)),
            })
            .filter(|p| {
                peer.pod_selector
                    .as_ref()
                    .is_none_or(|sel| selects(sel, &p.labels))
            })
            .collect()
    }
}

/// One rule's protocol group: numbered ports and ranges, and named ports.
#[derive(Default)]
struct Ports {
    numbered: Vec<String>,
    named: Vec<String>,
    /// A protocol given without a port: every port of it.
    any: bool,
}

/// A rule's ports grouped by protocol; `None` for a rule without ports.
fn group_ports(ports: Option<&Vec<NetworkPolicyPort>>) -> Option<BTreeMap<String, Ports>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    let mut out: BTreeMap<String, Ports> = BTreeMap::new();
    for p in ports {
        let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
        let group = out.entry(proto).or_default();
        match (&p.port, p.end_port) {
            (None, _) => group.any = true,
            (Some(IntOrString::Int(port)), None) => group.numbered.push(port.to_string()),
            (Some(IntOrString::Int(port)), Some(end)) => {
                group.numbered.push(format!("{port}:{end}"));
            }
            (Some(IntOrString::String(name)), _) => group.named.push(name.clone()),
        }
    }
    Some(out)
}

/// A rule's peers and ports, as the API has them.
type ApiRule<'p> = (
    Option<&'p Vec<NetworkPolicyPeer>>,
    Option<&'p Vec<NetworkPolicyPort>>,
);

/// One peer's address match, and the pods it stands for (for named
/// ports), or `None` for an ipBlock.
type PeerMatch<'c> = (String, Option<Vec<&'c PodFacts<'c>>>);

/// The rules of `policy` in direction `dir`.
fn api_rules(policy: &NetworkPolicy, dir: Dir) -> Vec<ApiRule<'_>> {
    let spec = policy.spec.as_ref();
    match dir {
        Dir::Ingress => spec
            .and_then(|s| s.ingress.as_ref())
            .into_iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Dir::Egress => spec
            .and_then(|s| s.egress.as_ref())
            .into_iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    }
}

/// The address matches of one rule's peers (see the module doc).
fn peer_matches<'c>(
    out: &mut Out,
    cluster: &'c Cluster<'c>,
    namespace: &str,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    dir: Dir,
) -> Vec<PeerMatch<'c>> {
    let end = dir.peer_end();
    let mut matches = Vec::new();
    let mut plain_blocks = BTreeSet::new();
    for peer in peers.into_iter().flatten() {
        let Some(block) = &peer.ip_block else {
            let pods = cluster.peer_pods(namespace, peer);
            let members = pods.iter().map(|p| format!("{}/32", p.ip)).collect();
            let key = format!(
                "{namespace} {:?} {:?}",
                peer.namespace_selector, peer.pod_selector
            );
            let set = out.set("hash:net", "cali40s:", &key, members);
            matches.push((format!("-m set --match-set {set} {end}"), Some(pods)));
            continue;
        };
        match block.except.as_deref() {
            None | Some([]) => {
                plain_blocks.insert(block.cidr.clone());
            }
            Some(except) => {
                let key = format!("except {}", except.join(","));
                let set = out.set(
                    "hash:net",
                    "cali40n:",
                    &key,
                    except.iter().cloned().collect(),
                );
                let addr = if dir == Dir::Ingress { "-s" } else { "-d" };
                matches.push((
                    format!("{addr} {} -m set ! --match-set {set} {end}", block.cidr),
                    None,
                ));
            }
        }
    }
    if !plain_blocks.is_empty() {
        let key = format!(
            "nets {}",
            plain_blocks.iter().cloned().collect::<Vec<_>>().join(",")
        );
        let set = out.set("hash:net", "cali40n:", &key, plain_blocks);
        matches.push((format!("-m set --match-set {set} {end}"), None));
    }
    if peers.is_none_or(Vec::is_empty) {
        matches.push((String::new(), Some(cluster.pods.iter().collect())));
    }
    matches
}

/// `multiport` matches for numbered ports and ranges, 15 slots each.
fn multiport(numbered: &[String]) -> Vec<String> {
    let mut matches = Vec::new();
    let mut chunk: Vec<&str> = Vec::new();
    let mut weight = 0;
    for p in numbered {
        let w = if p.contains(':') { 2 } else { 1 };
        if weight + w > MULTIPORT_MAX {
            matches.push(format!("-m multiport --dports {}", chunk.join(",")));
            chunk.clear();
            weight = 0;
        }
        chunk.push(p);
        weight += w;
    }
    if !chunk.is_empty() {
        matches.push(format!("-m multiport --dports {}", chunk.join(",")));
    }
    matches
}

/// A `hash:ip,port` set match for named port `port_name` of `proto` on
/// `destinations`.
fn named_port_match(
    out: &mut Out,
    port_name: &str,
    proto: &str,
    destinations: &[&PodFacts<'_>],
) -> String {
    let members: BTreeSet<String> = destinations
        .iter()
        .flat_map(|p| {
            p.named_ports
                .iter()
                .filter(|(n, pr, _)| *n == port_name && pr.eq_ignore_ascii_case(proto))
                .map(|(_, _, port)| format!("{},{proto}:{port}", p.ip))
        })
        .collect();
    let ips: Vec<String> = destinations.iter().map(|p| p.ip.to_string()).collect();
    let key = format!("{port_name}/{proto} {}", ips.join(","));
    let set = out.set("hash:ip,port", "cali40p:", &key, members);
    format!("-m set --match-set {set} dst,dst")
}

/// Renders one policy direction's chain; returns the chain's name.
fn render_policy(
    out: &mut Out,
    cluster: &Cluster<'_>,
    policy: &NetworkPolicy,
    selected: &[&PodFacts<'_>],
    dir: Dir,
) -> String {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let prefix = match dir {
        Dir::Ingress => "cali-pi-",
        Dir::Egress => "cali-po-",
    };
    let chain = format!("{prefix}{}", hash(&format!("{namespace}/{name}")));
    out.chains.entry(chain.clone()).or_default();
    let accept = |out: &mut Out, matches: &str| {
        out.rule(
            &chain,
            format!("{matches} -j MARK --set-xmark {ACCEPT_MARK}"),
        );
        out.rule(&chain, format!("-m mark --mark {ACCEPT_MARK} -j RETURN"));
    };
    for (peers, ports) in api_rules(policy, dir) {
        for (peer_match, peer_pods) in peer_matches(out, cluster, namespace, peers, dir) {
            let Some(groups) = group_ports(ports) else {
                accept(out, &peer_match);
                continue;
            };
            for (proto, group) in groups {
                let mut port_matches = if group.any {
                    vec![String::new()]
                } else {
                    multiport(&group.numbered)
                };
                // Named ports resolve against the destination pods.
                let destinations = match dir {
                    Dir::Ingress => Some(selected.to_vec()),
                    Dir::Egress => peer_pods.clone(),
                };
                if let (false, Some(destinations)) = (group.any, destinations) {
                    for port_name in &group.named {
                        port_matches.push(named_port_match(out, port_name, &proto, &destinations));
                    }
                }
                for port_match in port_matches {
                    accept(out, &format!("-p {proto} {peer_match} {port_match}"));
                }
            }
        }
    }
    chain
}

/// The directions `policy` isolates (policyTypes, else Ingress plus Egress
/// when it has egress rules).
fn directions(policy: &NetworkPolicy) -> Vec<Dir> {
    let spec = policy.spec.as_ref();
    match spec.and_then(|s| s.policy_types.as_ref()) {
        Some(types) => types
            .iter()
            .filter_map(|t| match t.as_str() {
                "Ingress" => Some(Dir::Ingress),
                "Egress" => Some(Dir::Egress),
                _ => None,
            })
            .collect(),
        None if spec.is_some_and(|s| s.egress.is_some()) => vec![Dir::Ingress, Dir::Egress],
        None => vec![Dir::Ingress],
    }
}

/// The rendered node: `ipset restore` and `iptables-restore` inputs.
pub struct Rendered {
    /// Input of `ipset restore`.
    pub ipsets: String,
    /// Input of `iptables-restore` (the filter table).
    pub iptables: String,
    /// How many ipsets, set members and iptables rules it has.
    pub counts: (usize, usize, usize),
}

impl<'a> Cluster<'a> {
    fn new(pods: &'a [Pod], namespaces: &'a [Namespace]) -> Self {
        Cluster {
            pods: pods.iter().filter_map(PodFacts::of).collect(),
            namespace_labels: namespaces
                .iter()
                .filter_map(|n| {
                    let name = n.metadata.name.as_deref()?;
                    let mut labels = n.metadata.labels.clone().unwrap_or_default();
                    labels
                        .entry("kubernetes.io/metadata.name".to_owned())
                        .or_insert_with(|| name.to_owned());
                    Some((name, labels))
                })
                .collect(),
        }
    }
}

/// Per local endpoint (interface) and direction (ingress?): the policy
/// chains that apply, in policy order.
type Jumps = BTreeMap<(String, bool), Vec<String>>;

/// The endpoint chains and their dispatch entries.
fn render_endpoints(out: &mut Out, local: &[&PodFacts<'_>], jumps: &Jumps) {
    for p in local {
        let iface = interface(p.namespace, p.name);
        for (ingress, prefix) in [(true, "cali-tw-"), (false, "cali-fw-")] {
            let chain = format!("{prefix}{iface}");
            out.rule(&chain, "-j MARK --set-xmark 0x0/0x10000".to_owned());
            match jumps.get(&(iface.clone(), ingress)) {
                None => out.rule(&chain, "-j RETURN".to_owned()),
                Some(policy_chains) => {
                    for pc in policy_chains {
                        out.rule(&chain, format!("-j {pc}"));
                        out.rule(&chain, format!("-m mark --mark {ACCEPT_MARK} -j RETURN"));
                    }
                    out.rule(
                        &chain,
                        "-m comment --comment \"Drop if no policies passed packet\" -j DROP"
                            .to_owned(),
                    );
                }
            }
            let (dispatch, flag) = if ingress {
                ("cali-to-wl-dispatch", "-o")
            } else {
                ("cali-from-wl-dispatch", "-i")
            };
            let first = &iface[4..5];
            let sub = format!("{dispatch}-{first}");
            if !out.chains.contains_key(&sub) {
                out.rule(dispatch, format!("{flag} cali{first}+ -g {sub}"));
            }
            out.rule(&sub, format!("{flag} {iface} -g {chain}"));
        }
    }
    for dispatch in ["cali-to-wl-dispatch", "cali-from-wl-dispatch"] {
        let subs: Vec<String> = out
            .chains
            .keys()
            .filter(|c| c.starts_with(&format!("{dispatch}-")))
            .cloned()
            .collect();
        for chain in subs.iter().map(String::as_str).chain([dispatch]) {
            out.rule(
                chain,
                "-m comment --comment \"Unknown interface\" -j DROP".to_owned(),
            );
        }
    }
    for rule in [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-m conntrack --ctstate INVALID -j DROP",
        "-i cali+ -j cali-from-wl-dispatch",
        "-o cali+ -j cali-to-wl-dispatch",
        "-i cali+ -j ACCEPT",
        "-o cali+ -j ACCEPT",
    ] {
        out.rule("cali-FORWARD", rule.to_owned());
    }
}

impl Out {
    /// The restore inputs.
    fn finish(&self) -> Rendered {
        let mut ipsets = String::new();
        let mut members = 0;
        for (name, (kind, entries)) in &self.sets {
            let max = (entries.len() * 2).max(1024);
            let _ = writeln!(ipsets, "create {name} {kind} family inet maxelem {max}");
            for e in entries {
                let _ = writeln!(ipsets, "add {name} {e}");
            }
            members += entries.len();
        }
        let mut chains = String::new();
        let mut rules = String::from("-A FORWARD -j cali-FORWARD\n");
        let mut rule_count = 1;
        for (chain, body) in &self.chains {
            let _ = writeln!(chains, ":{chain} - [0:0]");
            for r in body {
                let r = r.split_whitespace().collect::<Vec<_>>().join(" ");
                let _ = writeln!(rules, "-A {chain} {r}");
            }
            rule_count += body.len();
        }
        Rendered {
            counts: (self.sets.len(), members, rule_count),
            ipsets,
            iptables: format!("*filter\n{chains}{rules}COMMIT\n"),
        }
    }
}

/// Renders what Felix would program on `node` for these objects.
pub fn render(
    node: &str,
    pods: &[Pod],
    namespaces: &[Namespace],
    policies: &[NetworkPolicy],
) -> Rendered {
    let cluster = Cluster::new(pods, namespaces);
    let mut out = Out::default();
    let local: Vec<&PodFacts<'_>> = cluster
        .pods
        .iter()
        .filter(|p| p.node == Some(node))
        .collect();
    let mut jumps = Jumps::new();
    for policy in policies {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
        let selector = policy
            .spec
            .as_ref()
            .and_then(|s| s.pod_selector.clone())
            .unwrap_or_default();
        let selected: Vec<&PodFacts<'_>> = local
            .iter()
            .copied()
            .filter(|p| p.namespace == namespace && selects(&selector, &p.labels))
            .collect();
        if selected.is_empty() {
            // Felix programs only policies that apply to a local endpoint.
            continue;
        }
        for dir in directions(policy) {
            let chain = render_policy(&mut out, &cluster, policy, &selected, dir);
            for p in &selected {
                jumps
                    .entry((interface(p.namespace, p.name), dir == Dir::Ingress))
                    .or_default()
                    .push(chain.clone());
            }
        }
    }
    render_endpoints(&mut out, &local, &jumps);
    out.finish()
}
