//! The multi-node lab end to end: `skep lab up` builds three nodes (network
//! namespaces on a bridge, an agent in each), kubectl on the host sees them
//! Ready, `skep lab image import` loads an image on every node, and pods on
//! different nodes talk over TCP and UDP through plain routes — no NAT, no
//! overlay: the receiving side sees the sender's own pod IP, and the eBPF
//! routing programs carry every packet (their counters move, the kernel's
//! FORWARD chain sees nothing). A node that
//! leaves disappears from the others' routes, and `skep lab down` leaves
//! nothing behind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};
use skep_e2e::lab::{Lab, LabNode};
use skep_e2e::require_root;

const IMAGE: &str = "lab/busybox:e2e";

/// An httpd whose CGI answers with the address the server saw the client
/// connect from (`REMOTE_ADDR`), pinned to `node` by nodeSelector.
fn server_pod(name: &str, ns: &str, node: &str) -> String {
    format!(
        r##"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'busybox mkdir -p /www/cgi-bin && printf "#!/bin/sh\necho Content-Type: text/plain\necho\necho peer=\$REMOTE_ADDR\n" > /www/cgi-bin/peer && busybox chmod +x /www/cgi-bin/peer && exec httpd -f -vv -p 0.0.0.0:8080 -h /www']
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"##
    )
}

/// A client pinned to `node` by nodeName: asks each `(label, ip)` server who
/// it is seen as (over HTTP/1.0 with nc), then sends UDP datagrams (busybox tftp) to `udp_ip:9090`
/// for ever.
fn client_pod(name: &str, ns: &str, node: &str, targets: &[(&str, &str)], udp_ip: &str) -> String {
    let mut script = String::new();
    for (label, ip) in targets {
        // (busybox wget crashes in these images; nc does HTTP/1.0 well enough.)
        let _ = write!(
            script,
            "until printf \"GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n\" | nc -w 2 {ip} 8080 > /tmp/{label} && busybox grep -q peer= /tmp/{label}; do sleep 1; done; echo \"{label} $(busybox grep peer= /tmp/{label})\"; "
        );
    }
    let _ = write!(
        script,
        "while true; do busybox timeout 1 busybox tftp -g -r probe -l /tmp/udp {udp_ip} 9090; done"
    );
    format!(
        r"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, '{script}']
"
    )
}

/// (podIP, uid) of a running pod, once it has an IP.
fn pod_ip(lab: &Lab, ns: &str, name: &str) -> anyhow::Result<(String, String)> {
    let pod = lab.running_pod(ns, name, Duration::from_mins(1))?;
    Ok((pod.ip, pod.uid))
}

/// The lines container `c` of pod `uid` on `node` wrote to stdout.
fn pod_log(node: &LabNode, uid: &str) -> String {
    std::fs::read_to_string(node.data_dir.join(format!("pods/{uid}/logs/c/0.log")))
        .unwrap_or_default()
}

/// Receives one UDP datagram on `port` inside the network namespace at
/// `netns` and returns who sent it.
fn udp_peer_in(netns: PathBuf, port: u16) -> JoinHandle<anyhow::Result<SocketAddr>> {
    std::thread::spawn(move || {
        let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the pod's namespace")?;
        let socket = UdpSocket::bind(("0.0.0.0", port))?;
        socket.set_read_timeout(Some(Duration::from_mins(1)))?;
        let mut buf = [0u8; 1500];
        let (_, peer) = socket.recv_from(&mut buf).context("no datagram arrived")?;
        Ok(peer)
    })
}

/// Node name → (pod CIDR, `InternalIP`), from the API.
fn node_facts(lab: &Lab) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let out = lab.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}"#,
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.to_owned(),
                (f.next()?.to_owned(), f.next()?.to_owned()),
            ))
        })
        .collect())
}

/// The routes every node should have: one per other node.
fn expected_routes(
    facts: &BTreeMap<String, (String, String)>,
    node: &str,
) -> Vec<(String, String)> {
    let mut routes: Vec<(String, String)> = facts
        .iter()
        .filter(|(name, _)| *name != node)
        .map(|(_, (cidr, ip))| (cidr.clone(), ip.clone()))
        .collect();
    routes.sort();
    routes
}

#[test]
fn lab_pods_reach_each_other_across_nodes_without_nat() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::up(dir.path(), 3)?;
    let facts = check_nodes_and_routes(&lab)?;
    check_pod_traffic(&lab, &dir.path().join("image.tar"))?;
    check_node_leaves(&lab, &facts)?;

    phase("--- lab down leaves nothing behind");
    lab.down()?;
    let left = lab.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(!lab.data_dir.join("lab.json").exists());
    Ok(())
}

