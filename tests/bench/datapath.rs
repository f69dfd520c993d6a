//! `cargo xtask bench datapath`: service load-balancing on a 3-node lab,
//! side by side in one run: (a) direct to pod IPs, the floor; (b) skep's
//! `ClusterIP` (socket-level LB in the node's cgroup); (c) kube-proxy's
//! iptables mode and (d) its IPVS mode, reproduced in the client node's
//! namespace (see [`kube_proxy`]). For N services of 10 backends each:
//! new connections per second (one request each), p50/p99 of requests on a
//! kept-alive connection, and the time to program N services (skep: API
//! writes → every node's map; iptables: `iptables-restore`; IPVS:
//! `ipvsadm-restore` plus the VIP addresses).
//!
//! The same 10 backend pods (spread over the nodes, see [`backend`]) serve
//! every mode; the client (see [`client`]) runs in node 1's namespace and
//! cgroup, so part of its traffic stays on the node and part crosses the
//! underlay, alike for every mode.
//!
//! Order matters for fairness: the floor and skep run first, for every N,
//! while the node's namespace has no netfilter table (skep needs none, so
//! its traffic pays no conntrack); kube-proxy's modes come after, because
//! once a nat table exists in a namespace every packet there pays conntrack.
//! skep's services accumulate (round N adds N new ones; the client uses only
//! those), the kube-proxy modes load exactly N each round.
//!
//! The client node's namespace gets `tcp_tw_reuse=1` and the full ephemeral
//! port range, so tens of thousands of short connections a second do not run
//! out of ports; every mode gets the same.

pub mod backend;
pub mod client;
pub mod kube_proxy;
mod skep_lb;

use std::{collections::BTreeMap, net::SocketAddrV4, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use skep_e2e::{lab::Lab, process::run as run_cmd};

use self::client::{Client, Outcome, Params};
use crate::api::tls_client;

/// Backend pods, as the issue asks (every Service selects all of them).
const BACKENDS: usize = 10;
/// Lab nodes.
const NODES: u8 = 3;

/// One mode at one N.
struct Measured {
    /// The time to program N services.
    program: Duration,
    /// The mode's traffic.
    mode: Outcome,
    /// The floor measured in turns with it (see [`client::Client::run`]),
    /// so their ratio holds even when the machine's load changes between
    /// modes. Only for skep: with kube-proxy's rules in the namespace,
    /// conntrack drops a direct connection whose reply tuple a translated one
    /// already holds (its masquerade picks source ports the socket layer
    /// does not know about), so those modes run alone and are compared
    /// with the floor column.
    floor: Option<Outcome>,
}

/// What a mode measured at one N, or why it could not run.
type ModeResult = Result<Measured, String>;

/// Measures `targets` alone.
async fn solo(
    client: &Client,
    label: &str,
    targets: &[SocketAddrV4],
    params: &Params,
    program: Duration,
) -> anyhow::Result<Measured> {
    let mode = client
        .run(label, &[targets], params)
        .await?
        .pop()
        .with_context(|| format!("client ({label}) measured nothing"))?;
    Ok(Measured {
        program,
        mode,
        floor: None,
    })
}

/// Measures `targets` in turns with the floor (`backends`).
async fn paired(
    client: &Client,
    label: &str,
    backends: &[SocketAddrV4],
    targets: &[SocketAddrV4],
    params: &Params,
    program: Duration,
) -> anyhow::Result<Measured> {
    let mut both = client
        .run(label, &[backends, targets], params)
        .await?
        .into_iter();
    match (both.next(), both.next()) {
        (Some(floor), Some(mode)) => Ok(Measured {
            program,
            mode,
            floor: Some(floor),
        }),
        _ => bail!("client ({label}) measured less than asked"),
    }
}

/// Everything measured at one N.
struct Round {
    floor: Outcome,
    skep: ModeResult,
    iptables: ModeResult,
    ipvs: ModeResult,
}

/// Runs the benchmark; `--quick` runs N = 10 for a second per mode,
/// `--services=N` (repeatable) runs those N instead of 100, 1,000, 10,000.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench datapath builds a lab of network namespaces: run it as root");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let chosen: Vec<usize> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--services="))
        .filter_map(|n| n.parse().ok())
        .collect();
    let counts: &[usize] = if !chosen.is_empty() {
        &chosen
    } else if quick {
        &[10]
    } else {
        &[100, 1_000, 10_000]
    };
    let params = Params {
        seconds: if quick { 1.0 } else { 5.0 },
        threads: 4,
        requests: if quick { 500 } else { 10_000 },
        backends: BACKENDS,
    };
    skep_apiserver::tls::install_default_provider();
    let dir = tempfile::Builder::new().prefix("skep-bench-dp").tempdir()?;
    let lab_dir = dir.path().join("lab");
    let lab = match Lab::up(&lab_dir, NODES) {
        Ok(lab) => lab,
        Err(err) => {
            skep_e2e::lab::down_if_any(&lab_dir);
            return Err(err);
        }
    };
    let result = measure(&lab, dir.path(), counts, &params).await;
    if result.is_err() {
        eprintln!("lab logs:\n{}", Lab::logs(&lab.data_dir));
    }
    drop(lab);
    let (rounds, notes) = result?;
    print_table(&rounds, &notes);
    Ok(())
}

