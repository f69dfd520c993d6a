//! Socket-level service load-balancing on the real kernel (root only).
//!
//! Each case loads the datapath into its own pin directory, attaches the
//! socket programs to its own cgroup v2 directory, and runs clients as child
//! processes (this binary re-executed in client mode) that move themselves
//! into that cgroup before they open a socket. Backends are TCP/UDP servers on
//! distinct 127.0.0.x loopback addresses in this process, outside the cgroup.
//! Service addresses (10.96.x.y) are never routed: a connection that is not
//! translated fails, so a reply proves the translation.
//!
//! `harness = false`: this file's `main` runs the cases in order and exits
//! non-zero if one fails; cleanup is by Drop guards, on success and failure.

mod common;

use std::{
    collections::BTreeSet,
    env, fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    panic,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use skep_datapath::{
    Datapath, DatapathConfig, Protocol, ServiceMap, ServiceSpec, format_table,
    preflight::{self, Host},
};

const CLIENT_ENV: &str = "SKEP_SOCK_LB_CLIENT";
const CGROUP_ENV: &str = "SKEP_SOCK_LB_CGROUP";
const PIN_ENV: &str = "SKEP_SOCK_LB_PIN_DIR";
const IO_TIMEOUT: Duration = Duration::from_secs(3);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------- fixtures

/// A node's datapath for one case: pin dir + cgroup, programs attached.
/// Drop removes the pins (which detaches the programs) and the cgroup.
struct Node {
    pin_dir: PathBuf,
    cgroup: PathBuf,
    datapath: Option<Datapath>,
}

impl Node {
    fn new() -> Self {
        let name = unique("test-dp");
        let mounts = preflight::mounts(&Host::system()).expect("read /proc/self/mounts");
        let cgroup2 = preflight::cgroup2_mount(&mounts)
            .expect("this kernel has no cgroup v2 mount: socket LB cannot be tested");
        let cgroup = cgroup2.join("skep").join(&name);
        fs::create_dir_all(&cgroup).expect("create test cgroup");
        let mut node = Self {
            pin_dir: Path::new("/sys/fs/bpf/skep").join(&name),
            cgroup,
            datapath: None,
        };
        node.start();
        node
    }

    /// Loads the datapath and attaches (or re-attaches) the socket programs.
    fn start(&mut self) {
        let mut datapath = Datapath::load(&config(&self.pin_dir)).expect("load datapath");
        datapath
            .attach_cgroup(&self.cgroup)
            .expect("attach socket programs to the cgroup");
        self.datapath = Some(datapath);
    }

    fn services(&self) -> ServiceMap {
        ServiceMap::open_pinned(&self.pin_dir).expect("open pinned service map")
    }

    /// Runs a client process inside this node's cgroup; returns its stdout lines.
    fn client(&self, args: &[&str]) -> Vec<String> {
        run_client(&self.cgroup, args)
    }
}

fn config(pin_dir: &Path) -> DatapathConfig {
    DatapathConfig {
        pin_dir: pin_dir.to_owned(),
        btf: None,
        lru_entries: Some(4096),
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.datapath = None;
        if let Err(err) = Datapath::remove_pins(&self.pin_dir) {
            eprintln!(
                "warning: failed to remove {}: {err}",
                self.pin_dir.display()
            );
        }
        // The cgroup empties as soon as the (already reaped) clients are gone.
        for _ in 0..50 {
            if fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if self.cgroup.exists() {
            eprintln!("warning: failed to remove cgroup {}", self.cgroup.display());
        }
        // Only succeed when no other test node is left under them.
        for dir in [self.cgroup.parent(), self.pin_dir.parent()]
            .into_iter()
            .flatten()
        {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn run_client(cgroup: &Path, args: &[&str]) -> Vec<String> {
    let exe = env::current_exe().expect("own executable");
    let out = Command::new(exe)
        .env(CLIENT_ENV, "1")
        .env(CGROUP_ENV, cgroup)
        .args(args)
        .output()
        .expect("spawn client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// Backend servers on 127.0.0.x that answer with their own name; stopped on drop.
struct Backends {
    addrs: Vec<SocketAddrV4>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Backends {
    fn tcp(count: u8) -> Self {
        Self::start(count, |ip, stop| {
            let listener = TcpListener::bind((ip, 0)).expect("bind tcp backend");
            listener.set_nonblocking(true).expect("nonblocking");
            let addr = local_v4(listener.local_addr().expect("addr"));
            let handle = thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = writeln!(conn, "{addr}");
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
            (addr, handle)
        })
    }

    fn udp(count: u8) -> Self {
        Self::start(count, |ip, stop| {
            let socket = UdpSocket::bind((ip, 0)).expect("bind udp backend");
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            let addr = local_v4(socket.local_addr().expect("addr"));
            let handle = thread::spawn(move || {
                let mut buf = [0; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(addr.to_string().as_bytes(), peer);
                    }
                }
            });
            (addr, handle)
        })
    }

    fn start(
        count: u8,
        serve: impl Fn(Ipv4Addr, Arc<AtomicBool>) -> (SocketAddrV4, thread::JoinHandle<()>),
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (addrs, threads) = (0..count)
            .map(|i| serve(Ipv4Addr::new(127, 0, 0, 2 + i), Arc::clone(&stop)))
            .unzip();
        Self {
            addrs,
            stop,
            threads,
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn local_v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => panic!("expected an IPv4 address, got {v6}"),
    }
}

fn spec(
    name: &str,
    vip: [u8; 4],
    port: u16,
    proto: Protocol,
    backends: &[SocketAddrV4],
) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        vip: Ipv4Addr::from(vip),
        port,
        proto,
        backends: backends.to_vec(),
        affinity_timeout: None,
        external: false,
        local_only: false,
    }
}

/// Parses client lines `peer=<addr> reply=<backend>`.
fn parse(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|line| {
            let mut peer = None;
            let mut reply = None;
            for field in line.split_whitespace() {
                if let Some(v) = field.strip_prefix("peer=") {
                    peer = Some(v.to_owned());
                } else if let Some(v) = field.strip_prefix("reply=") {
                    reply = Some(v.to_owned());
                }
            }
            (
                peer.unwrap_or_else(|| panic!("no peer in {line:?}")),
                reply.unwrap_or_else(|| panic!("no reply in {line:?}")),
            )
        })
        .collect()
}

fn replies(pairs: &[(String, String)]) -> BTreeSet<String> {
    pairs.iter().map(|(_, reply)| reply.clone()).collect()
}

fn names(addrs: &[SocketAddrV4]) -> BTreeSet<String> {
    addrs.iter().map(ToString::to_string).collect()
}

// ---------------------------------------------------------------- cases

/// Many connections to a `ClusterIP` reach every backend, and each socket sees
/// the `ClusterIP` as its peer.
fn tcp_connections_spread_over_backends_and_see_the_vip() {
    let node = Node::new();
    let backends = Backends::tcp(3);
    let mut services = node.services();
    services
        .upsert_service(&spec(
            "default/web:http",
            [10, 96, 0, 10],
            80,
            Protocol::Tcp,
            &backends.addrs,
        ))
        .expect("upsert");
    let got = parse(&node.client(&["tcp", "10.96.0.10:80", "60"]));
    assert_eq!(got.len(), 60);
    for (peer, _) in &got {
        assert_eq!(peer, "10.96.0.10:80", "getpeername must show the service");
    }
    assert_eq!(
        replies(&got),
        names(&backends.addrs),
        "every backend is hit"
    );
    // A process outside the cgroup is not translated (the VIP is unrouted).
    let outside = TcpStream::connect_timeout(
        &"10.96.0.10:80".parse().expect("addr"),
        Duration::from_millis(300),
    );
    assert!(
        outside.is_err(),
        "a socket outside the node cgroup must not be translated"
    );
}

/// A UDP request to the service reaches a backend; the reply's source is the
/// service address (recvmsg4 restores it).
fn udp_replies_come_from_the_vip() {
    let node = Node::new();
    let backends = Backends::udp(2);
    let mut services = node.services();
    services
        .upsert_service(&spec(
            "kube-system/dns:dns",
            [10, 96, 0, 53],
            53,
            Protocol::Udp,
            &backends.addrs,
        ))
        .expect("upsert");
    let got = parse(&node.client(&["udp", "10.96.0.53:53", "30"]));
    assert_eq!(got.len(), 30);
    for (peer, _) in &got {
        assert_eq!(
            peer, "10.96.0.53:53",
            "the reply's source must be the service"
        );
    }
    assert_eq!(replies(&got), names(&backends.addrs));
}

/// A service without endpoints refuses connections at once, never hangs.
fn a_service_without_endpoints_refuses_at_once() {
    let node = Node::new();
    let mut services = node.services();
    services
        .upsert_service(&spec(
            "default/empty:80",
            [10, 96, 0, 11],
            80,
            Protocol::Tcp,
            &[],
        ))
        .expect("upsert");
    let lines = node.client(&["refused", "10.96.0.11:80"]);
    let line = lines.first().expect("one line");
    let errno: i32 = line
        .strip_prefix("errno=")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("connect did not fail: {line}"));
    let ms: u128 = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ms="))
        .and_then(|n| n.parse().ok())
        .expect("elapsed");
    // ECONNREFUSED through bpf_set_retval (kernel >= 5.18); EPERM before.
    assert_eq!(
        errno,
        libc::ECONNREFUSED,
        "connect must be refused, got errno {errno}"
    );
    assert!(ms < 1000, "connect must fail at once, took {ms} ms");
}

/// Scaling down: the removed backend never gets a new connection; the map
/// holds exactly the new backends; scaling up again reuses the freed id.
fn scale_down_removes_a_backend_for_new_connections() {
    let node = Node::new();
    let backends = Backends::tcp(3);
    let mut services = node.services();
    let mut web = spec(
        "default/web:http",
        [10, 96, 0, 12],
        80,
        Protocol::Tcp,
        &backends.addrs,
    );
    services.upsert_service(&web).expect("upsert 3");
    assert_eq!(
        replies(&parse(&node.client(&["tcp", "10.96.0.12:80", "40"]))).len(),
        3
    );

    let removed = backends.addrs[0];
    web.backends = backends.addrs[1..].to_vec();
    services.upsert_service(&web).expect("upsert 2");
    let got = replies(&parse(&node.client(&["tcp", "10.96.0.12:80", "40"])));
    assert_eq!(
        got,
        names(&backends.addrs[1..]),
        "only the remaining backends"
    );
    assert!(!got.contains(&removed.to_string()));
    // The pinned state says the same, read by a fresh handle.
    let listed = node.services().services();
    assert_eq!(listed.len(), 1);
    assert_eq!(names(&listed[0].backends), names(&backends.addrs[1..]));

    // To zero and back up.
    web.backends.clear();
    services.upsert_service(&web).expect("upsert 0");
    assert!(node.client(&["refused", "10.96.0.12:80"])[0].starts_with("errno="));
    web.backends.clone_from(&backends.addrs);
    services.upsert_service(&web).expect("upsert 3 again");
    assert_eq!(
        replies(&parse(&node.client(&["tcp", "10.96.0.12:80", "40"]))).len(),
        3
    );

    // Removing the service: connections are no longer translated.
    assert!(services.remove_service(web.frontend()).expect("remove"));
    assert!(node.services().services().is_empty());
    let line = &node.client(&["refused", "10.96.0.12:80"])[0];
    assert!(
        line.starts_with("errno="),
        "untranslated VIP must not connect: {line}"
    );
}

/// `sessionAffinity: ClientIP`: every connection from the client goes to the
/// same backend; when that backend leaves, the client sticks to a new one.
fn session_affinity_sticks() {
    let node = Node::new();
    let backends = Backends::tcp(3);
    let mut services = node.services();
    let mut web = spec(
        "default/sticky:http",
        [10, 96, 0, 13],
        80,
        Protocol::Tcp,
        &backends.addrs,
    );
    web.affinity_timeout = Some(600);
    services.upsert_service(&web).expect("upsert");
    let first = replies(&parse(&node.client(&["tcp", "10.96.0.13:80", "20"])));
    assert_eq!(first.len(), 1, "one backend for the client: {first:?}");
    // A second client process in the same namespace: same client, same backend.
    let second = replies(&parse(&node.client(&["tcp", "10.96.0.13:80", "10"])));
    assert_eq!(first, second);

    let chosen: SocketAddrV4 = first.iter().next().expect("one").parse().expect("addr");
    web.backends.retain(|addr| *addr != chosen);
    services
        .upsert_service(&web)
        .expect("remove the chosen backend");
    let after = replies(&parse(&node.client(&["tcp", "10.96.0.13:80", "20"])));
    assert_eq!(after.len(), 1, "sticks to one new backend: {after:?}");
    assert!(!after.contains(&chosen.to_string()));

    // Without affinity the same service spreads again.
    web.affinity_timeout = None;
    web.backends.clone_from(&backends.addrs);
    services.upsert_service(&web).expect("drop affinity");
    assert_eq!(
        replies(&parse(&node.client(&["tcp", "10.96.0.13:80", "60"]))).len(),
        3
    );
}

/// The agent is killed with SIGKILL: the pinned links and maps keep the
/// service working; a new agent rebuilds the same view from the pins and
/// re-attaches (swapping its programs into the pinned links) without a gap.
fn service_survives_an_agent_kill_and_state_is_rebuilt() {
    let mut node = Node::new();
    node.datapath = None; // The "agent" process below owns the datapath.
    let backends = Backends::tcp(2);
    let udp = Backends::udp(1);
    let mut desired = vec![
        spec(
            "default/web:http",
            [10, 96, 0, 14],
            80,
            Protocol::Tcp,
            &backends.addrs,
        ),
        ServiceSpec {
            affinity_timeout: Some(30),
            ..spec(
                "default/dns:53",
                [10, 96, 0, 14],
                53,
                Protocol::Udp,
                &udp.addrs,
            )
        },
    ];
    // `services()` lists in frontend order.
    desired.sort_by_key(ServiceSpec::frontend);
    let mut agent = Command::new(env::current_exe().expect("own executable"))
        .env(CLIENT_ENV, "1")
        .env(PIN_ENV, &node.pin_dir)
        .env(CGROUP_ENV, &node.cgroup)
        .args([
            "agent",
            &backends.addrs[0].to_string(),
            &backends.addrs[1].to_string(),
            &udp.addrs[0].to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let mut ready = [0; 6];
    agent
        .stdout
        .as_mut()
        .expect("piped")
        .read_exact(&mut ready)
        .expect("agent reports ready");
    assert_eq!(&ready, b"ready\n");
    agent.kill().expect("SIGKILL the agent");
    agent.wait().expect("reap agent");

    let got = parse(&node.client(&["tcp", "10.96.0.14:80", "30"]));
    assert_eq!(
        replies(&got),
        names(&backends.addrs),
        "service works with the agent gone"
    );
    assert!(got.iter().all(|(peer, _)| peer == "10.96.0.14:80"));

    assert_eq!(
        ServiceMap::list_pinned(&node.pin_dir).expect("list"),
        desired,
        "what `skep bpf lb list` prints"
    );
    let rebuilt = node.services();
    assert_eq!(
        rebuilt.services(),
        desired,
        "open_pinned sees what the agent wrote"
    );

    // The new agent: load and attach again (links updated in place), then
    // reconcile to the same desired state: nothing to change.
    node.start();
    let mut services = node.services();
    services.sync(&desired).expect("sync");
    assert_eq!(services.services(), desired);
    let got = parse(&node.client(&["udp", "10.96.0.14:53", "10"]));
    assert!(
        got.iter()
            .all(|(peer, reply)| peer == "10.96.0.14:53" && *reply == udp.addrs[0].to_string())
    );
    let got = parse(&node.client(&["tcp", "10.96.0.14:80", "30"]));
    assert_eq!(replies(&got), names(&backends.addrs));
    let table = format_table(&services.services());
    assert!(
        table.contains("default/web:http") && table.contains("10.96.0.14:53/UDP"),
        "{table}"
    );
    // Exactly one link per program: the restart swapped programs, not added them.
    let links = fs::read_dir(&node.pin_dir)
        .expect("pin dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("link_"))
        })
        .count();
    assert_eq!(links, 4);
}

/// An update cut short (slots past the count, a backend no slot names) is
/// left alone by readers and removed by the next agent's `open_pinned`; the
/// service itself keeps working throughout.
fn leftovers_of_an_unfinished_update_are_removed_on_open() {
    use aya::maps::{HashMap as BpfHashMap, Map, MapData};
    use skep_ebpf_common::{Backend, BackendId, ServiceKey, ServiceValue, map};

    let node = Node::new();
    let backends = Backends::tcp(1);
    let web = spec(
        "default/web:http",
        [10, 96, 0, 15],
        80,
        Protocol::Tcp,
        &backends.addrs,
    );
    node.services().upsert_service(&web).expect("upsert");
    let open = |name: &str| MapData::from_pin(node.pin_dir.join(name)).expect("pinned map");
    let mut slots: BpfHashMap<_, ServiceKey, ServiceValue> =
        BpfHashMap::try_from(Map::HashMap(open(map::SERVICES))).expect("services map");
    let mut stray_backends: BpfHashMap<_, BackendId, Backend> =
        BpfHashMap::try_from(Map::HashMap(open(map::BACKENDS))).expect("backends map");
    let stray_slot = ServiceKey {
        address: u32::from(Ipv4Addr::new(10, 96, 0, 15)).to_be(),
        port: 80_u16.to_be(),
        proto: 6,
        family: 4,
        slot: 2,
        pad: 0,
    };
    let stray = Backend {
        address: u32::from(Ipv4Addr::new(127, 0, 0, 9)).to_be(),
        port: 9_u16.to_be(),
        proto: 6,
        family: 4,
        flags: 0,
        pad: [0; 3],
    };
    stray_backends
        .insert(77, stray, 0)
        .expect("write stray backend");
    let value = ServiceValue {
        backend_id: 77,
        ..ServiceValue::default()
    };
    slots
        .insert(stray_slot, value, 0)
        .expect("write stray slot");

    // A reader writes nothing and lists the service as the count says.
    assert_eq!(
        ServiceMap::list_pinned(&node.pin_dir).expect("list"),
        vec![web.clone()]
    );
    assert!(
        slots.get(&stray_slot, 0).is_ok(),
        "a reader must not delete"
    );
    // The agent's open removes both leftovers.
    let services = node.services();
    assert_eq!(services.services(), vec![web]);
    assert!(slots.get(&stray_slot, 0).is_err(), "stray slot removed");
    assert!(stray_backends.get(&77, 0).is_err(), "stray backend removed");
    let got = replies(&parse(&node.client(&["tcp", "10.96.0.15:80", "5"])));
    assert_eq!(got, names(&backends.addrs));
}

// ---------------------------------------------------------------- child modes

/// Moves this process into the test cgroup, then runs the client or agent.
fn child_main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let cgroup = PathBuf::from(env::var_os(CGROUP_ENV).expect("cgroup env"));
    if args[0] == "agent" {
        run_agent(&cgroup, &args[1..]);
        return;
    }
    fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .expect("join the test cgroup");
    let target: SocketAddr = args[1].parse().expect("target");
    match args[0].as_str() {
        "tcp" => {
            let count: usize = args[2].parse().expect("count");
            for _ in 0..count {
                let mut conn = TcpStream::connect_timeout(&target, IO_TIMEOUT).expect("connect");
                conn.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                let peer = conn.peer_addr().expect("getpeername");
                let mut reply = String::new();
                conn.read_to_string(&mut reply).expect("read reply");
                println!("peer={peer} reply={}", reply.trim());
            }
        }
        "udp" => {
            let count: usize = args[2].parse().expect("count");
            for _ in 0..count {
                // A new socket per request: each send picks a backend afresh.
                let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
                socket.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                socket.send_to(b"ping", target).expect("send");
                let mut buf = [0; 64];
                let (len, from) = socket.recv_from(&mut buf).expect("recv reply");
                println!("peer={from} reply={}", String::from_utf8_lossy(&buf[..len]));
            }
        }
        "refused" => {
            let start = Instant::now();
            match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                Ok(_) => println!("connected ms={}", start.elapsed().as_millis()),
                Err(err) => println!(
                    "errno={} ms={}",
                    err.raw_os_error().unwrap_or(-1),
                    start.elapsed().as_millis()
                ),
            }
        }
        other => panic!("unknown client mode {other}"),
    }
}

/// The agent: loads, attaches, programs the services, says so, then waits to
/// be killed.
fn run_agent(cgroup: &Path, backends: &[String]) {
    let pin_dir = PathBuf::from(env::var_os(PIN_ENV).expect("pin dir env"));
    let addr = |i: usize| -> SocketAddrV4 { backends[i].parse().expect("backend") };
    let mut datapath = Datapath::load(&config(&pin_dir)).expect("load");
    datapath.attach_cgroup(cgroup).expect("attach");
    let mut services = ServiceMap::open_pinned(&pin_dir).expect("open");
    services
        .upsert_service(&spec(
            "default/web:http",
            [10, 96, 0, 14],
            80,
            Protocol::Tcp,
            &[addr(0), addr(1)],
        ))
        .expect("web");
    services
        .upsert_service(&ServiceSpec {
            affinity_timeout: Some(30),
            ..spec(
                "default/dns:53",
                [10, 96, 0, 14],
                53,
                Protocol::Udp,
                &[addr(2)],
            )
        })
        .expect("dns");
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        thread::park();
    }
}

// ---------------------------------------------------------------- runner

/// Moves this (still single-threaded) process, and so every backend and
/// client it starts, into a new network namespace with only loopback: no
/// route anywhere, so a service address that is not translated fails at
/// once instead of reaching whatever the host's default route leads to.
fn enter_private_netns() {
    // SAFETY: unshare has no memory-safety preconditions; no threads exist yet.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "sock_lb: failed to create a network namespace: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip (iproute2)");
    assert!(
        status.success(),
        "failed to bring lo up in the test namespace"
    );
}

fn main() {
    if env::var_os(CLIENT_ENV).is_some() {
        child_main();
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("sock_lb: these tests need root (bpf, cgroups); run them as root");
        std::process::exit(1);
    }
    enter_private_netns();
    let cases: &[(&str, fn())] = &[
        (
            "tcp_connections_spread_over_backends_and_see_the_vip",
            tcp_connections_spread_over_backends_and_see_the_vip,
        ),
        (
            "udp_replies_come_from_the_vip",
            udp_replies_come_from_the_vip,
        ),
        (
            "a_service_without_endpoints_refuses_at_once",
            a_service_without_endpoints_refuses_at_once,
        ),
        (
            "scale_down_removes_a_backend_for_new_connections",
            scale_down_removes_a_backend_for_new_connections,
        ),
        ("session_affinity_sticks", session_affinity_sticks),
        (
            "leftovers_of_an_unfinished_update_are_removed_on_open",
            leftovers_of_an_unfinished_update_are_removed_on_open,
        ),
        (
            "service_survives_an_agent_kill_and_state_is_rebuilt",
            service_survives_an_agent_kill_and_state_is_rebuilt,
        ),
    ];
    if !common::run_cases(cases, |case| case()) {
        std::process::exit(1);
    }
}
