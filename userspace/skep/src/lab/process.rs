//! The lab's processes: started detached (own process group, output to a
//! log file) so they outlive `skep lab up`, recognised later by pid and
//! start time, and stopped politely, then not.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::plan::Proc;

/// The start time (field 22 of `/proc/<pid>/stat`) and state letter of
/// `pid`, if it exists.
fn stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// `pid` as a [`Proc`], read right after it was started.
pub fn identify(pid: u32) -> anyhow::Result<Proc> {
    let pid = i32::try_from(pid).context("pid out of range")?;
    let (start_ticks, _) = stat(pid).with_context(|| format!("process {pid} vanished"))?;
    Ok(Proc { pid, start_ticks })
}

/// Whether `p` still runs (a zombie does not).
pub fn alive(p: Proc) -> bool {
    stat(p.pid).is_some_and(|(start, state)| start == p.start_ticks && state != 'Z')
}

/// Sends SIGTERM to `p`, waits up to `grace`, then SIGKILLs it.
pub fn stop(p: Proc, grace: Duration) {
    if !alive(p) {
        return;
    }
    let pid = Pid::from_raw(p.pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(p) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(p) {
        tracing::warn!(pid = p.pid, "process ignored SIGTERM; killing it");
        let _ = kill(pid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(p) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where a lab process runs: a network namespace to join and a cgroup v2
/// directory to move into before `exec`.
#[derive(Debug, Default)]
pub struct Placement<'a> {
    /// The network namespace file.
    pub netns: Option<&'a Path>,
    /// The cgroup v2 directory.
    pub cgroup: Option<&'a Path>,
}

/// Starts `skep ARGS…` detached, logging to `log`, placed as `placement`.
pub fn spawn(args: &[String], log: &Path, placement: &Placement<'_>) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("failed to find the skep binary")?;
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("failed to open {}", log.display()))?;
    let err = out
        .try_clone()
        .context("failed to duplicate the log file")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // Opened here, closed on exec (O_CLOEXEC); used between fork and exec.
    let netns = placement
        .netns
        .map(|p| File::open(p).with_context(|| format!("failed to open {}", p.display())))
        .transpose()?;
    let procs = placement
        .cgroup
        .map(|dir| {
            let path = dir.join("cgroup.procs");
            File::options()
                .write(true)
                .open(&path)
                .with_context(|| format!("failed to open {}", path.display()))
        })
        .transpose()?;
    let netns_fd = netns.as_ref().map(AsRawFd::as_raw_fd);
    let procs_fd = procs.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: the hook runs in the child between fork and exec and only
    // makes the async-signal-safe syscalls setns(2) and write(2) on file
    // descriptors the parent keeps open until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = netns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writing process: the child itself.
            if let Some(fd) = procs_fd
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("failed to start skep")?;
    drop((netns, procs));
    identify(child.id())
}
