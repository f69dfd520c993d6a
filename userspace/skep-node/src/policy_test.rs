use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use skep_datapath::DatapathError;
use skep_ebpf_common::policy::{
    POLICY_EGRESS_ISOLATED, POLICY_INGRESS_ISOLATED, POLICY_PREFIX_PORT, PeerIdentity,
    PolicyEndpoint, PolicyKey, PolicyValue,
};
use skep_policy::PolicyState;

use super::{IdentitiesFile, Inputs, PolicySink, apply};
use crate::view::View;

/// Records every operation; fails the `fail_at`-th one.
#[derive(Default)]
struct Recorder {
    ops: Vec<String>,
    fail_at: Option<usize>,
}

impl Recorder {
    fn op(&mut self, op: String) -> Result<(), DatapathError> {
        if self.fail_at == Some(self.ops.len()) {
            return Err(DatapathError::NameTooLong { name: op, max: 0 });
        }
        self.ops.push(op);
        Ok(())
    }

    /// Where the first and last operations starting with `prefix` are.
    fn span(&self, prefix: &str) -> (usize, usize) {
        let at: Vec<usize> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.starts_with(prefix))
            .map(|(i, _)| i)
            .collect();
        assert!(!at.is_empty(), "no {prefix} in {:?}", self.ops);
        (at[0], at[at.len() - 1])
    }
}

impl PolicySink for Recorder {
    fn set_endpoint(&mut self, ip: Ipv4Addr, ep: PolicyEndpoint) -> Result<(), DatapathError> {
        self.op(format!("set_endpoint {ip} {}", ep.identity))
    }
    fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        self.op(format!("remove_endpoint {ip}"))
    }
    fn set_peer(&mut self, ip: Ipv4Addr, len: u32, id: PeerIdentity) -> Result<(), DatapathError> {
        self.op(format!("set_peer {ip}/{len} {}", id.pod))
    }
    fn remove_peer(&mut self, ip: Ipv4Addr, len: u32) -> Result<(), DatapathError> {
        self.op(format!("remove_peer {ip}/{len}"))
    }
    fn set_rule(&mut self, key: PolicyKey, len: u32, v: PolicyValue) -> Result<(), DatapathError> {
        self.op(format!(
            "set_rule {}->{} /{len} {}",
            key.peer, key.endpoint, v.policy
        ))
    }
    fn remove_rule(&mut self, key: PolicyKey, len: u32) -> Result<(), DatapathError> {
        self.op(format!("remove_rule {}->{} /{len}", key.peer, key.endpoint))
    }
    fn set_policy_name(&mut self, id: u32, name: &str) -> Result<(), DatapathError> {
        self.op(format!("set_policy_name {id} {name}"))
    }
    fn remove_policy_name(&mut self, id: u32) -> Result<(), DatapathError> {
        self.op(format!("remove_policy_name {id}"))
    }
    fn set_peer_name(&mut self, ip: Ipv4Addr, name: &str) -> Result<(), DatapathError> {
        self.op(format!("set_peer_name {ip} {name}"))
    }
    fn remove_peer_name(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        self.op(format!("remove_peer_name {ip}"))
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, last)
}

fn rule(endpoint: u32, peer: u32, policy: u32) -> ((PolicyKey, u32), PolicyValue) {
    let key = PolicyKey {
        endpoint,
        peer,
        direction: 0,
        proto: 6,
        port: 80_u16.to_be(),
    };
    ((key, POLICY_PREFIX_PORT), PolicyValue { policy })
}

/// A node with local pods .1 and .6 (identity 1) isolated by policy 1
/// allowing pods of identity 2 (.2) in.
fn before() -> PolicyState {
    let isolated = PolicyEndpoint {
        identity: 1,
        flags: POLICY_INGRESS_ISOLATED,
    };
    PolicyState {
        endpoints: BTreeMap::from([(ip(1), isolated), (ip(6), isolated)]),
        ipcache: BTreeMap::from([
            ((ip(1), 32), PeerIdentity { pod: 1, cidr: 0 }),
            ((ip(2), 32), PeerIdentity { pod: 2, cidr: 0 }),
            ((ip(6), 32), PeerIdentity { pod: 1, cidr: 0 }),
        ]),
        rules: BTreeMap::from([rule(1, 2, 1)]),
        policy_names: BTreeMap::from([(1, "x/allow-b".to_owned())]),
        peer_names: BTreeMap::from([(ip(1), "x/a".to_owned()), (ip(2), "x/b".to_owned())]),
    }
}

