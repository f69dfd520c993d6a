//! `cargo xtask bench pod-startup`: create → Running for 100 pods on one
//! node with the image cached (the busybox demo image), through the whole
//! of skep (`skep server` and `skep agent` as processes: API, scheduler,
//! node sync, sandbox, overlayfs rootfs, shim, runc, status back through the
//! API, seen on a watch), side by side with the floor: `runc run -d` of the
//! same image's bundle, started directly. Both one pod at a time and 100 at
//! once. Needs root; run it alone (it starts a node agent in the host
//! namespace).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::json;
use skep_e2e::{agent::Agent, cluster::Server, process::skep, unique_name};
use skep_runtime::runtime::{ContainerSpec, Resources, Runtime, RuntimeConfig};

use crate::api::tls_client;
use crate::stats::Sample;

const PODS: usize = 100;
const DEMO: &str = "skep/busybox:demo";
const NAMESPACE: &str = "bench";
const WAIT: Duration = Duration::from_mins(2);

/// The floor: `runc run -d` of prepared bundles (overlayfs rootfs of the
/// demo image, the OCI spec the agent writes, a fresh network namespace).
struct Floor {
    runc_root: PathBuf,
    bundles: Vec<(String, PathBuf)>,
    cgroup: String,
}

impl Floor {
    fn prepare(dir: &Path, images: &Path) -> anyhow::Result<Self> {
        let store = skep_image::Store::open(images)?;
        let reference = skep_image::normalize_reference(DEMO)?;
        let image = store
            .image(&reference)?
            .context("the demo image is not in the store")?;
        let runtime = Runtime::new(RuntimeConfig {
            state_dir: dir.join("runtime"),
            runc: "runc".into(),
            shim: "/bin/false".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: "unused".into(),
        })?;
        let cgroup = unique_name("skpf");
        let mut floor = Self {
            runc_root: dir.join("runc"),
            bundles: Vec::new(),
            cgroup: cgroup.clone(),
        };
        for i in 0..PODS {
            let id = format!("{cgroup}-{i}");
            let bundle = dir.join(&id);
            let rootfs = skep_image::prepare_rootfs(&image, &bundle)?.keep();
            // Registered before anything else can fail, so drop unmounts it.
            floor.bundles.push((id.clone(), bundle.clone()));
            let spec = ContainerSpec {
                pod_uid: id.clone(),
                name: "c".into(),
                attempt: 0,
                rootfs,
                readonly_rootfs: false,
                args: vec!["sleep".into(), "3600".into()],
                env: image.config.env.clone(),
                cwd: None,
                uid: 0,
                gid: 0,
                hostname: id.clone(),
                netns: PathBuf::new(),
                mounts: Vec::new(),
                resources: Resources::default(),
                log_path: bundle.join("log"),
            };
            let mut oci = serde_json::to_value(runtime.oci_spec(&spec)?)?;
            // A fresh network namespace (no path) and a cgroup of our own.
            if let Some(namespaces) = oci["linux"]["namespaces"].as_array_mut() {
                for ns in namespaces {
                    if let Some(ns) = ns.as_object_mut() {
                        ns.remove("path");
                    }
                }
            }
            oci["linux"]["cgroupsPath"] = json!(format!("/{cgroup}/{id}"));
            std::fs::write(bundle.join("config.json"), serde_json::to_vec(&oci)?)?;
        }
        Ok(floor)
    }

    fn run_one(&self, id: &str, bundle: &Path) -> anyhow::Result<Duration> {
        // A file, not a pipe: the detached container keeps its stdio open.
        let err_path = bundle.join("runc.err");
        let err = std::fs::File::create(&err_path)?;
        let started = Instant::now();
        let status = Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(["run", "-d", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()?;
        let took = started.elapsed();
        if !status.success() {
            let detail = std::fs::read_to_string(&err_path).unwrap_or_default();
            bail!("runc run {id} failed: {status}: {}", detail.trim());
        }
        Ok(took)
    }

    /// Every container in turn; each latency is `runc run -d`'s.
    fn sequential(&self) -> anyhow::Result<Sample> {
        let start = Instant::now();
        let mut latencies = Vec::new();
        for (id, bundle) in &self.bundles {
            latencies.push(self.run_one(id, bundle)?);
        }
        self.stop_all();
        Ok(Sample {
            ops: latencies.len(),
            elapsed: start.elapsed(),
            latencies,
        })
    }

    /// Every container at once; each latency runs from the burst's start.
    fn burst(self: &Arc<Self>) -> anyhow::Result<Sample> {
        let start = Instant::now();
        let handles: Vec<_> = (0..self.bundles.len())
            .map(|i| {
                let this = Arc::clone(self);
                std::thread::spawn(move || {
                    let (id, bundle) = &this.bundles[i];
                    this.run_one(id, bundle).map(|_| start.elapsed())
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for h in handles {
            latencies.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("runc thread panicked"))??,
            );
        }
        let elapsed = start.elapsed();
        self.stop_all();
        Ok(Sample {
            ops: latencies.len(),
            elapsed,
            latencies,
        })
    }

    fn stop_all(&self) {
        for (id, _) in &self.bundles {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&self.runc_root)
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop_all();
        for (_, bundle) in &self.bundles {
            let _ = skep_image::unmount_rootfs(bundle);
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in entries.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.cgroup));
            }
        }
    }
}

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": DEMO, "command": ["sleep", "3600"]}]}})
}

