//! The load generator of `bench datapath`: a child process (this same
//! binary, `bench datapath-client …`) that first moves itself into a lab
//! node's cgroup and network namespace, so skep's socket hooks on that
//! cgroup apply to its sockets exactly as to a pod's, then:
//!
//! 1. opens new connections for a fixed time from several threads, each to
//!    a random target of the list, one request/response each, then closes;
//! 2. opens kept-alive connections to random targets until it holds one to
//!    every backend (the replies say which backend answered), then sends
//!    sequential requests round-robin over them and records each round
//!    trip: every mode is measured over the same mix of same-node and
//!    other-node backends, whatever its load-balancer picked.
//!
//! It prints one JSON line; the parent turns it into [`Outcome`]. Given a
//! pinned TC program (`--bpf-prog`, [`Client::with_prog_stats`]), it also
//! reads the program's kernel run statistics around every slice of new
//! connections and every kept-alive round trip, and charges them to the
//! list being measured ([`crate::prog_stats`]; packets still in flight
//! when a slice ends, the last ACKs and FINs, land in the next one).
//!
//! The protocol is 8 bytes each way (the reply names the backend), so the
//! numbers are about connection setup and forwarding, not payload.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};
use serde_json::json;

use crate::{
    prog_stats::{ProgReader, ProgStats},
    stats::Sample,
};

/// Bytes of one request and of its reply.
pub const MESSAGE: usize = 8;
/// A reply: the backend's IPv4 address and port, zero-padded.
#[must_use]
pub fn reply(me: SocketAddrV4) -> [u8; MESSAGE] {
    let mut out = [0u8; MESSAGE];
    out[..4].copy_from_slice(&me.ip().octets());
    out[4..6].copy_from_slice(&me.port().to_be_bytes());
    out
}

/// The backend a [`reply`] names.
fn replier(reply: [u8; MESSAGE]) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(reply[0], reply[1], reply[2], reply[3]),
        u16::from_be_bytes([reply[4], reply[5]]),
    )
}

/// A connect or read taking longer than this counts as a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What one client run asks for.
#[derive(Clone, Debug)]
pub struct Params {
    /// How long the new-connections phase runs.
    pub seconds: f64,
    /// How many threads open connections at once.
    pub threads: usize,
    /// Round trips on the kept-alive connections.
    pub requests: usize,
    /// How many backends there are (kept-alive connections to open).
    pub backends: usize,
}

/// What one client run measured.
#[derive(Clone)]
pub struct Outcome {
    /// New connections (one request each): count and wall time.
    pub connections: Sample,
    /// Connections that failed (connect, write or read), and the first error.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Which backends the new connections reached, and how often.
    pub spread: BTreeMap<SocketAddrV4, u64>,
    /// Round trips on kept-alive connections, one to each backend reached.
    pub keepalive: Sample,
    /// How many backends the kept-alive connections reached.
    pub keepalive_backends: usize,
    /// The watched program's runs during the new connections (zero when
    /// none is watched).
    pub bpf_new: ProgStats,
    /// The watched program's runs during the kept-alive round trips.
    pub bpf_keepalive: ProgStats,
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

/// One request; returns the backend that answered.
fn round_trip(stream: &mut TcpStream) -> std::io::Result<SocketAddrV4> {
    let mut buf = [7u8; MESSAGE];
    stream.write_all(&buf)?;
    stream.read_exact(&mut buf)?;
    Ok(replier(buf))
}

/// New connections to one target list, summed over its time slices.
#[derive(Default)]
struct NewConnections {
    connections: u64,
    elapsed: Duration,
    errors: u64,
    first_error: Option<String>,
    spread: BTreeMap<SocketAddrV4, u64>,
    bpf: ProgStats,
}

impl NewConnections {
    fn json(&self) -> serde_json::Value {
        let spread: BTreeMap<String, u64> = self
            .spread
            .iter()
            .map(|(b, n)| (b.to_string(), *n))
            .collect();
        json!({
            "spread": spread,
            "connections": self.connections,
            "elapsed_ns": u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX),
            "errors": self.errors,
            "first_error": self.first_error,
            "bpf": self.bpf.json(),
        })
    }
}

/// One thread's share of a slice: connections to random targets until `until`.
fn connect_until(targets: &[SocketAddrV4], seed: u64, until: Instant) -> NewConnections {
    let mut rng = Rng::seeded(seed);
    let mut mine = NewConnections::default();
    while Instant::now() < until {
        let target = targets[rng.below(targets.len())];
        match connect(target).and_then(|mut s| round_trip(&mut s)) {
            Ok(backend) => {
                *mine.spread.entry(backend).or_default() += 1;
                mine.connections += 1;
            }
            Err(err) => {
                mine.first_error
                    .get_or_insert_with(|| format!("{target}: {err}"));
                mine.errors += 1;
            }
        }
    }
    mine
}

