//! Containers under runc, each supervised by a shim process (see [`crate::shim`]).
//!
//! State layout under the runtime's `state_dir`:
//! `runc/` (runc `--root`), `containers/<id>/` with `config.json` (the OCI
//! bundle), `meta.json` (what the container is), `started` (start time),
//! `exit.json` (written by the shim), `pid`, `runc.log`. A fresh [`Runtime`]
//! on the same directory lists and controls the same containers (adoption).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, UserBuilder, get_default_mounts,
};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::quantity;
use crate::shim::{self, ExitRecord, ShimArgs};
use crate::timing;

/// CFS period used for CPU limits (the kubelet's default, 100ms).
const CFS_PERIOD_US: u64 = 100_000;

/// Errors from the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A state file or directory could not be read or written.
    #[error("failed to {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The OCI spec could not be built.
    #[error("failed to build OCI spec for container {id}")]
    Spec {
        /// Container id.
        id: String,
        /// Underlying error.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A resource quantity could not be parsed.
    #[error("failed to parse {what} quantity {value:?} for container {id}")]
    Quantity {
        /// Container id.
        id: String,
        /// `cpu` or `memory`.
        what: &'static str,
        /// The quantity as given.
        value: String,
    },
    /// A runc (or shim) invocation failed.
    #[error("failed to {op} container {id}: {detail}")]
    Command {
        /// What was being done.
        op: &'static str,
        /// Container id.
        id: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// No such container in the state directory.
    #[error("failed to find container {id}")]
    NotFound {
        /// Container id.
        id: String,
    },
    /// A deadline passed.
    #[error("failed to {op} container {id} within {timeout:?}")]
    Timeout {
        /// What was being waited for.
        op: &'static str,
        /// Container id.
        id: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Host roots and binaries the runtime uses.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Runtime state directory (e.g. `/var/lib/skep/<node>/runtime`).
    pub state_dir: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// The shim binary, a `main` over [`shim::run`] (`skep-shim`, normally
    /// next to the agent's own executable).
    pub shim: PathBuf,
    /// Where cgroup hierarchies are mounted (normally `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Node-owned cgroup parent, relative to each hierarchy (e.g. `skep/node-1`).
    pub cgroup_parent: String,
}

/// A bind mount into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// Kubernetes resource quantities of one container (`"500m"`, `"64Mi"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `limits.cpu`.
    pub cpu_limit: Option<String>,
    /// `requests.cpu`.
    pub cpu_request: Option<String>,
    /// `limits.memory`.
    pub memory_limit: Option<String>,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Owning pod's UID.
    pub pod_uid: String,
    /// Container name within the pod.
    pub name: String,
    /// Restart attempt; part of the container id so a restart gets a new one.
    pub attempt: u32,
    /// Prepared root filesystem directory.
    pub rootfs: PathBuf,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// argv of the process.
    pub args: Vec<String>,
    /// Environment as `NAME=value`.
    pub env: Vec<String>,
    /// Working directory (default `/`).
    pub cwd: Option<String>,
    /// User id of the process.
    pub uid: u32,
    /// Group id of the process.
    pub gid: u32,
    /// Container hostname (the pod name).
    pub hostname: String,
    /// Pod network namespace to join.
    pub netns: PathBuf,
    /// Extra bind mounts (volumes, `/etc/hosts`, `/etc/resolv.conf`).
    pub mounts: Vec<BindMount>,
    /// Resource limits and requests.
    pub resources: Resources,
    /// CRI-format log file for stdout/stderr.
    pub log_path: PathBuf,
}

impl ContainerSpec {
    /// The runc container id: `<pod-uid>-<name>-<attempt>`.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.pod_uid, self.name, self.attempt)
    }
}

/// Stored description of a created container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// runc container id.
    pub id: String,
    /// Owning pod's UID.
    pub pod_uid: String,
    /// Container name within the pod.
    pub name: String,
    /// Restart attempt.
    pub attempt: u32,
    /// CRI-format log file.
    pub log_path: PathBuf,
    /// When it was created.
    pub created_at: SystemTime,
}

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running with this host pid.
    Running {
        /// Host pid of the container's init.
        pid: i32,
    },
    /// Ended; the shim recorded how.
    Exited(ExitRecord),
    /// runc has no state and the shim left no exit record.
    Unknown,
}

