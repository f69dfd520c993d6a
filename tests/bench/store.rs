//! `cargo xtask bench store`: small writes and watch delivery through the
//! skep store directly, through skep's HTTPS API, and through etcd (the
//! store Kubernetes uses, Debian's etcd-server) — the same keys and values,
//! one writer and 64 concurrent writers, side by side in one run.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::json;
use skep_apiserver::{ApiServer, ApiServerConfig};
use skep_store::{Store, StoreConfig};

use crate::stats::{Sample, print_group};

const SEQUENTIAL_OPS: usize = 2_000;
const WRITERS: usize = 64;
const CONCURRENT_FOR: Duration = Duration::from_secs(5);
const WATCH_OPS: usize = 1_000;

/// A small object like a typical `ConfigMap`: about 300 bytes of JSON.
fn object(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "bench"},
        "data": {"payload": "x".repeat(200)}})
}

fn key(name: &str) -> String {
    format!("/registry/core/configmaps/bench/{name}")
}

/// Where the writes go.
#[derive(Clone)]
enum Target {
    Etcd(Box<etcd_client::Client>),
    Store(Store),
    Api {
        client: reqwest::Client,
        base: String,
    },
}

impl Target {
    async fn create(&self, name: &str) -> anyhow::Result<()> {
        let value = serde_json::to_vec(&object(name))?;
        match self {
            Target::Etcd(client) => {
                // Create-if-absent, as kube-apiserver's etcd3 storage does.
                let key = key(name);
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::create_revision(
                        key.clone(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then([etcd_client::TxnOp::put(key, value, None)]);
                let resp = client.kv_client().txn(txn).await?;
                if !resp.succeeded() {
                    bail!("{name} exists");
                }
            }
            Target::Store(store) => {
                store.create(key(name), value).await?;
            }
            Target::Api { client, base } => {
                let resp = client
                    .post(format!("{base}/api/v1/namespaces/bench/configmaps"))
                    .header("content-type", "application/json")
                    .body(value)
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("POST {name}: {}", resp.status());
                }
            }
        }
        Ok(())
    }
}

async fn sequential(target: &Target, tag: &str) -> anyhow::Result<Sample> {
    let mut latencies = Vec::with_capacity(SEQUENTIAL_OPS);
    let start = Instant::now();
    for i in 0..SEQUENTIAL_OPS {
        let t = Instant::now();
        target.create(&format!("{tag}-s-{i}")).await?;
        latencies.push(t.elapsed());
    }
    Ok(Sample {
        ops: SEQUENTIAL_OPS,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn concurrent(target: &Target, tag: &str) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let deadline = start + CONCURRENT_FOR;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let target = target.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                target.create(&format!("{tag}-c-{w}-{i}")).await?;
                latencies.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Sample {
        ops: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Starts watching `prefix` on `target`, sending (write index, arrival) per event.
async fn spawn_watcher(
    target: &Target,
    prefix: &str,
    got_tx: tokio::sync::mpsc::UnboundedSender<(usize, Instant)>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let index_of = {
        let prefix = prefix.to_owned();
        move |name: &str| {
            name.strip_prefix(&prefix)
                .and_then(|i| i.parse::<usize>().ok())
        }
    };
    Ok(match target {
        Target::Etcd(client) => {
            let mut stream = client
                .watch_client()
                .watch(
                    key(prefix),
                    Some(etcd_client::WatchOptions::new().with_prefix()),
                )
                .await?;
            tokio::spawn(async move {
                while let Ok(Some(resp)) = stream.message().await {
                    for event in resp.events() {
                        if let Some(kv) = event.kv()
                            && let Ok(k) = kv.key_str()
                            && let Some(i) = k.rsplit('/').next().and_then(&index_of)
                        {
                            let _ = got_tx.send((i, Instant::now()));
                        }
                    }
                }
            })
        }
        Target::Store(store) => {
            let mut stream = store.watch(key(prefix), store.current_revision())?;
            tokio::spawn(async move {
                while let Some(Ok(event)) = stream.next().await {
                    let k = String::from_utf8_lossy(&event.kv.key).into_owned();
                    if let Some(i) = k.rsplit('/').next().and_then(&index_of) {
                        let _ = got_tx.send((i, Instant::now()));
                    }
                }
            })
        }
        Target::Api { client, base } => {
            let resp = client
                .get(format!(
                    "{base}/api/v1/namespaces/bench/configmaps?watch=1&allowWatchBookmarks=false"
                ))
                .send()
                .await?;
            let mut body = resp.bytes_stream();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(Ok(chunk)) = body.next().await {
                    buf.extend_from_slice(&chunk);
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                            continue;
                        };
                        let name = event["object"]["metadata"]["name"].as_str().unwrap_or("");
                        if let Some(i) = index_of(name) {
                            let _ = got_tx.send((i, Instant::now()));
                        }
                    }
                }
            })
        }
    })
}

/// Sequential writes with a watcher running: the time from starting each
/// write to the watcher holding its event.
async fn watch_latency(target: &Target, tag: &str) -> anyhow::Result<Sample> {
    let sent: Arc<Vec<Mutex<Option<Instant>>>> =
        Arc::new((0..WATCH_OPS).map(|_| Mutex::new(None)).collect());
    let prefix = format!("{tag}-w-");
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let watcher = spawn_watcher(target, &prefix, got_tx).await?;
    // Let the watch settle (the HTTP one starts with the existing objects).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    for i in 0..WATCH_OPS {
        if let Ok(mut slot) = sent[i].lock() {
            *slot = Some(Instant::now());
        }
        target.create(&format!("{prefix}{i}")).await?;
    }
    let mut latencies = Vec::with_capacity(WATCH_OPS);
    let deadline = Instant::now() + Duration::from_secs(10);
    while latencies.len() < WATCH_OPS {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some((i, at))) = tokio::time::timeout(left, got_rx.recv()).await else {
            break;
        };
        let started = sent.get(i).and_then(|s| s.lock().ok().and_then(|s| *s));
        if let Some(started) = started {
            latencies.push(at.saturating_duration_since(started));
        }
    }
    watcher.abort();
    if latencies.len() < WATCH_OPS {
        bail!("watch delivered {} of {WATCH_OPS} events", latencies.len());
    }
    Ok(Sample {
        ops: WATCH_OPS,
        elapsed: start.elapsed(),
        latencies,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// etcd on loopback ports in a temp dir, killed on drop.
struct Etcd(Child);

impl Etcd {
    fn start(dir: &Path) -> anyhow::Result<(Self, String)> {
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new("etcd");
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command
            .args(["--name", "bench", "--data-dir"])
            .arg(dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "failed to start etcd (Debian etcd-server; `cargo xtask setup` installs it)",
            )?;
        Ok((Self(child), client_url))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect_etcd(url: &str) -> anyhow::Result<etcd_client::Client> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answered = match etcd_client::Client::connect([url], None).await {
            Ok(mut client) => client.status().await.map(|_| client).map_err(Into::into),
            Err(err) => Err(anyhow::Error::from(err)),
        };
        match answered {
            Ok(client) => return Ok(client),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err.context(format!("etcd at {url} does not answer"))),
        }
    }
}

async fn api_client(kubeconfig: &Path, address: &str) -> anyhow::Result<(reqwest::Client, String)> {
    let (client, _) = crate::api::tls_client(kubeconfig)?;
    let base = format!("https://{address}");
    let resp = client
        .post(format!("{base}/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("creating the bench namespace: {}", resp.status());
    }
    Ok((client, base))
}

/// Runs every workload on every target and prints the table.
pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (etcd_process, etcd_url) = Etcd::start(&dir.path().join("etcd"))?;
    let etcd = Target::Etcd(Box::new(connect_etcd(&etcd_url).await?));

    let direct_store = Store::open(StoreConfig::single(dir.path().join("store"))).await?;
    let direct = Target::Store(direct_store.clone());

    let api_store = Store::open(StoreConfig::single(dir.path().join("api-store"))).await?;
    let server = ApiServer::bind(
        &ApiServerConfig {
            data_dir: dir.path().join("api"),
            listen: "127.0.0.1:0".parse()?,
            server_names: Vec::new(),
            service_ranges: skep_apiserver::ServiceRanges::default(),
            ..ApiServerConfig::default()
        },
        api_store.clone(),
    )
    .await?;
    let (kubeconfig, address) = (server.kubeconfig().to_owned(), server.address().to_owned());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stop_rx.await;
    }));
    let (client, base) = api_client(&kubeconfig, &address).await?;
    let api = Target::Api { client, base };

    println!(
        "skep store benchmark: {SEQUENTIAL_OPS} sequential creates; {WRITERS} writers for {}s; \
         {WATCH_OPS} watched writes. ~300-byte ConfigMap objects, fsync'd like etcd.",
        CONCURRENT_FOR.as_secs()
    );
    let targets = [
        ("etcd 3.4 (baseline)", &etcd),
        ("skep store, direct", &direct),
        ("skep API (HTTPS, admission)", &api),
    ];
    let mut seq = Vec::new();
    let mut conc = Vec::new();
    let mut watch = Vec::new();
    for (i, (name, target)) in targets.iter().enumerate() {
        let tag = format!("t{i}");
        seq.push((*name, sequential(target, &tag).await?));
        conc.push((*name, concurrent(target, &tag).await?));
        watch.push((*name, watch_latency(target, &tag).await?));
    }
    let rows = |v: &[(&'static str, Sample)]| -> Vec<(&'static str, Sample)> {
        v.iter()
            .map(|(n, s)| {
                (
                    *n,
                    Sample {
                        ops: s.ops,
                        elapsed: s.elapsed,
                        latencies: s.latencies.clone(),
                    },
                )
            })
            .collect()
    };
    let show = |title: &str, v: &[(&'static str, Sample)], rate: bool| {
        let owned = rows(v);
        let refs: Vec<(&str, &Sample)> = owned.iter().map(|(n, s)| (*n, s)).collect();
        print_group(title, &refs, rate);
    };
    show("sequential create (1 writer)", &seq, true);
    show(
        &format!("concurrent create ({WRITERS} writers)"),
        &conc,
        true,
    );
    show(
        "watch delivery (write start -> event received)",
        &watch,
        false,
    );
    let conc_store = &conc[1].1;
    println!(
        "\naim: a single replica sustains >= 20,000 small writes/s with p99 < 10 ms; \
         measured store-direct {:.0}/s, p99 {:.2} ms",
        conc_store.rate(),
        conc_store.quantile(0.99).as_secs_f64() * 1000.0
    );
    let _ = stop_tx.send(());
    let _ = serving.await;
    direct_store.shutdown().await?;
    api_store.shutdown().await?;
    drop(etcd_process);
    Ok(())
}
