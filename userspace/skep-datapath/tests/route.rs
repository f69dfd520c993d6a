//! Pod routing by the TC programs on the real kernel (root only).
//!
//! Each case builds its own two-node lab (`common/lab.rs`). The kernel
//! could forward everything by itself; the cases prove the programs did
//! instead: their counters move and an iptables `FORWARD` counting rule in
//! the node namespaces stays at 0.

mod common;
#[path = "common/lab.rs"]
mod lab;

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use lab::{IO_TIMEOUT, Lab, in_netns, ping, run, tcp_exchange, udp_exchange};
use skep_datapath::{
    EndpointMap, RouteHook,
    routing::{self, ingress_programs},
};
use skep_ebpf_common::RouteAction;

// ---------------------------------------------------------------- cases

fn same_node_pod_to_pod_goes_redirect_peer() {
    let mut lab = Lab::new();
    // Without the programs the kernel forwards: the counting rule works.
    let (peer, _) = tcp_exchange(&lab.a1, &lab.a2, 8080);
    assert_eq!(peer.ip(), lab.a1.ip);
    assert!(
        lab.a.forward_packets() > 0,
        "the FORWARD rule counts kernel forwarding"
    );

    lab.attach_all();
    lab.a.zero_forward();
    let before = lab.a.counter(RouteAction::PodToLocalPod);
    let (peer, reply) = tcp_exchange(&lab.a1, &lab.a2, 8081);
    assert_eq!(
        peer.ip(),
        lab.a1.ip,
        "the receiver sees the sender's pod IP"
    );
    assert_eq!(reply, "hello from the server\n");
    let peer = udp_exchange(&lab.a2, &lab.a1, 5353);
    assert_eq!(peer.ip(), lab.a2.ip);
    let moved = lab.a.counter(RouteAction::PodToLocalPod) - before;
    // SYN, ACKs, data, FINs both ways, the datagram and its echo.
    assert!(moved >= 8, "redirect_peer counted {moved} packets");
    assert_eq!(
        lab.a.forward_packets(),
        0,
        "nothing went through the kernel's forwarding"
    );
    println!("  same node: {moved} packets by redirect_peer, FORWARD 0");
}

fn cross_node_goes_redirect_neigh_and_arrives_by_redirect_peer() {
    let mut lab = Lab::new();
    lab.attach_all();
    let (a_remote, b_arrive, b_remote, a_arrive) = (
        lab.a.counter(RouteAction::PodToRemote),
        lab.b.counter(RouteAction::UnderlayToPod),
        lab.b.counter(RouteAction::PodToRemote),
        lab.a.counter(RouteAction::UnderlayToPod),
    );
    let (peer, reply) = tcp_exchange(&lab.a1, &lab.b1, 8080);
    assert_eq!(
        peer.ip(),
        lab.a1.ip,
        "the receiver on node B sees the sender's pod IP"
    );
    assert_eq!(reply, "hello from the server\n");
    let peer = udp_exchange(&lab.b1, &lab.a2, 5353);
    assert_eq!(peer.ip(), lab.b1.ip);
    // Every hop of both directions took the fast path.
    for (what, node, action, before) in [
        ("A pod → remote", &lab.a, RouteAction::PodToRemote, a_remote),
        (
            "B underlay → pod",
            &lab.b,
            RouteAction::UnderlayToPod,
            b_arrive,
        ),
        ("B pod → remote", &lab.b, RouteAction::PodToRemote, b_remote),
        (
            "A underlay → pod",
            &lab.a,
            RouteAction::UnderlayToPod,
            a_arrive,
        ),
    ] {
        let moved = node.counter(action) - before;
        assert!(moved >= 4, "{what}: {moved} packets");
        println!("  {what}: {moved} packets");
    }
    assert_eq!(
        lab.a.forward_packets(),
        0,
        "node A forwarded nothing itself"
    );
    assert_eq!(
        lab.b.forward_packets(),
        0,
        "node B forwarded nothing itself"
    );
    // A router's TTL semantics: the reply crossed two nodes (64 − 2).
    let out = ping(&lab.a1.netns, "10.244.2.13").expect("ping a1 → b1");
    assert!(out.contains("ttl=62"), "{out}");
}

