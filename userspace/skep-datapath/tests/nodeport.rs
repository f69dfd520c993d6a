//! `NodePort` and `externalIPs` on the real kernel (root only), in a lab of
//! network namespaces this test makes and removes:
//!
//! ```text
//!   client 192.168.77.100 ──┐
//!   node1  192.168.77.1   ──┤ bridge (own namespace)
//!   node2  192.168.77.2   ──┘
//!   node1 ── hp1 ── pod1 10.245.1.10      node2 ── hp2 ── pod2 10.245.2.10
//! ```
//!
//! This process becomes node1 (it unshares a fresh network namespace first),
//! loads the datapath into its own pin directory and attaches
//! `skep_nodeport_ingress` to node1's underlay device and
//! `skep_nodeport_reply` to pod1's host veth. node2 runs no program: it only
//! routes. No namespace has a default route; the client reaches the
//! `externalIPs` range through a route to node1. Backends are threads inside
//! the pod namespaces that answer with the peer address they saw; clients are
//! threads inside the client namespace. Nothing touches the host's network
//! namespace or cgroups, so this needs no lock.
//!
//! `harness = false`: `main` runs the cases in order and exits non-zero if
//! one fails; the lab is removed by a Drop guard on success and failure.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    panic,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use skep_datapath::{
    Datapath, DatapathConfig, Protocol, RouteHook, ServiceMap, ServiceSpec,
    conntrack::{self, CtEntry},
    nodeport,
};

