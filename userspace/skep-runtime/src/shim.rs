//! The per-container shim (the conmon / containerd-shim role).
//!
//! The agent runs `skep-shim --id … --bundle … …` (the binary in
//! `userspace/skep-shim`, a `main` over [`run`]); the shim forks, and the
//! parent exits as soon as `runc create` has finished, printing `ok <pid>`
//! or an error on stdout. The daemonised child becomes a child subreaper (so
//! the container's init is reparented to it when `runc create` exits),
//! copies the container's stdout/stderr into a CRI-format log file, reaps
//! the container init, and writes the exit code and finish time atomically
//! to the exit file. The exit is therefore recorded even when the agent is
//! not running.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

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
}

impl ShimArgs {
    /// The arguments as passed on the command line (`--id X --bundle Y …`).
    pub fn to_args(&self) -> Vec<String> {
        let p = |p: &Path| p.to_string_lossy().into_owned();
        vec![
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
        ]
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

/// Runs `runc create`, reports readiness, copies output, reaps the init.
fn supervise(args: &ShimArgs, ready: &mut File) -> Result<ExitRecord, String> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("failed to open log {}: {e}", args.log.display()))?;
    let log = Arc::new(Mutex::new(log));
    let (out_r, out_w) = cloexec_pipe().map_err(|e| format!("failed to create pipe: {e}"))?;
    let (err_r, err_w) = cloexec_pipe().map_err(|e| format!("failed to create pipe: {e}"))?;
    let runc_log = args.bundle.join("runc.log");
    let status = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(&runc_log)
        .arg("--log-format")
        .arg("json")
        .arg("create")
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
    let (done_tx, done_rx) = mpsc::channel();
    for (fd, stream) in [(out_r, "stdout"), (err_r, "stderr")] {
        let log = Arc::clone(&log);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            copy_stream(File::from(fd), stream, &log);
            let _ = done.send(());
        });
    }
    drop(done_tx);
    if !status.success() {
        let detail = fs::read_to_string(&runc_log)
            .ok()
            .and_then(|l| l.lines().last().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("runc create failed ({status}): {detail}"));
    }
    let pid: i32 = fs::read_to_string(&args.pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("failed to read pid file {}", args.pid_file.display()))?;
    let _ = ready.write_all(format!("ok {pid}\n").as_bytes());
    let (exit_code, signal) = reap(Pid::from_raw(pid));
    let finished_at = SystemTime::now();
    // Drain the output; give stragglers holding the pipes a bounded time.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    if let Ok(mut f) = log.lock() {
        let _ = f.sync_all();
        let _ = f.flush();
    }
    Ok(ExitRecord {
        exit_code,
        signal,
        finished_at,
        error: None,
    })
}

/// Reaps children until `pid` ends; returns (exit code, signal).
fn reap(pid: Pid) -> (i32, Option<i32>) {
    loop {
        match nix::sys::wait::waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                return (128 + sig as i32, Some(sig as i32));
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => {
                // No children left: the init was not ours to reap.
                return (-1, None);
            }
        }
    }
}

/// Copies `input` line by line into `log` as CRI records tagged `stream`.
fn copy_stream(input: File, stream: &str, log: &Mutex<File>) {
    let mut reader = BufReader::with_capacity(MAX_LOG_LINE, input);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LOG_LINE as u64)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let full = line.last() == Some(&b'\n');
        if full {
            line.pop();
        }
        // A line cut at the size limit is partial; a last line without a
        // newline at EOF is still complete.
        let tag = if !full && line.len() >= MAX_LOG_LINE {
            "P"
        } else {
            "F"
        };
        let mut record =
            format!("{} {stream} {tag} ", logs::cri_timestamp(SystemTime::now())).into_bytes();
        record.extend_from_slice(&line);
        record.push(b'\n');
        if let Ok(mut f) = log.lock() {
            let _ = f.write_all(&record);
        }
    }
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
        };
        assert_eq!(ShimArgs::parse(&a.to_args()), Ok(a));
        assert!(ShimArgs::parse(&["--bogus".into(), "x".into()]).is_err());
        assert!(ShimArgs::parse(&["--id".into()]).is_err());
    }

    #[test]
    fn copies_lines_in_cri_format() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("log");
        let log = Mutex::new(File::create(&log_path)?);
        let (r, w) = cloexec_pipe()?;
        let oversized = "x".repeat(MAX_LOG_LINE + 10);
        let mut w = File::from(w);
        write!(w, "hello\nworld\n{oversized}\nlast")?;
        drop(w);
        copy_stream(File::from(r), "stderr", &log);
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
}
