//! The per-container shim (the conmon / containerd-shim role).
//!
//! The agent runs `skep-shim --id … --bundle … …` (the binary in
//! `userspace/skep-shim`, a `main` over [`run`]); the shim forks, and the
//! parent exits as soon as runc has finished, printing `ok <pid> <runc µs>`
//! or an error on stdout. runc is `runc create` (the agent runs `runc
//! start` later) or, with `--start true`, `runc run --detach`: created and
//! started in one runc process. With `--cgroup-procs`, runc (and so the
//! container's init, its child) is born in that cgroup v2 leaf: on hybrid
//! v1/v2 hosts runc only places it in the v1 hierarchies, and the
//! datapath's socket hooks must see the container's first `connect`.
//! The daemonised child becomes a child subreaper (so
//! the container's init is reparented to it when runc exits),
//! copies the container's stdout/stderr into a CRI-format log file, reaps
//! the container init, and writes the exit code and finish time atomically
//! to the exit file. The exit is therefore recorded even when the agent is
//! not running.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::logs;

/// The shim binary's name; the agent looks for it next to its own
/// executable.
pub const BINARY: &str = "skep-shim";

/// Longest log line written as one CRI record; longer ones are split with
/// the `P` (partial) tag, like the kubelet's 16 KiB limit.
const MAX_LOG_LINE: usize = 16 * 1024;

/// What the shim records when the container's init process ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code; 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// Signal that killed the process, if any.
    pub signal: Option<i32>,
    /// When the shim saw the process end.
    pub finished_at: SystemTime,
    /// Why the container never ran, when `runc create` failed.
    pub error: Option<String>,
}

/// Command-line arguments of the shim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShimArgs {
    /// Container id (runc's id).
    pub id: String,
    /// OCI bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// runc binary.
    pub runc: PathBuf,
    /// runc `--root` state directory.
    pub runc_root: PathBuf,
    /// CRI-format log file receiving stdout and stderr.
    pub log: PathBuf,
    /// Where the [`ExitRecord`] is written.
    pub exit_file: PathBuf,
    /// Where runc writes the container init's pid.
    pub pid_file: PathBuf,
    /// Start the container too (`runc run --detach`), not only create it.
    pub start: bool,
    /// A cgroup v2 `cgroup.procs` file runc is put into before it runs.
    pub cgroup_procs: Option<PathBuf>,
}

impl ShimArgs {
    /// The arguments as passed on the command line (`--id X --bundle Y …`).
    pub fn to_args(&self) -> Vec<String> {
        let p = |p: &Path| p.to_string_lossy().into_owned();
        let mut args = vec![
            "--id".into(),
            self.id.clone(),
            "--bundle".into(),
            p(&self.bundle),
            "--runc".into(),
            p(&self.runc),
            "--runc-root".into(),
            p(&self.runc_root),
            "--log".into(),
            p(&self.log),
            "--exit-file".into(),
            p(&self.exit_file),
            "--pid-file".into(),
            p(&self.pid_file),
            "--start".into(),
            self.start.to_string(),
        ];
        if let Some(procs) = &self.cgroup_procs {
            args.extend(["--cgroup-procs".into(), p(procs)]);
        }
        args
    }

    /// Parses what [`ShimArgs::to_args`] produced.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut out = Self::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| format!("missing value for {flag}"))?
                .clone();
            match flag.as_str() {
                "--id" => out.id = value,
                "--bundle" => out.bundle = value.into(),
                "--runc" => out.runc = value.into(),
                "--runc-root" => out.runc_root = value.into(),
                "--log" => out.log = value.into(),
                "--exit-file" => out.exit_file = value.into(),
                "--pid-file" => out.pid_file = value.into(),
                "--start" => {
                    out.start = value
                        .parse()
                        .map_err(|_| format!("--start takes true or false, not {value:?}"))?;
                }
                "--cgroup-procs" => out.cgroup_procs = Some(value.into()),
                other => return Err(format!("unknown shim argument {other}")),
            }
        }
        if out.id.is_empty() || out.bundle.as_os_str().is_empty() {
            return Err("--id and --bundle are required".into());
        }
        Ok(out)
    }
}

