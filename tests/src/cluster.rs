//! A running `skep server` for tests, and the real `kubectl` pointed at it.
//! The server process is stopped (SIGTERM, then SIGKILL) when the value drops;
//! its data directory is a temp dir removed with it unless the test keeps it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::process::skep_binary;

/// A `skep server` process on a free loopback port.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts `skep server --data-dir DIR --listen 127.0.0.1:0` and waits until
    /// the API answers through the kubeconfig it writes.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[])
    }

    /// [`Server::start`] with extra `skep server` arguments (e.g.
    /// `--node-kubeconfig NODE`).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_listening(data_dir, "127.0.0.1:0", extra)
    }

    /// [`Server::start_with`] listening on `listen`, which the `kubernetes`
    /// Service's endpoints then name (pods reach the API through it when it
    /// is an address of the host's rather than loopback).
    pub fn start_listening(data_dir: &Path, listen: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let kubeconfig = data_dir.join("kubeconfig");
        // A restart must not find the previous run's kubeconfig (old port).
        let _ = std::fs::remove_file(&kubeconfig);
        std::fs::create_dir_all(data_dir)?;
        let log = data_dir.join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(skep_binary()?)
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("SKEP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("failed to start skep server")?;
        let mut server = Self {
            child: Some(child),
            data_dir: data_dir.to_owned(),
            log,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("skep server exited ({status}):\n{}", self.log_tail());
            }
            if self.kubeconfig().is_file() {
                let out = self.kubectl(&["get", "--raw", "/healthz"])?;
                if out.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("skep server not ready after 30s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The admin kubeconfig the server wrote.
    #[must_use]
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The end of the server's log, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A `kubectl --kubeconfig … ARGS` command, not yet run.
    #[must_use]
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        cmd
    }

    /// Runs kubectl and returns its output, whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_command(args)
            .output()
            .context("failed to run kubectl (is it installed?)")
    }

    /// Runs kubectl with `stdin` as input; fails unless it succeeds. Returns stdout.
    pub fn kubectl_ok_with(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        check(args, &out)
    }

    /// Runs kubectl; fails unless it succeeds. Returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args)?;
        check(args, &out)
    }

    /// Applies `manifest` (YAML or JSON) with `kubectl apply -f -`.
    pub fn apply(&self, manifest: &str) -> anyhow::Result<String> {
        self.kubectl_ok_with(&["apply", "-f", "-"], manifest)
    }

    /// Creates namespace `name` (from YAML: `kubectl create namespace`
    /// sends protobuf, which the server does not decode).
    pub fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        self.kubectl_ok_with(
            &["create", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
        )?;
        Ok(())
    }

    /// The pods of `namespace` matching `selector` that are not being
    /// deleted.
    pub fn active_pods(
        &self,
        namespace: &str,
        selector: &str,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut pods = self.items(&["pods", "-n", namespace, "-l", selector])?;
        pods.retain(|p| p["metadata"]["deletionTimestamp"].is_null());
        Ok(pods)
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl_ok(&all)?;
        serde_json::from_str(&out).with_context(|| format!("kubectl {} -o json", args.join(" ")))
    }

    /// The `items` of `kubectl get ARGS -o json`.
    pub fn items(&self, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut all = vec!["get"];
        all.extend(args);
        let list = self.json(&all)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `check` until it returns `Some` (errors count as "not yet"),
    /// failing after `timeout` with the server's log tail.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        crate::wait::until(what, timeout, check, || {
            format!("server log:\n{}", self.log_tail())
        })
    }

    /// Stops the server: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                bail!("skep server ignored SIGTERM for 10s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn check(args: &[&str], out: &Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("warning: {err:#}");
        }
    }
}

/// Whether a pod (as JSON) has condition Ready=True.
#[must_use]
pub fn pod_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The string at `path` (keys) in `value`, or `""`.
#[must_use]
pub fn str_at<'a>(value: &'a serde_json::Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_str()
        .unwrap_or_default()
}
