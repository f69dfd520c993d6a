//! ClusterIP Services on a 3-node lab, through the agents' socket
//! load-balancer: a Deployment with one replica per node behind a Service
//! is reached from pods and from the node namespaces (TCP and UDP), new
//! connections spread over all backends and the application sees the
//! service address as its peer; session affinity sticks; a Service without
//! endpoints refuses at once; an unprogrammed service address is
//! unreachable; an agent killed with SIGKILL and restarted drops no
//! connection and keeps the pinned maps as they were; scaling down stops
//! new connections to the removed backends.
//!
//! Clients are sockets of this test process made inside the client's
//! network namespace while the process sits in a leaf of the node's cgroup
//! (where the agent attached the socket programs, as pods are below it).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use nix::sched::{CloneFlags, setns};
use skep_datapath::{Protocol, ServiceMap, ServiceSpec};
use skep_e2e::cgroup::CgroupVisit;
use skep_e2e::lab::{Lab, LabNode};
use skep_e2e::require_root;
use socket2::{Domain, Socket, Type};

const IMAGE: &str = "lab/busybox:svc";
const NS: &str = "svc";
const ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 10);
const STICKY: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 11);
const EMPTY: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 12);
/// In the Service CIDR, but no Service has it.
const NOWHERE: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 99);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn manifests() -> String {
    format!(
        r"apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {{matchLabels: {{app: echo}}}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: c
        image: {IMAGE}
        imagePullPolicy: Never
        command: [nc, -ll, -p, '80', -e, hostname]
        readinessProbe:
          tcpSocket: {{port: 80}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  clusterIP: {ECHO}
  selector: {{app: echo}}
  ports:
  - {{name: http, port: 80, targetPort: 80}}
  - {{name: udp, port: 90, targetPort: 90, protocol: UDP}}
  - {{name: hold, port: 91, targetPort: 91}}
---
apiVersion: v1
kind: Service
metadata: {{name: sticky, namespace: {NS}}}
spec:
  clusterIP: {STICKY}
  selector: {{app: echo}}
  sessionAffinity: ClientIP
  ports:
  - {{name: http, port: 80, targetPort: 80}}
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: {NS}}}
spec:
  clusterIP: {EMPTY}
  selector: {{app: nothing-has-this}}
  ports:
  - {{port: 80}}
"
    )
}

/// One echo pod.
#[derive(Clone, Debug)]
struct EchoPod {
    name: String,
    node: String,
    ip: Ipv4Addr,
    netns: PathBuf,
}

/// Where a client's sockets are made: a network namespace, and the node's
/// cgroup (the socket programs' attach point; a leaf below it is used).
#[derive(Clone, Debug)]
struct Client {
    label: String,
    netns: PathBuf,
    node_cgroup: PathBuf,
}

impl Client {
    fn sockets(&self, ty: Type, count: usize) -> anyhow::Result<Vec<Socket>> {
        let (netns, cgroup) = (self.netns.clone(), self.node_cgroup.clone());
        let handle = std::thread::spawn(move || -> anyhow::Result<Vec<Socket>> {
            let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the client's namespace")?;
            let _inside = CgroupVisit::enter(&cgroup)?;
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                out.push(Socket::new(Domain::IPV4, ty, None)?);
            }
            Ok(out)
        });
        skep_e2e::netns::join(handle)
    }

    /// One new TCP connection to `to`: the answer and the peer the socket reports.
    fn ask_tcp(&self, to: SocketAddrV4) -> anyhow::Result<std::io::Result<(String, SocketAddr)>> {
        let sock = self.sockets(Type::STREAM, 1)?.remove(0);
        Ok(ask_tcp(sock, to))
    }

    /// `count` new TCP connections to `to`: answers counted. Every one must
    /// succeed and see `to` as its peer.
    fn spread(&self, to: SocketAddrV4, count: usize) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut answers = BTreeMap::new();
        for sock in self.sockets(Type::STREAM, count)? {
            let (answer, peer) =
                ask_tcp(sock, to).with_context(|| format!("{}: connect to {to}", self.label))?;
            ensure!(
                peer == SocketAddr::V4(to),
                "{}: getpeername shows {peer}, not the service {to}",
                self.label
            );
            *answers.entry(answer).or_insert(0) += 1;
        }
        Ok(answers)
    }

    /// `count` datagrams to `to`, each from a new socket: answers counted;
    /// every reply must come from `to`.
    fn spread_udp(
        &self,
        to: SocketAddrV4,
        count: usize,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut answers = BTreeMap::new();
        for sock in self.sockets(Type::DGRAM, count)? {
            sock.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            let udp: UdpSocket = sock.into();
            udp.send_to(b"who", to)?;
            let mut buf = [0u8; 256];
            let (n, from) = udp
                .recv_from(&mut buf)
                .with_context(|| format!("{}: no UDP answer from {to}", self.label))?;
            ensure!(
                from == SocketAddr::V4(to),
                "{}: the UDP answer comes from {from}, not the service {to}",
                self.label
            );
            let answer = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            *answers.entry(answer).or_insert(0) += 1;
        }
        Ok(answers)
    }
}