/// New connections from `threads` threads for `seconds`, added to `total`.
fn new_connections(
    targets: &Arc<Vec<SocketAddrV4>>,
    threads: usize,
    seconds: f64,
    total: &mut NewConnections,
) {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let targets = Arc::clone(targets);
            std::thread::spawn(move || connect_until(&targets, t as u64, until))
        })
        .collect();
    for handle in handles {
        if let Ok(mine) = handle.join() {
            total.connections += mine.connections;
            total.errors += mine.errors;
            if total.first_error.is_none() {
                total.first_error = mine.first_error;
            }
            for (backend, n) in mine.spread {
                *total.spread.entry(backend).or_default() += n;
            }
        }
    }
    total.elapsed += start.elapsed();
}

/// Kept-alive connections to random targets until one reaches each of the
/// `backends` backends (or many tries did not).
fn open_to_every_backend(
    targets: &[SocketAddrV4],
    backends: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    let mut rng = Rng::seeded(99);
    let mut streams: BTreeMap<SocketAddrV4, TcpStream> = BTreeMap::new();
    for _ in 0..backends * 50 {
        if streams.len() == backends {
            break;
        }
        let target = targets[rng.below(targets.len())];
        let mut stream =
            connect(target).with_context(|| format!("kept-alive connect to {target}"))?;
        let backend = round_trip(&mut stream)
            .with_context(|| format!("first kept-alive request to {target}"))?;
        streams.entry(backend).or_insert(stream);
    }
    Ok(streams.into_values().collect())
}

/// Time slices per target list: the lists take turns, so a change in the
/// machine's load (other work on its cores) hits every list alike.
const SLICES: u32 = 5;

/// Measures every list, interleaved: new connections in turns of
/// `seconds / SLICES`, then `requests` kept-alive round trips per list,
/// the lists (and each list's connections) taking turns request by request.
/// The watched program's totals now (zero when none is watched).
fn read(prog: Option<&ProgReader>) -> anyhow::Result<ProgStats> {
    prog.map_or(Ok(ProgStats::default()), ProgReader::read)
}

fn measure(
    lists: &[Arc<Vec<SocketAddrV4>>],
    params: &Params,
    prog: Option<&ProgReader>,
) -> anyhow::Result<serde_json::Value> {
    let mut new: Vec<NewConnections> = lists.iter().map(|_| NewConnections::default()).collect();
    for _ in 0..SLICES {
        for (list, total) in lists.iter().zip(&mut new) {
            let before = read(prog)?;
            new_connections(
                list,
                params.threads,
                params.seconds / f64::from(SLICES),
                total,
            );
            total.bpf += read(prog)?.since(before);
        }
    }
    let mut streams = Vec::new();
    for list in lists {
        streams.push(open_to_every_backend(list, params.backends)?);
    }
    let mut latencies: Vec<Vec<u64>> = lists.iter().map(|_| Vec::new()).collect();
    let mut elapsed = vec![Duration::ZERO; lists.len()];
    let mut bpf = vec![ProgStats::default(); lists.len()];
    let mut last = read(prog)?;
    for i in 0..params.requests {
        for (((open, lat), spent), bpf) in streams
            .iter_mut()
            .zip(&mut latencies)
            .zip(&mut elapsed)
            .zip(&mut bpf)
        {
            let count = open.len();
            let t0 = Instant::now();
            round_trip(&mut open[i % count]).context("kept-alive request")?;
            let took = t0.elapsed();
            *spent += took;
            lat.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            if prog.is_some() {
                let now = read(prog)?;
                *bpf += now.since(last);
                last = now;
            }
        }
    }
    let out: Vec<serde_json::Value> = new
        .iter()
        .zip(streams.iter().zip(latencies).zip(elapsed).zip(bpf))
        .map(|(new, (((open, lat), spent), bpf))| {
            json!({"new": new.json(), "keepalive": {
                "backends": open.len(),
                "elapsed_ns": u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
                "latencies_ns": lat,
                "bpf": bpf.json(),
            }})
        })
        .collect();
    Ok(json!(out))
}

