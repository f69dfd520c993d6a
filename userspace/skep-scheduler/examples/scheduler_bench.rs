//! Scheduler throughput benchmark: registers `--nodes` nodes (mixed sizes,
//! zones, disk types, a few tainted), creates `--pods` pending pods (plain
//! requests, nodeSelector, required anti-affinity by hostname, preferred
//! node/pod affinity, tolerations), runs the real `Scheduler` with an
//! in-memory binder, checks every placement against the pod's constraints
//! and prints pods/s, latency percentiles and the ratio to kube-scheduler's
//! `scheduler_perf` anchor (680 pods/s for 5,000 nodes / 10,000 pods).
//!
//! `cargo run --profile opt -p skep-scheduler --example scheduler_bench -- --nodes 5000 --pods 10000`

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec,
    NodeStatus, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, PodSpec,
    PreferredSchedulingTerm, ResourceRequirements, Taint, Toleration, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use skep_scheduler::resources::{parse_milli, parse_units};
use skep_scheduler::{BindError, Binder, PodInfo, Scheduler, SchedulerConfig};
use tokio::sync::Notify;

const KUBE_ANCHOR_PODS_PER_SEC: f64 = 680.0;
const ZONES: usize = 5;

#[derive(Parser, Debug)]
#[command(about = "Benchmark skep-scheduler on synthetic nodes and pods")]
struct Args {
    /// Nodes to register.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods to schedule.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Extra pods scheduled one at a time afterwards to measure the latency
    /// of a single pod on the loaded cluster (0: skip).
    #[arg(long, default_value_t = 1000)]
    probe: usize,
    /// Percentage of nodes to score (0: kube's adaptive default).
    #[arg(long, default_value_t = 0)]
    percentage: u32,
    /// Before verifying, corrupt two placements (an anti-affine pair on one
    /// node, an ssd pod on an hdd node) and require the verifier to catch them.
    #[arg(long)]
    check_verifier: bool,
}

/// Records bindings in memory, with the time each pod was bound.
struct MemoryBinder {
    bound: Mutex<HashMap<String, (String, Instant)>>,
    target: Mutex<usize>,
    done: Notify,
}

impl Binder for MemoryBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        let now = Instant::now();
        let n = {
            let mut b = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
            b.insert(pod.key.clone(), (node.to_owned(), now));
            b.len()
        };
        if n >= *self.target.lock().unwrap_or_else(PoisonError::into_inner) {
            self.done.notify_one();
        }
        Ok(())
    }

    fn failed_scheduling(&self, pod: &PodInfo, message: &str) {
        eprintln!("unschedulable {}: {message}", pod.key);
    }
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn labels(l: &[(&str, String)]) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn make_node(i: usize) -> Node {
    let (cpu, mem) = match i % 3 {
        0 => ("4", "16Gi"),
        1 => ("8", "32Gi"),
        _ => ("16", "64Gi"),
    };
    let name = format!("node-{i:05}");
    let disk = if i.is_multiple_of(4) { "ssd" } else { "hdd" };
    let taints = (i % 20 == 7).then(|| {
        vec![Taint {
            key: "dedicated".to_owned(),
            value: Some("gpu".to_owned()),
            effect: "NoSchedule".to_owned(),
            time_added: None,
        }]
    });
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels(&[
                ("kubernetes.io/hostname", name),
                ("topology.kubernetes.io/zone", format!("zone-{}", i % ZONES)),
                ("disktype", disk.to_owned()),
                ("node.kubernetes.io/instance-type", format!("m{}", i % 3)),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(BTreeMap::from([
                ("cpu".to_owned(), q(cpu)),
                ("memory".to_owned(), q(mem)),
                ("pods".to_owned(), q("110")),
            ])),
            ..Default::default()
        }),
    }
}

fn term(app: &str, topology: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(labels(&[("app", app.to_owned())])),
            match_expressions: None,
        }),
        topology_key: topology.to_owned(),
        ..Default::default()
    }
}