fn ask_tcp(sock: Socket, to: SocketAddrV4) -> std::io::Result<(String, SocketAddr)> {
    sock.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
    let mut stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok((answer.trim().to_owned(), peer))
}

/// Test-side servers in a pod's namespace: UDP on 90 answers the pod's
/// name; TCP on 91 echoes lines on connections it keeps open.
fn pod_servers(pod: &EchoPod, stop: &Arc<AtomicBool>) -> JoinHandle<anyhow::Result<()>> {
    let (netns, name, stop) = (pod.netns.clone(), pod.name.clone(), Arc::clone(stop));
    std::thread::spawn(move || -> anyhow::Result<()> {
        let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the pod's namespace")?;
        let udp = UdpSocket::bind(("0.0.0.0", 90))?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let tcp = TcpListener::bind(("0.0.0.0", 91))?;
        tcp.set_nonblocking(true)?;
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                udp.send_to(name.as_bytes(), peer)?;
            }
            if let Ok((conn, _)) = tcp.accept() {
                conn.set_nonblocking(false)?;
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if reader.get_mut().write_all(line.as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        }
        Ok(())
    })
}

/// The `svc/` frontends in `node`'s pinned maps.
fn pinned(node: &LabNode) -> anyhow::Result<Vec<ServiceSpec>> {
    let all = ServiceMap::list_pinned(&node.pin_dir)
        .with_context(|| format!("read the maps of {}", node.name))?;
    Ok(all
        .into_iter()
        .filter(|s| s.name.starts_with("svc/"))
        .collect())
}

fn find(specs: &[ServiceSpec], vip: Ipv4Addr, port: u16, proto: Protocol) -> Option<&ServiceSpec> {
    specs
        .iter()
        .find(|s| s.vip == vip && s.port == port && s.proto == proto)
}

/// Waits until every node's maps give `vip:port/proto` exactly `count` backends.
fn wait_programmed(
    lab: &Lab,
    vip: Ipv4Addr,
    port: u16,
    proto: Protocol,
    count: usize,
) -> anyhow::Result<()> {
    for node in &lab.nodes {
        lab.wait(
            &format!(
                "{vip}:{port}/{proto} with {count} backends on {}",
                node.name
            ),
            Duration::from_mins(1),
            || {
                Ok(find(&pinned(node)?, vip, port, proto)
                    .is_some_and(|s| s.backends.len() == count)
                    .then_some(()))
            },
        )?;
    }
    Ok(())
}

fn echo_pods(lab: &Lab) -> anyhow::Result<Vec<EchoPod>> {
    let out = lab.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        "app=echo",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.spec.nodeName} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ])?;
    let mut pods = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, uid, node, ip] = f.as_slice() else {
            continue;
        };
        let lab_node = lab
            .nodes
            .iter()
            .find(|n| n.name == *node)
            .with_context(|| format!("pod {name} on unknown node {node}"))?;
        pods.push(EchoPod {
            name: (*name).to_owned(),
            node: (*node).to_owned(),
            ip: ip.parse()?,
            netns: lab_node.data_dir.join("run/netns").join(uid),
        });
    }
    pods.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(pods)
}

fn node_client(node: &LabNode) -> Client {
    Client {
        label: format!("node {}", node.name),
        netns: node.netns.clone(),
        node_cgroup: node.cgroup.clone(),
    }
}

fn pod_client(lab: &Lab, pod: &EchoPod) -> anyhow::Result<Client> {
    let node = lab
        .nodes
        .iter()
        .find(|n| n.name == pod.node)
        .context("pod's node")?;
    Ok(Client {
        label: format!("pod {}", pod.name),
        netns: pod.netns.clone(),
        node_cgroup: node.cgroup.clone(),
    })
}

fn names(pods: &[EchoPod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name.clone()).collect()
}

fn keys(answers: &BTreeMap<String, usize>) -> BTreeSet<String> {
    answers.keys().cloned().collect()
}

fn synced_count(lab: &Lab, node: &LabNode) -> usize {
    std::fs::read_to_string(lab.data_dir.join("logs").join(format!("{}.log", node.name)))
        .unwrap_or_default()
        .matches("service maps synced")
        .count()
}

