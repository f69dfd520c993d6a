//! One pod's worker: a task driven by the pod's desired state (a watch
//! channel fed by the agent's sync loop). It builds the sandbox, pulls
//! images, runs init containers in order and then the containers, restarts
//! them per `restartPolicy` with CrashLoopBackOff back-off, runs probes,
//! reports status when it changed, and tears the pod down on deletion.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as K8sStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skep_image::{ErrorKind, PullPolicy, RegistryCredentials};
use skep_runtime::runtime::{BindMount, ContainerSpec, ContainerState, Resources};
use skep_runtime::sandbox::write_pod_files;
use tokio::time::Instant;

use crate::agent::{PodHub, unmount_rootfs_all};
use crate::endpoints;
use crate::node_sync::PodSlot;
use crate::podspec;
use crate::probe::{ProbeResult, ProbeState};

/// How often a worker looks at its containers when nothing else happens.
const TICK: Duration = Duration::from_millis(500);

/// How often the same volume set-up failure is recorded again as an event.
const MOUNT_EVENT_EVERY: Duration = Duration::from_secs(10);

fn ts(t: SystemTime) -> Time {
    Time(crate::agent::timestamp(t))
}

/// What the worker tracks of one container.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags of a container's life, as the kubelet keeps them"
)]
struct Ctr {
    spec: Container,
    init: bool,
    id: Option<String>,
    next_attempt: u32,
    restarts: i32,
    running_since: Option<SystemTime>,
    exited: Option<ContainerStateTerminated>,
    last_terminated: Option<ContainerStateTerminated>,
    waiting: Option<(String, String)>,
    backoff: Duration,
    retry_at: Option<Instant>,
    image_id: String,
    done: bool,
    ready: bool,
    started: bool,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    startup: Option<ProbeState>,
    pull_failed: bool,
}

impl Ctr {
    fn new(spec: &Container, init: bool) -> Self {
        Self {
            spec: spec.clone(),
            init,
            id: None,
            next_attempt: 0,
            restarts: 0,
            running_since: None,
            exited: None,
            last_terminated: None,
            waiting: Some(("ContainerCreating".into(), String::new())),
            backoff: Duration::ZERO,
            retry_at: None,
            image_id: String::new(),
            done: false,
            ready: false,
            started: false,
            liveness: None,
            readiness: None,
            startup: None,
            pull_failed: false,
        }
    }

    fn status(&self) -> K8sStatus {
        let state = if let Some((reason, message)) = &self.waiting {
            K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..K8sState::default()
            }
        } else if let Some(t) = &self.exited {
            K8sState {
                terminated: Some(t.clone()),
                ..K8sState::default()
            }
        } else if let Some(since) = self.running_since {
            K8sState {
                running: Some(ContainerStateRunning {
                    started_at: Some(ts(since)),
                }),
                ..K8sState::default()
            }
        } else {
            K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..K8sState::default()
            }
        };
        K8sStatus {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.id.as_ref().map(|id| format!("skep://{id}")),
            restart_count: self.restarts,
            ready: self.ready,
            started: Some(self.started),
            state: Some(state),
            // Waiting to run again (back-off): the exit it waits after is the last state.
            last_state: self
                .exited
                .as_ref()
                .filter(|_| self.waiting.is_some())
                .or(self.last_terminated.as_ref())
                .map(|t| K8sState {
                    terminated: Some(t.clone()),
                    ..K8sState::default()
                }),
            ..K8sStatus::default()
        }
    }
}

