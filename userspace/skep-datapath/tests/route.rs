//! Pod routing by the TC programs on the real kernel (root only).
//!
//! Each case builds its own two-node lab out of network namespaces with
//! unique names: node A with pods `a1` and `a2`, node B with pod `b1`, the
//! nodes joined by a veth "underlay" (10.99.0.1 ↔ 10.99.0.2). Pods are wired
//! as the agent wires them (host veth with `proxy_arp` and a `/32` route, pod
//! default route via 169.254.1.1 with a permanent neighbour), and each node
//! routes the other's pod CIDR via its underlay address, as routes.rs does.
//! So the kernel could forward everything by itself; the cases prove the
//! programs did instead: their counters move and an iptables `FORWARD`
//! counting rule in the node namespaces stays at 0.
//!
//! Sockets are opened by this thread after entering a pod's namespace
//! (`setns`), so no helper processes are needed. Namespaces, pins and maps
//! are removed by Drop guards on success and on failure.

mod common;

use std::{
    ffi::CString,
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    panic,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use skep_datapath::{
    Datapath, DatapathConfig, Endpoint, EndpointMap, RouteHook,
    endpoint::read_route_counters,
    routing::{self, ingress_programs},
};
use skep_ebpf_common::RouteAction;

const IO_TIMEOUT: Duration = Duration::from_secs(5);
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("failed to run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` with this thread inside network namespace `ns` (a name under
/// /run/netns), then returns to the namespace it was in.
fn in_netns<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    let own = fs::File::open("/proc/thread-self/ns/net").expect("own netns");
    let target = fs::File::open(Path::new("/run/netns").join(ns)).expect("target netns");
    // SAFETY: setns with a valid namespace fd; it only affects this thread.
    let entered = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(entered, 0, "setns into {ns}");
    let result = panic::catch_unwind(panic::AssertUnwindSafe(f));
    // SAFETY: as above, back to the namespace this thread started in.
    let back = unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(back, 0, "setns back from {ns}");
    result.unwrap_or_else(|p| panic::resume_unwind(p))
}

fn ifindex(ns: &str, interface: &str) -> u32 {
    let name = CString::new(interface).expect("interface name");
    // SAFETY: a valid NUL-terminated name for the call's duration.
    let index = in_netns(ns, || unsafe { libc::if_nametoindex(name.as_ptr()) });
    assert_ne!(index, 0, "{interface} in {ns}");
    index
}

// ---------------------------------------------------------------- the lab

/// A pod: its namespace, host veth and address.
#[expect(clippy::struct_field_names, reason = "pod_mac and host_mac read best")]
struct Pod {
    netns: String,
    host_veth: String,
    ip: Ipv4Addr,
    pod_mac: [u8; 6],
    host_mac: [u8; 6],
}

/// One node: namespace, pin dir, loaded datapath.
struct Node {
    netns: String,
    underlay: &'static str,
    pin_dir: PathBuf,
    datapath: Option<Datapath>,
}

impl Node {
    fn load(&mut self) {
        self.datapath = None;
        self.datapath = Some(
            Datapath::load(&DatapathConfig {
                pin_dir: self.pin_dir.clone(),
                btf: None,
                lru_entries: Some(4096),
            })
            .expect("load datapath"),
        );
    }

    fn datapath(&mut self) -> &mut Datapath {
        self.datapath.as_mut().expect("datapath loaded")
    }

    fn attach(&mut self, interface: &str, hook: RouteHook) {
        let ns = self.netns.clone();
        let dp = self.datapath();
        in_netns(&ns, || dp.attach_route(interface, hook)).expect("attach routing program");
    }

    fn counter(&self, action: RouteAction) -> u64 {
        read_route_counters(&self.pin_dir)
            .expect("read route counters")
            .into_iter()
            .find(|(a, _)| *a == action)
            .map_or(0, |(_, v)| v.packets)
    }

    fn forward_packets(&self) -> u64 {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &self.netns,
            "iptables",
            "-L",
            "FORWARD",
            "-v",
            "-x",
            "-n",
        ]);
        // Header lines, then our one rule: "pkts bytes target …".
        out.lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no FORWARD counting rule in {}:\n{out}", self.netns))
    }

    fn zero_forward(&self) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.netns,
            "iptables",
            "-Z",
            "FORWARD",
        ]);
    }
}

