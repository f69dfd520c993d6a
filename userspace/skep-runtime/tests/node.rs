//! Privileged end-to-end tests of skep-runtime against the real kernel, runc
//! and the `skep-shim` binary: network sandboxes with real traffic, containers
//! with logs, limits, signals, exec, adoption and full teardown.
//!
//! Each test builds its own "node": a fresh network namespace (no default
//! route, so nothing leaves the machine), its own run/state directories and
//! cgroup parent `skep-test/<name>`. A Drop guard removes all of it even when
//! the test fails.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use skep_runtime::cleanup::{self, NodeParts};
use skep_runtime::ipam::Ipam;
use skep_runtime::netns;
use skep_runtime::runtime::{
    BindMount, ContainerSpec, ContainerState, Resources, Runtime, RuntimeConfig,
};
use skep_runtime::sandbox::{self, DnsConfig, PodNetwork, SandboxConfig, SandboxManager};

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "httpd", "nc", "wget", "ls", "env", "id", "kill", "true",
    "false", "ping", "hostname", "grep",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "skep-runtime end-to-end tests need root (netns, veth, runc)"
    );
}

/// The `skep-shim` binary of this test binary's profile,
/// `<target>/<profile>/skep-shim` (`cargo xtask test --only e2e` builds it).
fn shim_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/node-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary is not in <target>/<profile>/deps")?;
    let shim = dir.join("skep-shim");
    ensure!(
        shim.is_file(),
        "{} missing: build it first (cargo build -p skep-shim with this profile; cargo xtask test does)",
        shim.display()
    );
    Ok(shim)
}

/// A busybox root filesystem in `dir`.
fn busybox_rootfs(dir: &Path) -> Result<PathBuf> {
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join("etc"))?;
    fs::create_dir_all(root.join("tmp"))?;
    fs::copy(BUSYBOX, root.join("bin/busybox"))?;
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet))?;
    }
    Ok(root)
}

/// One test node: namespace, directories, managers. Dropping it removes
/// everything the test created.
struct TestNode {
    name: String,
    base: tempfile::TempDir,
    node_netns: PathBuf,
    run_dir: PathBuf,
    pods_dir: PathBuf,
    cgroup_parent: String,
    ipam: Ipam,
    sandboxes: SandboxManager,
    runtime: Runtime,
    rootfs: PathBuf,
}

impl TestNode {
    async fn new() -> Result<Self> {
        require_root();
        let name = format!(
            "t{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let base = tempfile::Builder::new().prefix("skep-node-").tempdir()?;
        let node_netns = base.path().join("node.netns");
        let run_dir = base.path().join("run");
        let pods_dir = base.path().join("pods");
        let cgroup_parent = format!("skep-test/{name}");
        let ipam = Ipam::open(base.path().join("ipam"), "10.244.3.0/24")?;
        let sandboxes = SandboxManager::new(SandboxConfig {
            run_dir: run_dir.clone(),
            proc_root: "/proc".into(),
            node_netns: Some(node_netns.clone()),
        });
        let runtime = Runtime::new(RuntimeConfig {
            state_dir: base.path().join("state"),
            runc: RUNC.into(),
            shim: shim_binary()?,
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: cgroup_parent.clone(),
        })?;
        let rootfs = busybox_rootfs(base.path())?;
        let node = Self {
            name,
            base,
            node_netns,
            run_dir,
            pods_dir,
            cgroup_parent,
            ipam,
            sandboxes,
            runtime,
            rootfs,
        };
        netns::create(&node.node_netns, Path::new("/proc"))?;
        // The node's own address (the CIDR's reserved first one) on lo, so
        // the node has a source address for traffic to pods.
        let gw = node.ipam.gateway();
        netns::run_in(Some(node.node_netns.clone()), move || async move {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
                .execute()
                .await?;
            handle
                .address()
                .add(1, IpAddr::V4(gw), 32)
                .execute()
                .await?;
            anyhow::Ok(())
        })
        .await??;
        tracing::info!(node = %node.name, "--- test node ready");
        Ok(node)
    }

    fn parts(&self) -> NodeParts<'_> {
        NodeParts {
            runtime: &self.runtime,
            sandboxes: &self.sandboxes,
            ipam: &self.ipam,
            pods_dir: &self.pods_dir,
            run_dir: &self.run_dir,
            proc_root: Path::new("/proc"),
            node_netns: Some(&self.node_netns),
        }
    }

