use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::*;

fn ranges(cidr: &str, ports: &str) -> ServiceRanges {
    ServiceRanges {
        cluster_ip: cidr.parse().expect("test range"),
        node_ports: ports.parse().expect("test ports"),
    }
}

#[test]
fn ranges_parse_and_print_like_the_flags() {
    let r = ServiceRanges::default();
    assert_eq!(r.cluster_ip.to_string(), "10.96.0.0/12");
    assert_eq!(r.node_ports.to_string(), "30000-32767");
    assert_eq!(r.kubernetes_ip(), Ipv4Addr::new(10, 96, 0, 1));
    assert_eq!(r.dns_ip(), Ipv4Addr::new(10, 96, 0, 10));
    assert_eq!(
        "10.100.7.9/16".parse::<Ipv4Cidr>().map(|c| c.to_string()),
        Ok("10.100.0.0/16".to_owned())
    );
    assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
    assert!("10.96.0.0/31".parse::<Ipv4Cidr>().is_err());
    assert!("fd00::/108".parse::<Ipv4Cidr>().is_err());
    assert!("32767-30000".parse::<PortRange>().is_err());
    assert!("30000".parse::<PortRange>().is_err());
}

#[test]
fn picks_skip_the_network_and_broadcast_and_end_when_full() {
    // A /29 has 8 addresses, 6 usable: .1 … .6.
    let r = ranges("10.0.0.0/29", "30000-30002");
    let mut taken = BTreeSet::new();
    for random in 0..6u64 {
        let ip = r.pick_ip(&taken, random * 7).expect("a free IP");
        assert!(taken.insert(ip), "{ip} picked twice");
        assert_ne!(ip, Ipv4Addr::new(10, 0, 0, 0));
        assert_ne!(ip, Ipv4Addr::new(10, 0, 0, 7));
    }
    assert_eq!(r.pick_ip(&taken, 3), None, "the range is full");

    let mut ports = BTreeSet::new();
    for random in [5, 5, 5] {
        let p = r.pick_port(&ports, random).expect("a free port");
        assert!(r.node_ports.contains(p));
        assert!(ports.insert(p));
    }
    assert_eq!(r.pick_port(&ports, 1), None);
    ports.remove(&30001);
    assert_eq!(
        r.pick_port(&ports, 1),
        Some(30001),
        "a released port is reused"
    );
}

#[test]
fn dynamic_ips_prefer_the_upper_band() {
    let r = ServiceRanges::default();
    let ip = r.pick_ip(&BTreeSet::new(), 0).expect("free");
    assert!(r.cluster_ip.offset(ip).expect("in range") >= 256, "{ip}");
}

#[test]
fn wants_follow_type_headless_and_given_values() {
    let svc = |spec: Value| json!({"spec": spec});
    let w = wants(&svc(json!({"type": "ClusterIP", "ports": [{"port": 80}]})));
    assert_eq!(w.cluster_ip, Want::Any);
    assert_eq!(w.node_ports, vec![Want::Nothing]);
    let w = wants(&svc(
        json!({"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"port": 80}, {"port": 81, "nodePort": 30080}]}),
    ));
    assert_eq!(w.cluster_ip, Want::This(Ipv4Addr::new(10, 96, 0, 5)));
    assert_eq!(w.node_ports, vec![Want::Any, Want::This(30080)]);
    let w = wants(&svc(
        json!({"type": "ClusterIP", "clusterIP": "None", "ports": [{"port": 80}]}),
    ));
    assert_eq!(w.cluster_ip, Want::Nothing);
    let w = wants(&svc(json!({"type": "ExternalName", "externalName": "x.y"})));
    assert_eq!(w.cluster_ip, Want::Nothing);
    let w = wants(&svc(
        json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}),
    ));
    assert_eq!(w.node_ports, vec![Want::Nothing]);
}

#[test]
fn type_changes_drop_what_the_new_type_has_not() {
    let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
        "ports": [{"port": 80, "nodePort": 30080}]}});
    let mut new = old.clone();
    new["spec"]["type"] = json!("ClusterIP");
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(new["spec"]["ports"][0].get("nodePort"), None);
    assert_eq!(holdings(&new).node_ports, BTreeSet::new());
    assert_eq!(holdings(&new).cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 5)));

    let mut new = old.clone();
    new["spec"]["type"] = json!("ExternalName");
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(new["spec"].get("clusterIP"), None);
    assert_eq!(holdings(&new), Holdings::default());
}

#[test]
fn errors_read_like_upstream() {
    let r = ServiceRanges::default();
    let ip = Ipv4Addr::new(10, 96, 0, 5);
    let body = |e: FieldError| format!("{}: {}", e.to_cause().field, e.body());
    assert_eq!(
        body(ip_already_allocated(ip)),
        "spec.clusterIPs: Invalid value: []string{\"10.96.0.5\"}: failed to allocate IP 10.96.0.5: provided IP is already allocated"
    );
    assert_eq!(
        body(ip_not_in_range(Ipv4Addr::new(1, 1, 1, 1), &r)),
        "spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
    );
    assert_eq!(
        body(port_already_allocated(0, 30080)),
        "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    assert_eq!(
        body(port_not_in_range(1, 80, &r)),
        "spec.ports[1].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
    );
}

#[test]
fn an_update_without_node_ports_keeps_the_allocated_ones() {
    let old = json!({"spec": {"type": "NodePort", "ports": [
        {"name": "a", "port": 80, "protocol": "TCP", "nodePort": 30080},
        {"name": "b", "port": 53, "protocol": "UDP", "nodePort": 30053}]}});
    let mut new = json!({"spec": {"type": "NodePort", "ports": [
        {"name": "b", "port": 53, "protocol": "UDP"},
        {"name": "c", "port": 80, "protocol": "UDP"},
        {"name": "a", "port": 80}]}});
    keep_allocated_node_ports(&mut new, &old);
    assert_eq!(new["spec"]["ports"][0]["nodePort"], json!(30053));
    assert_eq!(
        new["spec"]["ports"][1].get("nodePort"),
        None,
        "80/UDP is new"
    );
    assert_eq!(new["spec"]["ports"][2]["nodePort"], json!(30080));
}
