//! `skep lab`: a multi-node cluster on one machine, without Docker or VMs.
//!
//! `lab up` builds an underlay (a bridge in the host namespace), one network
//! namespace per node on it, runs one `skep server` on the bridge address
//! and one `skep agent` inside each node namespace (its own data directory,
//! cgroup v2 subtree and bpffs directory), and returns once every node is
//! Ready. The processes keep running in the background; `lab down` stops
//! them and removes every part, guided by `<data-dir>/lab.json`, which is
//! written before each part is made. Lab namespaces have no default route:
//! nothing in the lab reaches beyond the machine.

mod net;
pub mod plan;
mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use skep_datapath::preflight;
use skep_proto::v1::WatchRequest;
use skep_proto::v1::watch_event::Type as EventKind;

use crate::HostArgs;
use plan::{LabState, Proc};
use process::Placement;

/// `skep lab` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build the lab and start its server and agents; returns once every
    /// node is Ready (they keep running in the background).
    Up(UpArgs),
    /// Stop the lab's processes and remove all it made (also after a crash).
    Down {
        /// The lab's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Images on every lab node.
    #[command(subcommand)]
    Image(LabImageCommand),
    /// Start a node's agent again (stopping it first if it still runs), as
    /// after a crash: its pods and pinned datapath are kept.
    RestartAgent {
        /// The lab's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The node.
        #[arg(long)]
        node: String,
        /// Seconds between node heartbeats.
        #[arg(long, default_value_t = 10)]
        heartbeat_seconds: u64,
    },
}

/// `skep lab image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LabImageCommand {
    /// Import a `docker save` or OCI-layout tarball into every node's store.
    Import {
        /// The lab's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The tarball.
        file: PathBuf,
    },
}

/// Arguments of `skep lab up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=200))]
    nodes: u8,
    /// The lab's directory: state file, store, kubeconfig, node data, logs.
    #[arg(long)]
    data_dir: PathBuf,
    /// Seconds to wait for every node to be Ready.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
    /// Seconds between node heartbeats.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    #[command(flatten)]
    host: HostArgs,
}

/// Runs a lab subcommand.
pub fn run(cmd: &LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Up(args) => up(args),
        LabCommand::Down { data_dir } => down(data_dir),
        LabCommand::Image(LabImageCommand::Import { data_dir, file }) => import(data_dir, file),
        LabCommand::RestartAgent {
            data_dir,
            node,
            heartbeat_seconds,
        } => restart_agent(data_dir, node, *heartbeat_seconds),
    }
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("failed to resolve {}", dir.display()))
}

fn up(args: &UpArgs) -> anyhow::Result<()> {
    let host = args.host.host();
    preflight::check_privileges(&host)?;
    // Each node's `skep agent` runs its containers under the shim beside us.
    crate::agent::find_shim(None)?;
    let mounts = preflight::mounts(&host)?;
    let cgroup2 = preflight::cgroup2_mount(&mounts)?;
    let data_dir = absolute(&args.data_dir)?;
    if LabState::load(&data_dir)?.is_some() {
        bail!(
            "a lab is already up in {0} (skep lab down --data-dir {0} first)",
            data_dir.display()
        );
    }
    if data_dir.join("store").exists() {
        bail!(
            "{} holds another cluster's store; give the lab a directory of its own",
            data_dir.display()
        );
    }
    let base = plan::base_name(&data_dir);
    let octet = plan::pick_underlay(&base, &net::host_networks())
        .context("no free 10.99.X.0/24 network for the lab's underlay")?;
    let mut state = plan::plan(
        &data_dir,
        args.nodes,
        octet,
        Path::new("/sys/fs/cgroup"),
        &cgroup2,
        &args.host.bpffs,
    );
    std::fs::create_dir_all(state.log_dir()).context("failed to create the log directory")?;
    state.save()?;
    let built = crate::control_plane::runtime()?.block_on(build(&mut state, args));
    match built {
        Ok(()) => {
            println!(
                "lab up: {} nodes on {}/{} (bridge {})\n  kubectl --kubeconfig {} get nodes\n  skep lab down --data-dir {}",
                state.nodes.len(),
                state.host_ip,
                state.prefix,
                state.bridge,
                state.kubeconfig().display(),
                data_dir.display()
            );
            Ok(())
        }
        Err(err) => {
            tracing::error!(
                "lab up failed; tearing down (logs stay in {})",
                state.log_dir().display()
            );
            if let Err(down_err) = teardown(&state) {
                tracing::error!(?down_err, "teardown after a failed lab up was incomplete");
            }
            Err(err)
        }
    }
}