/// Runs the shim. Must be called at the start of a single-threaded process
/// (it forks). Returns the process exit code for the foreground parent.
pub fn run(args: &[String]) -> i32 {
    close_inherited_fds();
    let args = match ShimArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("skep-shim: {e}");
            return 2;
        }
    };
    let (ready_r, ready_w) = match cloexec_pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skep-shim: failed to create pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the caller guarantees the process is single-threaded here, so
    // the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("skep-shim: failed to fork: {e}");
            1
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_w);
            // One line: the daemon keeps its end open while it supervises.
            let mut msg = String::new();
            let _ = BufReader::new(File::from(ready_r)).read_line(&mut msg);
            let msg = msg.trim();
            if msg.starts_with("ok") {
                println!("{msg}");
                0
            } else {
                eprintln!("skep-shim: {msg}");
                1
            }
        }
        Ok(ForkResult::Child) => {
            drop(ready_r);
            let code = daemon(&args, ready_w);
            // SAFETY: `_exit` is always safe; it skips atexit handlers, which
            // belong to the parent.
            unsafe { libc::_exit(code) }
        }
    }
}

fn daemon(args: &ShimArgs, ready: OwnedFd) -> i32 {
    let mut ready = File::from(ready);
    let _ = nix::unistd::setsid();
    detach_stdio();
    // SAFETY: plain prctl with integer arguments.
    let _ = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    match supervise(args, &mut ready) {
        Ok(record) => {
            if write_exit(&args.exit_file, &record).is_err() {
                return 1;
            }
            0
        }
        Err(msg) => {
            let record = ExitRecord {
                exit_code: -1,
                signal: None,
                finished_at: SystemTime::now(),
                error: Some(msg.clone()),
            };
            let _ = write_exit(&args.exit_file, &record);
            let _ = ready.write_all(format!("{}\n", msg.replace('\n', " ")).as_bytes());
            1
        }
    }
}

/// Closes every descriptor above stderr that the shim inherited: it outlives
/// the agent, and must not keep the agent's sockets, or a lock its caller
/// held, open for the life of the container.
fn close_inherited_fds() {
    // SAFETY: close_range(2) with plain integer arguments; nothing in this
    // process owns a descriptor above 2 yet.
    let _ = unsafe { libc::syscall(libc::SYS_close_range, 3_u32, u32::MAX, 0_u32) };
}

/// A pipe whose ends are not inherited by runc or the container.
fn cloexec_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

fn detach_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn write_exit(path: &Path, record: &ExitRecord) -> io::Result<()> {
    let data = serde_json::to_vec(record).map_err(io::Error::other)?;
    crate::files::write_atomic(path, &data)
}