/// Then: pod .1 relabelled (identity 3) under policy 2 allowing a new pod
/// .3 (identity 4); pod .2 gone, a new local pod .5 isolated, .6 relabelled
/// out of every policy (identity 5).
fn after() -> PolicyState {
    PolicyState {
        endpoints: BTreeMap::from([
            (
                ip(1),
                PolicyEndpoint {
                    identity: 3,
                    flags: POLICY_INGRESS_ISOLATED,
                },
            ),
            (
                ip(5),
                PolicyEndpoint {
                    identity: 3,
                    flags: POLICY_EGRESS_ISOLATED,
                },
            ),
        ]),
        ipcache: BTreeMap::from([
            ((ip(1), 32), PeerIdentity { pod: 3, cidr: 0 }),
            ((ip(3), 32), PeerIdentity { pod: 4, cidr: 0 }),
            ((ip(5), 32), PeerIdentity { pod: 3, cidr: 0 }),
            ((ip(6), 32), PeerIdentity { pod: 5, cidr: 0 }),
        ]),
        rules: BTreeMap::from([rule(3, 4, 2)]),
        policy_names: BTreeMap::from([(2, "x/allow-c".to_owned())]),
        peer_names: BTreeMap::from([
            (ip(1), "x/a".to_owned()),
            (ip(3), "x/c".to_owned()),
            (ip(5), "x/e".to_owned()),
        ]),
    }
}

#[test]
fn a_diff_is_written_so_that_nothing_is_denied_on_the_way() {
    let (old, new) = (before(), after());
    let diff = old.diff(&new);
    let mut sink = Recorder::default();
    apply(&mut sink, &diff).expect("the recorder fails nothing");
    assert_eq!(sink.ops.len(), diff.len());
    let names = sink
        .span("set_policy_name")
        .0
        .max(sink.span("set_peer_name").1);
    let rules = sink.span("set_rule");
    let peers = sink.span("set_peer ");
    let endpoints = sink.span("set_endpoint");
    let unisolate = sink.span("remove_endpoint");
    let gone_peers = sink.span("remove_peer ");
    let gone_rules = sink.span("remove_rule");
    let gone_names = sink
        .span("remove_peer_name")
        .0
        .min(sink.span("remove_policy_name").0);
    // Names, rules, ipcache, then endpoints; endpoint removals before the
    // ipcache and rule removals; names last.
    assert!(names < rules.0, "{:?}", sink.ops);
    assert!(rules.1 < peers.0, "{:?}", sink.ops);
    assert!(peers.1 < endpoints.0, "{:?}", sink.ops);
    assert!(endpoints.1 < unisolate.0, "{:?}", sink.ops);
    assert!(unisolate.1 < gone_peers.0, "{:?}", sink.ops);
    assert!(gone_peers.1 < gone_rules.0, "{:?}", sink.ops);
    assert!(gone_rules.1 < gone_names, "{:?}", sink.ops);
    // Only what changed: .1's name stays as it is.
    assert!(!sink.ops.iter().any(|o| o == "set_peer_name 10.244.0.1 x/a"));
}

#[test]
fn a_failed_write_stops_the_sync_before_anything_later_in_the_order() {
    let (old, new) = (before(), after());
    let diff = old.diff(&new);
    let mut sink = Recorder {
        fail_at: Some(3),
        ..Recorder::default()
    };
    assert!(apply(&mut sink, &diff).is_err());
    assert_eq!(sink.ops.len(), 3);
    assert!(!sink.ops.iter().any(|o| o.starts_with("set_endpoint")));
}

#[test]
fn identities_survive_a_restart_and_are_written_only_when_they_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = super::identities_path(dir.path());
    let (mut file, mut ids) = IdentitiesFile::load(&path).expect("a missing file is empty");
    let key = skep_policy::PodIdentityKey {
        namespace: "x".into(),
        labels: BTreeMap::from([("pod".into(), "a".into())]),
        named_ports: std::collections::BTreeSet::new(),
    };
    let id = ids.pod(&key).expect("an id");
    assert!(file.save(&ids).expect("written"));
    assert!(!file.save(&ids).expect("unchanged"), "rewrote the same ids");
    assert!(!path.with_extension("json.tmp").exists());

    let (_, mut restored) = IdentitiesFile::load(&path).expect("read back");
    assert_eq!(restored.pod(&key), Some(id));

    std::fs::write(&path, b"{not json").expect("write");
    let err = IdentitiesFile::load(&path).expect_err("garbage refused");
    assert!(err.to_string().contains("identities.json"), "{err}");
}

#[test]
fn inputs_keep_the_pods_policy_can_judge_in_a_stable_order() {
    let mut view = View::default();
    for (uid, name, extra) in [
        ("u1", "b", r#""status":{"podIP":"10.244.1.2"}"#),
        ("u2", "a", r#""status":{"podIPs":[{"ip":"10.244.2.3"}]}"#),
        ("u3", "pending", r#""status":{}"#),
        (
            "u4",
            "host",
            r#""spec":{"hostNetwork":true,"containers":[]},"status":{"podIP":"10.0.0.1"}"#,
        ),
    ] {
        let pod =
            format!(r#"{{"metadata":{{"name":"{name}","namespace":"x","uid":"{uid}"}},{extra}}}"#);
        view.apply("n1", "PodPeer", false, pod.as_bytes());
    }
    let inputs = Inputs::of(&view);
    let names: Vec<&str> = inputs.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(inputs.pods[0].ip, Ipv4Addr::new(10, 244, 2, 3));
    assert_eq!(Inputs::of(&view), inputs);
}