/// Sets a sysctl inside node `node`'s namespace.
fn sysctl(node: &str, key: &str, value: &str) -> anyhow::Result<()> {
    run_cmd(
        "ip",
        &[
            "netns",
            "exec",
            node,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ],
    )?;
    Ok(())
}

async fn measure(
    lab: &Lab,
    dir: &std::path::Path,
    counts: &[usize],
    params: &Params,
) -> anyhow::Result<(BTreeMap<usize, Round>, Vec<String>)> {
    let node = &lab.nodes[0];
    sysctl(&node.name, "net.ipv4.tcp_tw_reuse", "1")?;
    sysctl(&node.name, "net.ipv4.ip_local_port_range", "1024 65535")?;
    let backends = backend::start(lab, BACKENDS, &dir.join("image.tar"))?;
    let client = Client::new(&node.cgroup, &node.netns, dir)?;
    let (api, base) = tls_client(&lab.kubeconfig())?;
    let pin_dirs: Vec<PathBuf> = lab.nodes.iter().map(|n| n.pin_dir.clone()).collect();
    let mut notes = vec![format!(
        "{NODES}-node lab, {BACKENDS} backend pods per service ({} per node), client in {}'s namespace and cgroup; \
         {} threads of new connections for {} s, {} kept-alive requests",
        backends
            .per_node
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        node.name,
        params.threads,
        params.seconds,
        params.requests
    )];
    let skep_maps = skep_lb::check_maps(&pin_dirs).map_err(|e| format!("{e:#}"));
    let backend_count = u16::try_from(BACKENDS)?;

    // The first seconds after the pods start, the agents and the API server
    // are still busy with them: one floor run, thrown away, lets them settle.
    eprintln!("--- warm-up");
    client.run("warm-up", &[&backends.addrs], params).await?;
    eprintln!("--- floor and skep (no netfilter in the client's namespace)");
    let mut rounds = BTreeMap::new();
    for (round, &n) in counts.iter().enumerate() {
        let skep = match &skep_maps {
            Err(why) => Err(why.clone()),
            Ok(()) => async {
                let (programmed, vips) = skep_lb::program(
                    &api,
                    &base,
                    &pin_dirs,
                    n,
                    skep_lb::vip_base(round),
                    backend_count,
                )
                .await?;
                notes.push(format!(
                    "skep N={n}: API writes took {:.0} ms, every node's map ready after {:.0} ms",
                    ms(programmed.writes),
                    ms(programmed.ready)
                ));
                let label = format!("skep-{n}");
                paired(
                    &client,
                    &label,
                    &backends.addrs,
                    &vips,
                    params,
                    programmed.ready,
                )
                .await
            }
            .await
            .map_err(|e| format!("{e:#}")),
        };
        // The floor column: measured in turns with skep, or alone without it.
        let floor = if let Ok(m) = &skep {
            m.floor.clone().context("skep is measured with the floor")?
        } else {
            let mut alone = client
                .run(&format!("floor-{n}"), &[&backends.addrs], params)
                .await?;
            alone.pop().context("the client measured nothing")?
        };
        rounds.insert(
            n,
            Round {
                floor,
                skep,
                iptables: Err("not run".into()),
                ipvs: Err("not run".into()),
            },
        );
    }

    eprintln!("--- kube-proxy iptables mode");
    for (n, result) in iptables_rounds(lab, counts, &backends.addrs, &client, params).await? {
        if let Some(r) = rounds.get_mut(&n) {
            r.iptables = result;
        }
    }

    eprintln!("--- kube-proxy IPVS mode");
    let ipvs = ipvs_rounds(lab, counts, &backends.addrs, &client, params).await;
    for (n, result) in ipvs {
        if let Some(r) = rounds.get_mut(&n) {
            r.ipvs = result;
        }
    }
    drop(client);
    drop(backends);
    Ok((rounds, notes))
}