/// skep through its API: creates pods and sees them Running on a watch.
struct Cluster {
    client: reqwest::Client,
    base: String,
    /// Pods seen Running: name, when (monotonic and wall clock, µs).
    running: tokio::sync::mpsc::UnboundedReceiver<(String, Instant, u128)>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Cluster {
    async fn connect(kubeconfig: &Path) -> anyhow::Result<Self> {
        let (client, base) = tls_client(kubeconfig)?;
        let resp = client
            .post(format!("{base}/api/v1/namespaces"))
            .json(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            )
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("creating the bench namespace: {}", resp.status());
        }
        let resp = client
            .get(format!("{base}/api/v1/namespaces/{NAMESPACE}/pods?watch=1"))
            .send()
            .await?;
        let mut body = resp.bytes_stream();
        let (tx, running) = tokio::sync::mpsc::unbounded_channel();
        let watcher = tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                let at = Instant::now();
                let wall = now_us();
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                        continue;
                    };
                    let obj = &event["object"];
                    if obj["status"]["phase"] == "Running"
                        && obj["metadata"]["deletionTimestamp"].is_null()
                    {
                        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
                        let _ = tx.send((name, at, wall));
                    }
                }
            }
        });
        Ok(Self {
            client,
            base,
            running,
            watcher,
        })
    }

    /// Creates pod `name`; returns its UID.
    async fn create(&self, name: &str) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(format!("{}/api/v1/namespaces/{NAMESPACE}/pods", self.base))
            .json(&pod(name))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("creating pod {name}: {}", resp.status());
        }
        let created: serde_json::Value = resp.json().await?;
        Ok(created["metadata"]["uid"].as_str().unwrap_or("").to_owned())
    }

    /// Waits until every name in `started` was seen Running; returns the
    /// latencies with the wall-clock time (µs) each was seen.
    async fn collect_seen(
        &mut self,
        started: &HashMap<String, Instant>,
    ) -> anyhow::Result<HashMap<String, (Duration, u128)>> {
        let mut seen: HashMap<String, (Duration, u128)> = HashMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while seen.len() < started.len() {
            let Ok(Some((name, at, wall))) =
                tokio::time::timeout_at(deadline, self.running.recv()).await
            else {
                bail!(
                    "{} of {} pods Running after {WAIT:?}",
                    seen.len(),
                    started.len()
                );
            };
            if let Some(t0) = started.get(&name) {
                seen.entry(name)
                    .or_insert_with(|| (at.saturating_duration_since(*t0), wall));
            }
        }
        Ok(seen)
    }

    /// Waits until every name in `started` was seen Running; returns the latencies.
    async fn collect(
        &mut self,
        started: &HashMap<String, Instant>,
    ) -> anyhow::Result<Vec<Duration>> {
        let seen = self.collect_seen(started).await?;
        Ok(seen.into_values().map(|(d, _)| d).collect())
    }

    /// One pod after another; also returns each pod's UID with when it was
    /// created and seen Running (wall clock, µs), for the breakdown.
    async fn sequential(&mut self, tag: &str) -> anyhow::Result<(Sample, Vec<Traced>)> {
        let start = Instant::now();
        let mut latencies = Vec::new();
        let mut traced = Vec::new();
        for i in 0..PODS {
            let name = format!("{tag}-{i}");
            let started: HashMap<String, Instant> = [(name.clone(), Instant::now())].into();
            let sent_us = now_us();
            let uid = self.create(&name).await?;
            for (_, (latency, seen_us)) in self.collect_seen(&started).await? {
                latencies.push(latency);
                traced.push(Traced {
                    uid: uid.clone(),
                    sent_us,
                    seen_us,
                });
            }
        }
        let sample = Sample {
            ops: latencies.len(),
            elapsed: start.elapsed(),
            latencies,
        };
        Ok((sample, traced))
    }

    async fn burst(&mut self, tag: &str) -> anyhow::Result<Sample> {
        let start = Instant::now();
        let names: Vec<String> = (0..PODS).map(|i| format!("{tag}-{i}")).collect();
        let creates = names.iter().map(|n| self.create(n));
        for r in futures::future::join_all(creates).await {
            r?;
        }
        let started: HashMap<String, Instant> = names.into_iter().map(|n| (n, start)).collect();
        let latencies = self.collect(&started).await?;
        Ok(Sample {
            ops: latencies.len(),
            elapsed: start.elapsed(),
            latencies,
        })
    }

    /// Deletes every pod and waits until the node has removed them: gone
    /// from the API (at once with a zero grace period) and then from the
    /// node (containers, veths), so no teardown runs into the next
    /// measurement.
    async fn delete_all(&self, agent: &Agent) -> anyhow::Result<()> {
        let list: serde_json::Value = self
            .client
            .get(format!("{}/api/v1/namespaces/{NAMESPACE}/pods", self.base))
            .send()
            .await?
            .json()
            .await?;
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or("");
            self.client
                .delete(format!(
                    "{}/api/v1/namespaces/{NAMESPACE}/pods/{name}",
                    self.base
                ))
                .json(&json!({"gracePeriodSeconds": 0}))
                .send()
                .await?;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let list: serde_json::Value = self
                .client
                .get(format!("{}/api/v1/namespaces/{NAMESPACE}/pods", self.base))
                .send()
                .await?
                .json()
                .await?;
            let containers = agent.data_dir.join("runtime/containers");
            let node_clear = std::fs::read_dir(&containers)
                .map_or(true, |mut d| d.next().is_none())
                && agent.new_links().is_empty();
            if list["items"].as_array().is_none_or(Vec::is_empty) && node_clear {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("pods still there after {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One pod of the one-at-a-time run: its UID, when the bench sent its
/// create and when it saw it Running (µs since the epoch).
struct Traced {
    uid: String,
    sent_us: u128,
    seen_us: u128,
}

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// The agent's start-up phases in the order they run (`skep_startup`
/// debug events; see `skep_runtime::timing`). `sandbox` is the sum of
/// `sandbox_clear` … `veth_pod_side`, printed but not added up.
const PHASES: &[(&str, &str)] = &[
    ("ipam", "IP allocation"),
    ("sandbox_clear", "sandbox: clear leftovers"),
    ("netns", "sandbox: netns"),
    ("veth_node_side", "sandbox: veth, node side"),
    ("veth_pod_side", "sandbox: veth, pod side"),
    ("sandbox", "sandbox (all of the above)"),
    ("endpoint", "datapath endpoint"),
    ("pod_files", "hosts, resolv.conf"),
    ("rootfs", "rootfs (overlay mount)"),
    ("oci_spec", "OCI spec + meta write"),
    ("shim", "shim spawn (without runc)"),
    ("runc_create", "runc create"),
    ("runc_run", "runc run (create + start)"),
    ("cgroup_v2_join", "cgroup v2 join"),
    ("runc_start", "runc start"),
    ("start_record", "start time record"),
    ("status_write", "status write (agent -> API)"),
];

/// One `skep_startup` event of the agent's log: (pod UID, phase, took µs,
/// ended µs since the epoch).
fn parse_timing(line: &str) -> Option<(String, String, u128, u128)> {
    if !line.contains("skep_startup") {
        return None;
    }
    // Strip colours: ESC '[' … 'm'.
    let mut text = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    let field = |key: &str| {
        let at = text.find(&format!("{key}="))? + key.len() + 1;
        let value: String = text[at..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '}' | ','))
            .collect();
        Some(value.trim_matches('"').to_owned())
    };
    Some((
        field("pod_uid")?,
        field("phase")?,
        field("elapsed_us")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        field("end_us")?.parse().ok()?,
    ))
}

/// Prints where one-at-a-time start-up time goes: p50 per phase over the
/// pods in `traced`, from the agent's log, next to the floor's p50.
fn print_breakdown(log: &Path, traced: &[Traced], floor: &Sample) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut events: HashMap<&str, Vec<(String, u128, u128)>> = HashMap::new();
    let wanted: HashMap<&str, &Traced> = traced.iter().map(|t| (t.uid.as_str(), t)).collect();
    let parsed: Vec<_> = text.lines().filter_map(parse_timing).collect();
    for (uid, phase, took, end) in &parsed {
        if let Some((key, _)) = wanted.get_key_value(uid.as_str()) {
            events
                .entry(key)
                .or_default()
                .push((phase.clone(), *took, *end));
        }
    }
    let mut per_phase: HashMap<&str, Vec<u128>> = HashMap::new();
    for t in traced {
        let evs = events.get(t.uid.as_str()).map_or(&[][..], Vec::as_slice);
        let mut agent_sum = 0;
        let mut add = |phase: &'static str, us: u128| per_phase.entry(phase).or_default().push(us);
        let delivered = evs.iter().find(|(p, _, _)| p == "delivered").map(|e| e.2);
        if let Some(d) = delivered {
            add("delivered", d.saturating_sub(t.sent_us));
        }
        for (phase, _) in PHASES {
            // The first of each (status: the last write before Running was seen).
            let ev = if *phase == "status_write" {
                evs.iter()
                    .rfind(|(p, _, end)| p == phase && *end <= t.seen_us)
            } else {
                evs.iter().find(|(p, _, _)| p == phase)
            };
            if let Some((_, took, end)) = ev {
                add(phase, *took);
                if *phase != "sandbox" {
                    agent_sum += took;
                }
                if *phase == "status_write" {
                    add("echo", t.seen_us.saturating_sub(*end));
                    if let Some(d) = delivered {
                        add("other", end.saturating_sub(d).saturating_sub(agent_sum));
                    }
                }
            }
        }
        add("total", t.seen_us.saturating_sub(t.sent_us));
    }
    let p50 = |phase: &str| {
        let mut v = per_phase.get(phase).cloned().unwrap_or_default();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    println!("\none pod at a time: where the time goes (p50 per phase, from the agent's log)");
    let row = |label: &str, us: Option<u128>| {
        if let Some(us) = us {
            #[expect(clippy::cast_precision_loss, reason = "microseconds of one pod start")]
            let ms = us as f64 / 1000.0;
            println!("  {label:<34} {ms:>9.1} ms");
        }
    };
    row("API create -> agent (node sync)", p50("delivered"));
    for (phase, label) in PHASES {
        row(label, p50(phase));
    }
    row("agent, not in a phase above", p50("other"));
    row("status written -> seen on watch", p50("echo"));
    row("total: create -> Running (watch)", p50("total"));
    println!(
        "  {:<34} {:>9.1} ms",
        "floor: runc run -d",
        floor.quantile(0.5).as_secs_f64() * 1000.0
    );
    if parsed.is_empty() {
        println!("  (no skep_startup events in {})", log.display());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn print_pair(title: &str, floor: &Sample, skep: &Sample) {
    println!("\n{title}");
    println!("  {:<34} {:>10} {:>10} {:>10}", "", "p50", "p99", "max");
    for (name, s) in [
        ("runc run -d, direct (floor)", floor),
        ("skep: create -> Running (watch)", skep),
    ] {
        println!(
            "  {name:<34} {:>10} {:>10} {:>10}",
            ms(s.quantile(0.5)),
            ms(s.quantile(0.99)),
            ms(s.quantile(1.0))
        );
    }
    let ratio = |q| skep.quantile(q).as_secs_f64() / floor.quantile(q).as_secs_f64().max(1e-9);
    println!(
        "  {:<34} {:>9.2}x {:>9.2}x",
        "skep / floor",
        ratio(0.5),
        ratio(0.99)
    );
}

/// Runs both workloads on both and prints the tables.
pub async fn run() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("pod-startup runs containers: run it as root");
    }
    skep_apiserver::tls::install_default_provider();
    let dir = tempfile::tempdir()?;
    let node = unique_name("bench");
    let server = Server::start_with(&dir.path().join("cp"), &["--node-kubeconfig", &node])?;
    let agent_dir = dir.path().join("node");
    let out = skep(&[
        "image",
        "build-demo",
        "--data-dir",
        &agent_dir.to_string_lossy(),
    ])?;
    if !out.status.success() {
        bail!("build-demo: {}", String::from_utf8_lossy(&out.stderr));
    }
    let floor = Arc::new(Floor::prepare(
        &dir.path().join("floor"),
        &agent_dir.join("images"),
    )?);
    let kubeconfig = dir.path().join(format!("cp/nodes/{node}.kubeconfig"));
    let agent = Agent::start_logging(&agent_dir, &kubeconfig, &node, "skep_startup=debug")?;
    wait_ready(&server, &node)?;
    let mut cluster = Cluster::connect(&server.kubeconfig()).await?;

    println!(
        "pod startup: {PODS} pods on one node, image cached ({DEMO}, `sleep 3600`); \
         the floor is `runc run -d` of a prepared bundle of the same image"
    );
    // Warm-up: the first pod pays one-time costs on both sides.
    let floor_one = Floor::run_one(&floor, &floor.bundles[0].0, &floor.bundles[0].1)?;
    floor.stop_all();
    let warm: HashMap<String, Instant> = [("warm".to_owned(), Instant::now())].into();
    cluster.create("warm").await?;
    let skep_one = cluster.collect(&warm).await?;
    cluster.delete_all(&agent).await?;
    println!(
        "warm-up (first start): floor {}, skep {}",
        ms(floor_one),
        ms(skep_one.first().copied().unwrap_or_default())
    );

    let floor_seq = floor.sequential()?;
    let (skep_seq, traced) = cluster.sequential("s").await?;
    cluster.delete_all(&agent).await?;
    let floor_burst = floor.burst()?;
    let skep_burst = cluster.burst("b").await?;
    let memory = Memory::measure(&agent);
    cluster.delete_all(&agent).await?;

    print_pair(
        "one pod at a time (create, wait Running, next)",
        &floor_seq,
        &skep_seq,
    );
    print_breakdown(agent.log_path(), &traced, &floor_seq);
    print_pair(
        &format!("{PODS} pods at once (latency from the burst's start)"),
        &floor_burst,
        &skep_burst,
    );
    println!(
        "\n{PODS} at once took: floor {:.2} s, skep {:.2} s",
        floor_burst.elapsed.as_secs_f64(),
        skep_burst.elapsed.as_secs_f64()
    );
    println!(
        "aim: p99 < 1 s and within 2x of the direct runc floor; measured one-at-a-time p99 {} ({:.2}x floor)",
        ms(skep_seq.quantile(0.99)),
        skep_seq.quantile(0.99).as_secs_f64() / floor_seq.quantile(0.99).as_secs_f64().max(1e-9)
    );
    memory.print();
    drop(cluster);
    drop(agent);
    drop(server);
    if std::env::var_os("SKEP_BENCH_KEEP").is_some() {
        // For profiling: the agent's and server's logs stay.
        println!("kept {}", dir.keep().display());
    }
    Ok(())
}

/// Resident memory with the burst's pods running, from `/proc/<pid>/status`
/// (`VmRSS`, `RssAnon`) and `smaps_rollup` (`Pss`: shared pages shared
/// out), in KiB.
struct Memory {
    agent: Option<u64>,
    /// (`VmRSS`, `RssAnon`, `Pss`) of each shim.
    shims: Vec<(u64, u64, u64)>,
}

impl Memory {
    fn measure(agent: &Agent) -> Self {
        let field = skep_e2e::process::proc_field;
        let shims = agent
            .shim_pids()
            .into_iter()
            .filter_map(|pid| {
                Some((
                    field(pid, "status", "VmRSS")?,
                    field(pid, "status", "RssAnon")?,
                    field(pid, "smaps_rollup", "Pss")?,
                ))
            })
            .collect();
        Self {
            agent: agent.pid().and_then(|pid| field(pid, "status", "VmRSS")),
            shims,
        }
    }

    fn print(&self) {
        #[expect(clippy::cast_precision_loss, reason = "KiB of one machine's memory")]
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        println!(
            "
resident memory with {PODS} pods running (VmRSS)"
        );
        println!(
            "  {:<34} {:>10}",
            "skep agent",
            self.agent.map_or_else(|| "?".to_owned(), mib)
        );
        let mut by_rss = self.shims.clone();
        by_rss.sort_unstable();
        let Some(&(rss, anon, pss)) = by_rss.get(by_rss.len() / 2) else {
            println!("  no shims found");
            return;
        };
        println!(
            "  {:<34} {:>10}   (anon {anon} KiB, Pss {pss} KiB; aim < 2 MB)",
            "one skep-shim (median)",
            format!("{rss} KiB"),
        );
        println!(
            "  {:<34} {:>10}   (Pss summed)",
            format!("all {} shims", self.shims.len()),
            mib(self.shims.iter().map(|s| s.2).sum())
        );
    }
}

fn wait_ready(server: &Server, node: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = server.kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.podCIDR}",
        ])?;
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        if s.starts_with("True ") && s.len() > 5 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {node} not Ready with a pod CIDR after 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