    /// Allocates an IP and builds the sandbox and pod files for `uid`.
    async fn pod(&self, uid: &str) -> Result<(PodNetwork, sandbox::PodFiles)> {
        let ip = self.ipam.allocate(uid)?;
        let net = self.sandboxes.create(uid, ip).await?;
        let files = sandbox::write_pod_files(
            &self.pods_dir.join(uid),
            uid,
            ip,
            &DnsConfig {
                nameservers: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
        )?;
        Ok((net, files))
    }

    fn container(
        &self,
        uid: &str,
        name: &str,
        net: &PodNetwork,
        files: &sandbox::PodFiles,
        args: &[&str],
    ) -> ContainerSpec {
        ContainerSpec {
            pod_uid: uid.to_owned(),
            name: name.to_owned(),
            attempt: 0,
            rootfs: self.rootfs.clone(),
            readonly_rootfs: false,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: vec!["PATH=/bin".into(), "GREETING=hi".into()],
            cwd: None,
            uid: 0,
            gid: 0,
            hostname: uid.to_owned(),
            netns: net.netns_path.clone(),
            mounts: vec![
                BindMount {
                    source: files.hosts.clone(),
                    destination: "/etc/hosts".into(),
                    read_only: true,
                },
                BindMount {
                    source: files.resolv_conf.clone(),
                    destination: "/etc/resolv.conf".into(),
                    read_only: true,
                },
            ],
            resources: Resources::default(),
            log_path: self.pods_dir.join(uid).join(name).join("0.log"),
        }
    }

    /// Runs `argv` in network namespace `ns` (the node's or a pod's).
    fn run_in_ns(ns: &Path, argv: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .arg("--")
            .args(argv)
            .output()?)
    }

    /// Every cgroup directory of this node, in every hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = entry.path().join(&self.cgroup_parent);
            if p.exists() {
                out.push(p);
            }
        }
        out
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // runc containers (their shims exit when the container does).
        let runc_root = self.base.path().join("state/runc");
        for entry in fs::read_dir(&runc_root).into_iter().flatten().flatten() {
            let _ = Command::new(RUNC)
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(entry.file_name())
                .output();
        }
        // Pod namespaces, then the node namespace (its veths go with it).
        for entry in fs::read_dir(self.run_dir.join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = netns::remove(&entry.path());
        }
        let _ = netns::remove(&self.node_netns);
        // cgroups: the node's parent in every hierarchy, bottom-up.
        let _ = cleanup::remove_pod_cgroups(Path::new("/sys/fs/cgroup"), &self.cgroup_parent);
        // Shared by concurrent tests: only goes once the last one is done.
        for entry in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_dir(entry.path().join("skep-test"));
        }
    }
}

/// A plain HTTP/1.0 GET from inside network namespace `ns`; the response.
async fn http_get(ns: &Path, ip: Ipv4Addr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n");
    netns::run_in(Some(ns.to_owned()), move || async move {
        let addr = std::net::SocketAddr::from((ip, 80));
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(request.as_bytes())?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        anyhow::Ok(response)
    })
    .await?
}

