//! `cargo xtask bench policy`: the cost of `NetworkPolicy` on traffic
//! between two pods, skep's eBPF enforcement side by side with the same
//! policies rendered as Calico's iptables mode renders them ([`calico`]),
//! for the scenarios of [`workload`]: no policy, 1,000 policies selecting
//! other pods (plus the one that admits the client), one policy of 10,000
//! ipBlocks.
//!
//! Two identical nodes ([`topology`]), each a network namespace with a
//! client, a policed server and a never-policed control server: on one,
//! skep's datapath routes (TC, `bpf_redirect_peer`) and enforces
//! ([`skep`]); on the other, the kernel forwards and iptables/ipset
//! enforce. The servers are this process's tasks listening inside the pod
//! namespaces (the `bench datapath` backends); the client is the `bench
//! datapath` load generator in the client pod's namespace: new connections
//! per second (one 8-byte request each, 4 threads) and the p50/p99 of
//! round trips on a kept-alive connection. Every client run measures the
//! control and the server in turns, so the server's ratio to the control is
//! the cost of policy with the machine's noise cancelled; the skep and
//! iptables runs alternate, round by round.
//!
//! Before measuring, each scenario checks that the policy is really in
//! force: the client's connection to a port no policy allows must time out
//! (dropped) where policy isolates the server, and be refused (reset by the
//! server's stack) where nothing does.

mod calico;
mod skep;
mod topology;
mod workload;

use std::{
    fs,
    io::ErrorKind,
    net::{SocketAddr, SocketAddrV4, TcpStream},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::task::JoinHandle;

use self::{skep::Skep, topology::Node, workload::Scenario};
use crate::{
    datapath::{
        backend,
        client::{Client, Outcome, Params},
        kube_proxy::run_in,
    },
    stats::Sample,
};

/// A cgroup v2 directory of the bench's own (the load generator joins a
/// child of it); removed on drop.
struct CgroupDir(PathBuf);

impl CgroupDir {
    fn new() -> anyhow::Result<Self> {
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(2) == Some(&"cgroup2"))
            .and_then(|f| f.get(1).map(PathBuf::from))
            .context("no cgroup2 hierarchy is mounted")?;
        let dir = root.join(skep_e2e::unique_name("skpb"));
        fs::create_dir(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir(&self.0) {
            eprintln!("warning: failed to remove {}: {err}", self.0.display());
        }
    }
}

/// The systems compared.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum System {
    Skep,
    Iptables,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Skep => "skep",
            Self::Iptables => "iptables",
        }
    }
}

/// What the client's connection to a port nobody serves met.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Reset by the server's stack: nothing dropped it.
    Refused,
    /// No answer: dropped on the way.
    Dropped,
    /// Something else (a bug in the bench).
    Other(String),
}

/// A connection from `node`'s client to `target`, judged.
fn probe(node: &Node, target: SocketAddrV4) -> anyhow::Result<Probe> {
    node.client().netns.run_in(move || {
        Ok(
            match TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_millis(300)) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Probe::Refused,
                Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                    Probe::Dropped
                }
                Err(e) => Probe::Other(e.to_string()),
                Ok(_) => Probe::Other("connected".to_owned()),
            },
        )
    })
}

/// One system's measurements of one scenario.
struct Row {
    /// The control server (never policed), summed over rounds.
    control: Outcome,
    /// The policed server, summed over rounds.
    server: Outcome,
    /// Time to program the scenario (from the previous one).
    program: Duration,
    /// What the programmed state holds.
    state: String,
}

/// One system's node: topology, its client, and (for skep) the datapath.
struct Side {
    system: System,
    node: Node,
    client: Client,
    skep: Option<Skep>,
}

impl Side {
    /// Programs `scenario`; returns the time it took and a state summary.
    fn program(&mut self, cluster: &workload::Cluster) -> anyhow::Result<(Duration, String)> {
        if let Some(skep) = &mut self.skep {
            let (took, entries) = skep.program(cluster)?;
            return Ok((took, format!("{entries} map entries")));
        }
        let rendered = calico::render(
            workload::NODE,
            &cluster.pods,
            &cluster.namespaces,
            &cluster.policies,
        );
        let netns = PathBuf::from("/run/netns").join(self.node.netns.name());
        // Drop the old rules (they reference the sets), then the sets.
        let mut took = run_in(&netns, "iptables-restore", &[], "*filter\nCOMMIT\n")?;
        took += run_in(&netns, "ipset", &["destroy"], "")?;
        took += run_in(&netns, "ipset", &["restore"], &rendered.ipsets)?;
        took += run_in(&netns, "iptables-restore", &[], &rendered.iptables)?;
        let (sets, members, rules) = rendered.counts;
        Ok((
            took,
            format!("{sets} ipsets ({members} members), {rules} rules"),
        ))
    }