/// Three Ready nodes seen from the host, each routing to the others' pod
/// CIDRs via their underlay addresses. Returns node → (pod CIDR, IP).
fn check_nodes_and_routes(lab: &Lab) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    phase("--- three Ready nodes, seen from the host");
    let ready = lab.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    ])?;
    let mut ready: Vec<&str> = ready.lines().collect();
    ready.sort_unstable();
    let want: Vec<String> = lab
        .nodes
        .iter()
        .map(|n| format!("{}=True", n.name))
        .collect();
    assert_eq!(ready, want, "kubectl get nodes");

    phase("--- every node routes to the others' pod CIDRs via their underlay address");
    let facts = node_facts(lab)?;
    assert_eq!(facts.len(), 3, "{facts:?}");
    for node in &lab.nodes {
        assert_eq!(
            facts[&node.name].1,
            node.ip.to_string(),
            "InternalIP of {}",
            node.name
        );
        let want = expected_routes(&facts, &node.name);
        lab.wait(
            &format!("routes on {}", node.name),
            Duration::from_secs(30),
            || Ok((lab.routes(node)? == want).then_some(())),
        )?;
    }
    Ok(facts)
}

/// An imported image runs on every node; TCP across nodes and on one node,
/// and UDP across nodes, arrive from the client's own pod IP.
fn check_pod_traffic(lab: &Lab, tar: &Path) -> anyhow::Result<()> {
    let [n1, n2, n3] = [&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]];
    phase("--- an image imported into every node");
    skep_image::busybox_image(IMAGE, &["sh"])?.write_oci_tarball(tar)?;
    let imported = lab.image_import(tar)?;
    for node in &lab.nodes {
        assert!(imported.contains(&node.name), "{imported}");
    }

    phase("--- a FORWARD counting rule on every node: proof of what the kernel forwards");
    for node in &lab.nodes {
        run_in_node(node, "iptables", &["-A", "FORWARD", "-j", "ACCEPT"])?;
    }

    phase("--- servers on nodes 1 and 2");
    let ns = "lab";
    // (`kubectl create namespace` sends protobuf, which skep does not speak yet.)
    lab.kubectl_ok_with(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    )?;
    lab.kubectl_ok_with(&["apply", "-f", "-"], &server_pod("srv-1", ns, &n1.name))?;
    lab.kubectl_ok_with(&["apply", "-f", "-"], &server_pod("srv-2", ns, &n2.name))?;
    let (srv1_ip, _) = pod_ip(lab, ns, "srv-1")?;
    let (srv2_ip, srv2_uid) = pod_ip(lab, ns, "srv-2")?;
    let udp = udp_peer_in(n2.data_dir.join("run/netns").join(&srv2_uid), 9090);

    phase("--- clients on nodes 1 and 3");
    let cli1 = client_pod(
        "cli-1",
        ns,
        &n1.name,
        &[("cross", &srv2_ip), ("same", &srv1_ip)],
        &srv2_ip,
    );
    lab.kubectl_ok_with(&["apply", "-f", "-"], &cli1)?;
    let cli3 = client_pod("cli-3", ns, &n3.name, &[("cross", &srv2_ip)], &srv2_ip);
    lab.kubectl_ok_with(&["apply", "-f", "-"], &cli3)?;
    let (cli1_ip, cli1_uid) = pod_ip(lab, ns, "cli-1")?;
    let (cli3_ip, cli3_uid) = pod_ip(lab, ns, "cli-3")?;
    assert_ne!(cli1_ip, cli3_ip);

    phase("--- TCP across nodes and on one node: the server sees the client's pod IP");
    let log1 = lab.wait("cli-1's answers", Duration::from_mins(1), || {
        let log = pod_log(n1, &cli1_uid);
        Ok((log.contains("cross peer=") && log.contains("same peer=")).then_some(log))
    })?;
    assert!(log1.contains(&format!("cross peer={cli1_ip}\n")), "{log1}");
    assert!(log1.contains(&format!("same peer={cli1_ip}\n")), "{log1}");
    let log3 = lab.wait("cli-3's answer", Duration::from_mins(1), || {
        let log = pod_log(n3, &cli3_uid);
        Ok(log.contains("cross peer=").then_some(log))
    })?;
    assert!(log3.contains(&format!("cross peer={cli3_ip}\n")), "{log3}");

    phase("--- UDP across nodes: the datagram arrives from a client's pod IP");
    let peer = skep_e2e::netns::join(udp)?.ip().to_string();
    assert!(
        peer == cli1_ip || peer == cli3_ip,
        "UDP peer {peer} is not a client pod ({cli1_ip}, {cli3_ip})"
    );

    phase("--- the eBPF fast path carried it all: counters moved, FORWARD stayed 0");
    let tables: Vec<String> = lab.nodes.iter().map(bpf_routes).collect::<Result<_, _>>()?;
    let [t1, t2, t3] = [&tables[0], &tables[1], &tables[2]];
    for (table, pods) in [
        (t1, &["lab/srv-1", "lab/cli-1"][..]),
        (t2, &["lab/srv-2"][..]),
        (t3, &["lab/cli-3"][..]),
    ] {
        for pod in pods {
            assert!(table.contains(pod), "endpoint {pod} missing:\n{table}");
        }
    }
    for (node, table, action) in [
        (n1, t1, "pod-to-local-pod"),
        (n1, t1, "pod-to-remote"),
        (n3, t3, "pod-to-remote"),
        (n2, t2, "underlay-to-pod"),
        (n2, t2, "pod-to-remote"),
        (n1, t1, "underlay-to-pod"),
    ] {
        let packets = route_counter(table, action)?;
        assert!(packets > 0, "{}: no {action} packets:\n{table}", node.name);
    }
    for node in &lab.nodes {
        let forwarded = forward_packets(node)?;
        assert_eq!(
            forwarded, 0,
            "{} forwarded {forwarded} packets itself",
            node.name
        );
    }
    println!("{t1}");
    Ok(())
}

