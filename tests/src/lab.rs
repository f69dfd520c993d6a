//! A multi-node lab for tests, built and removed by the real `skep lab up`
//! / `skep lab down` (the same code users run, not a copy): nodes are
//! network namespaces on a bridge, each with its own `skep agent`, and one
//! `skep server` on the bridge. Dropping the value runs `skep lab down`.

use std::time::{Duration, Instant};
use std::{
    fmt::Write as _,
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::process::{run, skep, skep_binary};

/// One lab node, as `lab.json` describes it.
#[derive(Debug, Clone)]
pub struct LabNode {
    /// The node name (also its namespace's name: `ip netns exec <name> …`).
    pub name: String,
    /// The namespace file.
    pub netns: PathBuf,
    /// Its underlay address (`InternalIP`).
    pub ip: Ipv4Addr,
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// The node's cgroup v2 directory.
    pub cgroup: PathBuf,
    /// The node's bpffs directory.
    pub pin_dir: PathBuf,
    /// The host end of its underlay veth.
    pub host_veth: String,
    /// The agent's pid.
    pub agent_pid: Option<i32>,
}

/// A pod of the lab that is Running with an IP ([`Lab::running_pod`]).
#[derive(Clone, Debug)]
pub struct RunningPod {
    /// Its pod IP.
    pub ip: String,
    /// Its UID (names its directories and network namespace on the node).
    pub uid: String,
    /// The node it runs on.
    pub node: String,
}

/// A running lab in a data directory.
#[derive(Debug)]
pub struct Lab {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The bridge.
    pub bridge: String,
    /// The server's pid.
    pub server_pid: Option<i32>,
    /// The nodes, in order.
    pub nodes: Vec<LabNode>,
    up: bool,
}

fn field<'a>(v: &'a Value, name: &str) -> anyhow::Result<&'a str> {
    v[name]
        .as_str()
        .with_context(|| format!("lab.json: no {name} in {v}"))
}