/// Builds the underlay and nodes, starts the processes, waits for Ready.
/// Every part is recorded in `state` (and saved) before it is made.
async fn build(state: &mut LabState, args: &UpArgs) -> anyhow::Result<()> {
    net::create_bridge(state).await?;
    let demo = tempfile::tempdir().context("failed to create a temp dir")?;
    let demo_tar = crate::image::demo_tarball(demo.path(), crate::image::DEMO_IMAGE)?;
    for node in &state.nodes {
        net::create_node(state, node).await?;
        std::fs::create_dir_all(&node.data_dir)
            .with_context(|| format!("failed to create {}", node.data_dir.display()))?;
        std::fs::create_dir_all(node.cgroup.join("agent"))
            .with_context(|| format!("failed to create cgroup {}", node.cgroup.display()))?;
        std::fs::create_dir_all(&node.pin_dir)
            .with_context(|| format!("failed to create {}", node.pin_dir.display()))?;
        crate::image::store(&node.data_dir)?
            .import_tarball(&demo_tar)
            .with_context(|| format!("failed to import the demo image on {}", node.name))?;
        tracing::info!(node = %node.name, ip = %node.ip, "lab node created");
    }

    let mut server_args: Vec<String> = vec![
        "server".into(),
        "--data-dir".into(),
        path_arg(&state.data_dir),
        "--listen".into(),
        format!("{}:{}", state.host_ip, plan::API_PORT),
        "--tls-san".into(),
        state.host_ip.to_string(),
    ];
    for node in &state.nodes {
        server_args.extend(["--node-kubeconfig".into(), node.name.clone()]);
    }
    let server = process::spawn(
        &server_args,
        &state.log_dir().join("server.log"),
        &Placement::default(),
    )?;
    state.server = Some(server);
    state.save()?;
    wait_for_files(state, server, args.timeout_seconds).await?;

    for i in 0..state.nodes.len() {
        let agent = start_agent(state, &state.nodes[i], args.heartbeat_seconds)?;
        state.nodes[i].agent = Some(agent);
        state.save()?;
    }
    wait_for_ready(state, args.timeout_seconds).await
}

/// Starts `node`'s agent inside its namespace, in its cgroup's `agent` leaf,
/// logging to `<logs>/<node>.log` (appended).
fn start_agent(state: &LabState, node: &plan::LabNode, heartbeat: u64) -> anyhow::Result<Proc> {
    let agent_args: Vec<String> = vec![
        "agent".into(),
        "--data-dir".into(),
        path_arg(&node.data_dir),
        "--kubeconfig".into(),
        path_arg(&state.node_kubeconfig(&node.name)),
        "--node-name".into(),
        node.name.clone(),
        "--node-ip".into(),
        node.ip.to_string(),
        "--heartbeat-seconds".into(),
        heartbeat.to_string(),
        "--bpf-pin-dir".into(),
        path_arg(&node.pin_dir),
        "--socket-lb-cgroup".into(),
        path_arg(&node.cgroup),
    ];
    let agent_cgroup = node.cgroup.join("agent");
    process::spawn(
        &agent_args,
        &state.log_dir().join(format!("{}.log", node.name)),
        &Placement {
            netns: Some(&node.netns),
            cgroup: Some(&agent_cgroup),
        },
    )
}

