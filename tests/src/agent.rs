//! A running `skep agent` for tests (in the test's own network namespace,
//! like `skep up` runs it). Dropping it stops the agent and removes whatever
//! its pods left on the host: runc containers, mounts below its data
//! directory, pod veths that were not there before, its cgroups.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::process::skep_binary;

/// A `skep agent` process for node `node` with state in `data_dir`.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    kubeconfig: PathBuf,
    /// The node name.
    pub node: String,
    /// The agent's state directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    log_filter: String,
    links_before: BTreeSet<String>,
}

/// Names of the `skep…` links in the current network namespace.
pub fn pod_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("skep") || n.starts_with("skpp"))
        .collect()
}

/// Mount points at or below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The pod cgroup directories of `node` in every hierarchy.
pub fn pod_cgroups(node: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for h in entries.flatten() {
            let dir = h.path().join("skep").join(node);
            if let Ok(pods) = std::fs::read_dir(&dir) {
                out.extend(
                    pods.flatten()
                        .filter(|p| p.file_name().to_string_lossy().starts_with("pod"))
                        .map(|p| p.path()),
                );
            }
        }
    }
    out
}

impl Agent {
    /// Starts `skep agent` with short heartbeat and back-off settings.
    pub fn start(data_dir: &Path, kubeconfig: &Path, node: &str) -> anyhow::Result<Self> {
        Self::start_logging(data_dir, kubeconfig, node, "")
    }

    /// [`Agent::start`] with `extra` added to the agent's log filter
    /// (`SKEP_AGENT_LOG`, default `info`), e.g. `skep_startup=debug`.
    pub fn start_logging(
        data_dir: &Path,
        kubeconfig: &Path,
        node: &str,
        extra: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let mut log_filter = std::env::var("SKEP_AGENT_LOG").unwrap_or_else(|_| "info".into());
        if !extra.is_empty() {
            log_filter = format!("{log_filter},{extra}");
        }
        let mut agent = Self {
            child: None,
            kubeconfig: kubeconfig.to_owned(),
            node: node.to_owned(),
            data_dir: data_dir.to_owned(),
            log: data_dir.join("agent.log"),
            log_filter,
            links_before: pod_links(),
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// Stops the agent (its pods keep running) and starts it again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let (node, data_dir, kubeconfig) = (&self.node, &self.data_dir, &self.kubeconfig);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(skep_binary()?)
            .args(["agent", "--node-name", node, "--heartbeat-seconds", "2"])
            .args(["--restart-backoff-ms", "1000", "--node-ip", "127.0.0.1"])
            // Logs and exec on a free port (reported in the Node's status).
            .args(["--kubelet-port", "0"])
            // Cluster DNS on a free port: several test agents share 127.0.0.1.
            .args(["--dns-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("SKEP_LOG", &self.log_filter)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("failed to start skep agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// The agent process's pid, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The pids of the shims of this agent's running containers (each
    /// the parent of its container's init).
    #[must_use]
    pub fn shim_pids(&self) -> Vec<u32> {
        let containers = self.data_dir.join("runtime/containers");
        let mut pids: Vec<u32> = std::fs::read_dir(containers)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|c| std::fs::read_to_string(c.path().join("pid")).ok())
            .filter_map(|init| init.trim().parse::<u32>().ok())
            .filter_map(|init| crate::process::proc_field(init, "status", "PPid"))
            .filter_map(|pid| u32::try_from(pid).ok())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The agent's log file (its stderr).
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The end of the agent's log, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Pod veths that appeared since the agent started.
    #[must_use]
    pub fn new_links(&self) -> Vec<String> {
        pod_links()
            .into_iter()
            .filter(|l| !self.links_before.contains(l))
            .collect()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Removes what pods left behind (after a failed test).
    fn clean_host(&self) {
        let root = self.data_dir.join("runtime/runc");
        let ids = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id])
                .status();
        }
        let mut mounts = mounts_below(&self.data_dir);
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        for link in self.new_links() {
            // A veth goes with its namespace too (the kernel destroys a
            // released namespace in the background): gone is fine.
            let out = Command::new("ip").args(["link", "del", &link]).output();
            if let Ok(out) = out
                && !out.status.success()
                && pod_links().contains(&link)
            {
                eprintln!(
                    "failed to remove pod veth {link}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        for cg in pod_cgroups(&self.node) {
            remove_cgroup(&cg);
        }
        // The datapath's pinned maps and socket load-balancer links, and the
        // Service CIDR's route the agent installed in this namespace.
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf/skep").join(&self.node));
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", "10.96.0.0/12", "proto", "83"])
            .stderr(Stdio::null())
            .status();
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            if let Ok(entries) = std::fs::read_dir(root) {
                for h in entries.flatten() {
                    remove_cgroup(&h.path().join("skep").join(&self.node));
                }
            }
        }
    }
}

fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        self.clean_host();
    }
}

/// Starts a `skep server` (state in `dir/cp`) and one agent for `node` on
/// this host (state in `dir/node`), with the busybox demo image built into
/// the node's store first when `demo` is set.
pub fn start_single_node(
    dir: &Path,
    node: &str,
    demo: bool,
) -> anyhow::Result<(crate::cluster::Server, Agent)> {
    let server = crate::cluster::Server::start_with(&dir.join("cp"), &["--node-kubeconfig", node])?;
    let agent_dir = dir.join("node");
    if demo {
        let out = crate::process::skep(&[
            "image",
            "build-demo",
            "--data-dir",
            &agent_dir.to_string_lossy(),
        ])?;
        anyhow::ensure!(
            out.status.success(),
            "skep image build-demo failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kubeconfig = dir.join(format!("cp/nodes/{node}.kubeconfig"));
    let agent = Agent::start(&agent_dir, &kubeconfig, node)?;
    Ok((server, agent))
}

/// Waits until `agent`'s Node is Ready and has a pod CIDR.
pub fn wait_node_ready(server: &crate::cluster::Server, agent: &Agent) -> anyhow::Result<()> {
    crate::wait::until(
        "node Ready",
        Duration::from_secs(15),
        || {
            let out = server.kubectl(&[
                "get",
                "node",
                &agent.node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.podCIDR}",
            ])?;
            let s = String::from_utf8_lossy(&out.stdout).into_owned();
            Ok((s.starts_with("True ") && s.len() > 5).then_some(()))
        },
        || format!("agent log:\n{}", agent.log_tail()),
    )
}
