//! `cargo xtask bench policy-propagation`: how soon a policy change takes
//! effect on every node, the "within 1 s". A 3-node lab with a
//! server pod on each node (busybox `nc` on ports 80 and 81, selected by
//! the policy) and one client pod on the first node; each kind of change
//! is written through the API and timed from the write's response to
//! (a) every node's pinned maps judging the client → that node's server
//! flow the new way ([`maps`]) and (b) new connections from the client pod
//! to the servers on the *other* nodes meeting the new verdict ([`probe`]).
//!
//! One cycle writes, in order (each step flips the verdict of one port):
//! create a policy isolating the servers (80 denied); update it to allow
//! port 80 from pods `role=cli` in namespaces `access=open` (80 allowed);
//! relabel the client out of and back into the selector; relabel its
//! namespace out of and back in; delete the policy (81, denied until
//! then, allowed). The cycle ends where it began and is repeated.
//!
//! There is no baseline: no Calico on the machine, and a timed copy of
//! someone else's control plane would not be one.

mod maps;
mod probe;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use skep_e2e::lab::Lab;

use self::{maps::NodeMaps, probe::Probes};
use crate::{api::tls_client, stats::Sample};

const NODES: u8 = 3;
const IMAGE: &str = "bench/busybox:propagation";
/// The servers' and the policy's namespace.
const SERVERS: &str = "pp-srv";
/// The client's namespace (the one relabelled).
const CLIENTS: &str = "pp-cli";
const POLICY: &str = "pp";
/// How long a change may take before it counts as not seen.
const GIVE_UP: Duration = Duration::from_secs(10);
/// The aim.
const AIM: Duration = Duration::from_secs(1);

fn manifests(nodes: &[String]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {SERVERS}}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: {CLIENTS}, labels: {{access: open}}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: c, namespace: {CLIENTS}, labels: {{role: cli}}}}\n\
         spec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 0\n  containers:\n  \
         - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, '1000000']}}\n",
        nodes[0]
    );
    for (i, node) in nodes.iter().enumerate() {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: s{i}, namespace: {SERVERS}, labels: {{role: srv}}}}\n\
             spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  \
             - {{name: c, image: {IMAGE}, imagePullPolicy: Never, \
             command: [sh, -c, 'nc -ll -p 81 -e hostname & exec nc -ll -p 80 -e hostname']}}\n"
        );
    }
    yaml
}

/// One write of a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Create,
    Update,
    PodOut,
    PodIn,
    NamespaceOut,
    NamespaceIn,
    Delete,
}

impl Change {
    const CYCLE: [Self; 7] = [
        Self::Create,
        Self::Update,
        Self::PodOut,
        Self::PodIn,
        Self::NamespaceOut,
        Self::NamespaceIn,
        Self::Delete,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Create => "policy create (isolate)",
            Self::Update => "policy update (allow :80)",
            Self::PodOut => "pod label out of selector",
            Self::PodIn => "pod label into selector",
            Self::NamespaceOut => "ns label out of selector",
            Self::NamespaceIn => "ns label into selector",
            Self::Delete => "policy delete",
        }
    }

    /// The port whose verdict the change flips, and the new verdict.
    fn flips(self) -> (u16, bool) {
        match self {
            Self::Create | Self::PodOut | Self::NamespaceOut => (80, false),
            Self::Update | Self::PodIn | Self::NamespaceIn => (80, true),
            Self::Delete => (81, true),
        }
    }

    /// The API request: method, path, body.
    fn request(self) -> (reqwest::Method, String, Option<Value>) {
        let policies = format!("/apis/networking.k8s.io/v1/namespaces/{SERVERS}/networkpolicies");
        let labels = |v: Value| Some(json!({"metadata": {"labels": v}}));
        match self {
            Self::Create => (
                reqwest::Method::POST,
                policies,
                Some(
                    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": POLICY, "namespace": SERVERS},
                    "spec": {"podSelector": {"matchLabels": {"role": "srv"}},
                        "policyTypes": ["Ingress"]}}),
                ),
            ),
            Self::Update => (
                reqwest::Method::PATCH,
                format!("{policies}/{POLICY}"),
                Some(json!({"spec": {"ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"access": "open"}},
                        "podSelector": {"matchLabels": {"role": "cli"}}}],
                    "ports": [{"protocol": "TCP", "port": 80}]}]}})),
            ),
            Self::PodOut | Self::PodIn => (
                reqwest::Method::PATCH,
                format!("/api/v1/namespaces/{CLIENTS}/pods/c"),
                labels(json!({"role": if self == Self::PodIn { "cli" } else { "other" }})),
            ),
            Self::NamespaceOut | Self::NamespaceIn => (
                reqwest::Method::PATCH,
                format!("/api/v1/namespaces/{CLIENTS}"),
                labels(
                    json!({"access": if self == Self::NamespaceIn { "open" } else { "closed" }}),
                ),
            ),
            Self::Delete => (
                reqwest::Method::DELETE,
                format!("{policies}/{POLICY}"),
                None,
            ),
        }
    }
}