/// Runs `runc create` (or `runc run --detach`), reports readiness, then
/// copies output and reaps
/// the init in one thread: a `poll` over the two output pipes and a
/// signalfd for `SIGCHLD` (no thread per stream, no async runtime).
fn supervise(args: &ShimArgs, ready: &mut File) -> Result<ExitRecord, String> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("failed to open log {}: {e}", args.log.display()))?;
    let (out_r, out_w) = cloexec_pipe().map_err(|e| format!("failed to create pipe: {e}"))?;
    let (err_r, err_w) = cloexec_pipe().map_err(|e| format!("failed to create pipe: {e}"))?;
    // SIGCHLD is blocked from here on and read from a signalfd instead, so
    // no exit goes unnoticed. runc starts with an empty mask (std's spawn
    // resets it), and so does the container it starts.
    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    sigchld
        .thread_block()
        .map_err(|e| format!("failed to block SIGCHLD: {e}"))?;
    let children = SignalFd::with_flags(&sigchld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("failed to create signalfd: {e}"))?;
    let runc_began = Instant::now();
    let pid = run_runc(args, out_w, err_w)?;
    // The pid, and how long runc took (µs), for the agent's start-up timing.
    let runc_us = runc_began.elapsed().as_micros();
    let _ = ready.write_all(format!("ok {pid} {runc_us}\n").as_bytes());

    let mut streams = [
        Stream::new(File::from(out_r), "stdout"),
        Stream::new(File::from(err_r), "stderr"),
    ];
    let mut record = Vec::with_capacity(256);
    let init = Pid::from_raw(pid);
    let mut exit = None;
    while exit.is_none() {
        let (children_ready, streams_ready) = wait_ready(&children, &streams, PollTimeout::NONE);
        for (stream, ready) in streams.iter_mut().zip(streams_ready) {
            if ready {
                stream.copy(&mut log, &mut record);
            }
        }
        if children_ready {
            while children.read_signal().ok().flatten().is_some() {}
            exit = reap(init);
        }
    }
    let (exit_code, signal) = exit.unwrap_or((-1, None));
    let finished_at = SystemTime::now();
    // Drain the output; give stragglers holding the pipes a bounded time.
    let deadline = Instant::now() + Duration::from_secs(2);
    while streams.iter().any(|s| s.open) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(timeout) = PollTimeout::try_from(left) else {
            break;
        };
        if timeout == PollTimeout::ZERO {
            break;
        }
        let (_, streams_ready) = wait_ready(&children, &streams, timeout);
        for (stream, ready) in streams.iter_mut().zip(streams_ready) {
            if ready {
                stream.copy(&mut log, &mut record);
            }
        }
    }
    for stream in &mut streams {
        stream.finish(&mut log, &mut record);
    }
    let _ = log.sync_all();
    Ok(ExitRecord {
        exit_code,
        signal,
        finished_at,
        error: None,
    })
}