    /// Checks that `scenario` is in force (see the module doc).
    fn check(&self, scenario: Scenario) -> anyhow::Result<()> {
        let unserved = workload::PORT + 1;
        let server = probe(&self.node, SocketAddrV4::new(workload::SERVER_IP, unserved))?;
        let control = probe(
            &self.node,
            SocketAddrV4::new(workload::CONTROL_IP, unserved),
        )?;
        let expected = if scenario == Scenario::NoPolicy {
            Probe::Refused
        } else {
            Probe::Dropped
        };
        if server != expected || control != Probe::Refused {
            bail!(
                "{} {}: policy not in force as expected: server:{unserved} {server:?} (expected {expected:?}), control:{unserved} {control:?} (expected Refused)",
                self.system.name(),
                scenario.label()
            );
        }
        Ok(())
    }
}

/// Adds `more` to `total`.
fn add(total: &mut Option<Outcome>, more: Outcome) {
    let Some(t) = total else {
        *total = Some(more);
        return;
    };
    t.connections.ops += more.connections.ops;
    t.connections.elapsed += more.connections.elapsed;
    t.keepalive.ops += more.keepalive.ops;
    t.keepalive.elapsed += more.keepalive.elapsed;
    t.keepalive.latencies.extend(more.keepalive.latencies);
    t.errors += more.errors;
    if t.first_error.is_none() {
        t.first_error = more.first_error;
    }
}

/// Runs the benchmark; `--quick` runs small sizes briefly (a smoke run);
/// `--policies=N`, `--cidrs=N` and `--rounds=N` change the sizes.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench policy builds network namespaces and loads eBPF: run it as root");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let size = |flag: &str, default: usize| {
        args.iter()
            .find_map(|a| a.strip_prefix(flag)?.parse().ok())
            .unwrap_or(default)
    };
    let scenarios = [
        Scenario::NoPolicy,
        Scenario::Policies(size("--policies=", if quick { 100 } else { 1_000 })),
        Scenario::Cidrs(size("--cidrs=", if quick { 1_000 } else { 10_000 })),
    ];
    let params = Params {
        seconds: if quick { 0.5 } else { 3.0 },
        threads: 4,
        requests: if quick { 1_000 } else { 20_000 },
        backends: 1,
    };
    let rounds = size("--rounds=", if quick { 1 } else { 2 });
    let dir = tempfile::Builder::new()
        .prefix("skep-bench-policy")
        .tempdir()?;
    let cgroup = CgroupDir::new()?;
    let mut notes = Vec::new();
    let mut sides = Vec::new();
    let mut servers: Vec<JoinHandle<()>> = Vec::new();
    let result = async {
        for system in [System::Skep, System::Iptables] {
            let node = Node::build(if system == System::Skep { "pbs" } else { "pbi" })?;
            let skep = match system {
                System::Skep => Some(Skep::load(&node)?),
                System::Iptables => None,
            };
            for pod in &node.pods[1..] {
                let listener =
                    tokio::net::TcpListener::from_std(backend::listen_in(pod.netns_path())?)?;
                servers.push(tokio::spawn(backend::serve(listener)));
            }
            let client = Client::new(&cgroup.0, &node.client().netns_path(), dir.path())?;
            sides.push(Side {
                system,
                node,
                client,
                skep,
            });
        }
        measure(&mut sides, &scenarios, &params, rounds, &mut notes).await
    }
    .await;
    for s in &servers {
        s.abort();
    }
    // Clients (their cgroups) before the cgroup, pins before namespaces.
    drop(sides);
    drop(cgroup);
    let rows = result?;
    print_table(&scenarios, &rows, &params, rounds, &notes);
    Ok(())
}

type Rows = Vec<((System, usize), Result<Row, String>)>;

