//! The load generator of `bench datapath`: a child process (this same
//! binary, `bench datapath-client …`) that first moves itself into a lab
//! node's cgroup and network namespace, so skep's socket hooks on that
//! cgroup apply to its sockets exactly as to a pod's, then:
//!
//! 1. opens new connections for a fixed time from several threads, each to
//!    a random target of the list, one request/response each, then closes;
//! 2. sends sequential requests on one kept-alive connection to one random
//!    target and records each round trip.
//!
//! It prints one JSON line; the parent turns it into [`Outcome`].
//!
//! The protocol is 8 bytes each way (the backends echo them), so the
//! numbers are about connection setup and forwarding, not payload.

use std::{
    fmt::Write as _,
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};
use serde_json::json;

use crate::stats::Sample;

/// Bytes of one request and of its reply.
pub const MESSAGE: usize = 8;
/// A connect or read taking longer than this counts as a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What one client run asks for.
#[derive(Clone, Debug)]
pub struct Params {
    /// How long the new-connections phase runs.
    pub seconds: f64,
    /// How many threads open connections at once.
    pub threads: usize,
    /// Round trips on the kept-alive connection.
    pub requests: usize,
}

/// What one client run measured.
pub struct Outcome {
    /// New connections (one request each): count and wall time.
    pub connections: Sample,
    /// Connections that failed (connect, write or read), and the first error.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Round trips on one kept-alive connection.
    pub keepalive: Sample,
}

/// A tiny xorshift generator: the targets only need to be spread, not secret.
struct Rng(u64);

impl Rng {
    fn seeded(stream: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self((u64::from(nanos) << 16) ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the remainder is below n, a usize"
        )]
        let index = (self.0 % n as u64) as usize;
        index
    }
}

fn connect(target: SocketAddrV4) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(target), IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn round_trip(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [7u8; MESSAGE];
    stream.write_all(&buf)?;
    stream.read_exact(&mut buf)
}