/// The pods, as the bench uses them.
struct Pods {
    client: Ipv4Addr,
    client_netns: PathBuf,
    /// Server IPs, in node order.
    servers: Vec<Ipv4Addr>,
}

fn pod_facts(lab: &Lab, ns: &str, name: &str) -> anyhow::Result<(Ipv4Addr, PathBuf)> {
    let pod = lab.running_pod(ns, name, Duration::from_mins(2))?;
    let lab_node = lab
        .nodes
        .iter()
        .find(|n| n.name == pod.node)
        .with_context(|| format!("pod {name} runs on {}, not a lab node", pod.node))?;
    Ok((
        pod.ip.parse()?,
        lab_node.data_dir.join("run/netns").join(&pod.uid),
    ))
}

fn start_pods(lab: &Lab, image_tar: &std::path::Path) -> anyhow::Result<Pods> {
    skep_image::busybox_image(IMAGE, &["sh"])?.write_oci_tarball(image_tar)?;
    lab.image_import(image_tar)?;
    let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    lab.kubectl_ok_with(&["apply", "-f", "-"], &manifests(&names))?;
    let (client, client_netns) = pod_facts(lab, CLIENTS, "c")?;
    let mut servers = Vec::new();
    for i in 0..names.len() {
        servers.push(pod_facts(lab, SERVERS, &format!("s{i}"))?.0);
    }
    Ok(Pods {
        client,
        client_netns,
        servers,
    })
}

/// What one change measured: to every node's maps, to the connections.
type Times = (Option<Duration>, Option<Duration>);

/// Runs the benchmark; `--quick` runs 3 cycles, `--rounds=N` N (default 10).
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench policy-propagation builds a lab of network namespaces: run it as root");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = args
        .iter()
        .find_map(|a| a.strip_prefix("--rounds=")?.parse().ok())
        .unwrap_or(if quick { 3 } else { 10 });
    skep_apiserver::tls::install_default_provider();
    let dir = tempfile::Builder::new().prefix("skep-bench-pp").tempdir()?;
    let lab_dir = dir.path().join("lab");
    let lab = match Lab::up(&lab_dir, NODES) {
        Ok(lab) => lab,
        Err(err) => {
            skep_e2e::lab::down_if_any(&lab_dir);
            return Err(err);
        }
    };
    let result = measure(&lab, &dir.path().join("image.tar"), rounds).await;
    if result.is_err() {
        eprintln!("lab logs:\n{}", Lab::logs(&lab.data_dir));
    }
    drop(lab);
    print_table(&result?, rounds);
    Ok(())
}