fn ping(ns: &Path, ip: Ipv4Addr) -> Result<()> {
    let out = TestNode::run_in_ns(
        ns,
        &[BUSYBOX, "ping", "-c", "1", "-W", "2", &ip.to_string()],
    )?;
    ensure!(
        out.status.success(),
        "ping {ip} from {} failed: {}{}",
        ns.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn two_pods_reach_each_other_through_the_node() -> Result<()> {
    let node = TestNode::new().await?;
    let (a, _) = node.pod("pod-a").await?;
    let (b, _) = node.pod("pod-b").await?;
    ensure!(a.ip != b.ip);
    ensure!(a.host_veth.starts_with("skep") && a.host_veth.len() == 15);
    tracing::info!("--- traffic");
    ping(&a.netns_path, b.ip)?;
    ping(&b.netns_path, a.ip)?;
    ping(&node.node_netns, a.ip)?;
    ping(&node.node_netns, b.ip)?;

    // The pod sees eth0 with its /32 and a default route via 169.254.1.1.
    let route = TestNode::run_in_ns(&a.netns_path, &["ip", "route"])?;
    let route = String::from_utf8_lossy(&route.stdout);
    ensure!(
        route.contains("default via 169.254.1.1 dev eth0") && route.contains("onlink"),
        "{route}"
    );
    let addr = TestNode::run_in_ns(&a.netns_path, &["ip", "-4", "addr", "show", "eth0"])?;
    let addr = String::from_utf8_lossy(&addr.stdout);
    ensure!(addr.contains(&format!("{}/32", a.ip)), "{addr}");
    let proxy_arp = TestNode::run_in_ns(
        &node.node_netns,
        &[
            "cat",
            &format!("/proc/sys/net/ipv4/conf/{}/proxy_arp", a.host_veth),
        ],
    )?;
    ensure!(String::from_utf8_lossy(&proxy_arp.stdout).trim() == "1");

    tracing::info!("--- teardown");
    node.sandboxes.teardown("pod-a").await?;
    node.sandboxes.teardown("pod-a").await?; // idempotent
    ensure!(
        TestNode::run_in_ns(
            &node.node_netns,
            &[BUSYBOX, "ping", "-c", "1", "-W", "1", &a.ip.to_string()]
        )?
        .status
        .code()
            != Some(0),
        "pod-a still answers after teardown"
    );
    cleanup::remove_pod(node.parts(), "pod-a", Duration::ZERO).await?;
    cleanup::remove_pod(node.parts(), "pod-b", Duration::ZERO).await?;
    let left = cleanup::leftovers(node.parts()).await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[tokio::test]
async fn half_built_sandbox_is_torn_down() -> Result<()> {
    let node = TestNode::new().await?;
    // A namespace file without veth (as after a crash mid-create).
    netns::create(&node.sandboxes.netns_path("pod-x"), Path::new("/proc"))?;
    node.sandboxes.teardown("pod-x").await?;
    ensure!(!node.sandboxes.netns_path("pod-x").exists());
    // And create over leftovers works.
    netns::create(&node.sandboxes.netns_path("pod-y"), Path::new("/proc"))?;
    let ip = node.ipam.allocate("pod-y")?;
    let net = node.sandboxes.create("pod-y", ip).await?;
    ping(&node.node_netns, net.ip)?;
    cleanup::remove_pod(node.parts(), "pod-y", Duration::ZERO).await?;
    let left = cleanup::leftovers(node.parts()).await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

fn log_lines(path: &Path) -> Result<Vec<(String, String, String, String)>> {
    let text = fs::read_to_string(path)?;
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let mut next = || it.next().map(str::to_owned).context("short CRI log line");
            Ok((next()?, next()?, next()?, next()?))
        })
        .collect()
}

#[tokio::test]
async fn container_output_goes_to_cri_log_and_exit_code_is_recorded() -> Result<()> {
    let node = TestNode::new().await?;
    let (net, files) = node.pod("pod-log").await?;
    let spec = node.container(
        "pod-log",
        "main",
        &net,
        &files,
        &[
            "sh",
            "-c",
            "echo hello; echo oops >&2; echo $GREETING $(cat /etc/hosts | grep pod-log); sleep 0.5; exit 3",
        ],
    );
    // An "agent" that goes away before the container exits: the shim still
    // records the exit for the next one.
    let agent = Runtime::new(node.runtime.config().clone())?;
    let id = agent.create(&spec).await?;
    ensure!(matches!(
        agent.status(&id).await?.state,
        ContainerState::Created
    ));
    agent.start(&id).await?;
    drop(agent);
    let exit = node
        .runtime
        .wait(&id, Duration::from_secs(20))
        .await?
        .context("container did not exit")?;
    ensure!(exit.exit_code == 3, "exit {exit:?}");
    let lines = log_lines(&spec.log_path)?;
    ensure!(lines.len() == 3, "{lines:?}");
    let stdout: Vec<_> = lines
        .iter()
        .filter(|l| l.1 == "stdout")
        .map(|l| l.3.as_str())
        .collect();
    let stderr: Vec<_> = lines
        .iter()
        .filter(|l| l.1 == "stderr")
        .map(|l| l.3.as_str())
        .collect();
    ensure!(
        stdout == ["hello", &format!("hi {} pod-log", net.ip)],
        "{stdout:?}"
    );
    ensure!(stderr == ["oops"], "{stderr:?}");
    for (ts, _, tag, _) in &lines {
        ensure!(tag == "F");
        ensure!(
            ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
    }
    let status = node.runtime.status(&id).await?;
    ensure!(matches!(status.state, ContainerState::Exited(ref e) if e.exit_code == 3));
    ensure!(status.started_at.is_some());

    cleanup::remove_pod(node.parts(), "pod-log", Duration::from_secs(1)).await?;
    check_nothing_left(&node, "pod-log").await?;
    Ok(())
}

#[tokio::test]
async fn httpd_limits_exec_adoption_and_full_teardown() -> Result<()> {
    let node = TestNode::new().await?;
    let (net, files) = node.pod("pod-web").await?;
    fs::create_dir_all(node.rootfs.join("www"))?;
    fs::write(node.rootfs.join("www/index.html"), "hello from skep\n")?;
    let mut spec = node.container(
        "pod-web",
        "web",
        &net,
        &files,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
        ],
    );
    spec.resources = Resources {
        cpu_limit: Some("500m".into()),
        cpu_request: Some("100m".into()),
        memory_limit: Some("64Mi".into()),
    };
    let id = node.runtime.create(&spec).await?;
    node.runtime.start(&id).await?;
    let pid = match node.runtime.status(&id).await?.state {
        ContainerState::Running { pid } => pid,
        other => bail!("not running: {other:?}"),
    };

    tracing::info!("--- httpd from the node namespace");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match http_get(&node.node_netns, net.ip, "/index.html").await {
            Ok(body) => break body,
            Err(err) => ensure!(
                Instant::now() < deadline,
                "httpd unreachable: {err:#}; container log: {}",
                fs::read_to_string(&spec.log_path).unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body:?}"
    );
    ensure!(body.ends_with("\r\n\r\nhello from skep\n"), "{body:?}");

    check_limits(&node, pid)?;

    tracing::info!("--- exec");
    let out = node
        .runtime
        .exec(
            &id,
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; hostname; exit 7".into(),
            ],
            Duration::from_secs(10),
        )
        .await?;
    ensure!(out.exit_code == 7, "{out:?}");
    ensure!(
        out.stdout == b"out\npod-web\n",
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(out.stderr == b"err\n");

    tracing::info!("--- adoption by a fresh runtime");
    let cfg = node.runtime.config().clone();
    let adopted = Runtime::new(cfg)?;
    let list = adopted.list().await?;
    ensure!(list.len() == 1 && list[0].meta.id == id, "{list:?}");
    ensure!(
        list[0].state == ContainerState::Running { pid },
        "{:?}",
        list[0].state
    );
    ensure!(list[0].started_at.is_some());

    tracing::info!("--- graceful stop (the shell exits 0 on TERM)");
    let exit = adopted.stop(&id, Duration::from_secs(10)).await?;
    ensure!(exit.signal.is_none() && exit.exit_code == 0, "{exit:?}");

    tracing::info!("--- full teardown");
    cleanup::remove_pod(node.parts(), "pod-web", Duration::from_secs(1)).await?;
    check_nothing_left(&node, "pod-web").await
}

#[tokio::test]
async fn term_ignored_is_killed_after_grace_period() -> Result<()> {
    let node = TestNode::new().await?;
    let (net, files) = node.pod("pod-stubborn").await?;
    let spec = node.container(
        "pod-stubborn",
        "main",
        &net,
        &files,
        &["sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait"],
    );
    let id = node.runtime.create(&spec).await?;
    node.runtime.start(&id).await?;
    // Wait until the trap is installed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&spec.log_path)
        .unwrap_or_default()
        .contains("ready")
    {
        ensure!(Instant::now() < deadline, "container never got ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let exit = node.runtime.stop(&id, grace).await?;
    let took = started.elapsed();
    ensure!(exit.signal == Some(9) && exit.exit_code == 137, "{exit:?}");
    ensure!(
        took >= grace,
        "killed after {took:?}, before the grace period"
    );
    ensure!(took < grace + Duration::from_secs(8), "stop took {took:?}");

    cleanup::remove_pod(node.parts(), "pod-stubborn", Duration::ZERO).await?;
    check_nothing_left(&node, "pod-stubborn").await?;
    Ok(())
}

/// The number in field `field` of `/proc/<pid>/<file>` (`status`:
/// `PPid`, `Threads`, `VmRSS` in KiB …; `smaps_rollup`: `Pss` in KiB).
fn proc_field(pid: i32, file: &str, field: &str) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/{file}"))
}

#[tokio::test]
async fn each_container_runs_under_a_small_shim() -> Result<()> {
    let node = TestNode::new().await?;
    let (net, files) = node.pod("pod-shim").await?;
    // Output on both streams, longer than one CRI record, so the shim's
    // copy buffers are as full as they get; then the container just runs.
    let spec = node.container(
        "pod-shim",
        "main",
        &net,
        &files,
        &[
            "sh",
            "-c",
            "printf '%20000s\\n' out; printf '%20000s\\n' err >&2; echo ready; sleep 1000",
        ],
    );
    // Created and started in one runc process (`runc run --detach`).
    let id = node.runtime.run(&spec).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&spec.log_path)
        .unwrap_or_default()
        .contains(" ready")
    {
        ensure!(Instant::now() < deadline, "container never got ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = match node.runtime.status(&id).await?.state {
        ContainerState::Running { pid } => pid,
        other => bail!("not running: {other:?}"),
    };
    // The shim is the subreaper the container's init was reparented to.
    let shim = i32::try_from(proc_field(pid, "status", "PPid")?)?;
    let exe = fs::read_link(format!("/proc/{shim}/exe"))?;
    ensure!(
        exe.file_name().is_some_and(|n| n == "skep-shim"),
        "the container's parent is {}, not the shim",
        exe.display()
    );
    let threads = proc_field(shim, "status", "Threads")?;
    ensure!(threads == 1, "the shim runs {threads} threads, not one");
    // Hybrid host: runc was started in the container's v2 leaf, so the
    // init was there from birth; the shim itself is not.
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        let rel = format!("{}/main", node.runtime.pod_cgroup("pod-shim"));
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        ensure!(
            cgroup.lines().any(|l| l == format!("0::/{rel}")),
            "not in the v2 cgroup: {cgroup}"
        );
        let shim_cgroup = fs::read_to_string(format!("/proc/{shim}/cgroup"))?;
        ensure!(
            !shim_cgroup.lines().any(|l| l == format!("0::/{rel}")),
            "the shim joined the container's v2 cgroup: {shim_cgroup}"
        );
    }
    ensure!(
        node.runtime.status(&id).await?.started_at.is_some(),
        "run records the start"
    );
    // A report, not an assertion (the aim is under 2 MB resident): VmRSS
    // counts the libc pages every process shares, Pss shares them out.
    let rss = proc_field(shim, "status", "VmRSS")?;
    let anon = proc_field(shim, "status", "RssAnon")?;
    let pss = proc_field(shim, "smaps_rollup", "Pss")?;
    eprintln!("skep-shim resident memory: VmRSS {rss} KiB (RssAnon {anon} KiB, Pss {pss} KiB)");

    cleanup::remove_pod(node.parts(), "pod-shim", Duration::ZERO).await?;
    check_nothing_left(&node, "pod-shim").await
}

/// The container `web` of `pod-web` has its limits in the v1 cgroups and its
/// init in both the v1 and v2 hierarchies.
fn check_limits(node: &TestNode, pid: i32) -> Result<()> {
    tracing::info!("--- limits in the container's cgroups");
    let rel = format!("{}/web", node.runtime.pod_cgroup("pod-web"));
    let mem = fs::read_to_string(
        Path::new("/sys/fs/cgroup/memory")
            .join(&rel)
            .join("memory.limit_in_bytes"),
    )?;
    ensure!(
        mem.trim() == (64u64 << 20).to_string(),
        "memory.limit_in_bytes {mem}"
    );
    let quota = fs::read_to_string(
        Path::new("/sys/fs/cgroup/cpu")
            .join(&rel)
            .join("cpu.cfs_quota_us"),
    )?;
    ensure!(quota.trim() == "50000", "cfs quota {quota}");
    let shares = fs::read_to_string(
        Path::new("/sys/fs/cgroup/cpu")
            .join(&rel)
            .join("cpu.shares"),
    )?;
    ensure!(shares.trim() == "102", "shares {shares}");
    let procs = fs::read_to_string(
        Path::new("/sys/fs/cgroup/memory")
            .join(&rel)
            .join("cgroup.procs"),
    )?;
    ensure!(
        procs.lines().any(|p| p == pid.to_string()),
        "{pid} not in {procs}"
    );
    // Hybrid host: the init is in the same path of the v2 hierarchy too.
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        ensure!(
            cgroup.lines().any(|l| l == format!("0::/{rel}")),
            "not in the v2 cgroup: {cgroup}"
        );
    }
    Ok(())
}

/// After removing pod `uid`, nothing of it is left: links, mounts, cgroups,
/// netns files, IPs, state.
async fn check_nothing_left(node: &TestNode, uid: &str) -> Result<()> {
    let left = cleanup::leftovers(node.parts()).await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    let links = cleanup::pod_links(Some(node.node_netns.clone())).await?;
    ensure!(links.is_empty(), "{links:?}");
    ensure!(node.ipam.allocated()?.is_empty());
    for hier in node.cgroup_dirs() {
        let pod = hier.join(format!("pod{uid}"));
        ensure!(!pod.exists(), "{} left", pod.display());
    }
    ensure!(!node.sandboxes.netns_path(uid).exists());
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !mounts.contains(&node.run_dir.display().to_string()),
        "mount left under run dir"
    );
    ensure!(!node.pods_dir.join(uid).exists());
    Ok(())
}