struct Lab {
    a: Node,
    b: Node,
    a1: Pod,
    a2: Pod,
    b1: Pod,
    netns: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in [&mut self.a, &mut self.b] {
            node.datapath = None;
            if let Err(err) = Datapath::remove_pins(&node.pin_dir) {
                eprintln!(
                    "warning: failed to remove {}: {err}",
                    node.pin_dir.display()
                );
            }
        }
        // Deleting a namespace deletes its veths (and their peers).
        for ns in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn mac(last: u8, node: u8) -> [u8; 6] {
    [0x02, 0x5e, 0x00, 0x00, node, last]
}

fn fmt_mac(mac: [u8; 6]) -> String {
    skep_datapath::Mac(mac).to_string()
}

impl Lab {
    /// Builds the namespaces, veths, addresses and routes; loads both
    /// datapaths; attaches nothing yet.
    fn new() -> Self {
        let tag = unique("rt");
        let ns = |name: &str| format!("{tag}{name}");
        let mut lab = Self {
            a: Node {
                netns: ns("A"),
                underlay: "uA",
                pin_dir: Path::new("/sys/fs/bpf/skep").join(ns("A")),
                datapath: None,
            },
            b: Node {
                netns: ns("B"),
                underlay: "uB",
                pin_dir: Path::new("/sys/fs/bpf/skep").join(ns("B")),
                datapath: None,
            },
            a1: Pod::new(&ns("a1"), &format!("{tag}h1"), [10, 244, 1, 11], 1),
            a2: Pod::new(&ns("a2"), &format!("{tag}h2"), [10, 244, 1, 12], 1),
            b1: Pod::new(&ns("b1"), &format!("{tag}h3"), [10, 244, 2, 13], 2),
            netns: Vec::new(),
        };
        for name in ["A", "B", "a1", "a2", "b1"] {
            run(&["ip", "netns", "add", &ns(name)]);
            lab.netns.push(ns(name));
        }
        let (a, b) = (lab.a.netns.clone(), lab.b.netns.clone());
        for node in [&a, &b] {
            run(&["ip", "-n", node, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "netns",
                "exec",
                node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]);
            // The counting rule: proof of what the kernel forwarded.
            run(&[
                "ip", "netns", "exec", node, "iptables", "-A", "FORWARD", "-j", "ACCEPT",
            ]);
        }
        // The underlay: uA in A (10.99.0.1) ↔ uB in B (10.99.0.2).
        run(&[
            "ip", "-n", &a, "link", "add", "uA", "type", "veth", "peer", "name", "uB", "netns", &b,
        ]);
        run(&["ip", "-n", &a, "addr", "add", "10.99.0.1/24", "dev", "uA"]);
        run(&["ip", "-n", &b, "addr", "add", "10.99.0.2/24", "dev", "uB"]);
        run(&["ip", "-n", &a, "link", "set", "uA", "up"]);
        run(&["ip", "-n", &b, "link", "set", "uB", "up"]);
        run(&[
            "ip",
            "-n",
            &a,
            "route",
            "add",
            "10.244.2.0/24",
            "via",
            "10.99.0.2",
            "proto",
            "83",
        ]);
        run(&[
            "ip",
            "-n",
            &b,
            "route",
            "add",
            "10.244.1.0/24",
            "via",
            "10.99.0.1",
            "proto",
            "83",
        ]);
        lab.a1.wire(&a);
        lab.a2.wire(&a);
        lab.b1.wire(&b);
        lab.a.load();
        lab.b.load();
        lab
    }