const IO_TIMEOUT: Duration = Duration::from_secs(3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
const NODE1: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const POD1: Ipv4Addr = Ipv4Addr::new(10, 245, 1, 10);
const POD2: Ipv4Addr = Ipv4Addr::new(10, 245, 2, 10);
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const BACKEND_PORT: u16 = 8080;

// ---------------------------------------------------------------- lab

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, pins and programs of one run; Drop removes them all.
struct Lab {
    /// Named namespaces: underlay, node2, client, pod1, pod2.
    underlay: String,
    node2: String,
    client: String,
    pod1: String,
    pod2: String,
    pin_dir: PathBuf,
    datapath: Option<Datapath>,
}

impl Lab {
    fn new() -> Self {
        let id = std::process::id();
        let name = |role: &str| format!("sknp-{role}-{id}");
        let mut lab = Self {
            underlay: name("ul"),
            node2: name("n2"),
            client: name("cl"),
            pod1: name("p1"),
            pod2: name("p2"),
            pin_dir: Path::new("/sys/fs/bpf/skep").join(name("node1")),
            datapath: None,
        };
        for ns in lab.namespaces() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lab.wire();
        let mut datapath = Datapath::load(&DatapathConfig {
            pin_dir: lab.pin_dir.clone(),
            btf: None,
            lru_entries: Some(4096),
        })
        .expect("load the datapath");
        datapath
            .attach_route("ul0", RouteHook::Underlay)
            .expect("attach the underlay program (NodePort first) to node1's underlay");
        datapath
            .attach_route("hp1", RouteHook::Pod)
            .expect("attach the pod program (NodePort replies first) to pod1's host veth");
        nodeport::set_node_address(&lab.pin_dir, Some(NODE1)).expect("set node address");
        assert_eq!(nodeport::node_address(&lab.pin_dir).ok(), Some(Some(NODE1)));
        lab.datapath = Some(datapath);
        lab
    }

    fn namespaces(&self) -> [&str; 5] {
        [
            &self.underlay,
            &self.node2,
            &self.client,
            &self.pod1,
            &self.pod2,
        ]
    }

    fn wire(&self) {
        let ul = self.underlay.as_str();
        ip(&["-n", ul, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", ul, "link", "set", "br0", "up"]);
        // node1 (this namespace), node2 and the client on the bridge.
        ip(&[
            "link", "add", "ul0", "type", "veth", "peer", "name", "n1", "netns", ul,
        ]);
        ip(&["addr", "add", "192.168.77.1/24", "dev", "ul0"]);
        ip(&["link", "set", "ul0", "up"]);
        for (ns, port, addr) in [
            (self.node2.as_str(), "n2", "192.168.77.2/24"),
            (self.client.as_str(), "c0", "192.168.77.100/24"),
        ] {
            ip(&[
                "-n", ns, "link", "add", "ul0", "type", "veth", "peer", "name", port, "netns", ul,
            ]);
            ip(&["-n", ns, "addr", "add", addr, "dev", "ul0"]);
            ip(&["-n", ns, "link", "set", "ul0", "up"]);
        }
        for port in ["n1", "n2", "c0"] {
            ip(&["-n", ul, "link", "set", port, "master", "br0", "up"]);
        }
        // The externalIPs range is reached through node1 (not a default route).
        ip(&[
            "-n",
            &self.client,
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "192.168.77.1",
        ]);
        // pod1 on node1, pod2 on node2.
        ip(&[
            "link", "add", "hp1", "type", "veth", "peer", "name", "eth0", "netns", &self.pod1,
        ]);
        ip(&["addr", "add", "10.245.1.1/24", "dev", "hp1"]);
        ip(&["link", "set", "hp1", "up"]);
        ip(&[
            "-n",
            &self.node2,
            "link",
            "add",
            "hp2",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &self.pod2,
        ]);
        ip(&[
            "-n",
            &self.node2,
            "addr",
            "add",
            "10.245.2.1/24",
            "dev",
            "hp2",
        ]);
        ip(&["-n", &self.node2, "link", "set", "hp2", "up"]);
        for (pod, addr, gateway) in [
            (self.pod1.as_str(), "10.245.1.10/24", "10.245.1.1"),
            (self.pod2.as_str(), "10.245.2.10/24", "10.245.2.1"),
        ] {
            ip(&["-n", pod, "addr", "add", addr, "dev", "eth0"]);
            ip(&["-n", pod, "link", "set", "eth0", "up"]);
            ip(&["-n", pod, "route", "add", "192.168.77.0/24", "via", gateway]);
        }
        // node1 routes node2's pod CIDR over the underlay; both forward.
        ip(&["route", "add", "10.245.2.0/24", "via", "192.168.77.2"]);
        fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("node1 forwarding");
        let status = Command::new("ip")
            .args(["netns", "exec", &self.node2, "sysctl", "-qw"])
            .arg("net.ipv4.ip_forward=1")
            .status()
            .expect("run sysctl");
        assert!(status.success(), "node2 forwarding");
    }

    fn services(&self) -> ServiceMap {
        ServiceMap::open_pinned(&self.pin_dir).expect("open the pinned service map")
    }

    fn conntrack(&self) -> Vec<CtEntry> {
        conntrack::list_pinned(&self.pin_dir).expect("list the pinned conntrack")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.datapath = None;
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // Deleting pod1's namespace removes hp1; ul0 goes with the underlay's.
        if let Err(err) = Datapath::remove_pins(&self.pin_dir) {
            eprintln!(
                "warning: failed to remove {}: {err}",
                self.pin_dir.display()
            );
        }
        if let Some(parent) = self.pin_dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Runs `f` on a thread inside the named network namespace.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let file = fs::File::open(Path::new("/run/netns").join(ns)).expect("open netns");
    thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd; it only changes this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A TCP and a UDP server on `addr:8080` inside a pod namespace, each
/// answering `<own address> <peer address>`; stopped on drop.
struct Backend {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Backend {
    fn start(ns: &str, addr: Ipv4Addr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let local = SocketAddrV4::new(addr, BACKEND_PORT);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let tcp_stop = Arc::clone(&stop);
        let tcp_ready = ready_tx.clone();
        let tcp = in_netns(ns, move || {
            let listener = TcpListener::bind(local).expect("bind tcp backend");
            listener.set_nonblocking(true).expect("nonblocking");
            tcp_ready.send(()).expect("ready");
            while !tcp_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = writeln!(conn, "{local} {peer}");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        let udp_stop = Arc::clone(&stop);
        let udp = in_netns(ns, move || {
            let socket = UdpSocket::bind(local).expect("bind udp backend");
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut buf = [0; 64];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{local} {peer}").as_bytes(), peer);
                }
            }
        });
        for _ in 0..2 {
            ready_rx.recv().expect("backend started");
        }
        Self {
            stop,
            threads: vec![tcp, udp],
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// One exchange as the client saw it.
#[derive(Debug)]
struct Exchange {
    /// The client's own address.
    client: SocketAddrV4,
    /// Where the reply came from (TCP: the connected peer).
    reply_from: SocketAddrV4,
    /// The backend that answered.
    backend: SocketAddrV4,
    /// The client address the backend saw.
    seen_peer: SocketAddrV4,
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => panic!("expected IPv4, got {v6}"),
    }
}

fn parse_reply(text: &str) -> (SocketAddrV4, SocketAddrV4) {
    let mut fields = text.split_whitespace();
    let mut next = || -> SocketAddrV4 {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("bad reply {text:?}"))
    };
    (next(), next())
}

/// `count` exchanges from the client namespace to `target`, each on its own
/// socket.
fn client(lab: &Lab, proto: Protocol, target: SocketAddrV4, count: usize) -> Vec<Exchange> {
    in_netns(&lab.client, move || {
        (0..count)
            .map(|_| match proto {
                Protocol::Tcp => {
                    let mut conn = TcpStream::connect_timeout(&target.into(), IO_TIMEOUT)
                        .unwrap_or_else(|e| panic!("connect to {target}: {e}"));
                    conn.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                    let mut reply = String::new();
                    conn.read_to_string(&mut reply).expect("read reply");
                    let (backend, seen_peer) = parse_reply(&reply);
                    Exchange {
                        client: v4(conn.local_addr().expect("local addr")),
                        reply_from: v4(conn.peer_addr().expect("peer addr")),
                        backend,
                        seen_peer,
                    }
                }
                Protocol::Udp | Protocol::Sctp => {
                    let socket = UdpSocket::bind((CLIENT, 0)).expect("bind");
                    socket.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                    socket.send_to(b"ping", target).expect("send");
                    let mut buf = [0; 64];
                    let (len, from) = socket
                        .recv_from(&mut buf)
                        .unwrap_or_else(|e| panic!("reply from {target}: {e}"));
                    let (backend, seen_peer) = parse_reply(&String::from_utf8_lossy(&buf[..len]));
                    Exchange {
                        client: v4(socket.local_addr().expect("local addr")),
                        reply_from: v4(from),
                        backend,
                        seen_peer,
                    }
                }
            })
            .collect()
    })
    .join()
    .unwrap_or_else(|_| panic!("client {proto} to {target} failed"))
}

fn external(
    name: &str,
    frontend: SocketAddrV4,
    proto: Protocol,
    backends: &[Ipv4Addr],
) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        vip: *frontend.ip(),
        port: frontend.port(),
        proto,
        backends: backends
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, BACKEND_PORT))
            .collect(),
        affinity_timeout: None,
        external: true,
        local_only: false,
    }
}

/// The conntrack entries of one frontend's flows, both directions.
fn flows_of(entries: &[CtEntry], frontend: SocketAddrV4) -> Vec<&CtEntry> {
    entries
        .iter()
        .filter(|e| e.dst == frontend || e.nat_src == frontend)
        .collect()
}

// ---------------------------------------------------------------- cases

/// A backend on this node: TCP and UDP reach it with the client's address;
/// replies come from the node's `NodePort`; the conntrack lists both
/// directions of every flow, TCP ones closed once the connection is.
fn local_backend_sees_the_client(lab: &Lab) {
    let mut services = lab.services();
    let tcp_frontend = SocketAddrV4::new(NODE1, 30080);
    let udp_frontend = SocketAddrV4::new(NODE1, 30053);
    services
        .upsert_service(&external(
            "default/local:http",
            tcp_frontend,
            Protocol::Tcp,
            &[POD1],
        ))
        .expect("upsert tcp");
    services
        .upsert_service(&external(
            "default/local:dns",
            udp_frontend,
            Protocol::Udp,
            &[POD1],
        ))
        .expect("upsert udp");
    for (proto, frontend) in [(Protocol::Tcp, tcp_frontend), (Protocol::Udp, udp_frontend)] {
        let got = client(lab, proto, frontend, 5);
        for exchange in &got {
            assert_eq!(
                exchange.reply_from, frontend,
                "{proto}: reply from the NodePort"
            );
            assert_eq!(*exchange.backend.ip(), POD1, "{proto}: the local backend");
            assert_eq!(
                exchange.seen_peer, exchange.client,
                "{proto}: the backend sees the client's own address"
            );
        }
    }
    let entries = lab.conntrack();
    println!("{}", conntrack::format_table(&entries, &pod_names()));
    let tcp = flows_of(&entries, tcp_frontend);
    assert_eq!(tcp.len(), 10, "two directions of five TCP flows: {tcp:#?}");
    assert!(
        tcp.iter()
            .all(|e| e.service.as_deref() == Some("default/local:http"))
    );
    assert!(
        tcp.iter()
            .all(|e| e.is_closing() && e.flags & skep_ebpf_common::CT_FLAG_SNAT == 0),
        "closed TCP flows are marked closing, never SNAT'd: {tcp:#?}"
    );
    let replies: Vec<_> = tcp.iter().filter(|e| e.is_reply()).collect();
    assert_eq!(replies.len(), 5);
    assert!(
        replies
            .iter()
            .all(|e| e.src == SocketAddrV4::new(POD1, BACKEND_PORT))
    );
    let udp = flows_of(&entries, udp_frontend);
    assert_eq!(udp.len(), 10, "two directions of five UDP flows: {udp:#?}");
    assert!(udp.iter().all(|e| e.is_live() && !e.is_closing()));
}

/// A backend on another node: the source is SNAT'd to node1 (the backend sees
/// node1's address), replies come back through node1 from the `NodePort`.
fn remote_backend_is_reached_through_snat(lab: &Lab) {
    let mut services = lab.services();
    let tcp_frontend = SocketAddrV4::new(NODE1, 30081);
    let udp_frontend = SocketAddrV4::new(NODE1, 30054);
    services
        .upsert_service(&external(
            "default/remote:http",
            tcp_frontend,
            Protocol::Tcp,
            &[POD2],
        ))
        .expect("upsert tcp");
    services
        .upsert_service(&external(
            "default/remote:dns",
            udp_frontend,
            Protocol::Udp,
            &[POD2],
        ))
        .expect("upsert udp");
    for (proto, frontend) in [(Protocol::Tcp, tcp_frontend), (Protocol::Udp, udp_frontend)] {
        let got = client(lab, proto, frontend, 5);
        for exchange in &got {
            assert_eq!(
                exchange.reply_from, frontend,
                "{proto}: reply from the NodePort"
            );
            assert_eq!(*exchange.backend.ip(), POD2, "{proto}: the remote backend");
            assert_eq!(
                *exchange.seen_peer.ip(),
                NODE1,
                "{proto}: the remote backend sees node1 (Cluster policy)"
            );
        }
    }
    let entries = lab.conntrack();
    let tcp = flows_of(&entries, tcp_frontend);
    assert_eq!(tcp.len(), 10, "{tcp:#?}");
    assert!(
        tcp.iter()
            .all(|e| e.flags & skep_ebpf_common::CT_FLAG_SNAT != 0 && e.is_closing()),
        "{tcp:#?}"
    );
    assert!(
        tcp.iter()
            .filter(|e| e.is_reply())
            .all(|e| *e.dst.ip() == NODE1 && e.nat_dst.ip() == &CLIENT),
        "replies are keyed by node1's SNAT address and go back to the client: {tcp:#?}"
    );
}

/// `externalTrafficPolicy: Local`: the local backend sees the client's own
/// address; a Local service with no backend here drops the traffic (it never
/// reaches a local socket or another node).
fn local_policy_keeps_the_client_address(lab: &Lab) {
    let mut services = lab.services();
    let frontend = SocketAddrV4::new(NODE1, 30082);
    let mut spec = external("default/local-only:http", frontend, Protocol::Tcp, &[POD1]);
    spec.local_only = true;
    services.upsert_service(&spec).expect("upsert");
    for exchange in client(lab, Protocol::Tcp, frontend, 5) {
        assert_eq!(exchange.reply_from, frontend);
        assert_eq!(*exchange.backend.ip(), POD1);
        assert_eq!(exchange.seen_peer, exchange.client, "client address kept");
    }
    spec.backends.clear();
    services.upsert_service(&spec).expect("no local endpoints");
    let refused = in_netns(&lab.client, move || {
        TcpStream::connect_timeout(&frontend.into(), Duration::from_millis(500)).is_err()
    })
    .join()
    .expect("client thread");
    assert!(
        refused,
        "a Local service without local endpoints must not connect"
    );
}

/// An `externalIPs` address routed to node1 reaches a backend on node2;
/// replies come from the external IP.
fn external_ip_reaches_a_remote_backend(lab: &Lab) {
    let mut services = lab.services();
    let frontend = SocketAddrV4::new(EXTERNAL_IP, 80);
    services
        .upsert_service(&external(
            "default/ext:http",
            frontend,
            Protocol::Tcp,
            &[POD2],
        ))
        .expect("upsert");
    for exchange in client(lab, Protocol::Tcp, frontend, 5) {
        assert_eq!(exchange.reply_from, frontend, "reply from the external IP");
        assert_eq!(*exchange.backend.ip(), POD2);
        assert_eq!(*exchange.seen_peer.ip(), NODE1);
    }
    // A ClusterIP-style entry (no external flag) is not served from outside.
    let internal = SocketAddrV4::new(EXTERNAL_IP, 81);
    let mut spec = external("default/internal:http", internal, Protocol::Tcp, &[POD2]);
    spec.external = false;
    services.upsert_service(&spec).expect("upsert internal");
    let reached = in_netns(&lab.client, move || {
        TcpStream::connect_timeout(&internal.into(), Duration::from_millis(500)).is_ok()
    })
    .join()
    .expect("client thread");
    assert!(
        !reached,
        "a frontend without the external flag is not translated"
    );
}

/// Both backends, random slots: connections spread over the two nodes;
/// with `sessionAffinity: ClientIP` every connection sticks to one.
fn spreading_and_session_affinity(lab: &Lab) {
    let mut services = lab.services();
    let frontend = SocketAddrV4::new(NODE1, 30083);
    let mut spec = external("default/both:http", frontend, Protocol::Tcp, &[POD1, POD2]);
    services.upsert_service(&spec).expect("upsert");
    let spread: BTreeSet<Ipv4Addr> = client(lab, Protocol::Tcp, frontend, 30)
        .iter()
        .map(|e| *e.backend.ip())
        .collect();
    assert_eq!(
        spread,
        BTreeSet::from([POD1, POD2]),
        "both backends are used"
    );
    spec.affinity_timeout = Some(600);
    services.upsert_service(&spec).expect("affinity");
    let sticky: BTreeSet<Ipv4Addr> = client(lab, Protocol::Tcp, frontend, 20)
        .iter()
        .map(|e| *e.backend.ip())
        .collect();
    assert_eq!(sticky.len(), 1, "one backend for the client: {sticky:?}");
    // The chosen backend leaves: the client sticks to the other one, and
    // stays with it once the first comes back.
    let chosen = *sticky.first().expect("one backend");
    let other = if chosen == POD1 { POD2 } else { POD1 };
    let backends_of = |lab: &Lab| -> BTreeSet<Ipv4Addr> {
        client(lab, Protocol::Tcp, frontend, 10)
            .iter()
            .map(|e| *e.backend.ip())
            .collect()
    };
    let both = spec.backends.clone();
    spec.backends.retain(|addr| *addr.ip() != chosen);
    services
        .upsert_service(&spec)
        .expect("remove the chosen backend");
    assert_eq!(backends_of(lab), BTreeSet::from([other]));
    spec.backends = both;
    services.upsert_service(&spec).expect("add it back");
    let after = backends_of(lab);
    assert_eq!(
        after,
        BTreeSet::from([other]),
        "sticks to the backend that stayed"
    );
}

fn pod_names() -> BTreeMap<Ipv4Addr, String> {
    BTreeMap::from([
        (POD1, "default/pod1".to_owned()),
        (POD2, "default/pod2".to_owned()),
    ])
}

/// The running backends (kept alive while the cases run).
struct Pods {
    _pod1: Backend,
    _pod2: Backend,
}

/// A `NodePort` flow is judged by the ingress policy of the backend pod it
/// reaches, on the translated tuple (client address, backend port).
fn network_policy_judges_the_backend_it_reaches(lab: &Lab) {
    use skep_datapath::PolicyMaps;
    use skep_ebpf_common::{
        IDENTITY_CIDR_BASE, POLICY_INGRESS_ISOLATED, POLICY_PREFIX_PORT, PeerIdentity,
        PolicyEndpoint, PolicyKey, PolicyValue, PolicyVerdict,
    };
    let clients = IDENTITY_CIDR_BASE + 1;
    let mut services = lab.services();
    let frontend = SocketAddrV4::new(NODE1, 30090);
    services
        .upsert_service(&external(
            "default/policed:http",
            frontend,
            Protocol::Tcp,
            &[POD1],
        ))
        .expect("upsert");
    let mut maps = PolicyMaps::open(&lab.pin_dir).expect("policy maps");
    let subnet = Ipv4Addr::new(192, 168, 77, 0);
    maps.set_peer(
        subnet,
        24,
        PeerIdentity {
            pod: 0,
            cidr: clients,
        },
    )
    .expect("ipcache");
    maps.set_endpoint(
        POD1,
        PolicyEndpoint {
            identity: 1,
            flags: POLICY_INGRESS_ISOLATED,
        },
    )
    .expect("isolate pod1");
    let refused = in_netns(&lab.client, move || {
        TcpStream::connect_timeout(&frontend.into(), Duration::from_secs(1)).is_err()
    })
    .join()
    .expect("client thread");
    assert!(refused, "pod1 admits nobody: the NodePort flow is dropped");
    let rule = PolicyKey {
        endpoint: 1,
        peer: clients,
        direction: skep_ebpf_common::Direction::Ingress as u8,
        proto: 6,
        port: BACKEND_PORT.to_be(),
    };
    maps.set_rule(rule, POLICY_PREFIX_PORT, PolicyValue { policy: 1 })
        .expect("rule");
    for exchange in client(lab, Protocol::Tcp, frontend, 2) {
        assert_eq!(exchange.reply_from, frontend);
        assert_eq!(exchange.seen_peer, exchange.client);
    }
    let verdicts: Vec<_> = maps
        .counters()
        .expect("counters")
        .into_iter()
        .filter(|c| c.endpoint == POD1)
        .map(|c| (c.verdict, c.packets))
        .collect();
    assert!(
        verdicts.contains(&(PolicyVerdict::Allowed, 2))
            && verdicts
                .iter()
                .any(|(v, n)| *v == PolicyVerdict::Denied && *n >= 1),
        "{verdicts:?}"
    );
    // The lab is shared: leave pod1 unpoliced.
    assert!(maps.remove_endpoint(POD1).expect("remove endpoint"));
    assert!(
        maps.remove_rule(rule, POLICY_PREFIX_PORT)
            .expect("remove rule")
    );
    assert!(maps.remove_peer(subnet, 24).expect("remove peer"));
}

// ---------------------------------------------------------------- runner

/// A test case: runs against the shared lab.
type Case = fn(&Lab);

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("nodeport: these tests need root (bpf, network namespaces); run them as root");
        std::process::exit(1);
    }
    // This process becomes node1: a fresh network namespace, before any
    // thread exists.
    // SAFETY: unshare has no memory-safety preconditions; no threads exist yet.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "nodeport: failed to create a network namespace: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    ip(&["link", "set", "lo", "up"]);
    let lab = Lab::new();
    let pods = Pods {
        _pod1: Backend::start(&lab.pod1, POD1),
        _pod2: Backend::start(&lab.pod2, POD2),
    };
    let cases: &[(&str, Case)] = &[
        (
            "local_backend_sees_the_client",
            local_backend_sees_the_client,
        ),
        (
            "remote_backend_is_reached_through_snat",
            remote_backend_is_reached_through_snat,
        ),
        (
            "local_policy_keeps_the_client_address",
            local_policy_keeps_the_client_address,
        ),
        (
            "external_ip_reaches_a_remote_backend",
            external_ip_reaches_a_remote_backend,
        ),
        (
            "spreading_and_session_affinity",
            spreading_and_session_affinity,
        ),
        (
            "network_policy_judges_the_backend_it_reaches",
            network_policy_judges_the_backend_it_reaches,
        ),
    ];
    let passed = common::run_cases(cases, |case| case(&lab));
    drop(pods);
    drop(lab);
    if !passed {
        std::process::exit(1);
    }
}