/// `skep lab restart-agent`: stops the node's agent if it still runs and
/// starts a new one, recorded in the state file.
fn restart_agent(data_dir: &Path, name: &str, heartbeat: u64) -> anyhow::Result<()> {
    let dir = data_dir
        .canonicalize()
        .with_context(|| format!("no lab in {}", data_dir.display()))?;
    let mut state = LabState::load(&dir)?
        .with_context(|| format!("no lab in {} (no {})", dir.display(), plan::STATE_FILE))?;
    let i = state
        .nodes
        .iter()
        .position(|n| n.name == name)
        .with_context(|| format!("no node {name} in the lab in {}", dir.display()))?;
    if let Some(old) = state.nodes[i].agent {
        process::stop(old, Duration::from_secs(10));
    }
    let agent = start_agent(&state, &state.nodes[i], heartbeat)?;
    state.nodes[i].agent = Some(agent);
    state.save()?;
    println!("{name}: agent started (pid {})", agent.pid);
    Ok(())
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Waits until the server wrote the admin and node kubeconfigs.
async fn wait_for_files(state: &LabState, server: Proc, timeout: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut files = vec![state.kubeconfig()];
    files.extend(state.nodes.iter().map(|n| state.node_kubeconfig(&n.name)));
    while !files.iter().all(|f| f.is_file()) {
        if !process::alive(server) {
            bail!(
                "skep server exited; see {}",
                state.log_dir().join("server.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!("skep server wrote no kubeconfigs within {timeout} s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Whether a Node (as JSON) has a pod CIDR and a Ready=True condition.
fn node_ready(node: &serde_json::Value) -> bool {
    let cidr = node
        .pointer("/spec/podCIDR")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|c| !c.is_empty());
    let ready = node
        .pointer("/status/conditions")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    cidr && ready
}

/// Follows the Nodes through the first node's node-sync stream (it carries
/// every Node) until all lab nodes are Ready with a pod CIDR; fails early
/// when a lab process dies.
async fn wait_for_ready(state: &LabState, timeout: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let first = state.nodes.first().context("a lab has nodes")?;
    let creds = skep_proto::NodeCredentials::from_kubeconfig(&state.node_kubeconfig(&first.name))
        .context("failed to read the node kubeconfig")?;
    let mut client = creds
        .client()
        .context("failed to set up a node-sync client")?;
    let mut nodes: HashMap<String, bool> = HashMap::new();
    let all_ready = |nodes: &HashMap<String, bool>| {
        state
            .nodes
            .iter()
            .all(|n| nodes.get(&n.name).copied().unwrap_or(false))
    };
    loop {
        check_alive(state)?;
        if Instant::now() > deadline {
            let waiting: Vec<&str> = state
                .nodes
                .iter()
                .filter(|n| !nodes.get(&n.name).copied().unwrap_or(false))
                .map(|n| n.name.as_str())
                .collect();
            bail!(
                "nodes not Ready within {timeout} s: {}; logs in {}",
                waiting.join(", "),
                state.log_dir().display()
            );
        }
        let req = WatchRequest {
            node_name: first.name.clone(),
            from_revision: 0,
        };
        let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), client.watch(req)).await
        else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let mut stream = resp.into_inner();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
            let event = match next {
                Err(_) => {
                    check_alive(state)?;
                    if Instant::now() > deadline {
                        break;
                    }
                    continue;
                }
                Ok(Ok(Some(event))) => event,
                Ok(_) => break,
            };
            if event.kind == "Node" {
                let Ok(obj) = serde_json::from_slice::<serde_json::Value>(&event.object) else {
                    continue;
                };
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let deleted = event.r#type == i32::from(EventKind::Deleted);
                nodes.insert(name, !deleted && node_ready(&obj));
            }
            if all_ready(&nodes) {
                return Ok(());
            }
        }
    }
}

fn check_alive(state: &LabState) -> anyhow::Result<()> {
    if let Some(server) = state.server
        && !process::alive(server)
    {
        bail!(
            "skep server exited; see {}",
            state.log_dir().join("server.log").display()
        );
    }
    for node in &state.nodes {
        if let Some(agent) = node.agent
            && !process::alive(agent)
        {
            bail!(
                "the agent of {} exited; see {}",
                node.name,
                state.log_dir().join(format!("{}.log", node.name)).display()
            );
        }
    }
    Ok(())
}

fn down(data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir
        .canonicalize()
        .with_context(|| format!("no lab in {}", data_dir.display()))?;
    let state = LabState::load(&dir)?
        .with_context(|| format!("no lab in {} (no {})", dir.display(), plan::STATE_FILE))?;
    teardown(&state)?;
    println!("lab down: {} removed", dir.display());
    Ok(())
}

/// Stops every process of the lab and removes every part, each step on
/// its own (a missing part is fine); the state file and the lab's files go
/// last, and only when everything else did, so a failed `down` can be
/// repeated.
fn teardown(state: &LabState) -> anyhow::Result<()> {
    let mut failures: Vec<String> = Vec::new();
    let mut note = |what: String, result: anyhow::Result<()>| {
        if let Err(err) = result {
            tracing::warn!(%what, ?err, "lab teardown step failed");
            failures.push(format!("{what}: {err:#}"));
        }
    };
    for node in &state.nodes {
        if let Some(agent) = node.agent {
            process::stop(agent, Duration::from_secs(10));
        }
    }
    for node in &state.nodes {
        note(
            format!("kill the pods of {}", node.name),
            kill_cgroup(&node.cgroup),
        );
        note(
            format!("remove the containers of {}", node.name),
            remove_containers(node),
        );
        note(
            format!("unmount below {}", node.data_dir.display()),
            unmount_below(&node.data_dir),
        );
        note(
            format!("remove cgroups of {}", node.name),
            skep_runtime::cleanup::remove_pod_cgroups(
                &state.cgroup_root,
                &format!("skep/{}", node.name),
            )
            .map_err(Into::into),
        );
        note(
            format!("remove {}", node.pin_dir.display()),
            remove_tree(&node.pin_dir),
        );
        note(
            format!("remove namespace {}", node.netns.display()),
            skep_runtime::netns::remove(&node.netns).map_err(Into::into),
        );
    }
    if let Some(server) = state.server {
        process::stop(server, Duration::from_secs(15));
    }
    match crate::control_plane::runtime() {
        Ok(rt) => rt.block_on(async {
            for node in &state.nodes {
                note(
                    format!("delete link {}", node.host_veth),
                    net::delete_link(&node.host_veth).await,
                );
            }
            note(
                format!("delete bridge {}", state.bridge),
                net::delete_link(&state.bridge).await,
            );
        }),
        Err(err) => note("start a runtime".into(), Err(err)),
    }
    if !failures.is_empty() {
        bail!("lab teardown incomplete:\n  {}", failures.join("\n  "));
    }
    for part in ["nodes", "store", "pki"] {
        remove_tree(&state.data_dir.join(part))?;
    }
    for file in [state.kubeconfig(), LabState::path(&state.data_dir)] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("failed to remove {}", file.display()));
            }
        }
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to remove {}", dir.display())),
    }
}