fn traffic_for_the_stack_still_reaches_it() {
    let mut lab = Lab::new();
    lab.attach_all();
    let before = lab.a.counter(RouteAction::PodToStack);
    // To the node itself (and the node's ARP for the pod, answered through
    // the pod program): the stack.
    let out = ping(&lab.a1.netns, "10.99.0.1").expect("a pod pings its node's address");
    assert!(out.contains("ttl=64"), "{out}");
    assert!(lab.a.counter(RouteAction::PodToStack) > before);
    // A datagram whose TTL would expire is left to the stack (which answers
    // time-exceeded), not forwarded: b1 gets the next one first.
    let expired = lab.a.counter(RouteAction::TtlExpired);
    let server = in_netns(&lab.b1.netns, || UdpSocket::bind((lab.b1.ip, 7000))).expect("bind");
    server.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let client = in_netns(&lab.a1.netns, || UdpSocket::bind((lab.a1.ip, 0))).expect("bind");
    client.set_ttl(1).expect("ttl 1");
    client.send_to(b"expires", (lab.b1.ip, 7000)).expect("send");
    client.set_ttl(64).expect("ttl 64");
    client.send_to(b"arrives", (lab.b1.ip, 7000)).expect("send");
    let mut buf = [0; 16];
    let (len, _) = server.recv_from(&mut buf).expect("b1 receives");
    assert_eq!(&buf[..len], b"arrives");
    assert_eq!(lab.a.counter(RouteAction::TtlExpired), expired + 1);
    // A local pod missing from the endpoints map is still reached, through
    // the node's routes (fib_lookup finds its /32 route).
    let mut endpoints = EndpointMap::open_pinned(&lab.a.pin_dir).expect("endpoint map");
    assert!(endpoints.remove(lab.a2.ip).expect("remove"));
    assert!(!endpoints.remove(lab.a2.ip).expect("remove again"));
    let (peer, _) = tcp_exchange(&lab.a1, &lab.a2, 8082);
    assert_eq!(peer.ip(), lab.a1.ip);
}

fn restart_replaces_links_and_prunes_deleted_interfaces() {
    let mut lab = Lab::new();
    lab.attach_all();
    let listed = EndpointMap::list_pinned(&lab.a.pin_dir).expect("list endpoints");
    assert_eq!(
        listed
            .iter()
            .map(|e| (e.ip, e.name.as_str()))
            .collect::<Vec<_>>(),
        [
            (lab.a1.ip, format!("default/{}", lab.a1.netns).as_str()),
            (lab.a2.ip, format!("default/{}", lab.a2.netns).as_str()),
        ]
    );
    let attached = |lab: &Lab, interface: &str| {
        in_netns(&lab.a.netns, || ingress_programs(interface)).expect("query tcx")
    };
    assert_eq!(attached(&lab, &lab.a1.host_veth), ["skep_pod_ingres"]);
    // The agent dies: the pinned links keep routing.
    lab.a.datapath = None;
    let before = lab.a.counter(RouteAction::PodToLocalPod);
    tcp_exchange(&lab.a1, &lab.a2, 8080);
    assert!(lab.a.counter(RouteAction::PodToLocalPod) > before);
    // A new agent re-attaches: the programs are swapped in, not added.
    lab.a.load();
    let (a1, underlay) = (lab.a1.host_veth.clone(), "uA");
    lab.a.attach(&a1, RouteHook::Pod);
    lab.a.attach(underlay, RouteHook::Underlay);
    assert_eq!(attached(&lab, &a1), ["skep_pod_ingres"]);
    assert_eq!(attached(&lab, underlay), ["skep_underlay_i"]);
    let before = lab.a.counter(RouteAction::PodToLocalPod);
    tcp_exchange(&lab.a1, &lab.a2, 8081);
    assert!(lab.a.counter(RouteAction::PodToLocalPod) > before);
    // A pod's veth is deleted: its pin is pruned, the others stay.
    run(&["ip", "-n", &lab.a.netns, "link", "del", &lab.a2.host_veth]);
    let pruned =
        in_netns(&lab.a.netns, || routing::prune_route_links(&lab.a.pin_dir)).expect("prune");
    assert_eq!(pruned, [lab.a2.host_veth.clone()]);
    let links = routing::route_links(&lab.a.pin_dir).expect("links");
    assert_eq!(
        links,
        [
            (RouteHook::Pod, a1.clone()),
            (RouteHook::Underlay, underlay.to_owned())
        ]
    );
    // Re-created under the same name (a pod sandbox rebuilt): the defunct
    // link is replaced by a live one.
    lab.a2.wire(&lab.a.netns.clone());
    let a2 = lab.a2.host_veth.clone();
    lab.a.attach(&a2, RouteHook::Pod);
    lab.a.attach(&a2, RouteHook::Pod);
    assert_eq!(attached(&lab, &a2), ["skep_pod_ingres"]);
    assert!(routing::detach_route(&lab.a.pin_dir, &a2, RouteHook::Pod).expect("detach"));
    // The kernel releases an unpinned link from a work queue: wait for it.
    let deadline = Instant::now() + IO_TIMEOUT;
    while !attached(&lab, &a2).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(attached(&lab, &a2).is_empty(), "removing the pin detaches");
}

// ---------------------------------------------------------------- runner

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("route: these tests need root (bpf, network namespaces); run them as root");
        std::process::exit(1);
    }
    let cases: &[(&str, fn())] = &[
        (
            "same_node_pod_to_pod_goes_redirect_peer",
            same_node_pod_to_pod_goes_redirect_peer,
        ),
        (
            "cross_node_goes_redirect_neigh_and_arrives_by_redirect_peer",
            cross_node_goes_redirect_neigh_and_arrives_by_redirect_peer,
        ),
        (
            "traffic_for_the_stack_still_reaches_it",
            traffic_for_the_stack_still_reaches_it,
        ),
        (
            "restart_replaces_links_and_prunes_deleted_interfaces",
            restart_replaces_links_and_prunes_deleted_interfaces,
        ),
    ];
    if !common::run_cases(cases, |case| case()) {
        std::process::exit(1);
    }
}