/// New connections from `threads` threads until `seconds` pass.
fn new_connections(targets: &Arc<Vec<SocketAddrV4>>, params: &Params) -> serde_json::Value {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(params.seconds);
    let threads: Vec<_> = (0..params.threads)
        .map(|t| {
            let (targets, done, errors, first_error) = (
                Arc::clone(targets),
                Arc::clone(&done),
                Arc::clone(&errors),
                Arc::clone(&first_error),
            );
            std::thread::spawn(move || {
                let mut rng = Rng::seeded(t as u64);
                while Instant::now() < until {
                    let target = targets[rng.below(targets.len())];
                    match connect(target).and_then(|mut s| round_trip(&mut s)) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert_with(|| format!("{target}: {err}"));
                            }
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed();
    let first = first_error.lock().ok().and_then(|f| f.clone());
    json!({
        "connections": done.load(Ordering::Relaxed),
        "elapsed_ns": u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        "errors": errors.load(Ordering::Relaxed),
        "first_error": first,
    })
}

/// Sequential round trips on one connection to one random target.
fn keepalive(targets: &[SocketAddrV4], requests: usize) -> anyhow::Result<serde_json::Value> {
    let target = targets[Rng::seeded(99).below(targets.len())];
    let mut stream = connect(target).with_context(|| format!("kept-alive connect to {target}"))?;
    let mut latencies = Vec::with_capacity(requests);
    let start = Instant::now();
    for _ in 0..requests {
        let t0 = Instant::now();
        round_trip(&mut stream).with_context(|| format!("kept-alive request to {target}"))?;
        latencies.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let elapsed = start.elapsed();
    Ok(json!({
        "target": target.to_string(),
        "elapsed_ns": u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        "latencies_ns": latencies,
    }))
}

/// The child's entry point: `datapath-client --cgroup DIR --netns FILE
/// --targets FILE --seconds S --threads T --requests M`.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let flag = |name: &str| -> anyhow::Result<&str> {
        let at = args
            .iter()
            .position(|a| a == name)
            .with_context(|| format!("datapath-client: missing {name}"))?;
        args.get(at + 1)
            .map(String::as_str)
            .with_context(|| format!("datapath-client: {name} needs a value"))
    };
    let params = Params {
        seconds: flag("--seconds")?.parse()?,
        threads: flag("--threads")?.parse()?,
        requests: flag("--requests")?.parse()?,
    };
    // The cgroup first (the socket hooks follow the creating task's cgroup),
    // then the namespace; both before any thread exists, so all inherit them.
    let cgroup = Path::new(flag("--cgroup")?).join("cgroup.procs");
    std::fs::write(&cgroup, std::process::id().to_string())
        .with_context(|| format!("failed to join {}", cgroup.display()))?;
    let netns_path = flag("--netns")?;
    let netns = File::open(netns_path).with_context(|| format!("failed to open {netns_path}"))?;
    setns(&netns, CloneFlags::CLONE_NEWNET).context("failed to enter the node's namespace")?;
    let targets: Vec<SocketAddrV4> = std::fs::read_to_string(flag("--targets")?)?
        .lines()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("a target is not IPv4:port")?;
    if targets.is_empty() {
        bail!("datapath-client: no targets");
    }
    let targets = Arc::new(targets);
    let connections = new_connections(&targets, &params);
    let keepalive = keepalive(&targets, params.requests)?;
    println!("{}", json!({"new": connections, "keepalive": keepalive}));
    Ok(())
}

/// The parent's handle: a cgroup of its own below the node's (removed on
/// drop) and the node's namespace file.
pub struct Client {
    cgroup: PathBuf,
    netns: PathBuf,
    dir: PathBuf,
}

impl Client {
    /// A client for the node whose cgroup is `node_cgroup` and whose
    /// namespace file is `netns`; `dir` holds the target lists.
    pub fn new(node_cgroup: &Path, netns: &Path, dir: &Path) -> anyhow::Result<Self> {
        let cgroup = node_cgroup.join(skep_e2e::unique_name("bcli"));
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("failed to create {}", cgroup.display()))?;
        Ok(Self {
            cgroup,
            netns: netns.to_owned(),
            dir: dir.to_owned(),
        })
    }

    /// Runs the child against `targets` and returns what it measured.
    pub async fn run(
        &self,
        label: &str,
        targets: &[SocketAddrV4],
        params: &Params,
    ) -> anyhow::Result<Outcome> {
        let list = self.dir.join(format!("targets-{label}"));
        let text = targets.iter().fold(String::new(), |mut text, t| {
            let _ = writeln!(text, "{t}");
            text
        });
        std::fs::write(&list, text)?;
        let exe = std::env::current_exe()?;
        let out = tokio::process::Command::new(exe)
            .arg("datapath-client")
            .arg("--cgroup")
            .arg(&self.cgroup)
            .arg("--netns")
            .arg(&self.netns)
            .arg("--targets")
            .arg(&list)
            .args(["--seconds", &params.seconds.to_string()])
            .args(["--threads", &params.threads.to_string()])
            .args(["--requests", &params.requests.to_string()])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "client ({label}) failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("client ({label}) printed no JSON"))?;
        let nanos = |v: &serde_json::Value| Duration::from_nanos(v.as_u64().unwrap_or(0));
        let latencies: Vec<Duration> = v["keepalive"]["latencies_ns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(nanos)
            .collect();
        let count = |v: &serde_json::Value| usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0);
        Ok(Outcome {
            connections: Sample {
                ops: count(&v["new"]["connections"]),
                elapsed: nanos(&v["new"]["elapsed_ns"]),
                latencies: Vec::new(),
            },
            errors: v["new"]["errors"].as_u64().unwrap_or(0),
            first_error: v["new"]["first_error"].as_str().map(str::to_owned),
            keepalive: Sample {
                ops: latencies.len(),
                elapsed: nanos(&v["keepalive"]["elapsed_ns"]),
                latencies,
            },
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The child has exited; an empty cgroup can be removed.
        if let Err(err) = std::fs::remove_dir(&self.cgroup) {
            eprintln!("warning: failed to remove {}: {err}", self.cgroup.display());
        }
    }
}