/// Adds the constraints of pod kind `kind` (see [`make_pod`]).
fn constrain(spec: &mut PodSpec, kind: usize, app: &str) {
    match kind {
        0 | 1 => {
            spec.affinity = Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        app,
                        "kubernetes.io/hostname",
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        2..=5 => {
            spec.node_selector = Some(labels(&[("disktype", "ssd".to_owned())]));
        }
        6 | 7 => {
            spec.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        PreferredSchedulingTerm {
                            weight: 50,
                            preference: NodeSelectorTerm {
                                match_expressions: Some(vec![NodeSelectorRequirement {
                                    key: "topology.kubernetes.io/zone".to_owned(),
                                    operator: "In".to_owned(),
                                    values: Some(vec!["zone-1".to_owned()]),
                                }]),
                                match_fields: None,
                            },
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        8 => {
            spec.affinity = Some(Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 20,
                            pod_affinity_term: term("web-0", "topology.kubernetes.io/zone"),
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        9 => {
            spec.tolerations = Some(vec![Toleration {
                key: Some("dedicated".to_owned()),
                operator: Some("Equal".to_owned()),
                value: Some("gpu".to_owned()),
                effect: Some("NoSchedule".to_owned()),
                toleration_seconds: None,
            }]);
        }
        10 => {
            spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
                label_selector: Some(LabelSelector {
                    match_labels: Some(labels(&[("app", app.to_owned())])),
                    match_expressions: None,
                }),
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".to_owned(),
                when_unsatisfiable: "DoNotSchedule".to_owned(),
                ..Default::default()
            }]);
        }
        _ => {}
    }
}

/// Pod mix by `i % 20`: 0-1 anti-affinity (20 deployments), 2-5
/// nodeSelector ssd, 6-7 preferred node affinity, 8 preferred pod affinity,
/// 9 tolerates the gpu taint, 10 zone spread `DoNotSchedule` maxSkew 1 (one
/// deployment), the rest plain; 16 deployments for default spreading.
fn make_pod(i: usize) -> Pod {
    let kind = i % 20;
    let cpu = format!("{}m", 100 + (i % 5) * 100);
    let mem = format!("{}Mi", 128 * (1 + i % 4));
    let (app, owner) = if kind < 2 {
        let d = (i / 20) % 20;
        (format!("anti-{d}"), format!("rs-anti-{d}"))
    } else if kind == 10 {
        ("zonal".to_owned(), "rs-zonal".to_owned())
    } else {
        let d = i % 16;
        (format!("web-{d}"), format!("rs-web-{d}"))
    };
    let mut spec = PodSpec {
        containers: vec![Container {
            name: "app".to_owned(),
            image: Some("busybox".to_owned()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), q(&cpu)),
                    ("memory".to_owned(), q(&mem)),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    constrain(&mut spec, kind, &app);
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i:06}")),
            namespace: Some("bench".to_owned()),
            uid: Some(format!("uid-{i}")),
            labels: Some(labels(&[("app", app)])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "ReplicaSet".to_owned(),
                name: owner.clone(),
                uid: owner,
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Checks the `zonal` deployment's zone spread (maxSkew 1); 1 on violation.
fn verify_zone_skew(pods: &[Pod], bound: &HashMap<String, (String, Instant)>) -> usize {
    let mut zonal = [0usize; ZONES];
    for p in pods {
        let key = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        );
        let is_zonal = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str)
            == Some("zonal");
        if let (true, Some((node, _))) = (is_zonal, bound.get(&key)) {
            let zone: usize = node
                .trim_start_matches("node-")
                .parse::<usize>()
                .unwrap_or(0)
                % ZONES;
            zonal[zone] += 1;
        }
    }
    let skew = zonal.iter().max().unwrap_or(&0) - zonal.iter().min().unwrap_or(&0);
    if skew > 1 {
        eprintln!("violation: zonal pods per zone {zonal:?} exceed maxSkew 1");
        return 1;
    }
    0
}

/// Checks every placement; returns the number of violations.
fn verify(
    nodes: &HashMap<String, Node>,
    pods: &[Pod],
    bound: &HashMap<String, (String, Instant)>,
) -> usize {
    let mut violations = 0;
    let mut used: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    let mut anti: HashMap<(String, &str), usize> = HashMap::new();
    for p in pods {
        let key = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        );
        let Some((node_name, _)) = bound.get(&key) else {
            eprintln!("violation: {key} not bound");
            violations += 1;
            continue;
        };
        let Some(node) = nodes.get(node_name) else {
            eprintln!("violation: {key} bound to unknown node {node_name}");
            violations += 1;
            continue;
        };
        let spec = p.spec.clone().unwrap_or_default();
        let node_labels = node.metadata.labels.clone().unwrap_or_default();
        for (k, v) in spec.node_selector.iter().flatten() {
            if node_labels.get(k) != Some(v) {
                eprintln!("violation: {key} on {node_name} misses nodeSelector {k}={v}");
                violations += 1;
            }
        }
        let tolerates_gpu = spec
            .tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some("dedicated"));
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| !t.is_empty());
        if tainted && !tolerates_gpu {
            eprintln!("violation: {key} on tainted {node_name}");
            violations += 1;
        }
        let has_anti = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some();
        if has_anti {
            let app = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .cloned()
                .unwrap_or_default();
            let n = anti.entry((app, node_name.as_str())).or_insert(0);
            *n += 1;
            if *n > 1 {
                eprintln!(
                    "violation: {key} shares {node_name} with a replica it is anti-affine to"
                );
                violations += 1;
            }
        }
        let req = spec.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        let u = used.entry(node_name.as_str()).or_insert((0, 0, 0));
        u.0 += req.get("cpu").and_then(|c| parse_milli(&c.0)).unwrap_or(0);
        u.1 += req
            .get("memory")
            .and_then(|m| parse_units(&m.0))
            .unwrap_or(0);
        u.2 += 1;
    }
    violations += verify_zone_skew(pods, bound);
    for (name, (cpu, mem, count)) in used {
        let alloc = nodes[name]
            .status
            .as_ref()
            .and_then(|s| s.allocatable.clone())
            .unwrap_or_default();
        let a_cpu = alloc
            .get("cpu")
            .and_then(|c| parse_milli(&c.0))
            .unwrap_or(0);
        let a_mem = alloc
            .get("memory")
            .and_then(|c| parse_units(&c.0))
            .unwrap_or(0);
        if cpu > a_cpu || mem > a_mem || count > 110 {
            eprintln!(
                "violation: {name} overcommitted: cpu {cpu}/{a_cpu} mem {mem}/{a_mem} pods {count}"
            );
            violations += 1;
        }
    }
    violations
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "index into a small vector"
    )]
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Corrupts two placements and requires [`verify`] to catch both.
fn check_verifier(
    node_map: &HashMap<String, Node>,
    pods: &[Pod],
    bound: &HashMap<String, (String, Instant)>,
) -> anyhow::Result<()> {
    let mut corrupt = bound.clone();
    // pod 0 and pod 400 are replicas of anti-0; pod 2 wants disktype=ssd
    // and node-00001 is hdd.
    let first = corrupt.get("bench/pod-000000").cloned();
    if let (Some(first), Some(second)) = (first, corrupt.get_mut("bench/pod-000400")) {
        *second = first;
    }
    if let Some(ssd) = corrupt.get_mut("bench/pod-000002") {
        "node-00001".clone_into(&mut ssd.0);
    }
    let caught = verify(node_map, pods, &corrupt);
    println!("verifier self-check: {caught} violations found in corrupted placements");
    if caught < 2 {
        bail!("verifier missed corrupted placements");
    }
    Ok(())
}

