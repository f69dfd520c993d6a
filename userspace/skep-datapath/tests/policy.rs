//! Network-policy enforcement by the TC programs on the real kernel (root
//! only).
//!
//! Each case builds the two-node lab of `common/lab.rs` (node A with pods
//! `a1`, `a2`; node B with `b1`), attaches the routing programs and writes
//! hand-built identities and rules through [`PolicyMaps`]: this proves the
//! datapath, not the compiler. Every case checks delivery (real TCP, UDP and
//! raw SCTP-shaped packets between the namespaces) and the verdict counters
//! or the flow events read through [`FlowReader`].
//!
//! A denied probe is one whose packet never arrives: the TCP connect or the
//! receive gives up after [`DENY_WAIT`], and the programs' denied counter
//! for that endpoint (and a flow event with the exact tuple) proves it was
//! the policy that dropped it.

mod common;
#[path = "common/lab.rs"]
mod lab;

use std::{
    io::{ErrorKind, Read as _, Write as _},
    mem::size_of,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use lab::{IO_TIMEOUT, Lab, Pod, in_netns};
use skep_datapath::{FlowNames, FlowReader, PolicyMaps, format_flow, nodeport::set_node_address};
use skep_ebpf_common::{
    Direction, IDENTITY_CIDR_BASE, POLICY_EGRESS_ISOLATED, POLICY_INGRESS_ISOLATED,
    POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_PORT, PeerIdentity, PolicyEndpoint, PolicyFlow,
    PolicyKey, PolicyValue, PolicyVerdict,
};

/// How long a probe waits before calling its packet dropped.
const DENY_WAIT: Duration = Duration::from_secs(1);
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const NODE_A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

const ID_A1: u32 = 1;
const ID_A2: u32 = 2;
const ID_B1: u32 = 3;
const CIDR_WIDE: u32 = IDENTITY_CIDR_BASE + 1;
const CIDR_EXCEPT: u32 = IDENTITY_CIDR_BASE + 2;

// ---------------------------------------------------------------- probes

/// A TCP connection from namespace `from_ns` to `to_ip:port` served in
/// `to_ns`, with a request and a reply; `false` when the connection is
/// never established.
fn tcp_probe(from_ns: &str, to_ns: &str, to_ip: Ipv4Addr, port: u16) -> bool {
    let listener = in_netns(to_ns, || TcpListener::bind((to_ip, port))).expect("bind");
    let connected = in_netns(from_ns, || {
        TcpStream::connect_timeout(&SocketAddr::from((to_ip, port)), DENY_WAIT)
    });
    let mut client = match connected {
        Ok(client) => client,
        Err(e) if e.kind() == ErrorKind::TimedOut => return false,
        Err(e) => panic!("connect {from_ns} → {to_ip}:{port}: {e}"),
    };
    let (mut conn, _) = listener.accept().expect("accept");
    client.write_all(b"ping").expect("write");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    conn.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut request = String::new();
    conn.read_to_string(&mut request).expect("server reads");
    assert_eq!(request, "ping");
    conn.write_all(b"pong").expect("reply");
    drop(conn);
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reply = String::new();
    client
        .read_to_string(&mut reply)
        .expect("the reply comes back");
    assert_eq!(reply, "pong");
    true
}

fn tcp(from: &Pod, to: &Pod, port: u16) -> bool {
    tcp_probe(&from.netns, &to.netns, to.ip, port)
}

/// One UDP datagram and its echo; `false` when the datagram never arrives.
fn udp(from: &Pod, to: &Pod, port: u16) -> bool {
    let server = in_netns(&to.netns, || UdpSocket::bind((to.ip, port))).expect("bind udp");
    server.set_read_timeout(Some(DENY_WAIT)).expect("timeout");
    let client = in_netns(&from.netns, || UdpSocket::bind((from.ip, 0))).expect("bind client");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.send_to(b"ping", (to.ip, port)).expect("send");
    let mut buf = [0; 16];
    let peer = match server.recv_from(&mut buf) {
        Ok((_, peer)) => peer,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
        Err(e) => panic!("udp recv: {e}"),
    };
    server.send_to(b"pong", peer).expect("echo");
    let (len, _) = client.recv_from(&mut buf).expect("the echo comes back");
    assert_eq!(&buf[..len], b"pong");
    true
}

/// A raw IP socket of protocol 132 (the kernel has no SCTP module, so no
/// SCTP socket), with a receive timeout.
fn raw_sctp_socket() -> OwnedFd {
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, i32::from(SCTP)) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: libc::time_t::try_from(DENY_WAIT.as_secs()).expect("fits"),
        tv_usec: libc::suseconds_t::from(DENY_WAIT.subsec_micros()),
    };
    // SAFETY: a valid timeval of the size given.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            libc::socklen_t::try_from(size_of::<libc::timeval>()).expect("fits"),
        )
    };
    assert_eq!(set, 0, "SO_RCVTIMEO");
    fd
}