/// Pull credentials from the pod's `imagePullSecrets` (dockerconfigjson).
fn credentials(shared: &PodHub, pod: &Pod) -> RegistryCredentials {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sources = shared.view.sources(&ns);
    let mut creds = RegistryCredentials::anonymous();
    for r in pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
    {
        let Some(secret) = sources.secrets.get(&r.name) else {
            continue;
        };
        let Some(data) = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson").or_else(|| d.get(".dockercfg")))
        else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&data.0) else {
            continue;
        };
        let auths = doc.get("auths").unwrap_or(&doc);
        for (registry, entry) in auths.as_object().into_iter().flatten() {
            let mut user = entry["username"].as_str().unwrap_or("").to_owned();
            let mut pass = entry["password"].as_str().unwrap_or("").to_owned();
            if let Some(auth) = entry["auth"].as_str()
                && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth)
                && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
            {
                u.clone_into(&mut user);
                p.clone_into(&mut pass);
            }
            let host = registry
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("");
            creds = creds.with(host, &user, &pass);
        }
    }
    creds
}

/// One pod's worker state.
struct Worker {
    shared: Arc<PodHub>,
    uid: String,
    ip: Option<Ipv4Addr>,
    init: Vec<Ctr>,
    main: Vec<Ctr>,
    start_time: Option<Time>,
    written: Option<PodStatus>,
    conditions: BTreeMap<String, PodCondition>,
    failed_message: Option<String>,
    /// The pod's volumes as host directories, once all could be set up.
    volumes: Option<HashMap<String, PathBuf>>,
    /// The last volume set-up failure and when it was last recorded.
    mount_error: Option<(String, Instant)>,
}

