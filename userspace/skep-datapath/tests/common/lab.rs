//! The two-node lab the root routing and policy tests share, built out of
//! network namespaces with unique names: node A with pods `a1` and `a2`,
//! node B with pod `b1`, the nodes joined by a veth "underlay" (10.99.0.1 ↔
//! 10.99.0.2). Pods are wired as the agent wires them (host veth with
//! `proxy_arp` and a `/32` route, pod default route via 169.254.1.1 with a
//! permanent neighbour), and each node routes the other's pod CIDR via its
//! underlay address, as routes.rs does. An iptables `FORWARD` counting rule
//! in each node shows what the kernel forwarded by itself.
//!
//! Sockets are opened by the test thread after entering a pod's namespace
//! (`setns`), so no helper processes are needed. Namespaces, pins and maps
//! are removed by the lab's Drop on success and on failure.
#![allow(dead_code, reason = "each test binary uses a part of the lab")]

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
    time::Duration,
};

use skep_datapath::{
    Datapath, DatapathConfig, Endpoint, EndpointMap, RouteHook, endpoint::read_route_counters,
};
use skep_ebpf_common::RouteAction;

pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
pub static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn run(args: &[&str]) -> String {
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
pub fn in_netns<T>(ns: &str, f: impl FnOnce() -> T) -> T {
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

pub fn ifindex(ns: &str, interface: &str) -> u32 {
    let name = CString::new(interface).expect("interface name");
    // SAFETY: a valid NUL-terminated name for the call's duration.
    let index = in_netns(ns, || unsafe { libc::if_nametoindex(name.as_ptr()) });
    assert_ne!(index, 0, "{interface} in {ns}");
    index
}

// ---------------------------------------------------------------- the lab

/// A pod: its namespace, host veth and address.
#[expect(clippy::struct_field_names, reason = "pod_mac and host_mac read best")]
pub struct Pod {
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub pod_mac: [u8; 6],
    pub host_mac: [u8; 6],
}

/// One node: namespace, pin dir, loaded datapath.
pub struct Node {
    pub netns: String,
    pub underlay: &'static str,
    pub pin_dir: PathBuf,
    pub datapath: Option<Datapath>,
}

impl Node {
    pub fn load(&mut self) {
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

    pub fn datapath(&mut self) -> &mut Datapath {
        self.datapath.as_mut().expect("datapath loaded")
    }

    pub fn attach(&mut self, interface: &str, hook: RouteHook) {
        let ns = self.netns.clone();
        let dp = self.datapath();
        in_netns(&ns, || dp.attach_route(interface, hook)).expect("attach routing program");
    }

    pub fn counter(&self, action: RouteAction) -> u64 {
        read_route_counters(&self.pin_dir)
            .expect("read route counters")
            .into_iter()
            .find(|(a, _)| *a == action)
            .map_or(0, |(_, v)| v.packets)
    }

    pub fn forward_packets(&self) -> u64 {
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

    pub fn zero_forward(&self) {
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

pub struct Lab {
    pub a: Node,
    pub b: Node,
    pub a1: Pod,
    pub a2: Pod,
    pub b1: Pod,
    pub netns: Vec<String>,
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

pub fn mac(last: u8, node: u8) -> [u8; 6] {
    [0x02, 0x5e, 0x00, 0x00, node, last]
}

pub fn fmt_mac(mac: [u8; 6]) -> String {
    skep_datapath::Mac(mac).to_string()
}

impl Lab {
    /// Builds the namespaces, veths, addresses and routes; loads both
    /// datapaths; attaches nothing yet.
    pub fn new() -> Self {
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
    pub fn attach_all(&mut self) {
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
    pub fn new(netns: &str, host_veth: &str, ip: [u8; 4], node: u8) -> Self {
        Self {
            netns: netns.to_owned(),
            host_veth: host_veth.to_owned(),
            ip: Ipv4Addr::from(ip),
            pod_mac: mac(ip[3], node),
            host_mac: mac(ip[3] + 100, node),
        }
    }

    /// Calico-style wiring, as skep-node's sandbox.rs does it.
    pub fn wire(&self, node: &str) {
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

    pub fn endpoint(&self, host_ifindex: u32) -> Endpoint {
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
pub fn tcp_exchange(from: &Pod, to: &Pod, port: u16) -> (SocketAddr, String) {
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
pub fn udp_exchange(from: &Pod, to: &Pod, port: u16) -> SocketAddr {
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
pub fn ping(from: &str, to: &str) -> Option<String> {
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
