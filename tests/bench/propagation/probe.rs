//! New connections from inside a client pod's namespace, in a loop, to each
//! target: the verdict the datapath gives a new flow, over time. Each
//! target has [`THREADS`] threads, each starting one connection every
//! [`PERIOD`] (a SYN, [`TIMEOUT`] to answer) and staggered over the
//! period, so a change of verdict is seen within `PERIOD / THREADS` of
//! when it happens.

use std::{
    fs::File,
    io::ErrorKind,
    net::{SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};

/// Probing threads per target.
pub const THREADS: u32 = 5;
/// How often each thread starts a connection.
pub const PERIOD: Duration = Duration::from_millis(100);
/// How long a connection may take before it counts as dropped (no
/// retransmitted SYN: the kernel's first retry comes after 1 s).
const TIMEOUT: Duration = Duration::from_millis(100);

/// One connection attempt.
#[derive(Clone, Copy)]
struct Attempt {
    target: usize,
    /// When its SYN left.
    started: Instant,
    /// Whether policy let it through (connected, or refused by the server's
    /// stack, which the SYN reached).
    passed: bool,
}

/// The running probes; stopped on drop.
pub struct Probes {
    targets: usize,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

fn connect(target: SocketAddrV4) -> bool {
    match TcpStream::connect_timeout(&SocketAddr::V4(target), TIMEOUT) {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
    }
}

fn probe_loop(
    netns: &Path,
    index: usize,
    target: SocketAddrV4,
    offset: Duration,
    stop: &AtomicBool,
    attempts: &Mutex<Vec<Attempt>>,
) -> anyhow::Result<()> {
    let ns = File::open(netns).with_context(|| format!("failed to open {}", netns.display()))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).context("failed to enter the client pod's namespace")?;
    let mut next = Instant::now() + offset;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let started = Instant::now();
        let passed = connect(target);
        attempts
            .lock()
            .map_err(|_| anyhow::anyhow!("a probe thread panicked"))?
            .push(Attempt {
                target: index,
                started,
                passed,
            });
        next += PERIOD;
    }
    Ok(())
}

impl Probes {
    /// Starts probing each of `targets` from the namespace at `netns`.
    pub fn start(netns: &Path, targets: &[SocketAddrV4]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (index, &target) in targets.iter().enumerate() {
            for t in 0..THREADS {
                let (netns, stop, attempts): (PathBuf, _, _) =
                    (netns.to_owned(), stop.clone(), attempts.clone());
                threads.push(std::thread::spawn(move || {
                    probe_loop(
                        &netns,
                        index,
                        target,
                        PERIOD * t / THREADS,
                        &stop,
                        &attempts,
                    )
                }));
            }
        }
        Self {
            targets: targets.len(),
            stop,
            attempts,
            threads,
        }
    }

    /// Waits until every target's connections started after `since` have
    /// met `passed` for [`PERIOD`] in a row, and returns the longest time
    /// from `since` to a target's first connection of that run (`None`
    /// when `timeout` passed first).
    pub fn wait(
        &self,
        since: Instant,
        passed: bool,
        timeout: Duration,
    ) -> anyhow::Result<Option<Duration>> {
        let deadline = since + timeout;
        loop {
            let done = self.settled(since, passed)?;
            if done.len() == self.targets {
                return Ok(done.into_iter().max());
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(PERIOD / THREADS);
        }
    }

    /// For each target whose run of `passed` since `since` has lasted a
    /// [`PERIOD`]: when the run began, after `since`.
    fn settled(&self, since: Instant, passed: bool) -> anyhow::Result<Vec<Duration>> {
        let attempts = self
            .attempts
            .lock()
            .map_err(|_| anyhow::anyhow!("a probe thread panicked"))?;
        let mut settled = Vec::new();
        for target in 0..self.targets {
            let mut run: Option<Instant> = None;
            let mut last = since;
            let mut mine: Vec<&Attempt> = attempts
                .iter()
                .filter(|a| a.target == target && a.started >= since)
                .collect();
            mine.sort_by_key(|a| a.started);
            for a in mine {
                if a.passed == passed {
                    run.get_or_insert(a.started);
                } else {
                    run = None;
                }
                last = a.started;
            }
            if let Some(first) = run
                && last.duration_since(first) >= PERIOD
            {
                settled.push(first.duration_since(since));
            }
        }
        Ok(settled)
    }

    /// Stops the threads; fails if one failed.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join()
                .map_err(|_| anyhow::anyhow!("a probe thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