/// A container as seen by [`Runtime::status`] and [`Runtime::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// What the container is.
    pub meta: ContainerMeta,
    /// Where it is in its life.
    pub state: ContainerState,
    /// When it was started, if it was.
    pub started_at: Option<SystemTime>,
}

/// Output of [`Runtime::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code of the process.
    pub exit_code: i32,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

/// A command started by [`Runtime::exec_process`]: `runc exec` with its
/// pipes. Dropping it kills the command if it still runs.
#[derive(Debug)]
pub struct ExecProcess {
    /// The `runc exec` process; its pipes are the command's.
    pub child: tokio::process::Child,
    pid_file: PathBuf,
}

impl ExecProcess {
    /// Whether the command started (runc wrote its pid): false after an
    /// exit means runc failed and its stderr says why.
    pub fn started(&self) -> bool {
        self.pid_file.exists()
    }

    /// The path runc writes the command's host pid to once it started.
    pub fn pid_file(&self) -> &Path {
        &self.pid_file
    }

    /// Kills the command (runc exec does not pass SIGKILL on) and runc.
    pub fn kill(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        let _ = fs::remove_file(&self.pid_file);
    }
}

#[derive(Deserialize)]
struct RuncState {
    status: String,
    pid: i32,
}

/// Runs containers under runc with per-container shims.
#[derive(Debug, Clone)]
pub struct Runtime {
    cfg: RuntimeConfig,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RuntimeError {
    let path = path.to_owned();
    move |source| RuntimeError::Io { op, path, source }
}

fn docker_default_caps() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

impl Runtime {
    /// Opens the runtime on `cfg.state_dir`, creating it if needed.
    pub fn new(cfg: RuntimeConfig) -> Result<Self, RuntimeError> {
        for dir in [cfg.state_dir.join("containers"), cfg.state_dir.join("runc")] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(Self { cfg })
    }

    /// The configuration this runtime was opened with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("containers").join(id)
    }

    fn runc_root(&self) -> PathBuf {
        self.cfg.state_dir.join("runc")
    }

    /// The cgroup path (relative to each hierarchy) of pod `uid`.
    pub fn pod_cgroup(&self, pod_uid: &str) -> String {
        format!("{}/pod{pod_uid}", self.cfg.cgroup_parent.trim_matches('/'))
    }

    /// Builds the OCI runtime spec for `spec`.
    pub fn oci_spec(&self, spec: &ContainerSpec) -> Result<Spec, RuntimeError> {
        let id = spec.id();
        let spec_err = |source| RuntimeError::Spec {
            id: id.clone(),
            source,
        };
        let caps = docker_default_caps();
        let process = ProcessBuilder::default()
            .terminal(false)
            .args(spec.args.clone())
            .env(spec.env.clone())
            .cwd(spec.cwd.clone().unwrap_or_else(|| "/".to_owned()))
            .user(
                UserBuilder::default()
                    .uid(spec.uid)
                    .gid(spec.gid)
                    .build()
                    .map_err(spec_err)?,
            )
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .effective(caps.clone())
                    .permitted(caps)
                    .build()
                    .map_err(spec_err)?,
            )
            .no_new_privileges(true)
            .build()
            .map_err(spec_err)?;

        let mut mounts: Vec<Mount> = get_default_mounts()
            .into_iter()
            .map(|mut m| {
                // The cgroup tree is visible read-only, as with Docker.
                if m.destination() == Path::new("/sys/fs/cgroup") {
                    m.set_options(Some(vec![
                        "nosuid".into(),
                        "noexec".into(),
                        "nodev".into(),
                        "relatime".into(),
                        "ro".into(),
                    ]));
                }
                m
            })
            .collect();
        for bind in &spec.mounts {
            let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
            if bind.read_only {
                options.push("ro".to_owned());
            }
            mounts.push(
                MountBuilder::default()
                    .destination(bind.destination.clone())
                    .typ("bind")
                    .source(bind.source.clone())
                    .options(options)
                    .build()
                    .map_err(spec_err)?,
            );
        }