/// Runs pod `uid`'s worker until the pod is deleted or leaves the node.
#[tracing::instrument(skip_all, fields(pod_uid = %uid))]
pub async fn run(shared: Arc<PodHub>, uid: String, mut rx: PodSlot) {
    let Some(first) = rx.borrow().clone() else {
        return;
    };
    let spec = first.spec.clone().unwrap_or_default();
    let mut w = Worker {
        shared: Arc::clone(&shared),
        uid: uid.clone(),
        ip: None,
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Ctr::new(c, true))
            .collect(),
        main: spec.containers.iter().map(|c| Ctr::new(c, false)).collect(),
        start_time: first.status.as_ref().and_then(|s| s.start_time.clone()),
        written: None,
        conditions: BTreeMap::new(),
        failed_message: None,
        volumes: None,
        mount_error: None,
    };
    w.adopt(&first).await;
    tracing::debug!("worker started");
    loop {
        let pod = rx.borrow_and_update().clone();
        let Some(pod) = pod else {
            w.teardown(None, Duration::from_secs(2)).await;
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
                .unwrap_or(30);
            let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            w.teardown(Some(&pod), grace).await;
            return;
        }
        w.step(&pod).await;
        w.report(&pod).await;
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

impl Worker {
    fn all(&mut self) -> impl Iterator<Item = &mut Ctr> {
        self.init.iter_mut().chain(self.main.iter_mut())
    }

    /// Picks up containers and the sandbox an earlier agent left running
    /// (and puts the sandbox back in the routing datapath).
    async fn adopt(&mut self, pod: &Pod) {
        let Ok(list) = self.shared.runtime.list_pod(&self.uid).await else {
            return;
        };
        let uid = self.uid.clone();
        for c in self.all() {
            let latest = list
                .iter()
                .filter(|s| s.meta.pod_uid == uid && s.meta.name == c.spec.name)
                .max_by_key(|s| s.meta.attempt);
            if let Some(s) = latest {
                c.id = Some(s.meta.id.clone());
                c.next_attempt = s.meta.attempt + 1;
                c.restarts = i32::try_from(s.meta.attempt).unwrap_or(i32::MAX);
                c.waiting = None;
                // Probes start over, as they do when a kubelet restarts: a
                // ready container is ready again at its next probe.
                arm_probes(c, Instant::now());
                tracing::info!(container = %s.meta.id, "adopted container");
            }
        }
        if !self.shared.sandboxes.netns_path(&self.uid).exists() {
            return;
        }
        // A restarted agent learns its pod CIDR (and so opens its IPAM) a
        // moment after the first pods arrive: wait for it, or the running
        // sandbox would look missing and be built again over the live one.
        self.shared.wait_for_ipam().await;
        if let Some(ipam) = self.shared.ipam.get()
            && let Ok(Some(ip)) = ipam.get(&self.uid)
        {
            self.ip = Some(ip);
            match self.shared.sandboxes.inspect(&self.uid, ip).await {
                Ok(Some(net)) => self.shared.endpoints.add(&endpoints::pod_name(pod), &net),
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "failed to inspect the adopted sandbox"),
            }
        }
    }

    /// Builds the sandbox (once): IP, netns, veth, hosts, resolv.conf.
    async fn ensure_sandbox(&mut self, pod: &Pod) -> bool {
        if self.ip.is_some() {
            return true;
        }
        self.shared.wait_for_ipam().await;
        let Some(ipam) = self.shared.ipam.get() else {
            return false;
        };
        let ip = match ipam.get(&self.uid) {
            Ok(Some(ip)) => ip,
            _ => match ipam.allocate(&self.uid) {
                Ok(ip) => ip,
                Err(err) => {
                    self.failed_message = Some(err.to_string());
                    return false;
                }
            },
        };
        match self.shared.sandboxes.create(&self.uid, ip).await {
            Ok(net) => self.shared.endpoints.add(&endpoints::pod_name(pod), &net),
            Err(err) => {
                tracing::warn!(%err, "failed to create pod sandbox");
                self.shared
                    .events
                    .record(pod, true, "FailedCreatePodSandBox", format!("{err}"));
                return false;
            }
        }
        let dns = crate::pod_dns::pod_dns(
            pod,
            &skep_dns::ResolvConf::read(std::path::Path::new(crate::dns::NODE_RESOLV_CONF)),
            &crate::pod_dns::ClusterDns {
                nameservers: vec![IpAddr::V4(self.shared.cfg.cluster_dns)],
                domain: self.shared.cfg.cluster_domain.clone(),
            },
        );
        let hostname = pod.metadata.name.clone().unwrap_or_default();
        if let Err(err) = write_pod_files(&self.shared.pod_dir(&self.uid), &hostname, ip, &dns) {
            tracing::warn!(%err, "failed to write pod files");
            return false;
        }
        self.ip = Some(ip);
        tracing::debug!(%ip, "pod sandbox ready");
        true
    }

    /// Sets up the pod's volumes (once). Like the kubelet, a volume whose
    /// source is missing (a ConfigMap, a claim that is not bound) keeps the
    /// whole pod in ContainerCreating with a `FailedMount` event, and is
    /// retried until it appears.
    fn ensure_volumes(&mut self, pod: &Pod) -> bool {
        if self.volumes.is_some() {
            return true;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sources = self.shared.view.sources(&ns);
        let dir = self.shared.pod_dir(&self.uid).join("volumes");
        match podspec::prepare_volumes(pod, &dir, &sources) {
            Ok(v) => {
                self.volumes = Some(v);
                self.mount_error = None;
                true
            }
            Err(err) => {
                let message = match &err {
                    podspec::PodSpecError::Mount { volume, reason } => {
                        format!("MountVolume.SetUp failed for volume {volume:?} : {reason}")
                    }
                    other => format!("MountVolume.SetUp failed: {other}"),
                };
                let due = self
                    .mount_error
                    .as_ref()
                    .is_none_or(|(last, at)| *last != message || at.elapsed() >= MOUNT_EVENT_EVERY);
                if due {
                    tracing::info!(%message, "pod volumes not ready");
                    self.shared
                        .events
                        .record(pod, true, "FailedMount", message.clone());
                    self.mount_error = Some((message, Instant::now()));
                }
                false
            }
        }
    }

    /// One pass over the pod: sandbox, volumes, init containers,
    /// containers, probes.
    async fn step(&mut self, pod: &Pod) {
        if !self.ensure_sandbox(pod).await {
            return;
        }
        if !self.ensure_volumes(pod) {
            return;
        }
        if self.start_time.is_none() {
            self.start_time = Some(Time(crate::agent::now()));
        }
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        // Refresh what the runtime says.
        for i in 0..self.init.len() + self.main.len() {
            self.refresh(i).await;
        }
        // Init containers, in order; a failed one with Never fails the pod.
        for i in 0..self.init.len() {
            if self.init[i].done {
                continue;
            }
            let init_policy = if policy == "Always" {
                "OnFailure"
            } else {
                &policy
            };
            self.drive(true, i, pod, init_policy).await;
            if !self.init[i].done {
                return;
            }
        }
        for i in 0..self.main.len() {
            self.drive(false, i, pod, &policy).await;
        }
    }

    fn ctr(&mut self, init: bool, i: usize) -> &mut Ctr {
        if init {
            &mut self.init[i]
        } else {
            &mut self.main[i]
        }
    }

    /// Reads container `i` (init first, then main) from the runtime.
    async fn refresh(&mut self, i: usize) {
        let (init, idx) = if i < self.init.len() {
            (true, i)
        } else {
            (false, i - self.init.len())
        };
        let shared = Arc::clone(&self.shared);
        let backoff_base = shared.cfg.backoff_base;
        let backoff_max = shared.cfg.backoff_max;
        let c = self.ctr(init, idx);
        let Some(id) = c.id.clone() else {
            return;
        };
        let Ok(status) = shared.runtime.status(&id).await else {
            return;
        };
        match status.state {
            ContainerState::Running { .. } => {
                c.waiting = None;
                c.exited = None;
                c.running_since = status.started_at.or(c.running_since);
            }
            ContainerState::Exited(exit) if c.exited.is_none() => {
                let started = status.started_at.or(c.running_since);
                // The memory cgroup outlives the process until the next
                // attempt removes the container: read it now.
                let oom = shared
                    .runtime
                    .oom_killed(&status.meta.pod_uid, &status.meta.name);
                let (reason, exit_code) = if exit.error.is_some() {
                    // What containerd reports when the process never ran.
                    ("StartError", 128)
                } else if oom {
                    ("OOMKilled", exit.exit_code)
                } else if exit.exit_code == 0 {
                    ("Completed", 0)
                } else {
                    ("Error", exit.exit_code)
                };
                c.exited = Some(ContainerStateTerminated {
                    exit_code,
                    signal: exit.signal,
                    reason: Some(reason.into()),
                    message: exit.error.clone(),
                    started_at: started.map(ts),
                    finished_at: Some(ts(exit.finished_at)),
                    container_id: Some(format!("skep://{id}")),
                });
                c.running_since = None;
                c.waiting = None;
                c.ready = false;
                c.liveness = None;
                c.readiness = None;
                c.startup = None;
                if c.init && exit_code == 0 {
                    c.done = true;
                }
                // A container that ran for a while starts its back-off over.
                let ran = started
                    .and_then(|s| exit.finished_at.duration_since(s).ok())
                    .unwrap_or_default();
                c.backoff = if ran > backoff_max * 2 || c.backoff.is_zero() {
                    backoff_base
                } else {
                    (c.backoff * 2).min(backoff_max)
                };
                c.retry_at = Some(Instant::now() + c.backoff);
                tracing::info!(container = %id, code = exit_code, reason, "container exited");
            }
            _ => {}
        }
    }

    /// Starts, restarts or probes container `i`.
    async fn drive(&mut self, init: bool, i: usize, pod: &Pod, policy: &str) {
        let now = Instant::now();
        let c = self.ctr(init, i);
        let exited_code = c.exited.as_ref().map(|t| t.exit_code);
        match (c.id.is_some(), exited_code) {
            (true, None) => {
                if c.running_since.is_some() {
                    self.probe(init, i, pod).await;
                }
            }
            (true, Some(code)) => {
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if !restart || (c.init && c.done) {
                    return;
                }
                if c.retry_at.is_some_and(|t| now < t) {
                    let msg = format!(
                        "back-off {}s restarting failed container={} pod={}",
                        c.backoff.as_secs(),
                        c.spec.name,
                        pod.metadata.name.as_deref().unwrap_or("")
                    );
                    if c.waiting
                        .as_ref()
                        .is_none_or(|(r, _)| r != "CrashLoopBackOff")
                    {
                        let name = c.spec.name.clone();
                        self.shared.events.record(
                            pod,
                            true,
                            "BackOff",
                            format!("Back-off restarting failed container {name}"),
                        );
                    }
                    let c = self.ctr(init, i);
                    c.waiting = Some(("CrashLoopBackOff".into(), msg));
                    return;
                }
                let c = self.ctr(init, i);
                c.last_terminated = c.exited.take();
                c.restarts += 1;
                self.start(init, i, pod).await;
            }
            (false, _) => {
                if c.retry_at.is_some_and(|t| now < t) {
                    if c.pull_failed {
                        let image = c.spec.image.clone().unwrap_or_default();
                        c.waiting = Some((
                            "ImagePullBackOff".into(),
                            format!("Back-off pulling image {image:?}"),
                        ));
                    }
                    return;
                }
                self.start(init, i, pod).await;
            }
        }
    }

    fn fail(&mut self, init: bool, i: usize, reason: &str, message: String) {
        let base = self.shared.cfg.backoff_base;
        let max = self.shared.cfg.backoff_max;
        let c = self.ctr(init, i);
        c.backoff = if c.backoff.is_zero() {
            base
        } else {
            (c.backoff * 2).min(max)
        };
        c.retry_at = Some(Instant::now() + c.backoff);
        c.waiting = Some((reason.into(), message));
    }

    /// Pulls the image and creates and starts a new attempt of container `i`.
    #[expect(
        clippy::too_many_lines,
        reason = "one linear sequence: pull, config, rootfs, create, start"
    )]
    async fn start(&mut self, init: bool, i: usize, pod: &Pod) {
        let shared = Arc::clone(&self.shared);
        let spec = self.ctr(init, i).spec.clone();
        let image_ref = spec.image.clone().unwrap_or_default();
        let policy = PullPolicy::from_k8s(spec.image_pull_policy.as_deref(), &image_ref);
        let present = shared.images.image(&image_ref).ok().flatten().is_some();
        if policy == PullPolicy::Always || !present {
            shared.events.record(
                pod,
                false,
                "Pulling",
                format!("Pulling image {image_ref:?}"),
            );
        }
        let creds = credentials(&shared, pod);
        let image = match shared.images.ensure_image(&image_ref, policy, &creds).await {
            Ok(image) => image,
            Err(err) => {
                let reason = match err.kind() {
                    ErrorKind::InvalidReference => "InvalidImageName",
                    ErrorKind::NeverPull => "ErrImageNeverPull",
                    _ => "ErrImagePull",
                };
                shared.events.record(
                    pod,
                    true,
                    "Failed",
                    format!("Failed to pull image {image_ref:?}: {err}"),
                );
                self.fail(init, i, reason, err.to_string());
                self.ctr(init, i).pull_failed = true;
                return;
            }
        };
        if policy == PullPolicy::Always || !present {
            shared.events.record(
                pod,
                false,
                "Pulled",
                format!("Successfully pulled image {image_ref:?}"),
            );
        }
        self.ctr(init, i).pull_failed = false;
        let image_id = format!("{}@{}", image.reference, image.manifest_digest);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sources = shared.view.sources(&ns);
        let pod_dir = shared.pod_dir(&self.uid);
        let ip = self.ip.map(|i| i.to_string()).unwrap_or_default();
        let volumes = self.volumes.clone().unwrap_or_default();
        let config = (|| {
            let env = podspec::environment(
                pod,
                &spec,
                &image.config.env,
                &sources,
                &ip,
                &shared.node_ip.to_string(),
            )?;
            let mounts = podspec::volume_mounts(&spec, &volumes)?;
            Ok::<_, podspec::PodSpecError>((env, mounts))
        })();
        let (env, mut mounts) = match config {
            Ok(v) => v,
            Err(err) => {
                shared
                    .events
                    .record(pod, true, "Failed", format!("Error: {err}"));
                self.fail(init, i, "CreateContainerConfigError", err.to_string());
                return;
            }
        };
        let env_map: BTreeMap<String, String> = env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let args: Vec<String> = podspec::argv(&spec, &image.config.entrypoint, &image.config.cmd)
            .iter()
            .map(|a| podspec::expand(a, &env_map))
            .collect();
        for (file, dest) in [
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
            ("hostname", "/etc/hostname"),
        ] {
            // Sandboxes made before /etc/hostname was written lack it.
            if file == "hostname" && !pod_dir.join(file).is_file() {
                continue;
            }
            mounts.push(BindMount {
                source: pod_dir.join(file),
                destination: dest.into(),
                read_only: false,
            });
        }
        // The previous attempt goes: its rootfs and runtime state.
        let old = self.ctr(init, i).id.take();
        if let Some(old) = old {
            if let Err(err) = shared.runtime.remove(&old).await {
                tracing::warn!(%err, container = %old, "failed to remove previous attempt");
            }
            if let Some(dir) = old.strip_prefix(&format!("{}-", self.uid)) {
                let _ = skep_image::unmount_rootfs(&pod_dir.join("containers").join(dir));
            }
        }
        let attempt = self.ctr(init, i).next_attempt;
        // Logs of the current and the previous instance are kept (`kubectl
        // logs --previous`), older ones go, as with the kubelet.
        let log_dir = pod_dir.join("logs").join(&spec.name);
        for (old, path) in skep_runtime::logs::log_files(&log_dir) {
            if old + 1 < attempt {
                let _ = std::fs::remove_file(path);
            }
        }
        let cdir = pod_dir
            .join("containers")
            .join(format!("{}-{attempt}", spec.name));
        let rootfs = match skep_image::prepare_rootfs(&image, &cdir) {
            Ok(m) => m.keep(),
            Err(err) => {
                self.fail(init, i, "CreateContainerError", err.to_string());
                return;
            }
        };
        tracing::debug!(container = %spec.name, "rootfs ready");
        let (uid, gid) = podspec::user(pod, &spec, image.config.user.as_deref());
        let resources = spec.resources.clone().unwrap_or_default();
        let q =
            |m: &Option<
                BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >,
             k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
        let cspec = ContainerSpec {
            pod_uid: self.uid.clone(),
            name: spec.name.clone(),
            attempt,
            rootfs,
            readonly_rootfs: spec
                .security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem)
                == Some(true),
            args,
            env,
            cwd: spec
                .working_dir
                .clone()
                .or(image.config.working_dir.clone()),
            uid,
            gid,
            hostname: pod.metadata.name.clone().unwrap_or_default(),
            netns: shared.sandboxes.netns_path(&self.uid),
            mounts,
            resources: Resources {
                cpu_limit: q(&resources.limits, "cpu"),
                cpu_request: q(&resources.requests, "cpu"),
                memory_limit: q(&resources.limits, "memory"),
            },
            log_path: pod_dir
                .join("logs")
                .join(&spec.name)
                .join(format!("{attempt}.log")),
        };
        self.ctr(init, i).next_attempt = attempt + 1;
        // Created and started in one runc process: nothing runs between.
        let created = match shared.runtime.run(&cspec).await {
            Ok(id) => id,
            Err(err) => {
                shared
                    .events
                    .record(pod, true, "Failed", format!("Error: {err}"));
                // `runc run` ran and the process could not be started
                // (say, its command is not in the image): the shim recorded
                // that as the attempt's exit, which the next refresh reports
                // as a StartError and restarts with back-off, like the
                // kubelet's RunContainerError.
                let id = cspec.id();
                let state = shared.runtime.status(&id).await.map(|s| s.state);
                let recorded = matches!(state, Ok(ContainerState::Exited(_)));
                if recorded {
                    let c = self.ctr(init, i);
                    c.id = Some(id);
                    c.image_id = image_id;
                    c.running_since = None;
                    c.exited = None;
                    c.waiting = Some(("RunContainerError".into(), err.to_string()));
                } else {
                    // Created but not started: the attempt is kept to remove.
                    if matches!(state, Ok(ContainerState::Created)) {
                        self.ctr(init, i).id = Some(id);
                    }
                    self.fail(init, i, "CreateContainerError", err.to_string());
                }
                return;
            }
        };
        shared.events.record(
            pod,
            false,
            "Created",
            format!("Created container {}", spec.name),
        );
        tracing::debug!(container = %spec.name, "container started");
        shared.events.record(
            pod,
            false,
            "Started",
            format!("Started container {}", spec.name),
        );
        let now = Instant::now();
        let c = self.ctr(init, i);
        c.id = Some(created);
        c.image_id = image_id;
        c.waiting = None;
        c.exited = None;
        c.running_since = Some(SystemTime::now());
        arm_probes(c, now);
    }

    /// Runs the due probes of running container `i`.
    async fn probe(&mut self, init: bool, i: usize, pod: &Pod) {
        let shared = Arc::clone(&self.shared);
        let ip = self.ip.map(IpAddr::V4);
        let c = self.ctr(init, i);
        let Some(id) = c.id.clone() else {
            return;
        };
        let spec = c.spec.clone();
        if c.init {
            return;
        }
        if !c.started {
            if let Some(p) = c.startup.as_mut()
                && let Some(r) = p.tick(&shared.runtime, &id, &spec, ip).await
            {
                if let ProbeResult::Failure(m) = &r {
                    shared.events.record(
                        pod,
                        true,
                        "Unhealthy",
                        format!("Startup probe failed: {m}"),
                    );
                }
                if p.passing {
                    c.started = true;
                }
            }
            if c.readiness.is_none() {
                c.ready = c.started;
            }
            return;
        }
        if let Some(p) = c.readiness.as_mut()
            && let Some(r) = p.tick(&shared.runtime, &id, &spec, ip).await
        {
            if let ProbeResult::Failure(m) = &r {
                shared.events.record(
                    pod,
                    true,
                    "Unhealthy",
                    format!("Readiness probe failed: {m}"),
                );
            }
            c.ready = p.passing;
        }
        if let Some(p) = c.liveness.as_mut()
            && let Some(r) = p.tick(&shared.runtime, &id, &spec, ip).await
        {
            if let ProbeResult::Failure(m) = &r {
                shared.events.record(
                    pod,
                    true,
                    "Unhealthy",
                    format!("Liveness probe failed: {m}"),
                );
            }
            if !p.passing {
                shared.events.record(
                    pod,
                    false,
                    "Killing",
                    format!(
                        "Container {} failed liveness probe, will be restarted",
                        spec.name
                    ),
                );
                let grace = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                let _ = shared
                    .runtime
                    .stop(&id, Duration::from_secs(u64::try_from(grace).unwrap_or(0)))
                    .await;
            }
        }
    }

    fn set_condition(&mut self, type_: &str, ok: bool) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry = self
            .conditions
            .entry(type_.to_owned())
            .or_insert_with(|| PodCondition {
                type_: type_.to_owned(),
                status: String::new(),
                ..PodCondition::default()
            });
        if entry.status != status {
            status.clone_into(&mut entry.status);
            entry.last_transition_time = Some(Time(crate::agent::now()));
        }
        entry.clone()
    }

    /// The pod's status as this worker sees it.
    fn status(&mut self, pod: &Pod) -> PodStatus {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let initialized = self.init.iter().all(|c| c.done);
        let init_failed = policy == "Never"
            && self
                .init
                .iter()
                .any(|c| c.exited.as_ref().is_some_and(|t| t.exit_code != 0));
        let all_exited = self.main.iter().all(|c| c.exited.is_some());
        let any_failed = self
            .main
            .iter()
            .any(|c| c.exited.as_ref().is_some_and(|t| t.exit_code != 0));
        let phase = if init_failed || (all_exited && any_failed && policy == "Never") {
            "Failed"
        } else if all_exited && !any_failed && policy != "Always" {
            "Succeeded"
        } else if initialized && self.main.iter().any(|c| c.id.is_some()) {
            "Running"
        } else {
            "Pending"
        };
        let ready = initialized && self.main.iter().all(|c| c.ready);
        let scheduled = self.set_condition("PodScheduled", true);
        let init_c = self.set_condition("Initialized", initialized);
        let cr = self.set_condition("ContainersReady", ready);
        let r = self.set_condition("Ready", ready);
        let ip = self.ip.map(|i| i.to_string());
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![init_c, r, cr, scheduled]),
            host_ip: Some(self.shared.node_ip.to_string()),
            host_ips: Some(vec![HostIP {
                ip: self.shared.node_ip.to_string(),
            }]),
            pod_ip: ip.clone(),
            pod_ips: ip.map(|ip| vec![PodIP { ip }]),
            start_time: self.start_time.clone(),
            qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
            message: self.failed_message.clone(),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(Ctr::status).collect()),
            container_statuses: Some(self.main.iter().map(Ctr::status).collect()),
            ..PodStatus::default()
        }
    }

    /// Writes the status when it changed since the last successful write.
    async fn report(&mut self, pod: &Pod) {
        let status = self.status(pod);
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let mut updated = pod.clone();
        updated.status = Some(status.clone());
        let Ok(body) = serde_json::to_vec(&updated) else {
            return;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.shared.api.update_pod_status(&ns, &name, body).await {
            Ok(_) => {
                tracing::debug!(phase = ?status.phase, "pod status written");
                self.written = Some(status);
            }
            Err(err) => tracing::debug!(%err, "failed to write pod status; retrying"),
        }
    }

    /// Stops everything of the pod and, when the API deleted it, finishes
    /// the deletion.
    async fn teardown(&mut self, deleted: Option<&Pod>, grace: Duration) {
        if let Some(pod) = deleted {
            for c in self.init.iter().chain(&self.main) {
                if c.id.is_some() && c.exited.is_none() {
                    self.shared.events.record(
                        pod,
                        false,
                        "Killing",
                        format!("Stopping container {}", c.spec.name),
                    );
                }
            }
        }
        if let Err(err) = self.shared.remove_pod(&self.uid, grace).await {
            tracing::error!(%err, "failed to remove pod");
        }
        unmount_rootfs_all(&self.shared.pod_dir(&self.uid));
        let Some(pod) = deleted else {
            return;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let body = br#"{"gracePeriodSeconds":0}"#.to_vec();
        for _ in 0..5 {
            match self.shared.api.delete_pod(&ns, &name, body.clone()).await {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::NotFound => break,
                Err(err) => {
                    tracing::warn!(%err, "failed to delete pod; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::info!(pod = %format!("{ns}/{name}"), "pod deleted");
    }
}

/// Sets up `c`'s probes for a container that just started (or was just
/// adopted): not ready until its readiness probe passes, not started until
/// its startup probe does.
fn arm_probes(c: &mut Ctr, now: Instant) {
    let spec = &c.spec;
    c.started = spec.startup_probe.is_none();
    c.ready = false;
    c.liveness = spec
        .liveness_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now, true));
    c.readiness = spec
        .readiness_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now, false));
    c.startup = spec
        .startup_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now, false));
    if c.readiness.is_none() && !c.init {
        c.ready = c.started;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_crashing_container() {
        let mut c = Ctr::new(
            &Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Container::default()
            },
            false,
        );
        assert_eq!(
            c.status()
                .state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref(),
            Some("ContainerCreating")
        );
        c.id = Some("u-app-1".into());
        c.restarts = 1;
        c.waiting = Some(("CrashLoopBackOff".into(), "back-off 10s".into()));
        c.last_terminated = Some(ContainerStateTerminated {
            exit_code: 1,
            reason: Some("Error".into()),
            ..ContainerStateTerminated::default()
        });
        let s = c.status();
        assert_eq!(s.container_id.as_deref(), Some("skep://u-app-1"));
        assert_eq!(s.restart_count, 1);
        assert_eq!(
            s.last_state.and_then(|l| l.terminated).map(|t| t.exit_code),
            Some(1)
        );
    }
}