async fn measure(
    sides: &mut [Side],
    scenarios: &[Scenario],
    params: &Params,
    rounds: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<Rows> {
    let mut rows = Rows::new();
    let control = [SocketAddrV4::new(workload::CONTROL_IP, workload::PORT)];
    let server = [SocketAddrV4::new(workload::SERVER_IP, workload::PORT)];
    // The first run after the namespaces appear pays for warming caches
    // (neighbours, routes, the allocator): one run per side, thrown away.
    for side in sides.iter() {
        eprintln!("--- warm-up ({})", side.system.name());
        side.client
            .run("warm-up", &[&control, &server], params)
            .await?;
    }
    for (index, &scenario) in scenarios.iter().enumerate() {
        eprintln!("--- {}", scenario.label());
        let cluster = workload::cluster(scenario)?;
        let mut ready: Vec<Option<(Duration, String)>> = Vec::new();
        for side in sides.iter_mut() {
            let programmed = side.program(&cluster).and_then(|p| {
                side.check(scenario)?;
                Ok(p)
            });
            match programmed {
                Ok(p) => ready.push(Some(p)),
                Err(e) => {
                    rows.push(((side.system, index), Err(format!("{e:#}"))));
                    ready.push(None);
                }
            }
        }
        let mut totals: Vec<(Option<Outcome>, Option<Outcome>)> =
            sides.iter().map(|_| (None, None)).collect();
        for round in 0..rounds {
            for ((side, ready), total) in sides.iter().zip(&ready).zip(&mut totals) {
                if ready.is_none() {
                    continue;
                }
                let label = format!("{}-{index}-{round}", side.system.name());
                let mut both = side
                    .client
                    .run(&label, &[&control, &server], params)
                    .await?
                    .into_iter();
                let (Some(c), Some(s)) = (both.next(), both.next()) else {
                    bail!("client ({label}) measured less than asked");
                };
                add(&mut total.0, c);
                add(&mut total.1, s);
            }
        }
        for ((side, ready), total) in sides.iter().zip(ready).zip(totals) {
            if let (Some((program, state)), (Some(control), Some(server))) = (ready, total) {
                for (what, o) in [("control", &control), ("server", &server)] {
                    if o.errors > 0 {
                        notes.push(format!(
                            "{} {} {what}: {} failed connections (first: {})",
                            side.system.name(),
                            scenario.label(),
                            o.errors,
                            o.first_error.as_deref().unwrap_or("?")
                        ));
                    }
                }
                rows.push((
                    (side.system, index),
                    Ok(Row {
                        control,
                        server,
                        program,
                        state,
                    }),
                ));
            }
        }
    }
    rows.sort_by_key(|(k, _)| *k);
    Ok(rows)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_table(
    scenarios: &[Scenario],
    rows: &Rows,
    params: &Params,
    rounds: usize,
    notes: &[String],
) {
    println!(
        "\npolicy: client → server pod on one node; new connections/s (1 request each, {} threads) and kept-alive round trips\n\
         xctl = server / never-policed control, measured in turns in the same runs; xnone = server / the same system's no-policy row\n\
         aim: skep within 5% of no policy at every size ({rounds} rounds of {} s + {} requests per server and system)",
        params.threads, params.seconds, params.requests
    );
    println!(
        "  {:<9} {:<28} {:>9} {:>6} {:>6} {:>9} {:>9} {:>6} {:>6} {:>9}  state",
        "", "", "conn/s", "xctl", "xnone", "p50 µs", "p99 µs", "xctl", "xnone", "program"
    );
    let none = |system: System| {
        rows.iter()
            .find(|((s, i), _)| *s == system && scenarios.get(*i) == Some(&Scenario::NoPolicy))
            .and_then(|(_, r)| r.as_ref().ok())
    };
    let p99 = |s: &Sample| micros(s.quantile(0.99));
    for ((system, index), row) in rows {
        let label = scenarios
            .get(*index)
            .map_or_else(String::new, |s| s.label());
        match row {
            Err(why) => println!(
                "  {:<9} {label:<28} n/a: {}",
                system.name(),
                why.lines().next().unwrap_or_default()
            ),
            Ok(r) => {
                let base = none(*system);
                let rate = r.server.connections.rate();
                let xnone_rate = base.map_or(f64::NAN, |b| rate / b.server.connections.rate());
                let xnone_p99 = base.map_or(f64::NAN, |b| {
                    p99(&r.server.keepalive) / p99(&b.server.keepalive)
                });
                println!(
                    "  {:<9} {label:<28} {rate:>9.0} {:>6.3} {xnone_rate:>6.3} {:>9.1} {:>9.1} {:>6.3} {xnone_p99:>6.3} {:>7.0}ms  {}",
                    system.name(),
                    rate / r.control.connections.rate(),
                    micros(r.server.keepalive.quantile(0.5)),
                    p99(&r.server.keepalive),
                    p99(&r.server.keepalive) / p99(&r.control.keepalive),
                    r.program.as_secs_f64() * 1e3,
                    r.state
                );
            }
        }
    }
    for note in notes {
        println!("  {note}");
    }
}