/// kube-proxy's iptables mode for every N.
async fn iptables_rounds(
    lab: &Lab,
    counts: &[usize],
    backends: &[SocketAddrV4],
    client: &Client,
    params: &Params,
) -> anyhow::Result<Vec<(usize, ModeResult)>> {
    let node = &lab.nodes[0];
    let vip_route = format!("{}/16", kube_proxy::IPTABLES_VIPS);
    // kube-proxy's nodes reach ClusterIPs by their default route; the lab
    // has none, so the VIP range gets one (DNAT rewrites every packet first).
    run_cmd(
        "ip",
        &["-n", &node.name, "route", "add", &vip_route, "dev", "eth0"],
    )?;
    let mut out = Vec::new();
    for &n in counts {
        let rules = kube_proxy::iptables_rules(n, 80, backends);
        let result = match kube_proxy::run_in(&node.netns, "iptables-restore", &[], &rules) {
            Err(e) => Err(format!("{e:#}")),
            Ok(took) => {
                let vips: Vec<SocketAddrV4> = (0..n)
                    .map(|i| SocketAddrV4::new(kube_proxy::vip(kube_proxy::IPTABLES_VIPS, i), 80))
                    .collect();
                solo(client, &format!("iptables-{n}"), &vips, params, took)
                    .await
                    .map_err(|e| format!("{e:#}"))
            }
        };
        out.push((n, result));
    }
    Ok(out)
}