/// An SCTP-shaped packet (common header: ports, verification tag, checksum,
/// then a payload) from `from` to `to:port` over raw sockets; `true` when
/// the receiver's raw socket sees it.
fn sctp(from: &Pod, to: &Pod, port: u16) -> bool {
    let rx = in_netns(&to.netns, raw_sctp_socket);
    let tx = in_netns(&from.netns, raw_sctp_socket);
    let mut packet = Vec::new();
    packet.extend_from_slice(&40_000_u16.to_be_bytes());
    packet.extend_from_slice(&port.to_be_bytes());
    packet.extend_from_slice(&[0; 8]);
    packet.extend_from_slice(b"sctp-probe");
    let dst = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("fits"),
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a live buffer and a valid sockaddr_in of the size given.
    let sent = unsafe {
        libc::sendto(
            tx.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const dst).cast(),
            libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).expect("fits"),
        )
    };
    assert_eq!(
        usize::try_from(sent).ok(),
        Some(packet.len()),
        "sendto: {}",
        std::io::Error::last_os_error()
    );
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: a live buffer of the length given.
        let got = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(len) = usize::try_from(got) else {
            let e = std::io::Error::last_os_error();
            assert!(
                matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "raw recv: {e}"
            );
            return false;
        };
        // A raw IPv4 socket receives the IP header too.
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if len >= ihl + packet.len() && buf[ihl..ihl + packet.len()] == packet[..] {
            return true;
        }
    }
}

// ---------------------------------------------------------------- policy