/// Runs `program args…` in `node`'s network namespace; its stdout. (By
/// `nsenter`, not `ip netns exec`, which mounts a fresh /sys without the
/// bpffs the pins live on.)
fn run_in_node(node: &LabNode, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let net = format!("--net={}", node.netns.display());
    let mut all = vec![net.as_str(), program];
    all.extend_from_slice(args);
    skep_e2e::process::run("nsenter", &all)
}

/// `skep bpf routes` for `node`, run in its namespace.
fn bpf_routes(node: &LabNode) -> anyhow::Result<String> {
    let skep = skep_e2e::process::skep_binary()?;
    let pin_dir = node.pin_dir.to_string_lossy().into_owned();
    run_in_node(
        node,
        &skep.to_string_lossy(),
        &["bpf", "routes", "--pin-dir", &pin_dir],
    )
}

/// The packets column of the counter row for `action` in a `skep bpf
/// routes` table.
fn route_counter(table: &str, action: &str) -> anyhow::Result<u64> {
    let row = table
        .lines()
        .find(|l| l.starts_with(action))
        .with_context(|| format!("no {action} row in:\n{table}"))?;
    let fields: Vec<&str> = row.split_whitespace().collect();
    let packets = fields
        .len()
        .checked_sub(2)
        .and_then(|i| fields.get(i))
        .with_context(|| format!("short row {row}"))?;
    Ok(packets.parse()?)
}

/// Packets the FORWARD counting rule on `node` saw.
fn forward_packets(node: &LabNode) -> anyhow::Result<u64> {
    let out = run_in_node(node, "iptables", &["-L", "FORWARD", "-v", "-x", "-n"])?;
    // Two header lines, then the counting rule: "pkts bytes target …".
    let packets = out
        .lines()
        .nth(2)
        .and_then(|l| l.split_whitespace().next())
        .with_context(|| format!("no FORWARD rule on {}:\n{out}", node.name))?;
    Ok(packets.parse()?)
}

/// A node whose agent stopped and whose Node was deleted disappears from
/// the other nodes' routes.
fn check_node_leaves(lab: &Lab, facts: &BTreeMap<String, (String, String)>) -> anyhow::Result<()> {
    phase("--- node 3 leaves: its pod CIDR disappears from the others' routes");
    let n3 = &lab.nodes[2];
    lab.stop_agent(n3)?;
    lab.kubectl_ok(&["delete", "node", &n3.name])?;
    let n3_cidr = &facts[&n3.name].0;
    for node in &lab.nodes[..2] {
        let want: Vec<(String, String)> = expected_routes(facts, &node.name)
            .into_iter()
            .filter(|(cidr, _)| cidr != n3_cidr)
            .collect();
        lab.wait(
            &format!("{} to forget {}", node.name, n3.name),
            Duration::from_secs(30),
            || Ok((lab.routes(node)? == want).then_some(())),
        )?;
    }
    Ok(())
}

fn phase(phase: &str) {
    eprintln!("{phase}");
}