/// IPVS for every N, or the reason it cannot run here (for every N).
async fn ipvs_rounds(
    lab: &Lab,
    counts: &[usize],
    backends: &[SocketAddrV4],
    client: &Client,
    params: &Params,
) -> Vec<(usize, ModeResult)> {
    let node = &lab.nodes[0];
    let setup = || -> anyhow::Result<()> {
        kube_proxy::run_in(&node.netns, "ipvsadm", &["-Ln"], "")
            .context("IPVS is not available")?;
        run_cmd(
            "ip",
            &[
                "-n",
                &node.name,
                "link",
                "add",
                "kube-ipvs0",
                "type",
                "dummy",
            ],
        )
        .context("kube-ipvs0 (a dummy device) cannot be made")?;
        sysctl(&node.name, "net.ipv4.vs.conntrack", "1")?;
        kube_proxy::run_in(
            &node.netns,
            "iptables-restore",
            &[],
            &kube_proxy::ipvs_iptables_rules(),
        )?;
        Ok(())
    };
    if let Err(e) = setup() {
        let why = format!("{e:#}");
        return counts.iter().map(|n| (*n, Err(why.clone()))).collect();
    }
    let mut out = Vec::new();
    for &n in counts {
        let result = async {
            let _ = kube_proxy::run_in(&node.netns, "ipvsadm", &["-C"], "");
            let _ = run_cmd(
                "ip",
                &["-n", &node.name, "addr", "flush", "dev", "kube-ipvs0"],
            );
            let took = kube_proxy::run_in(
                &node.netns,
                "ip",
                &["-batch", "-"],
                &kube_proxy::ipvs_addresses(n),
            )? + kube_proxy::run_in(
                &node.netns,
                "ipvsadm-restore",
                &[],
                &kube_proxy::ipvs_rules(n, 80, backends),
            )?;
            let vips: Vec<SocketAddrV4> = (0..n)
                .map(|i| SocketAddrV4::new(kube_proxy::vip(kube_proxy::IPVS_VIPS, i), 80))
                .collect();
            solo(client, &format!("ipvs-{n}"), &vips, params, took).await
        }
        .await
        .map_err(|e| format!("{e:#}"));
        out.push((n, result));
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One cell: a mode's value and its ratio to the floor (measured with it,
/// else `floor`), or `n/a` (the reason follows the table).
fn cell(
    result: &ModeResult,
    floor: &Outcome,
    value: impl Fn(&Outcome) -> f64,
    show: impl Fn(f64) -> String,
) -> String {
    result.as_ref().map_or_else(
        |_| "n/a".to_owned(),
        |m| {
            let v = value(&m.mode);
            let base = value(m.floor.as_ref().unwrap_or(floor));
            format!("{} ({:.2}x)", show(v), v / base.max(1e-12))
        },
    )
}

fn print_table(rounds: &BTreeMap<usize, Round>, notes: &[String]) {
    println!(
        "\ndatapath: {BACKENDS} backends per service; (x) = ratio to the floor: for skep the floor\n\
         measured in turns with it, else the floor column (see Measured in datapath.rs)\n\
         aim: skep within 10% of the floor at every N; 10,000 services on every node in < 1 s"
    );
    println!(
        "  {:<7} {:<20} {:>10} {:>20} {:>20} {:>20}",
        "N", "", "floor", "skep", "iptables", "ipvs"
    );
    let mut reasons: BTreeMap<&str, String> = BTreeMap::new();
    for (n, r) in rounds {
        let modes = [&r.skep, &r.iptables, &r.ipvs];
        let row = |metric: &str, value: &dyn Fn(&Outcome) -> f64, show: &dyn Fn(f64) -> String| {
            let [s, i, v] = modes.map(|m| cell(m, &r.floor, value, show));
            let floor = show(value(&r.floor));
            println!("  {n:<7} {metric:<20} {floor:>10} {s:>20} {i:>20} {v:>20}");
        };
        row("new conn/s", &|o| o.connections.rate(), &|v| {
            format!("{v:.0}")
        });
        #[expect(clippy::cast_precision_loss, reason = "at most a few backends")]
        row("backends reached", &|o| o.spread.len() as f64, &|v| {
            format!("{v:.0}")
        });
        for (label, q) in [("kept-alive p50", 0.5), ("kept-alive p99", 0.99)] {
            row(
                label,
                &|o| o.keepalive.quantile(q).as_secs_f64() * 1e6,
                &|v| format!("{v:.1} µs"),
            );
        }
        let program = |m: &ModeResult| {
            m.as_ref()
                .map_or_else(|_| "n/a".to_owned(), |m| format!("{:.0} ms", ms(m.program)))
        };
        println!(
            "  {n:<7} {:<20} {:>10} {:>20} {:>20} {:>20}",
            "program N services",
            "-",
            program(&r.skep),
            program(&r.iptables),
            program(&r.ipvs)
        );
        for (mode, m) in [
            ("skep", &r.skep),
            ("iptables", &r.iptables),
            ("ipvs", &r.ipvs),
        ] {
            match m {
                Err(why) => {
                    reasons.entry(mode).or_insert_with(|| why.clone());
                }
                Ok(m) => check_outcome(*n, mode, &m.mode),
            }
        }
        check_outcome(*n, "floor", &r.floor);
    }
    for (mode, why) in reasons {
        // The first line says why; tools add advice on further lines.
        println!("  {mode} n/a: {}", why.lines().next().unwrap_or_default());
    }
    for note in notes {
        println!("  {note}");
    }
}

/// Prints what went wrong in a run that still produced numbers.
fn check_outcome(n: usize, mode: &str, o: &Outcome) {
    if o.keepalive_backends < BACKENDS {
        println!(
            "  N={n} {mode}: kept-alive connections reached only {} backends",
            o.keepalive_backends
        );
    }
    if o.errors > 0 {
        println!(
            "  N={n} {mode}: {} failed connections (first: {})",
            o.errors,
            o.first_error.as_deref().unwrap_or("?")
        );
    }
}