async fn measure(
    lab: &Lab,
    image_tar: &std::path::Path,
    rounds: usize,
) -> anyhow::Result<BTreeMap<Change, Vec<Times>>> {
    let pods = start_pods(lab, image_tar)?;
    let (api, base) = tls_client(&lab.kubeconfig())?;
    let targets: Vec<SocketAddrV4> = pods.servers[1..]
        .iter()
        .map(|ip| SocketAddrV4::new(*ip, 80))
        .collect();
    eprintln!("--- waiting for the client to reach every server");
    for port in [80, 81] {
        let ports: Vec<SocketAddrV4> = targets
            .iter()
            .map(|t| SocketAddrV4::new(*t.ip(), port))
            .collect();
        let probes = Probes::start(&pods.client_netns, &ports);
        let reached = tokio::task::block_in_place(|| {
            probes.wait(Instant::now(), true, Duration::from_mins(1))
        })?;
        probes.stop()?;
        if reached.is_none() {
            bail!("the client never reached the servers on port {port}");
        }
    }
    let mut times: BTreeMap<Change, Vec<Times>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("--- cycle {}/{rounds}", round + 1);
        for change in Change::CYCLE {
            let t = step(lab, &api, &base, &pods, change).await?;
            times.entry(change).or_default().push(t);
        }
    }
    Ok(times)
}

/// Writes `change` and times it (see the module doc).
async fn step(
    lab: &Lab,
    api: &reqwest::Client,
    base: &str,
    pods: &Pods,
    change: Change,
) -> anyhow::Result<Times> {
    let (port, passed) = change.flips();
    let mut nodes = Vec::new();
    for (node, server) in lab.nodes.iter().zip(&pods.servers) {
        nodes.push(NodeMaps::open(&node.pin_dir, *server)?);
    }
    let targets: Vec<SocketAddrV4> = pods.servers[1..]
        .iter()
        .map(|ip| SocketAddrV4::new(*ip, port))
        .collect();
    let probes = Probes::start(&pods.client_netns, &targets);
    let (method, path, body) = change.request();
    let mut request = api.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = if change == Change::Create {
            request.json(&body)
        } else {
            request
                .header("content-type", "application/merge-patch+json")
                .body(body.to_string())
        };
    }
    let response = request.send().await?;
    let answered = Instant::now();
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "{}: the API answered {status}: {}",
            change.label(),
            response.text().await.unwrap_or_default()
        );
    }
    let client = pods.client;
    let (in_maps, connections) = tokio::task::block_in_place(|| {
        let in_maps = maps::wait(&nodes, client, port, passed, answered, GIVE_UP)?;
        let connections = probes.wait(answered, passed, GIVE_UP)?;
        anyhow::Ok((in_maps, connections))
    })?;
    probes.stop()?;
    Ok((in_maps, connections))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_table(times: &BTreeMap<Change, Vec<Times>>, rounds: usize) {
    println!(
        "\npolicy propagation: API write's response → every node's pinned maps judge the flow anew (maps, read every {} ms) \
         → new connections from the client pod (node 1) to the servers on nodes 2 and 3 meet the new verdict \
         (conn, one connection every {} ms per server)\n\
         {NODES}-node lab, {rounds} cycles; no baseline side by side (no Calico on this machine); xaim = max / the issue's 1 s",
        ms(maps::POLL),
        ms(probe::PERIOD / probe::THREADS),
    );
    println!(
        "  {:<28} {:>9} {:>9} {:>9} {:>6}   {:>9} {:>9} {:>9} {:>6}",
        "", "maps p50", "p90", "max", "xaim", "conn p50", "p90", "max", "xaim"
    );
    let cells = |seen: Vec<Duration>, missed: usize| {
        let sample = Sample {
            ops: seen.len(),
            elapsed: Duration::ZERO,
            latencies: seen,
        };
        let max = sample.latencies.iter().max().copied().unwrap_or_default();
        let missed = if missed > 0 {
            format!(" ({missed} not seen in {} s)", GIVE_UP.as_secs())
        } else {
            String::new()
        };
        format!(
            "{:>7.0}ms {:>7.0}ms {:>7.0}ms {:>6.2}{missed}",
            ms(sample.quantile(0.5)),
            ms(sample.quantile(0.9)),
            ms(max),
            max.as_secs_f64() / AIM.as_secs_f64()
        )
    };
    for (change, list) in times {
        let in_maps: Vec<Duration> = list.iter().filter_map(|t| t.0).collect();
        let conns: Vec<Duration> = list.iter().filter_map(|t| t.1).collect();
        let (mm, cm) = (list.len() - in_maps.len(), list.len() - conns.len());
        println!(
            "  {:<28} {}   {}",
            change.label(),
            cells(in_maps, mm),
            cells(conns, cm)
        );
    }
}