fn pid_of(v: &Value) -> Option<i32> {
    v["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
}

impl Lab {
    /// Runs `skep lab up --nodes COUNT --data-dir DIR` (it returns once every
    /// node is Ready) and reads the lab's state file.
    pub fn up(data_dir: &Path, count: u8) -> anyhow::Result<Self> {
        let dir = data_dir.display().to_string();
        let out = skep(&[
            "lab",
            "up",
            "--nodes",
            &count.to_string(),
            "--data-dir",
            &dir,
            "--heartbeat-seconds",
            "2",
        ])?;
        if !out.status.success() {
            let logs = Self::logs(data_dir);
            bail!(
                "skep lab up failed ({}): {}\n{logs}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut lab = Self::read(data_dir)?;
        lab.up = true;
        Ok(lab)
    }

    fn read(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("lab.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let state: Value = serde_json::from_str(&text)?;
        let mut nodes = Vec::new();
        for n in state["nodes"].as_array().context("lab.json: no nodes")? {
            nodes.push(LabNode {
                name: field(n, "name")?.to_owned(),
                netns: field(n, "netns")?.into(),
                ip: field(n, "ip")?.parse()?,
                data_dir: field(n, "data_dir")?.into(),
                cgroup: field(n, "cgroup")?.into(),
                pin_dir: field(n, "pin_dir")?.into(),
                host_veth: field(n, "host_veth")?.to_owned(),
                agent_pid: pid_of(&n["agent"]),
            });
        }
        Ok(Self {
            data_dir: field(&state, "data_dir")?.into(),
            bridge: field(&state, "bridge")?.to_owned(),
            server_pid: pid_of(&state["server"]),
            nodes,
            up: false,
        })
    }

    /// The tails of the lab's logs, for failure messages.
    #[must_use]
    pub fn logs(data_dir: &Path) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(data_dir.join("logs")) else {
            return out;
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(
                out,
                "--- {}\n{}",
                entry.path().display(),
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        out
    }

    /// Polls `check` every 200 ms until it gives `Some`. An error from
    /// `check` ends the wait at once; after `timeout` it fails naming `what`,
    /// with the lab's logs.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check()? {
                return Ok(v);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "timed out waiting for {what}; lab logs:\n{}",
                    Self::logs(&self.data_dir)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (up to `timeout`) until pod `namespace/name` is Running with an
    /// IP, and returns where it runs.
    pub fn running_pod(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<RunningPod> {
        self.wait(&format!("pod {namespace}/{name} running"), timeout, || {
            let out = self.kubectl_ok(&[
                "get",
                "pod",
                name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.phase} {.status.podIP} {.metadata.uid} {.spec.nodeName}",
            ])?;
            let ["Running", ip, uid, node] = out.split_whitespace().collect::<Vec<_>>()[..] else {
                return Ok(None);
            };
            Ok(Some(RunningPod {
                ip: ip.to_owned(),
                uid: uid.to_owned(),
                node: node.to_owned(),
            }))
        })
    }

    /// `GET /metrics` of `node`'s agent (its default `<node IP>:9962`),
    /// from inside the node's namespace: the HTTP response, headers and all.
    pub fn metrics(&self, node: &LabNode) -> anyhow::Result<String> {
        let netns = node.netns.clone();
        let addr = SocketAddrV4::new(node.ip, 9962);
        let handle = std::thread::spawn(move || -> anyhow::Result<String> {
            let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the node's namespace")?;
            let mut conn = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))
                .with_context(|| format!("connect to {addr}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                conn,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut text = String::new();
            conn.read_to_string(&mut text)?;
            Ok(text)
        });
        crate::netns::join(handle)
    }

    /// The admin kubeconfig.
    #[must_use]
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// Runs `kubectl --kubeconfig <lab> ARGS` from the host namespace.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .context("failed to run kubectl (is it installed?)")
    }

    /// Runs kubectl; fails unless it succeeds. Returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        check(args, &self.kubectl(args)?)
    }

    /// Runs kubectl with `stdin` as input; fails unless it succeeds.
    pub fn kubectl_ok_with(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(stdin.as_bytes())?;
        check(args, &child.wait_with_output()?)
    }

    /// `skep lab image import --data-dir DIR FILE`; returns its output.
    pub fn image_import(&self, file: &Path) -> anyhow::Result<String> {
        let out = skep(&[
            "lab",
            "image",
            "import",
            "--data-dir",
            &self.data_dir.display().to_string(),
            &file.display().to_string(),
        ])?;
        if !out.status.success() {
            bail!(
                "skep lab image import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The routes skep's agent installed on `node` (`proto 83`), as
    /// (destination, next hop).
    pub fn routes(&self, node: &LabNode) -> anyhow::Result<Vec<(String, String)>> {
        let out = run(
            "ip",
            &["-n", &node.name, "-j", "route", "show", "proto", "83"],
        )?;
        let routes: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
        let mut list: Vec<(String, String)> = routes
            .as_array()
            .into_iter()
            .flatten()
            // Routes to other nodes have a next hop; the Service CIDR's
            // `unreachable` route (also proto 83) has none.
            .filter(|r| r["gateway"].is_string())
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or_default().to_owned(),
                    r["gateway"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        list.sort();
        Ok(list)
    }

    /// Stops node `node`'s agent (SIGTERM): the node goes silent, its pods
    /// keep running, as when a machine's agent dies.
    pub fn stop_agent(&self, node: &LabNode) -> anyhow::Result<()> {
        let pid = node.agent_pid.context("the node has no agent")?;
        kill(Pid::from_raw(pid), Signal::SIGTERM)?;
        Ok(())
    }

    /// Kills node `node`'s agent with SIGKILL, as a crash would: no cleanup
    /// runs; pods, routes and the pinned datapath stay.
    pub fn kill_agent(&self, node: &LabNode) -> anyhow::Result<()> {
        let pid = node.agent_pid.context("the node has no agent")?;
        kill(Pid::from_raw(pid), Signal::SIGKILL)?;
        Ok(())
    }

    /// Starts node `node`'s agent again with `skep lab restart-agent` (the
    /// lab's own process code) and returns the node with its new pid.
    pub fn restart_agent(&mut self, node: &str) -> anyhow::Result<LabNode> {
        let out = skep(&[
            "lab",
            "restart-agent",
            "--data-dir",
            &self.data_dir.display().to_string(),
            "--node",
            node,
            "--heartbeat-seconds",
            "2",
        ])?;
        if !out.status.success() {
            bail!(
                "skep lab restart-agent failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // `read` gives a value that is not up: dropping it runs no `down`.
        let mut fresh = Self::read(&self.data_dir)?;
        self.nodes = std::mem::take(&mut fresh.nodes);
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .cloned()
            .with_context(|| format!("no node {node} in lab.json"))
    }

    /// Runs `skep lab down`.
    pub fn down(&mut self) -> anyhow::Result<()> {
        self.up = false;
        let out = skep(&[
            "lab",
            "down",
            "--data-dir",
            &self.data_dir.display().to_string(),
        ])?;
        if !out.status.success() {
            bail!(
                "skep lab down failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Everything of this lab still on the machine: namespaces, links,
    /// processes, mounts, cgroups, bpffs directories. Empty after `down`.
    #[must_use]
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
        for name in std::iter::once(&self.bridge).chain(self.nodes.iter().map(|n| &n.host_veth)) {
            if links.contains(&format!(": {name}:")) || links.contains(&format!(": {name}@")) {
                left.push(format!("link {name}"));
            }
        }
        let pids = std::iter::once(self.server_pid)
            .chain(self.nodes.iter().map(|n| n.agent_pid))
            .flatten();
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            if !stat.is_empty() && !zombie {
                left.push(format!("process {pid}"));
            }
        }
        // Any process still running from the lab's directory (shims, containers' runc).
        if let Ok(procs) = std::fs::read_dir("/proc") {
            let needle = self.data_dir.display().to_string();
            for p in procs.flatten() {
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    left.push(format!(
                        "process {} ({})",
                        p.file_name().to_string_lossy(),
                        String::from_utf8_lossy(&cmdline).replace('\0', " ")
                    ));
                }
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
            if Path::new(point).starts_with(&self.data_dir) {
                left.push(format!("mount {point}"));
            }
        }
        for node in &self.nodes {
            for path in [&node.netns, &node.cgroup, &node.pin_dir] {
                if path.exists() {
                    left.push(path.display().to_string());
                }
            }
            for h in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let dir = h.path().join("skep").join(&node.name);
                if dir.exists() {
                    left.push(format!("cgroup {}", dir.display()));
                }
            }
        }
        left
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

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.up {
            return;
        }
        if let Err(err) = self.down() {
            eprintln!("warning: {err:#}");
        }
    }
}

/// Runs `skep lab down --data-dir DIR` for a lab whose `up` failed halfway
/// (no [`Lab`] value exists then); a directory without a lab is fine.
pub fn down_if_any(data_dir: &Path) {
    if data_dir.join("lab.json").exists()
        && let Ok(skep) = skep_binary()
    {
        let _ = Command::new(skep)
            .args(["lab", "down", "--data-dir"])
            .arg(data_dir)
            .status();
    }
}