#[test]
fn lab_cluster_ip_services_balance_from_pods_and_nodes() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::up(dir.path(), 3)?;
    let tar = dir.path().join("image.tar");
    skep_image::busybox_image(IMAGE, &["sh"])?.write_oci_tarball(&tar)?;
    lab.image_import(&tar)?;
    lab.kubectl_ok_with(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"),
    )?;
    lab.kubectl_ok_with(&["apply", "-f", "-"], &manifests())?;

    phase("--- three echo pods, one per node, programmed on every node");
    wait_programmed(&lab, ECHO, 80, Protocol::Tcp, 3)?;
    let pods = echo_pods(&lab)?;
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    assert_eq!((pods.len(), nodes.len()), (3, 3), "{pods:?}");
    let all = names(&pods);
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = pods.iter().map(|p| pod_servers(p, &stop)).collect();
    let result = check_services(&mut lab, &pods, &all);
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        skep_e2e::netns::join(server)?;
    }
    result?;

    phase("--- lab down leaves nothing behind");
    lab.down()?;
    let left = lab.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}

fn check_services(lab: &mut Lab, pods: &[EchoPod], all: &BTreeSet<String>) -> anyhow::Result<()> {
    let http = SocketAddrV4::new(ECHO, 80);
    phase(
        "--- (a) from a pod on each node: new connections reach all three backends, peer is the VIP",
    );
    for pod in pods {
        let answers = pod_client(lab, pod)?.spread(http, 40)?;
        eprintln!("    from pod {}: {answers:?}", pod.name);
        assert_eq!(&keys(&answers), all, "from pod {}", pod.name);
    }
    phase("--- (b) from each node namespace");
    for node in &lab.nodes {
        let answers = node_client(node).spread(http, 40)?;
        eprintln!("    from node {}: {answers:?}", node.name);
        assert_eq!(&keys(&answers), all, "from node {}", node.name);
    }
    phase("--- (c) UDP: datagrams reach all three backends, replies come from the VIP");
    wait_programmed(lab, ECHO, 90, Protocol::Udp, 3)?;
    let udp = SocketAddrV4::new(ECHO, 90);
    for client in [node_client(&lab.nodes[0]), pod_client(lab, &pods[1])?] {
        let answers = client.spread_udp(udp, 40)?;
        eprintln!("    UDP from {}: {answers:?}", client.label);
        assert_eq!(&keys(&answers), all, "UDP from {}", client.label);
    }

    phase("--- (e) sessionAffinity ClientIP: every connection of a client goes to one backend");
    wait_programmed(lab, STICKY, 80, Protocol::Tcp, 3)?;
    let sticky = SocketAddrV4::new(STICKY, 80);
    for client in [node_client(&lab.nodes[1]), pod_client(lab, &pods[2])?] {
        let answers = client.spread(sticky, 20)?;
        eprintln!("    sticky from {}: {answers:?}", client.label);
        assert_eq!(
            answers.len(),
            1,
            "sticky from {}: {answers:?}",
            client.label
        );
    }

    phase("--- (f) no endpoints: refused at once; an address no Service has: unreachable");
    wait_programmed(lab, EMPTY, 80, Protocol::Tcp, 0)?;
    for client in [node_client(&lab.nodes[0]), pod_client(lab, &pods[0])?] {
        let refused = client.ask_tcp(SocketAddrV4::new(EMPTY, 80))?;
        let kind = refused.as_ref().err().map(std::io::Error::kind);
        assert_eq!(
            kind,
            Some(std::io::ErrorKind::ConnectionRefused),
            "{}: {refused:?}",
            client.label
        );
        let nowhere = client.ask_tcp(SocketAddrV4::new(NOWHERE, 80))?;
        let kind = nowhere.as_ref().err().map(std::io::Error::kind);
        assert_eq!(
            kind,
            Some(std::io::ErrorKind::HostUnreachable),
            "{}: {nowhere:?}",
            client.label
        );
    }

    check_agent_restart(lab, all)?;
    check_scale_down(lab, pods)
}

