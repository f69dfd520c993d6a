//! NodePort on a 3-node lab, from a client that is not a node: a namespace
//! of its own on the lab's bridge (no default route). The only backend runs
//! on node 3. Through node 1 (`externalTrafficPolicy: Cluster`) the
//! connection is DNAT'd to the backend and SNAT'd to node 1, so the backend
//! sees node 1's address; through node 3 the backend is local and sees the
//! client's own address. With `Local`, node 3 keeps the client address and
//! node 1, which has no local backend, does not answer. A NodePort without
//! endpoints is refused at once. The conntrack of node 1 lists the
//! translated flow.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};
use skep_datapath::{Protocol, ServiceMap};
use skep_e2e::lab::{Lab, LabNode};
use skep_e2e::netns::NetNs;
use skep_e2e::process::run;
use skep_e2e::require_root;

const IMAGE: &str = "lab/busybox:nodeport";
const NS: &str = "np";
const CLUSTER_PORT: u16 = 30080;
const LOCAL_PORT: u16 = 30081;
const EMPTY_PORT: u16 = 30082;
const BACKEND_PORT: u16 = 8080;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn manifests(node: &str) -> String {
    format!(
        r"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {NS}, labels: {{app: web}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, '100000']
---
apiVersion: v1
kind: Service
metadata: {{name: cluster, namespace: {NS}}}
spec:
  type: NodePort
  clusterIP: 10.96.8.10
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: {BACKEND_PORT}, nodePort: {CLUSTER_PORT}}}
---
apiVersion: v1
kind: Service
metadata: {{name: local, namespace: {NS}}}
spec:
  type: NodePort
  clusterIP: 10.96.8.11
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: {BACKEND_PORT}, nodePort: {LOCAL_PORT}}}
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: {NS}}}
spec:
  type: NodePort
  clusterIP: 10.96.8.12
  selector: {{app: nothing-has-this}}
  ports:
  - {{name: http, port: 80, targetPort: {BACKEND_PORT}, nodePort: {EMPTY_PORT}}}
"
    )
}

/// The running pod's network namespace file.
fn pod_netns(lab: &Lab, node: &LabNode) -> anyhow::Result<PathBuf> {
    lab.wait("pod web running", Duration::from_mins(2), || {
        let out = lab.kubectl_ok(&[
            "get",
            "pod",
            "web",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.phase} {.metadata.uid}",
        ])?;
        Ok(
            match out.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["Running", uid] => Some(node.data_dir.join("run/netns").join(uid)),
                _ => None,
            },
        )
    })
}

/// A server in the pod's namespace that answers each connection with the
/// source address it sees, until `stop`.
fn peer_server(
    netns: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || -> anyhow::Result<()> {
        let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the pod's namespace")?;
        let listener = TcpListener::bind(("0.0.0.0", BACKEND_PORT))?;
        listener.set_nonblocking(true)?;
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, peer)) => {
                    conn.set_nonblocking(false)?;
                    let _ = conn.write_all(peer.ip().to_string().as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        Ok(())
    })
}

/// From the client namespace: connect to `to`, read what the backend saw.
fn ask(client: &NetNs, to: SocketAddrV4) -> anyhow::Result<std::io::Result<String>> {
    client.run_in(move || {
        Ok((|| {
            let mut stream = TcpStream::connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
            stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            let mut seen = String::new();
            stream.read_to_string(&mut seen)?;
            Ok(seen)
        })())
    })
}

/// Waits until `node`'s maps hold the NodePort frontend `node IP:port` with
/// `count` backends.
fn wait_frontend(lab: &Lab, node: &LabNode, port: u16, count: usize) -> anyhow::Result<()> {
    lab.wait(
        &format!("{}:{port} with {count} backends on {}", node.ip, node.name),
        Duration::from_mins(2),
        || {
            let specs = ServiceMap::list_pinned(&node.pin_dir)?;
            Ok(specs
                .iter()
                .any(|s| {
                    s.vip == node.ip
                        && s.port == port
                        && s.proto == Protocol::Tcp
                        && s.external
                        && s.backends.len() == count
                })
                .then_some(()))
        },
    )
}