    /// Attaches every routing program and programs every endpoint, as the
    /// agent does.
    fn attach_all(&mut self) {
        for (node, pods) in [
            (&mut self.a, vec![&self.a1, &self.a2]),
            (&mut self.b, vec![&self.b1]),
        ] {
            node.attach(node.underlay, RouteHook::Underlay);
            let mut endpoints = EndpointMap::open_pinned(&node.pin_dir).expect("endpoint map");
            for pod in pods {
                node.attach(&pod.host_veth, RouteHook::Pod);
                endpoints
                    .upsert(&pod.endpoint(ifindex(&node.netns, &pod.host_veth)))
                    .expect("upsert endpoint");
            }
        }
    }
}

impl Pod {
    fn new(netns: &str, host_veth: &str, ip: [u8; 4], node: u8) -> Self {
        Self {
            netns: netns.to_owned(),
            host_veth: host_veth.to_owned(),
            ip: Ipv4Addr::from(ip),
            pod_mac: mac(ip[3], node),
            host_mac: mac(ip[3] + 100, node),
        }
    }

    /// Calico-style wiring, as skep-node's sandbox.rs does it.
    fn wire(&self, node: &str) {
        let (ns, host) = (&self.netns, &self.host_veth);
        run(&[
            "ip",
            "-n",
            node,
            "link",
            "add",
            host,
            "address",
            &fmt_mac(self.host_mac),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            &fmt_mac(self.pod_mac),
            "netns",
            ns,
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            node,
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{host}.proxy_arp=1"),
        ]);
        run(&["ip", "-n", node, "link", "set", host, "up"]);
        run(&[
            "ip",
            "-n",
            node,
            "route",
            "add",
            &format!("{}/32", self.ip),
            "dev",
            host,
            "scope",
            "link",
        ]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/32", self.ip),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        run(&[
            "ip",
            "-n",
            ns,
            "neigh",
            "add",
            "169.254.1.1",
            "lladdr",
            &fmt_mac(self.host_mac),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        run(&[
            "ip",
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
            "onlink",
        ]);
    }

    fn endpoint(&self, host_ifindex: u32) -> Endpoint {
        Endpoint {
            name: format!("default/{}", self.netns),
            ip: self.ip,
            host_ifindex,
            pod_mac: self.pod_mac,
            host_mac: self.host_mac,
        }
    }
}

// ---------------------------------------------------------------- traffic

/// One TCP connection `from` → `to`:port; returns the source address the
/// server saw and the reply the client read.
fn tcp_exchange(from: &Pod, to: &Pod, port: u16) -> (SocketAddr, String) {
    let listener = in_netns(&to.netns, || TcpListener::bind((to.ip, port))).expect("bind");
    let mut client = in_netns(&from.netns, || {
        TcpStream::connect_timeout(&SocketAddr::from((to.ip, port)), IO_TIMEOUT)
    })
    .unwrap_or_else(|e| panic!("connect {} → {}: {e}", from.ip, to.ip));
    let (mut conn, peer) = listener.accept().expect("accept");
    conn.write_all(b"hello from the server\n").expect("write");
    drop(conn);
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reply = String::new();
    client.read_to_string(&mut reply).expect("read reply");
    (peer, reply)
}

/// One UDP datagram `from` → `to`:port and its echo; returns the source
/// address the server saw.
fn udp_exchange(from: &Pod, to: &Pod, port: u16) -> SocketAddr {
    let server = in_netns(&to.netns, || UdpSocket::bind((to.ip, port))).expect("bind udp");
    server.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let client = in_netns(&from.netns, || UdpSocket::bind((from.ip, 0))).expect("bind client");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.send_to(b"ping", (to.ip, port)).expect("send");
    let mut buf = [0; 16];
    let (len, peer) = server.recv_from(&mut buf).expect("server receives");
    assert_eq!(&buf[..len], b"ping");
    server.send_to(b"pong", peer).expect("echo");
    let (len, _) = client
        .recv_from(&mut buf)
        .expect("client receives the echo");
    assert_eq!(&buf[..len], b"pong");
    peer
}

/// `busybox ping` once from `from`'s namespace; its output, or `None` if it failed.
fn ping(from: &str, to: &str) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "3", to,
        ])
        .output()
        .expect("run busybox ping");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

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