/// (g) SIGKILL the agent of node 1 while a client there holds a connection
/// and opens new ones; restart it. Nothing fails, the maps are never
/// without the service, and the restarted agent keeps every slot as it was.
fn check_agent_restart(lab: &mut Lab, all: &BTreeSet<String>) -> anyhow::Result<()> {
    phase("--- (g) agent kill -9 and restart: no failed connection, maps reconciled in place");
    wait_programmed(lab, ECHO, 91, Protocol::Tcp, 3)?;
    let n1 = lab.nodes[0].clone();
    let client = node_client(&n1);
    let before = pinned(&n1)?;
    let held_sock = client.sockets(Type::STREAM, 1)?.remove(0);
    held_sock.connect_timeout(&SocketAddrV4::new(ECHO, 91).into(), CONNECT_TIMEOUT)?;
    let mut held: TcpStream = held_sock.into();
    held.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut held_reader = BufReader::new(held.try_clone()?);
    let mut echo = |msg: &str| -> anyhow::Result<()> {
        held.write_all(format!("{msg}\n").as_bytes())?;
        let mut line = String::new();
        held_reader.read_line(&mut line)?;
        ensure!(
            line.trim() == msg,
            "held connection answered {line:?} to {msg:?}"
        );
        Ok(())
    };
    echo("before")?;
    let synced_before = synced_count(lab, &n1);
    let http = SocketAddrV4::new(ECHO, 80);
    let (mut ok, mut failures) = (0usize, Vec::new());
    let mut seen = BTreeSet::new();
    let mut probe = |ok: &mut usize, failures: &mut Vec<String>| -> anyhow::Result<()> {
        match client.ask_tcp(http)? {
            Ok((answer, _)) => {
                *ok += 1;
                seen.insert(answer);
            }
            Err(err) => failures.push(err.to_string()),
        }
        let maps = pinned(&n1)?;
        ensure!(
            find(&maps, ECHO, 80, Protocol::Tcp).is_some_and(|s| s.backends.len() == 3),
            "the maps lost the service: {maps:?}"
        );
        Ok(())
    };
    lab.kill_agent(&n1)?;
    for _ in 0..20 {
        probe(&mut ok, &mut failures)?;
    }
    echo("agent dead")?;
    let n1 = lab.restart_agent(&n1.name)?;
    let deadline = Instant::now() + Duration::from_mins(1);
    while synced_count(lab, &n1) == synced_before {
        ensure!(
            Instant::now() < deadline,
            "the restarted agent never synced its maps:\n{}",
            Lab::logs(&lab.data_dir)
        );
        probe(&mut ok, &mut failures)?;
    }
    for _ in 0..20 {
        probe(&mut ok, &mut failures)?;
    }
    echo("agent back")?;
    eprintln!(
        "    {ok} connections across kill and restart, {} failed; backends seen {seen:?}",
        failures.len()
    );
    assert!(failures.is_empty(), "failed connections: {failures:?}");
    assert_eq!(&seen, all);
    let after = pinned(&n1)?;
    assert_eq!(after, before, "the restarted agent changed the maps");
    Ok(())
}

/// (d) Scale to one replica: once the EndpointSlice has one ready
/// endpoint, no new connection goes anywhere else (the delay from the API
/// change is printed).
fn check_scale_down(lab: &Lab, pods: &[EchoPod]) -> anyhow::Result<()> {
    phase("--- (d) scale to 1: new connections only reach the survivor");
    let client = node_client(&lab.nodes[0]);
    let http = SocketAddrV4::new(ECHO, 80);
    lab.kubectl_ok(&["scale", "deployment", "echo", "-n", NS, "--replicas=1"])?;
    let changed = Instant::now();
    let mut first_all_one = None;
    let survivor_ip: Ipv4Addr = lab.wait("one ready endpoint", Duration::from_mins(1), || {
        if first_all_one.is_none() {
            let mut answers = BTreeSet::new();
            for _ in 0..10 {
                match client.ask_tcp(http)? {
                    Ok((answer, _)) => answers.insert(answer),
                    Err(_) => answers.insert(String::new()),
                };
            }
            if answers.len() == 1 && !answers.contains("") {
                first_all_one = Some(changed.elapsed());
            }
        }
        let out = lab.kubectl_ok(&[
            "get",
            "endpointslices",
            "-n",
            NS,
            "-l",
            "kubernetes.io/service-name=echo",
            "-o",
            r#"jsonpath={range .items[*].endpoints[*]}{.addresses[0]} {.conditions.ready}{"\n"}{end}"#,
        ])?;
        let ready: Vec<&str> = out
            .lines()
            .filter(|l| l.ends_with(" true"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        Ok(match ready.as_slice() {
            [ip] => Some(ip.parse()?),
            _ => None,
        })
    })?;
    let survivor = pods
        .iter()
        .find(|p| p.ip == survivor_ip)
        .with_context(|| format!("the survivor {survivor_ip} is none of {pods:?}"))?;
    wait_programmed(lab, ECHO, 80, Protocol::Tcp, 1)?;
    for node in &lab.nodes {
        let answers = node_client(node).spread(http, 20)?;
        let want: BTreeSet<String> = [survivor.name.clone()].into();
        assert_eq!(keys(&answers), want, "from node {}", node.name);
    }
    match first_all_one {
        Some(delay) => eprintln!(
            "    scale-down: all new connections reach the survivor {delay:?} after the API change"
        ),
        None => eprintln!(
            "    scale-down: the survivor alone answered only once the slice had one endpoint ({:?})",
            changed.elapsed()
        ),
    }
    Ok(())
}

fn phase(phase: &str) {
    eprintln!("{phase}");
}