/// The child's entry point: `datapath-client --cgroup DIR --netns FILE
/// --targets FILE[,FILE…] --seconds S --threads T --requests M --backends B
/// [--bpf-prog PINNED-PROGRAM]`.
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
        backends: flag("--backends")?.parse()?,
    };
    // The cgroup first (the socket hooks follow the creating task's cgroup),
    // then the namespace; both before any thread exists, so all inherit them.
    let prog = match args.iter().position(|a| a == "--bpf-prog") {
        Some(_) => Some(ProgReader::open(Path::new(flag("--bpf-prog")?))?),
        None => None,
    };
    let cgroup = Path::new(flag("--cgroup")?).join("cgroup.procs");
    std::fs::write(&cgroup, std::process::id().to_string())
        .with_context(|| format!("failed to join {}", cgroup.display()))?;
    let netns_path = flag("--netns")?;
    let netns = File::open(netns_path).with_context(|| format!("failed to open {netns_path}"))?;
    setns(&netns, CloneFlags::CLONE_NEWNET).context("failed to enter the node's namespace")?;
    let mut lists = Vec::new();
    for file in flag("--targets")?.split(',') {
        let targets: Vec<SocketAddrV4> = std::fs::read_to_string(file)?
            .lines()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("a target is not IPv4:port")?;
        if targets.is_empty() {
            bail!("datapath-client: no targets in {file}");
        }
        lists.push(Arc::new(targets));
    }
    println!("{}", measure(&lists, &params, prog.as_ref())?);
    Ok(())
}

/// The parent's handle: a cgroup of its own below the node's (removed on
/// drop) and the node's namespace file.
pub struct Client {
    cgroup: PathBuf,
    netns: PathBuf,
    dir: PathBuf,
    prog: Option<PathBuf>,
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
            prog: None,
        })
    }

    /// Also reads the kernel run statistics of the TC program pinned at
    /// `pin` during every run ([`Outcome::bpf_new`],
    /// [`Outcome::bpf_keepalive`]); they count only while
    /// [`crate::prog_stats::StatsEnabled`] lives.
    #[must_use]
    pub fn with_prog_stats(mut self, pin: PathBuf) -> Self {
        self.prog = Some(pin);
        self
    }

    /// Runs the child against each of `lists` (measured interleaved, see
    /// [`SLICES`]) and returns what it measured, per list.
    pub async fn run(
        &self,
        label: &str,
        lists: &[&[SocketAddrV4]],
        params: &Params,
    ) -> anyhow::Result<Vec<Outcome>> {
        let mut files = Vec::new();
        for (i, targets) in lists.iter().enumerate() {
            let file = self.dir.join(format!("targets-{label}-{i}"));
            let text = targets.iter().fold(String::new(), |mut text, t| {
                let _ = writeln!(text, "{t}");
                text
            });
            std::fs::write(&file, text)?;
            files.push(file.display().to_string());
        }
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.arg("datapath-client");
        if let Some(prog) = &self.prog {
            command.arg("--bpf-prog").arg(prog);
        }
        let out = command
            .arg("--cgroup")
            .arg(&self.cgroup)
            .arg("--netns")
            .arg(&self.netns)
            .args(["--targets", &files.join(",")])
            .args(["--seconds", &params.seconds.to_string()])
            .args(["--threads", &params.threads.to_string()])
            .args(["--requests", &params.requests.to_string()])
            .args(["--backends", &params.backends.to_string()])
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
        let outcomes: Vec<Outcome> = v.as_array().into_iter().flatten().map(outcome).collect();
        if outcomes.len() != lists.len() {
            bail!(
                "client ({label}) measured {} lists, not {}",
                outcomes.len(),
                lists.len()
            );
        }
        Ok(outcomes)
    }
}

/// One list's part of the child's JSON.
fn outcome(v: &serde_json::Value) -> Outcome {
    let nanos = |v: &serde_json::Value| Duration::from_nanos(v.as_u64().unwrap_or(0));
    let count = |v: &serde_json::Value| usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0);
    let latencies: Vec<Duration> = v["keepalive"]["latencies_ns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(nanos)
        .collect();
    Outcome {
        connections: Sample {
            ops: count(&v["new"]["connections"]),
            elapsed: nanos(&v["new"]["elapsed_ns"]),
            latencies: Vec::new(),
        },
        errors: v["new"]["errors"].as_u64().unwrap_or(0),
        first_error: v["new"]["first_error"].as_str().map(str::to_owned),
        spread: v["new"]["spread"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(b, n)| Some((b.parse().ok()?, n.as_u64()?)))
            .collect(),
        keepalive_backends: count(&v["keepalive"]["backends"]),
        keepalive: Sample {
            ops: latencies.len(),
            elapsed: nanos(&v["keepalive"]["elapsed_ns"]),
            latencies,
        },
        bpf_new: ProgStats::from_json(&v["new"]["bpf"]),
        bpf_keepalive: ProgStats::from_json(&v["keepalive"]["bpf"]),
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