#[tokio::test]
async fn create_failure_is_reported_and_recorded() -> Result<()> {
    let node = TestNode::new().await?;
    let (net, files) = node.pod("pod-bad").await?;
    let spec = node.container("pod-bad", "main", &net, &files, &["/no/such/binary"]);
    let err = node
        .runtime
        .create(&spec)
        .await
        .err()
        .context("create of a missing binary succeeded")?;
    ensure!(
        err.to_string().contains("failed to create container"),
        "{err}"
    );
    let status = node.runtime.status(&spec.id()).await?;
    match status.state {
        ContainerState::Exited(exit) => ensure!(
            exit.error
                .as_deref()
                .is_some_and(|e| e.contains("runc create failed")),
            "{exit:?}"
        ),
        other => bail!("expected an exit record, got {other:?}"),
    }
    cleanup::remove_pod(node.parts(), "pod-bad", Duration::ZERO).await?;
    check_nothing_left(&node, "pod-bad").await
}

#[tokio::test]
async fn run_failure_is_reported_and_recorded() -> Result<()> {
    let node = TestNode::new().await?;
    let (net, files) = node.pod("pod-badrun").await?;
    let spec = node.container("pod-badrun", "main", &net, &files, &["/no/such/binary"]);
    let err = node
        .runtime
        .run(&spec)
        .await
        .err()
        .context("run of a missing binary succeeded")?;
    ensure!(err.to_string().contains("failed to run container"), "{err}");
    let status = node.runtime.status(&spec.id()).await?;
    match status.state {
        ContainerState::Exited(exit) => ensure!(
            exit.error
                .as_deref()
                .is_some_and(|e| e.contains("runc run failed")),
            "{exit:?}"
        ),
        other => bail!("expected an exit record, got {other:?}"),
    }
    cleanup::remove_pod(node.parts(), "pod-badrun", Duration::ZERO).await?;
    check_nothing_left(&node, "pod-badrun").await
}