/// Kills every process in the node's cgroup v2 subtree (the agent, the
/// shims, the containers) and waits until it is empty.
fn kill_cgroup(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let kill_file = dir.join("cgroup.kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = cgroup_pids(dir);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} survived SIGKILL");
        }
        // cgroup.kill (Linux 5.14) kills the whole subtree at once; older
        // kernels get one SIGKILL per process.
        if std::fs::write(&kill_file, "1").is_err() {
            for pid in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pids in a cgroup directory and all below it.
fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_pids(&entry.path()));
            }
        }
    }
    pids
}

/// Deletes what runc still records for the node (its processes are dead
/// by now), which also removes the containers' cgroups.
fn remove_containers(node: &plan::LabNode) -> anyhow::Result<()> {
    let root = node.data_dir.join("runtime/runc");
    if !root.exists() {
        return Ok(());
    }
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output()
        .context("failed to run runc list")?;
    for id in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let status = std::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", id])
            .status()
            .context("failed to run runc delete")?;
        if !status.success() {
            bail!("runc delete --force {id} failed ({status})");
        }
    }
    Ok(())
}

/// Unmounts everything mounted at or below `dir`, deepest first.
fn unmount_below(dir: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("failed to read mountinfo")?;
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort();
    for point in points.iter().rev() {
        match nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("failed to unmount {}", point.display()));
            }
        }
    }
    Ok(())
}

/// Imports `file` into the image store of every node of the lab in `data_dir`.
fn import(data_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let dir = data_dir
        .canonicalize()
        .with_context(|| format!("no lab in {}", data_dir.display()))?;
    let state = LabState::load(&dir)?
        .with_context(|| format!("no lab in {} (no {})", dir.display(), plan::STATE_FILE))?;
    for node in &state.nodes {
        let names = crate::image::store(&node.data_dir)?
            .import_tarball(file)
            .with_context(|| format!("failed to import {} on {}", file.display(), node.name))?;
        for name in names {
            println!("{}\t{name}", node.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_ready_with_a_pod_cidr_and_the_ready_condition() {
        let ready = serde_json::json!({"spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True"}]}});
        assert!(node_ready(&ready));
        let mut no_cidr = ready.clone();
        no_cidr["spec"] = serde_json::json!({});
        assert!(!node_ready(&no_cidr));
        let mut not_ready = ready;
        not_ready["status"]["conditions"][1]["status"] = "Unknown".into();
        assert!(!node_ready(&not_ready));
    }
}