        let ns = |typ, path: Option<&Path>| {
            let b = LinuxNamespaceBuilder::default().typ(typ);
            match path {
                Some(p) => b.path(p.to_owned()).build(),
                None => b.build(),
            }
        };
        let namespaces = vec![
            ns(LinuxNamespaceType::Mount, None).map_err(spec_err)?,
            ns(LinuxNamespaceType::Pid, None).map_err(spec_err)?,
            ns(LinuxNamespaceType::Uts, None).map_err(spec_err)?,
            ns(LinuxNamespaceType::Ipc, None).map_err(spec_err)?,
            ns(LinuxNamespaceType::Network, Some(&spec.netns)).map_err(spec_err)?,
        ];

        let resources = Self::resources(&id, &spec.resources)?;
        let linux = LinuxBuilder::default()
            .namespaces(namespaces)
            .cgroups_path(PathBuf::from(format!(
                "/{}/{}",
                self.pod_cgroup(&spec.pod_uid),
                spec.name
            )))
            .resources(resources)
            .masked_paths(oci_spec::runtime::get_default_maskedpaths())
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
            .build()
            .map_err(spec_err)?;

        let mut oci = Spec::default();
        oci.set_hostname(Some(spec.hostname.clone()));
        oci.set_process(Some(process));
        oci.set_root(Some(
            RootBuilder::default()
                .path(spec.rootfs.clone())
                .readonly(spec.readonly_rootfs)
                .build()
                .map_err(spec_err)?,
        ));
        oci.set_mounts(Some(mounts));
        oci.set_linux(Some(linux));
        Ok(oci)
    }

    fn resources(
        id: &str,
        res: &Resources,
    ) -> Result<oci_spec::runtime::LinuxResources, RuntimeError> {
        let bad = |what, value: &String| RuntimeError::Quantity {
            id: id.to_owned(),
            what,
            value: value.clone(),
        };
        let spec_err = |source| RuntimeError::Spec {
            id: id.to_owned(),
            source,
        };
        let cpu_limit = res
            .cpu_limit
            .as_ref()
            .map(|v| quantity::cpu_millis(v).ok_or_else(|| bad("cpu", v)))
            .transpose()?;
        // Like the kubelet: a missing request defaults to the limit.
        let cpu_request = res
            .cpu_request
            .as_ref()
            .map(|v| quantity::cpu_millis(v).ok_or_else(|| bad("cpu", v)))
            .transpose()?
            .or(cpu_limit);
        let memory_limit = res
            .memory_limit
            .as_ref()
            .map(|v| quantity::bytes(v).ok_or_else(|| bad("memory", v)))
            .transpose()?;

        let mut cpu = LinuxCpuBuilder::default().shares(milli_to_shares(cpu_request));
        if let Some(milli) = cpu_limit {
            let quota = (milli * CFS_PERIOD_US / 1000).max(1000);
            cpu = cpu
                .quota(i64::try_from(quota).unwrap_or(i64::MAX))
                .period(CFS_PERIOD_US);
        }
        let mut builder = LinuxResourcesBuilder::default().cpu(cpu.build().map_err(spec_err)?);
        if let Some(bytes) = memory_limit {
            builder = builder.memory(
                LinuxMemoryBuilder::default()
                    .limit(i64::try_from(bytes).unwrap_or(i64::MAX))
                    .build()
                    .map_err(spec_err)?,
            );
        }
        builder.build().map_err(spec_err)
    }

    /// Creates container `spec` (bundle, shim, `runc create`); returns its id.
    /// The container's process waits until [`Runtime::start`].
    #[tracing::instrument(skip_all, fields(pod_uid = %spec.pod_uid, container = %spec.name))]
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.launch(spec, false).await
    }

    /// Creates and starts container `spec` in one runc process (`runc run
    /// --detach` under the shim): [`Runtime::create`] then
    /// [`Runtime::start`] without a runc start (a Go process) between.
    #[tracing::instrument(skip_all, fields(pod_uid = %spec.pod_uid, container = %spec.name))]
    pub async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let id = self.launch(spec, true).await?;
        self.record_start(&id)?;
        Ok(id)
    }

    /// Writes the bundle and runs the shim, which runs `runc create`, or
    /// `runc run --detach` when `start`.
    async fn launch(&self, spec: &ContainerSpec, start: bool) -> Result<String, RuntimeError> {
        let began = Instant::now();
        let id = spec.id();
        // Blocking file work (and an fsync) off the async workers: under a
        // burst of pods they are what every other pod waits on.
        let (this, owned) = (self.clone(), spec.clone());
        let args = tokio::task::spawn_blocking(move || this.write_bundle(&owned, start))
            .await
            .map_err(|e| RuntimeError::Io {
                op: "write bundle of",
                path: self.container_dir(&id),
                source: io::Error::other(e),
            })??;
        timing::phase("oci_spec", began);
        let shim_began = Instant::now();
        let out = Command::new(&self.cfg.shim)
            .args(args.to_args())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io_err("run shim", &self.cfg.shim))?;
        if !out.status.success() {
            return Err(RuntimeError::Command {
                op: if start { "run" } else { "create" },
                id,
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let shim_us = shim_began.elapsed().as_micros();
        let (pid, runc_us) = shim::parse_ready(&String::from_utf8_lossy(&out.stdout));
        if let Some(runc_us) = runc_us {
            timing::phase_us(if start { "runc_run" } else { "runc_create" }, runc_us);
            timing::phase_us("shim", shim_us.saturating_sub(runc_us));
        }
        if start {
            tracing::info!(%id, ?pid, "container created and started");
        } else {
            tracing::info!(%id, ?pid, "container created");
        }
        Ok(id)
    }

    /// Writes container `spec`'s bundle (`config.json`), its `meta.json`,
    /// its log directory and cgroup v2 leaf; returns the shim's arguments.
    fn write_bundle(&self, spec: &ContainerSpec, start: bool) -> Result<ShimArgs, RuntimeError> {
        let id = spec.id();
        let dir = self.container_dir(&id);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let oci = self.oci_spec(spec)?;
        let config = dir.join("config.json");
        oci.save(&config).map_err(|source| RuntimeError::Spec {
            id: id.clone(),
            source,
        })?;
        let meta = ContainerMeta {
            id: id.clone(),
            pod_uid: spec.pod_uid.clone(),
            name: spec.name.clone(),
            attempt: spec.attempt,
            log_path: spec.log_path.clone(),
            created_at: SystemTime::now(),
        };
        let meta_path = dir.join("meta.json");
        let data = serde_json::to_vec_pretty(&meta).map_err(|e| RuntimeError::Io {
            op: "encode",
            path: meta_path.clone(),
            source: io::Error::other(e),
        })?;
        crate::files::write_atomic(&meta_path, &data).map_err(io_err("write", &meta_path))?;
        if let Some(parent) = spec.log_path.parent() {
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        let args = ShimArgs {
            id: id.clone(),
            bundle: dir.clone(),
            runc: self.cfg.runc.clone(),
            runc_root: self.runc_root(),
            log: spec.log_path.clone(),
            exit_file: dir.join("exit.json"),
            pid_file: dir.join("pid"),
            start,
            cgroup_procs: self.unified_leaf(&spec.pod_uid, &spec.name)?,
        };
        Ok(args)
    }

    /// On hybrid v1/v2 hosts runc only uses the v1 hierarchies; the shim
    /// puts runc, and so the container's init, into the same path in the
    /// v2 one too (before it runs), so the datapath's cgroup v2 socket
    /// hooks see the container. Creates that leaf; returns its
    /// `cgroup.procs`, or `None` without a v2 hierarchy there.
    fn unified_leaf(&self, pod_uid: &str, name: &str) -> Result<Option<PathBuf>, RuntimeError> {
        let unified = self.cfg.cgroup_root.join("unified");
        if !unified.join("cgroup.procs").exists() {
            return Ok(None);
        }
        let dir = unified.join(self.pod_cgroup(pod_uid)).join(name);
        fs::create_dir_all(&dir).map_err(io_err("create cgroup", &dir))?;
        Ok(Some(dir.join("cgroup.procs")))
    }

    async fn runc(
        &self,
        op: &'static str,
        id: &str,
        args: &[&str],
    ) -> Result<Vec<u8>, RuntimeError> {
        let out = Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(self.runc_root())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(io_err("run runc", &self.cfg.runc))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RuntimeError::Command {
                op,
                id: id.to_owned(),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }

    /// Starts a created container.
    #[tracing::instrument(skip_all, fields(container = %id))]
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let began = Instant::now();
        self.runc("start", id, &["start", id]).await?;
        timing::phase("runc_start", began);
        self.record_start(id)
    }

    /// Records when container `id` started (its `started` file).
    fn record_start(&self, id: &str) -> Result<(), RuntimeError> {
        let began = Instant::now();
        let path = self.container_dir(id).join("started");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // Not synced: after a host crash the container is gone anyway.
        crate::files::write_replace(&path, now.to_string().as_bytes())
            .map_err(io_err("write", &path))?;
        timing::phase("start_record", began);
        Ok(())
    }

    fn meta(&self, id: &str) -> Result<ContainerMeta, RuntimeError> {
        let path = self.container_dir(id).join("meta.json");
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound { id: id.to_owned() });
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Io {
            op: "decode",
            path,
            source: io::Error::other(e),
        })
    }

    fn exit_record(&self, id: &str) -> Result<Option<ExitRecord>, RuntimeError> {
        let path = self.container_dir(id).join("exit.json");
        shim::read_exit(&path).map_err(io_err("read", &path))
    }

    /// The current status of container `id`.
    pub async fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let meta = self.meta(id)?;
        let started_at = fs::read_to_string(self.container_dir(id).join("started"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|n| SystemTime::UNIX_EPOCH + Duration::from_nanos(n));
        let state = if let Some(exit) = self.exit_record(id)? {
            ContainerState::Exited(exit)
        } else if let Some(pid) = started_at.and_then(|_| self.live_pid(id)) {
            // Started, no exit recorded, and its init is alive: running. The
            // shim records every exit, so this needs no `runc state` (a
            // process spawn per container per look).
            ContainerState::Running { pid }
        } else {
            match self.runc("state", id, &["state", id]).await {
                Ok(out) => match serde_json::from_slice::<RuncState>(&out) {
                    Ok(s) if s.status == "created" => ContainerState::Created,
                    Ok(s) if s.status == "running" || s.status == "paused" => {
                        ContainerState::Running { pid: s.pid }
                    }
                    // "stopped" without an exit record: the shim is writing it.
                    _ => ContainerState::Unknown,
                },
                Err(_) => ContainerState::Unknown,
            }
        };
        Ok(ContainerStatus {
            meta,
            state,
            started_at,
        })
    }

    /// The pid of container `id`'s init, if that process is alive.
    fn live_pid(&self, id: &str) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.container_dir(id).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Signal 0 checks existence; a zombie is reaped by the shim soon,
        // which then writes the exit record.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .ok()
            .map(|()| pid)
    }

    /// The containers of pod `pod_uid` with their status.
    pub async fn list_pod(&self, pod_uid: &str) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.list_matching(|id| id.starts_with(&format!("{pod_uid}-")))
            .await
            .map(|all| {
                all.into_iter()
                    .filter(|c| c.meta.pod_uid == pod_uid)
                    .collect()
            })
    }

    /// Every container in the state directory with its status.
    pub async fn list(&self) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.list_matching(|_| true).await
    }

    async fn list_matching(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let dir = self.cfg.state_dir.join("containers");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !wanted(&id) {
                continue;
            }
            match self.status(&id).await {
                Ok(s) => out.push(s),
                // Half-created (no meta yet) or removed meanwhile.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        Ok(out)
    }

    /// Sends `signal` (e.g. `"TERM"`, `"KILL"`) to the container's init.
    #[tracing::instrument(skip_all, fields(container = %id, signal))]
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        match self.runc("kill", id, &["kill", id, signal]).await {
            Ok(_) => Ok(()),
            // Already gone: nothing to signal.
            Err(_) if self.exit_record(id)?.is_some() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for the container to exit.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<ExitRecord>, RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exit_record(id)? {
                return Ok(Some(exit));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop: SIGTERM, wait up to `grace`, then SIGKILL.
    #[tracing::instrument(skip_all, fields(container = %id, grace_secs = grace.as_secs()))]
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<ExitRecord, RuntimeError> {
        if let Some(exit) = self.exit_record(id)? {
            return Ok(exit);
        }
        if !grace.is_zero() {
            self.kill(id, "TERM").await?;
            if let Some(exit) = self.wait(id, grace).await? {
                return Ok(exit);
            }
            tracing::info!("grace period over, killing");
        }
        self.kill(id, "KILL").await?;
        let timeout = Duration::from_secs(10);
        self.wait(id, timeout)
            .await?
            .ok_or_else(|| RuntimeError::Timeout {
                op: "stop",
                id: id.to_owned(),
                timeout,
            })
    }

    /// Runs `argv` in the running container; returns its exit code and output.
    #[tracing::instrument(skip_all, fields(container = %id))]
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let child = Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(self.runc_root())
            .arg("exec")
            .arg(id)
            .args(argv)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(timeout, child)
            .await
            .map_err(|_| RuntimeError::Timeout {
                op: "exec in",
                id: id.to_owned(),
                timeout,
            })?
            .map_err(io_err("run runc", &self.cfg.runc))?;
        let exit_code = out.status.code().unwrap_or(-1);
        Ok(ExecOutput {
            exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Starts `argv` in the running container with its output piped (and
    /// its input, if `stdin`), for `kubectl exec`. runc's own errors (a
    /// command not in the image) arrive on the same stderr before the
    /// process exists: [`ExecProcess::started`] tells them apart.
    #[tracing::instrument(skip_all, fields(container = %id))]
    pub fn exec_process(
        &self,
        id: &str,
        argv: &[String],
        stdin: bool,
        stdout: bool,
    ) -> Result<ExecProcess, RuntimeError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = self.container_dir(id);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound { id: id.to_owned() });
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid_file = dir.join(format!("exec-{}-{n}.pid", std::process::id()));
        let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let child = Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(self.runc_root())
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .args(argv)
            .stdin(piped(stdin))
            .stdout(piped(stdout))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err("run runc", &self.cfg.runc))?;
        Ok(ExecProcess { child, pid_file })
    }

    /// Force-removes container `id`: kills it, deletes runc state and its
    /// cgroup, and removes its state directory. Missing is fine.
    #[tracing::instrument(skip_all, fields(container = %id))]
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.container_dir(id);
        if let Err(err) = self.runc("delete", id, &["delete", "--force", id]).await {
            // "does not exist" is fine; anything else is reported if runc
            // still knows the container.
            if self.runc("state", id, &["state", id]).await.is_ok() {
                return Err(err);
            }
        }
        let meta = self.meta(id).ok();
        if meta.is_some() && self.exit_record(id)?.is_none() {
            // Let the shim record the exit before its directory goes away.
            let _ = self.wait(id, Duration::from_secs(5)).await?;
        }
        if let Some(meta) = meta {
            // runc removed the v1 leaves; the v2 one is ours (join_unified).
            let leaf = self
                .cfg
                .cgroup_root
                .join("unified")
                .join(self.pod_cgroup(&meta.pod_uid))
                .join(&meta.name);
            match fs::remove_dir(&leaf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(err = %e, path = %leaf.display(), "failed to remove v2 cgroup");
                }
            }
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    /// Whether the memory cgroup OOM killer killed a process of container
    /// `name` of pod `pod_uid` (its cgroup's `oom_kill` count: v1
    /// `memory.oom_control`, v2 `memory.events`). Only meaningful until the
    /// container is removed, which removes its cgroup.
    pub fn oom_killed(&self, pod_uid: &str, name: &str) -> bool {
        let path = format!("{}/{name}", self.pod_cgroup(pod_uid));
        let root = &self.cfg.cgroup_root;
        [
            root.join("memory").join(&path).join("memory.oom_control"),
            root.join(&path).join("memory.events"),
            root.join("unified").join(&path).join("memory.events"),
        ]
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .any(|text| oom_kills(&text) > 0)
    }

    /// runc container ids known to runc's state directory.
    pub fn runc_ids(&self) -> Result<Vec<String>, RuntimeError> {
        let root = self.runc_root();
        let mut ids = Vec::new();
        for entry in fs::read_dir(&root).map_err(io_err("list", &root))? {
            let entry = entry.map_err(io_err("list", &root))?;
            ids.extend(entry.file_name().to_str().map(str::to_owned));
        }
        ids.sort();
        Ok(ids)
    }
}

/// The `oom_kill N` count of a `memory.oom_control` or `memory.events` file.
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

/// CPU request in millicores to cgroup v1 shares (kubelet's `MilliCPUToShares`).
fn milli_to_shares(milli: Option<u64>) -> u64 {
    match milli {
        None | Some(0) => 2,
        Some(m) => (m * 1024 / 1000).clamp(2, 262_144),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(dir: &Path) -> Runtime {
        Runtime::new(RuntimeConfig {
            state_dir: dir.to_owned(),
            runc: "/usr/sbin/runc".into(),
            shim: "/bin/false".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: "skep/n1".into(),
        })
        .expect("runtime in tempdir")
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            pod_uid: "uid1".into(),
            name: "app".into(),
            attempt: 0,
            rootfs: "/rootfs".into(),
            readonly_rootfs: false,
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["A=1".into()],
            cwd: None,
            uid: 1000,
            gid: 1000,
            hostname: "web-0".into(),
            netns: "/run/skep/n1/netns/uid1".into(),
            mounts: vec![BindMount {
                source: "/x/hosts".into(),
                destination: "/etc/hosts".into(),
                read_only: true,
            }],
            resources: Resources {
                cpu_limit: Some("500m".into()),
                cpu_request: Some("250m".into()),
                memory_limit: Some("64Mi".into()),
            },
            log_path: "/x/app/0.log".into(),
        }
    }

    #[test]
    fn oci_spec_carries_everything() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let rt = runtime(dir.path());
        let oci = rt.oci_spec(&spec())?;
        let v = serde_json::to_value(&oci)?;
        assert_eq!(v["hostname"], "web-0");
        assert_eq!(v["process"]["args"][2], "echo hi");
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["root"]["path"], "/rootfs");
        assert_eq!(v["linux"]["cgroupsPath"], "/skep/n1/poduid1/app");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 256);
        let namespaces = v["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            namespaces
                .iter()
                .any(|n| n["type"] == "network" && n["path"] == "/run/skep/n1/netns/uid1")
        );
        assert_eq!(namespaces.len(), 5);
        let mounts = v["mounts"].as_array().cloned().unwrap_or_default();
        for dest in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(mounts.iter().any(|m| m["destination"] == dest), "{dest}");
        }
        let hosts = mounts.iter().find(|m| m["destination"] == "/etc/hosts");
        assert_eq!(
            hosts.map(|m| m["options"].clone()),
            Some(serde_json::json!(["rbind", "rprivate", "ro"]))
        );
        Ok(())
    }

    #[test]
    fn bad_quantity_is_an_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut s = spec();
        s.resources.memory_limit = Some("lots".into());
        assert!(matches!(
            runtime(dir.path()).oci_spec(&s),
            Err(RuntimeError::Quantity { what: "memory", .. })
        ));
        Ok(())
    }

    #[test]
    fn oom_kills_are_read_from_v1_and_v2_files() -> anyhow::Result<()> {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
        let dir = tempfile::tempdir()?;
        let mut cfg = runtime(dir.path()).config().clone();
        cfg.cgroup_root = dir.path().join("cg");
        cfg.state_dir = dir.path().join("state");
        let rt = Runtime::new(cfg)?;
        let leaf = dir.path().join("cg/memory/skep/n1/poduid1/app");
        fs::create_dir_all(&leaf)?;
        fs::write(
            leaf.join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 0\n",
        )?;
        assert!(!rt.oom_killed("uid1", "app"));
        fs::write(
            leaf.join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 1\n",
        )?;
        assert!(rt.oom_killed("uid1", "app"));
        assert!(!rt.oom_killed("uid1", "other"));
        Ok(())
    }

    #[test]
    fn shares_follow_kubelet() {
        assert_eq!(milli_to_shares(None), 2);
        assert_eq!(milli_to_shares(Some(1)), 2);
        assert_eq!(milli_to_shares(Some(1000)), 1024);
        assert_eq!(milli_to_shares(Some(100)), 102);
    }
}