/// Waits until `count` pods are bound or `deadline` after `start` passed.
async fn wait_bound(
    binder: &MemoryBinder,
    count: usize,
    start: Instant,
    deadline: Duration,
) -> anyhow::Result<()> {
    loop {
        let n = binder
            .bound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if n >= count {
            return Ok(());
        }
        if start.elapsed() > deadline {
            bail!("only {n}/{count} pods bound after {deadline:?}");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), binder.done.notified()).await;
    }
}

/// Schedules `count` extra pods one at a time; their enqueue→bound latencies, sorted.
async fn probe(
    sched: &Scheduler<MemoryBinder>,
    binder: &MemoryBinder,
    base: usize,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut probe_lat = Vec::with_capacity(count);
    for j in 0..count {
        let mut p = make_pod(base + j);
        p.metadata.name = Some(format!("probe-{j:06}"));
        *binder.target.lock().unwrap_or_else(PoisonError::into_inner) = base + j + 1;
        let t = Instant::now();
        sched.upsert_pod(p);
        loop {
            let n = binder
                .bound
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            if n > base + j {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("probe pod {j} not bound within 10s");
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), binder.done.notified()).await;
        }
        probe_lat.push(t.elapsed());
    }
    probe_lat.sort();
    Ok(probe_lat)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let binder = MemoryBinder {
        bound: Mutex::new(HashMap::with_capacity(args.pods + args.probe)),
        target: Mutex::new(args.pods),
        done: Notify::new(),
    };
    let config = SchedulerConfig {
        percentage_of_nodes_to_score: args.percentage,
        ..SchedulerConfig::default()
    };
    let sched = Scheduler::new(config, binder);
    let binder = Arc::clone(sched.binder());

    let t = Instant::now();
    let nodes: Vec<Node> = (0..args.nodes).map(make_node).collect();
    for n in &nodes {
        sched.upsert_node(n);
    }
    let pods: Vec<Pod> = (0..args.pods).map(make_pod).collect();
    println!(
        "setup: {} nodes registered, {} pods built in {:.2?}",
        args.nodes,
        args.pods,
        t.elapsed()
    );

    let runner = tokio::spawn(Arc::clone(&sched).run());
    let start = Instant::now();
    let mut enqueued: HashMap<String, Instant> = HashMap::with_capacity(args.pods);
    for p in pods.iter().cloned() {
        let key = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        );
        enqueued.insert(key, Instant::now());
        sched.upsert_pod(p);
    }
    wait_bound(&binder, args.pods, start, Duration::from_secs(600)).await?;
    let elapsed = start.elapsed();

    let bound = binder
        .bound
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut lat: Vec<Duration> = bound
        .iter()
        .filter_map(|(k, (_, at))| enqueued.get(k).map(|e| at.saturating_duration_since(*e)))
        .collect();
    lat.sort();

    let probe_lat = probe(&sched, &binder, args.pods, args.probe).await?;

    sched.shutdown();
    runner.await.context("scheduler task")?;

    let node_map: HashMap<String, Node> = nodes
        .into_iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
        .collect();
    if args.check_verifier {
        check_verifier(&node_map, &pods, &bound)?;
    }
    let violations = verify(&node_map, &pods, &bound);

    #[expect(clippy::cast_precision_loss, reason = "pod counts")]
    let rate = args.pods as f64 / elapsed.as_secs_f64();
    let stats = &sched.stats;
    println!(
        "scheduled {} pods onto {} nodes in {elapsed:.2?}: {rate:.0} pods/s ({:.1}x kube-scheduler's {KUBE_ANCHOR_PODS_PER_SEC} pods/s anchor)",
        args.pods,
        args.nodes,
        rate / KUBE_ANCHOR_PODS_PER_SEC
    );
    println!(
        "latency enqueue->bound, all pods created at once: p50 {:.2?} p99 {:.2?} max {:.2?}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    if args.probe > 0 {
        println!(
            "latency enqueue->bound, one pod at a time on the loaded cluster ({} pods): p50 {:.2?} p99 {:.2?}",
            args.probe,
            percentile(&probe_lat, 0.50),
            percentile(&probe_lat, 0.99)
        );
    }
    println!(
        "attempts: scheduled {} unschedulable {} bind errors {}; constraint violations: {violations}",
        stats.scheduled.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .unschedulable
            .load(std::sync::atomic::Ordering::Relaxed),
        stats.bind_errors.load(std::sync::atomic::Ordering::Relaxed),
    );
    if violations > 0 {
        bail!("{violations} constraint violations");
    }
    Ok(())
}