#[test]
fn lab_nodeport_reaches_a_backend_on_another_node_from_outside() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::up(dir.path(), 3)?;
    let tar = dir.path().join("image.tar");
    skep_image::busybox_image(IMAGE, &["sleep"])?.write_oci_tarball(&tar)?;
    lab.image_import(&tar)?;
    let (n1, n3) = (lab.nodes[0].clone(), lab.nodes[2].clone());

    eprintln!("--- a client namespace on the underlay bridge, not a node");
    let client = NetNs::new("npc")?;
    let octets = n1.ip.octets();
    let client_ip = Ipv4Addr::new(octets[0], octets[1], octets[2], 250);
    let host_end = format!("npc{}", std::process::id() % 100_000);
    run(
        "ip",
        &[
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client.name(),
        ],
    )?;
    run(
        "ip",
        &["link", "set", &host_end, "master", &lab.bridge, "up"],
    )?;
    client.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "eth0"])?;
    client.ip(&["link", "set", "eth0", "up"])?;
    client.ip(&["link", "set", "lo", "up"])?;

    lab.kubectl_ok_with(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"),
    )?;
    lab.kubectl_ok_with(&["apply", "-f", "-"], &manifests(&n3.name))?;
    let netns = pod_netns(&lab, &n3)?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = peer_server(netns, Arc::clone(&stop));
    let result = (|| -> anyhow::Result<()> {
        wait_frontend(&lab, &n1, CLUSTER_PORT, 1)?;
        wait_frontend(&lab, &n3, CLUSTER_PORT, 1)?;

        eprintln!("--- Cluster via node 1: the backend on node 3 sees node 1 (SNAT)");
        let seen = lab.wait("an answer through node 1", Duration::from_mins(2), || {
            Ok(ask(&client, SocketAddrV4::new(n1.ip, CLUSTER_PORT))?.ok())
        })?;
        assert_eq!(seen, n1.ip.to_string(), "source seen through node 1");
        let ct = skep_datapath::conntrack::list_pinned(&n1.pin_dir)?;
        let table = skep_datapath::conntrack::format_table(&ct, &BTreeMap::default());
        eprintln!("{table}");
        assert!(
            table.contains(&format!("{client_ip}")) && table.contains("np/cluster"),
            "node 1's conntrack lists the client's flow:\n{table}"
        );

        eprintln!("--- Cluster via node 3: the backend is local and sees the client");
        let seen = ask(&client, SocketAddrV4::new(n3.ip, CLUSTER_PORT))??;
        assert_eq!(seen, client_ip.to_string(), "source seen through node 3");

        eprintln!("--- Local: node 3 keeps the client address; node 1 has no local backend");
        wait_frontend(&lab, &n3, LOCAL_PORT, 1)?;
        wait_frontend(&lab, &n1, LOCAL_PORT, 0)?;
        let seen = ask(&client, SocketAddrV4::new(n3.ip, LOCAL_PORT))??;
        assert_eq!(seen, client_ip.to_string(), "Local through node 3");
        let through_n1 = ask(&client, SocketAddrV4::new(n1.ip, LOCAL_PORT))?;
        assert!(
            through_n1.is_err(),
            "Local through node 1 must not reach node 3's backend: {through_n1:?}"
        );

        eprintln!("--- no endpoints: refused (the node answers with a reset), not a hang");
        wait_frontend(&lab, &n1, EMPTY_PORT, 0)?;
        let refused = ask(&client, SocketAddrV4::new(n1.ip, EMPTY_PORT))?;
        assert!(
            matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "a NodePort without endpoints must refuse: {refused:?}"
        );
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let server_result = server.join();
    result?;
    match server_result {
        Ok(r) => r?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    drop(client);
    lab.down()?;
    let left = lab.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