fn ip_u32(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn endpoint(identity: u32, flags: u32) -> PolicyEndpoint {
    PolicyEndpoint { identity, flags }
}

fn pod_peer(pod: u32) -> PeerIdentity {
    PeerIdentity { pod, cidr: 0 }
}

fn rule(endpoint: u32, peer: u32, direction: Direction, proto: u8, port: u16) -> PolicyKey {
    PolicyKey {
        endpoint,
        peer,
        direction: direction as u8,
        proto,
        port: port.to_be(),
    }
}

fn allow(policy: u32) -> PolicyValue {
    PolicyValue { policy }
}

fn count(maps: &PolicyMaps, pod: &Pod, direction: Direction, verdict: PolicyVerdict) -> u64 {
    maps.counters()
        .expect("read counters")
        .iter()
        .filter(|c| c.endpoint == pod.ip && c.direction == direction && c.verdict == verdict)
        .map(|c| c.packets)
        .sum()
}

/// The flows reported so far (waits briefly for the first).
fn flows(reader: &mut FlowReader) -> Vec<PolicyFlow> {
    let mut all = reader.read(IO_TIMEOUT).expect("read flows");
    all.extend(reader.drain());
    all
}

/// Whether `flows` hold one for `src → dst:port/proto`, seen in `direction`
/// with `verdict`.
fn has_flow(
    flows: &[PolicyFlow],
    (src, dst, port, proto): (Ipv4Addr, Ipv4Addr, u16, u8),
    direction: Direction,
    verdict: PolicyVerdict,
) -> Option<PolicyFlow> {
    flows
        .iter()
        .find(|f| {
            f.src_addr == ip_u32(src)
                && f.dst_addr == ip_u32(dst)
                && u16::from_be(f.dst_port) == port
                && f.proto == proto
                && f.direction == direction as u8
                && f.verdict == verdict as u8
        })
        .copied()
}

fn lab_with_policy() -> (Lab, PolicyMaps, FlowReader) {
    let mut lab = Lab::new();
    lab.attach_all();
    let mut maps = PolicyMaps::open(&lab.a.pin_dir).expect("open policy maps");
    let reader = FlowReader::open(&lab.a.pin_dir).expect("open flows");
    for (pod, id) in [(&lab.a1, ID_A1), (&lab.a2, ID_A2), (&lab.b1, ID_B1)] {
        maps.set_peer(pod.ip, 32, pod_peer(id)).expect("ipcache");
        maps.set_peer_name(pod.ip, &format!("x/{}", &pod.netns[pod.netns.len() - 2..]))
            .expect("peer name");
    }
    (lab, maps, reader)
}

// ---------------------------------------------------------------- cases

fn no_policy_passes_everything_and_counts_nothing() {
    let (lab, maps, mut reader) = lab_with_policy();
    assert!(tcp(&lab.a1, &lab.a2, 8080), "a1 → a2 tcp");
    assert!(udp(&lab.a2, &lab.a1, 8080), "a2 → a1 udp");
    assert!(tcp(&lab.a1, &lab.b1, 8080), "a1 → b1 tcp across nodes");
    assert!(sctp(&lab.a1, &lab.a2, 9000), "a1 → a2 sctp");
    assert_eq!(maps.counters().expect("counters"), []);
    assert_eq!(reader.drain(), [], "no flow judged");
}

fn ingress_isolation_allows_only_the_rule_and_replies() {
    let (lab, mut maps, mut reader) = lab_with_policy();
    let isolated = endpoint(ID_A2, POLICY_INGRESS_ISOLATED);
    maps.set_endpoint(lab.a2.ip, isolated).expect("isolate a2");
    assert!(!tcp(&lab.a1, &lab.a2, 8080), "isolated, no rule: tcp");
    assert!(!udp(&lab.a1, &lab.a2, 8080), "isolated, no rule: udp");
    assert!(count(&maps, &lab.a2, Direction::Ingress, PolicyVerdict::Denied) >= 2);

    // a1 is ingress-isolated too, with no rule: only replies may reach it.
    maps.set_endpoint(lab.a1.ip, endpoint(ID_A1, POLICY_INGRESS_ISOLATED))
        .expect("isolate a1");
    maps.set_rule(
        rule(ID_A2, ID_A1, Direction::Ingress, TCP, 8080),
        POLICY_PREFIX_PORT,
        allow(7),
    )
    .expect("rule");
    maps.set_policy_name(7, "x/allow-a1-8080").expect("name");
    reader.drain();
    assert!(tcp(&lab.a1, &lab.a2, 8080), "the rule's port, with replies");
    assert!(
        count(
            &maps,
            &lab.a1,
            Direction::Ingress,
            PolicyVerdict::Established
        ) >= 2,
        "a1 received the replies as established"
    );
    assert_eq!(
        count(&maps, &lab.a1, Direction::Ingress, PolicyVerdict::Denied),
        0
    );
    assert!(!tcp(&lab.a1, &lab.a2, 8081), "another port");
    assert!(!udp(&lab.a1, &lab.a2, 8080), "the port over udp");
    assert!(!tcp(&lab.b1, &lab.a2, 8080), "another pod (across nodes)");
    assert!(!tcp(&lab.a2, &lab.a1, 8080), "a1 admits nobody");

    let seen = flows(&mut reader);
    let allowed = has_flow(
        &seen,
        (lab.a1.ip, lab.a2.ip, 8080, TCP),
        Direction::Ingress,
        PolicyVerdict::Allowed,
    )
    .expect("the allowed flow is reported");
    assert_eq!(
        (allowed.endpoint, allowed.peer, allowed.policy),
        (ID_A2, ID_A1, 7)
    );
    let denied = has_flow(
        &seen,
        (lab.a1.ip, lab.a2.ip, 8081, TCP),
        Direction::Ingress,
        PolicyVerdict::Denied,
    )
    .expect("the denied tuple is reported");
    assert_eq!(
        (denied.endpoint, denied.peer, denied.policy),
        (ID_A2, ID_A1, 0)
    );
    for (src, dst, port, proto) in [
        (lab.a1.ip, lab.a2.ip, 8080, UDP),
        (lab.b1.ip, lab.a2.ip, 8080, TCP),
        (lab.a2.ip, lab.a1.ip, 8080, TCP),
    ] {
        assert!(
            has_flow(
                &seen,
                (src, dst, port, proto),
                Direction::Ingress,
                PolicyVerdict::Denied
            )
            .is_some(),
            "denied {src} → {dst}:{port}/{proto} reported"
        );
    }
    let names = FlowNames::load(&lab.a.pin_dir).expect("names");
    let line = format_flow(&allowed, &names);
    assert!(
        line.starts_with("ingress allowed x/a1 10.244.1.11:")
            && line.ends_with("-> x/a2 10.244.1.12:8080 tcp policy x/allow-a1-8080"),
        "{line}"
    );
    println!("  {line}\n  {}", format_flow(&denied, &names));

    // Un-isolated again: everything passes.
    assert!(maps.remove_endpoint(lab.a2.ip).expect("remove"));
    assert!(maps.remove_endpoint(lab.a1.ip).expect("remove"));
    assert!(tcp(&lab.a1, &lab.a2, 8081));
    assert!(tcp(&lab.a2, &lab.a1, 8082));
}

fn egress_to_an_ip_block_with_an_except() {
    let (lab, mut maps, mut reader) = lab_with_policy();
    // ipBlock 10.244.0.0/16 except 10.244.1.12/32 (a2): each pod's /32
    // carries the longest policy CIDR containing it.
    maps.set_peer(
        Ipv4Addr::new(10, 244, 0, 0),
        16,
        PeerIdentity {
            pod: 0,
            cidr: CIDR_WIDE,
        },
    )
    .expect("cidr");
    maps.set_peer(
        lab.a2.ip,
        32,
        PeerIdentity {
            pod: ID_A2,
            cidr: CIDR_EXCEPT,
        },
    )
    .expect("except");
    maps.set_peer(
        lab.b1.ip,
        32,
        PeerIdentity {
            pod: ID_B1,
            cidr: CIDR_WIDE,
        },
    )
    .expect("b1");
    maps.set_rule(
        rule(ID_A1, CIDR_WIDE, Direction::Egress, 0, 0),
        POLICY_PREFIX_ANY_PROTO,
        allow(9),
    )
    .expect("rule");
    maps.set_endpoint(lab.a1.ip, endpoint(ID_A1, POLICY_EGRESS_ISOLATED))
        .expect("isolate a1");
    reader.drain();
    assert!(
        tcp(&lab.a1, &lab.b1, 8080),
        "inside the block, across nodes"
    );
    assert!(udp(&lab.a1, &lab.b1, 8080), "inside the block, udp");
    assert!(!tcp(&lab.a1, &lab.a2, 8080), "the except");
    assert!(
        tcp(&lab.a2, &lab.a1, 8081),
        "a1's replies to a connection it accepted pass its egress policy"
    );
    // An address no pod has: its longest prefix is the /16.
    let probe = in_netns(&lab.a1.netns, || UdpSocket::bind((lab.a1.ip, 0))).expect("bind");
    probe
        .send_to(b"x", (Ipv4Addr::new(10, 244, 3, 5), 53))
        .expect("send");
    let seen = flows(&mut reader);
    let outside = has_flow(
        &seen,
        (lab.a1.ip, Ipv4Addr::new(10, 244, 3, 5), 53, UDP),
        Direction::Egress,
        PolicyVerdict::Allowed,
    )
    .expect("10.244.3.5 judged by the /16");
    assert_eq!((outside.peer, outside.policy), (CIDR_WIDE, 9));
    let except = has_flow(
        &seen,
        (lab.a1.ip, lab.a2.ip, 8080, TCP),
        Direction::Egress,
        PolicyVerdict::Denied,
    )
    .expect("the except is reported");
    assert_eq!(except.peer, ID_A2);
    assert!(count(&maps, &lab.a1, Direction::Egress, PolicyVerdict::Allowed) >= 3);
    assert!(
        count(
            &maps,
            &lab.a1,
            Direction::Egress,
            PolicyVerdict::Established
        ) >= 2
    );
    assert!(count(&maps, &lab.a1, Direction::Egress, PolicyVerdict::Denied) >= 1);
    assert_eq!(
        count(&maps, &lab.a1, Direction::Ingress, PolicyVerdict::Denied),
        0,
        "replies are never judged as ingress"
    );
}

fn a_port_range_is_one_lpm_block() {
    let (lab, mut maps, _reader) = lab_with_policy();
    // 8000..=8003: one block of 4 ports (prefix 96 − 2).
    maps.set_rule(
        rule(ID_A2, ID_A1, Direction::Ingress, TCP, 8000),
        POLICY_PREFIX_PORT - 2,
        allow(3),
    )
    .expect("rule");
    maps.set_endpoint(lab.a2.ip, endpoint(ID_A2, POLICY_INGRESS_ISOLATED))
        .expect("isolate");
    assert!(tcp(&lab.a1, &lab.a2, 8000));
    assert!(tcp(&lab.a1, &lab.a2, 8003));
    assert!(!tcp(&lab.a1, &lab.a2, 8004));
    assert!(!tcp(&lab.a1, &lab.a2, 7999));
    assert_eq!(maps.rules().expect("rules").len(), 1);
    assert!(count(&maps, &lab.a2, Direction::Ingress, PolicyVerdict::Allowed) >= 2);
    assert!(count(&maps, &lab.a2, Direction::Ingress, PolicyVerdict::Denied) >= 2);
    // Removing the rule denies new connections at once.
    assert!(
        maps.remove_rule(
            rule(ID_A2, ID_A1, Direction::Ingress, TCP, 8001),
            POLICY_PREFIX_PORT - 2
        )
        .expect("remove")
    );
    assert!(!tcp(&lab.a1, &lab.a2, 8002));
}

fn the_node_reaches_an_isolated_pod_and_back() {
    let (lab, mut maps, _reader) = lab_with_policy();
    set_node_address(&lab.a.pin_dir, Some(NODE_A)).expect("node address");
    maps.set_endpoint(
        lab.a1.ip,
        endpoint(ID_A1, POLICY_INGRESS_ISOLATED | POLICY_EGRESS_ISOLATED),
    )
    .expect("isolate a1 both ways, no rule");
    assert!(
        tcp_probe(&lab.a.netns, &lab.a1.netns, lab.a1.ip, 8080),
        "node → pod"
    );
    assert!(
        tcp_probe(&lab.a1.netns, &lab.a.netns, NODE_A, 8090),
        "pod → its node"
    );
    assert_eq!(
        maps.counters().expect("counters"),
        [],
        "node traffic is never judged"
    );
    assert!(!tcp(&lab.a1, &lab.a2, 8080), "isolation is on for pods");
    assert!(!tcp(&lab.a2, &lab.a1, 8080), "isolation is on for pods");
}

fn sctp_is_judged_by_protocol_and_port() {
    let (lab, mut maps, mut reader) = lab_with_policy();
    maps.set_rule(
        rule(ID_A2, ID_A1, Direction::Ingress, TCP, 9000),
        POLICY_PREFIX_PORT,
        allow(4),
    )
    .expect("tcp rule");
    maps.set_endpoint(lab.a2.ip, endpoint(ID_A2, POLICY_INGRESS_ISOLATED))
        .expect("isolate");
    assert!(
        !sctp(&lab.a1, &lab.a2, 9000),
        "a TCP rule does not admit SCTP"
    );
    maps.set_rule(
        rule(ID_A2, ID_A1, Direction::Ingress, SCTP, 9000),
        POLICY_PREFIX_PORT,
        allow(5),
    )
    .expect("sctp rule");
    assert!(sctp(&lab.a1, &lab.a2, 9000), "the SCTP rule");
    assert!(!sctp(&lab.a1, &lab.a2, 9001), "another SCTP port");
    let seen = flows(&mut reader);
    let allowed = has_flow(
        &seen,
        (lab.a1.ip, lab.a2.ip, 9000, SCTP),
        Direction::Ingress,
        PolicyVerdict::Allowed,
    )
    .expect("allowed sctp reported");
    assert_eq!(allowed.policy, 5);
    assert!(
        has_flow(
            &seen,
            (lab.a1.ip, lab.a2.ip, 9001, SCTP),
            Direction::Ingress,
            PolicyVerdict::Denied
        )
        .is_some()
    );
    assert_eq!(
        count(&maps, &lab.a2, Direction::Ingress, PolicyVerdict::Denied),
        2
    );
}

// ---------------------------------------------------------------- runner

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("policy: these tests need root (bpf, network namespaces); run them as root");
        std::process::exit(1);
    }
    let cases: &[(&str, fn())] = &[
        (
            "no_policy_passes_everything_and_counts_nothing",
            no_policy_passes_everything_and_counts_nothing,
        ),
        (
            "ingress_isolation_allows_only_the_rule_and_replies",
            ingress_isolation_allows_only_the_rule_and_replies,
        ),
        (
            "egress_to_an_ip_block_with_an_except",
            egress_to_an_ip_block_with_an_except,
        ),
        (
            "a_port_range_is_one_lpm_block",
            a_port_range_is_one_lpm_block,
        ),
        (
            "the_node_reaches_an_isolated_pod_and_back",
            the_node_reaches_an_isolated_pod_and_back,
        ),
        (
            "sctp_is_judged_by_protocol_and_port",
            sctp_is_judged_by_protocol_and_port,
        ),
    ];
    if !common::run_cases(cases, |case| case()) {
        std::process::exit(1);
    }
}