/// Runs `runc create` (or `runc run --detach`) with the container's
/// output going to `out_w` and `err_w`, in `--cgroup-procs`' cgroup if
/// given; returns the container init's pid.
fn run_runc(args: &ShimArgs, out_w: OwnedFd, err_w: OwnedFd) -> Result<i32, String> {
    let runc_log = args.bundle.join("runc.log");
    let cgroup = match &args.cgroup_procs {
        Some(path) => Some(
            OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| format!("failed to open {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut runc = Command::new(&args.runc);
    runc.arg("--root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(&runc_log)
        .arg("--log-format")
        .arg("json");
    if args.start {
        runc.args(["run", "--detach"]);
    } else {
        runc.arg("create");
    }
    if let Some(cgroup) = cgroup {
        let fd = cgroup.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and
        // makes one write(2) on a descriptor opened above (kept open by
        // `cgroup`, which the closure owns): async-signal-safe, no
        // allocation, no lock.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut runc, move || {
                let _open = &cgroup;
                // "0": the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }
    let status = runc
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&args.pid_file)
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status()
        .map_err(|e| format!("failed to run {}: {e}", args.runc.display()))?;
    // The Command (and its copies of the write ends) is gone; only the
    // container holds them now, so EOF means the container is gone.
    if !status.success() {
        let detail = fs::read_to_string(&runc_log)
            .ok()
            .and_then(|l| l.lines().last().map(str::to_owned))
            .unwrap_or_default();
        let op = if args.start { "run" } else { "create" };
        return Err(format!("runc {op} failed ({status}): {detail}"));
    }
    fs::read_to_string(&args.pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("failed to read pid file {}", args.pid_file.display()))
}

/// Waits up to `timeout` for a child to change state or an open stream to
/// have output (or EOF); returns which did.
fn wait_ready(
    children: &SignalFd,
    streams: &[Stream; 2],
    timeout: PollTimeout,
) -> (bool, [bool; 2]) {
    let readable = PollFlags::POLLIN;
    let mut fds = vec![PollFd::new(children.as_fd(), readable)];
    for stream in streams.iter().filter(|s| s.open) {
        fds.push(PollFd::new(stream.input.as_fd(), readable));
    }
    match poll(&mut fds, timeout) {
        Ok(n) if n > 0 => {}
        // EINTR or a timeout: nothing to do yet.
        _ => return (false, [false; 2]),
    }
    let fired = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    let children_ready = fired(&fds[0]);
    let mut streams_ready = [false; 2];
    let mut next = fds[1..].iter();
    for (i, stream) in streams.iter().enumerate() {
        if stream.open {
            streams_ready[i] = next.next().is_some_and(fired);
        }
    }
    (children_ready, streams_ready)
}

/// Reaps every child that ended (runc's helpers, the init); returns the
/// init's (exit code, signal) once it ended.
fn reap(init: Pid) -> Option<(i32, Option<i32>)> {
    loop {
        let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
        match nix::sys::wait::waitpid(None::<Pid>, Some(flags)) {
            Ok(WaitStatus::Exited(p, code)) if p == init => return Some((code, None)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == init => {
                return Some((128 + sig as i32, Some(sig as i32)));
            }
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) | Err(nix::Error::EINTR) => {}
            // No children left: the init was not ours to reap.
            Err(_) => return Some((-1, None)),
        }
    }
}

/// One of the container's output streams, cut into CRI records.
struct Stream {
    input: File,
    name: &'static str,
    lines: Lines,
    open: bool,
}

impl Stream {
    fn new(input: File, name: &'static str) -> Self {
        Self {
            input,
            name,
            lines: Lines::default(),
            open: true,
        }
    }

    /// Reads what the pipe holds (it is readable) and logs the lines it
    /// completes; at EOF, the unfinished last line too.
    fn copy(&mut self, log: &mut File, record: &mut Vec<u8>) {
        let mut buf = [0_u8; 8192];
        match self.input.read(&mut buf) {
            Ok(0) => self.finish(log, record),
            Ok(n) => {
                let name = self.name;
                self.lines.push(&buf[..n], |line, partial| {
                    write_record(log, record, name, line, partial);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.finish(log, record),
        }
    }

    fn finish(&mut self, log: &mut File, record: &mut Vec<u8>) {
        self.open = false;
        let name = self.name;
        self.lines
            .finish(|line| write_record(log, record, name, line, false));
    }
}

/// Cuts a byte stream into log lines: at each newline, and at
/// [`MAX_LOG_LINE`] bytes (a partial record; the line goes on in the next).
#[derive(Debug, Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Adds `data`; calls `emit(line, partial)` for each record it completes.
    fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            let window = &rest[..rest.len().min(MAX_LOG_LINE)];
            if let Some(end) = window.iter().position(|b| *b == b'\n') {
                emit(&rest[..end], false);
                start += end + 1;
            } else if rest.len() >= MAX_LOG_LINE {
                emit(window, true);
                start += MAX_LOG_LINE;
            } else {
                break;
            }
        }
        self.pending.drain(..start);
    }

    /// At EOF: a last line without a newline is still complete.
    fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// Appends one CRI record (`<time> <stream> <F|P> <line>`) to `log` in one
/// write, `record` being the reused buffer.
fn write_record(log: &mut File, record: &mut Vec<u8>, stream: &str, line: &[u8], partial: bool) {
    record.clear();
    record.extend_from_slice(logs::cri_timestamp(SystemTime::now()).as_bytes());
    record.push(b' ');
    record.extend_from_slice(stream.as_bytes());
    record.extend_from_slice(if partial { b" P " } else { b" F " });
    record.extend_from_slice(line);
    record.push(b'\n');
    let _ = log.write_all(record);
}

/// Parses the shim's readiness line, `ok <pid> [<runc µs>]`: the
/// container init's pid and how long runc took, when given.
pub fn parse_ready(line: &str) -> (Option<u32>, Option<u128>) {
    let mut words = line
        .trim()
        .strip_prefix("ok ")
        .unwrap_or("")
        .split_whitespace();
    let pid = words.next().and_then(|p| p.parse().ok());
    let runc_us = words.next().and_then(|p| p.parse().ok());
    (pid, runc_us)
}

/// Reads a shim exit file, `None` when it does not exist yet.
pub fn read_exit(path: &Path) -> io::Result<Option<ExitRecord>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = ShimArgs {
            id: "c1".into(),
            bundle: "/b".into(),
            runc: "/usr/sbin/runc".into(),
            runc_root: "/r".into(),
            log: "/l".into(),
            exit_file: "/e".into(),
            pid_file: "/p".into(),
            start: false,
            cgroup_procs: None,
        };
        assert_eq!(ShimArgs::parse(&a.to_args()), Ok(a.clone()));
        let b = ShimArgs {
            start: true,
            cgroup_procs: Some("/sys/fs/cgroup/unified/x/cgroup.procs".into()),
            ..a
        };
        assert_eq!(ShimArgs::parse(&b.to_args()), Ok(b));
        assert!(ShimArgs::parse(&["--bogus".into(), "x".into()]).is_err());
        assert!(ShimArgs::parse(&["--id".into()]).is_err());
    }

    #[test]
    fn ready_line_carries_pid_and_runc_time() {
        assert_eq!(parse_ready("ok 42 1500\n"), (Some(42), Some(1500)));
        assert_eq!(parse_ready("ok 42"), (Some(42), None));
        assert_eq!(parse_ready("runc failed"), (None, None));
    }

    #[test]
    fn copies_lines_in_cri_format() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("log");
        let mut log = File::create(&log_path)?;
        let (r, w) = cloexec_pipe()?;
        let oversized = "x".repeat(MAX_LOG_LINE + 10);
        let mut w = File::from(w);
        write!(w, "hello\nworld\n{oversized}\nlast")?;
        drop(w);
        let mut stream = Stream::new(File::from(r), "stderr");
        let mut record = Vec::new();
        while stream.open {
            stream.copy(&mut log, &mut record);
        }
        let text = fs::read_to_string(&log_path)?;
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.splitn(4, ' ').collect()).collect();
        assert_eq!(fields[0][1..], ["stderr", "F", "hello"]);
        assert_eq!(fields[1][1..], ["stderr", "F", "world"]);
        assert_eq!(fields[2][2], "P");
        assert_eq!(fields[2][3].len(), MAX_LOG_LINE);
        assert_eq!(fields[3][1..], ["stderr", "F", "xxxxxxxxxx"]);
        assert_eq!(fields[4][1..], ["stderr", "F", "last"]);
        assert_eq!(fields[0][0].len(), "2006-01-02T15:04:05.000000000Z".len());
        Ok(())
    }

    /// Lines split across reads, an empty one, one longer than the limit.
    #[test]
    fn lines_are_cut_at_newlines_and_the_limit() {
        let mut lines = Lines::default();
        let mut out: Vec<(Vec<u8>, bool)> = Vec::new();
        lines.push(b"ab", |l, p| out.push((l.to_vec(), p)));
        assert!(out.is_empty(), "an unfinished line waits");
        lines.push(b"c\n\nd", |l, p| out.push((l.to_vec(), p)));
        assert_eq!(out, [(b"abc".to_vec(), false), (Vec::new(), false)]);
        out.clear();
        let exact = vec![b'y'; MAX_LOG_LINE];
        lines.push(&exact, |l, p| out.push((l.to_vec(), p)));
        lines.push(b"\n", |l, p| out.push((l.to_vec(), p)));
        assert_eq!(
            out.len(),
            2,
            "the limit cuts first, as the kubelet's reader does"
        );
        assert!(out[0].1 && out[0].0.len() == MAX_LOG_LINE && out[0].0[0] == b'd');
        assert_eq!(out[1], (b"y".to_vec(), false));
        let mut last = Vec::new();
        lines.finish(|l| last.push(l.to_vec()));
        assert!(last.is_empty());
    }
}
