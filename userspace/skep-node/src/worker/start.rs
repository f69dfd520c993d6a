//! Starting a container: image pull, its spec, `runtime.run`; and the
//! probes of running containers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use skep_image::{ErrorKind, PullPolicy, RegistryCredentials};
use skep_runtime::runtime::{BindMount, ContainerSpec, ContainerState, Resources};
use skep_runtime::{ContainerRuntime, PodNetworks};
use tokio::time::Instant;

use super::Worker;
use super::ctr::arm_probes;
use crate::podspec;
use crate::probe::{ProbeResult, ProbeState};
use crate::view::ViewReader;

/// Pull credentials from the pod's `imagePullSecrets` (dockerconfigjson).
fn credentials(view: &ViewReader, pod: &Pod) -> RegistryCredentials {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sources = view.sources(&ns);
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

impl<R: ContainerRuntime, N: PodNetworks> Worker<R, N> {
    /// Pulls the image and creates and starts a new attempt of container `i`.
    #[expect(
        clippy::too_many_lines,
        reason = "one linear sequence: pull, config, rootfs, create, start"
    )]
    pub(super) async fn start(&mut self, init: bool, i: usize, pod: &Pod) {
        let parts = Arc::clone(&self.parts);
        let spec = self.ctr(init, i).spec.clone();
        let image_ref = spec.image.clone().unwrap_or_default();
        let policy = PullPolicy::from_k8s(spec.image_pull_policy.as_deref(), &image_ref);
        let present = parts.images.present(&image_ref);
        if policy == PullPolicy::Always || !present {
            parts.events.record(
                pod,
                false,
                "Pulling",
                format!("Pulling image {image_ref:?}"),
            );
        }
        let creds = credentials(&parts.view, pod);
        let image = match parts.images.ensure(&image_ref, policy, &creds).await {
            Ok(image) => image,
            Err(err) => {
                let reason = match err.kind() {
                    ErrorKind::InvalidReference => "InvalidImageName",
                    ErrorKind::NeverPull => "ErrImageNeverPull",
                    _ => "ErrImagePull",
                };
                parts.events.record(
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
            parts.events.record(
                pod,
                false,
                "Pulled",
                format!("Successfully pulled image {image_ref:?}"),
            );
        }
        self.ctr(init, i).pull_failed = false;
        let image_id = format!("{}@{}", image.reference, image.manifest_digest);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sources = parts.view.sources(&ns);
        let pod_dir = parts.pod_dir(&self.uid);
        let ip = self.ip.map(|i| i.to_string()).unwrap_or_default();
        let volumes = self.volumes.clone().unwrap_or_default();
        let service_vars = {
            let view = parts.view.snapshot();
            podspec::service_env(&podspec::linked_services(
                pod,
                view.services.values().map(AsRef::as_ref),
            ))
        };
        let config = (|| {
            let env = podspec::environment(
                pod,
                &spec,
                &image.config.env,
                &sources,
                &service_vars,
                (&ip, &parts.cfg.node_ip.to_string()),
            )?;
            let mounts = podspec::volume_mounts(&spec, &volumes)?;
            Ok::<_, podspec::PodSpecError>((env, mounts))
        })();
        let (env, mut mounts) = match config {
            Ok(v) => v,
            Err(err) => {
                parts
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
            if let Err(err) = parts.runtime.remove(&old).await {
                tracing::warn!(%err, container = %old, "failed to remove previous attempt");
            }
            if let Some(dir) = old.strip_prefix(&format!("{}-", self.uid)) {
                parts.images.unmount(&pod_dir.join("containers").join(dir));
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
        let rootfs = match parts.images.prepare_rootfs(&image, &cdir) {
            Ok(rootfs) => rootfs,
            Err(err) => {
                self.fail(init, i, "CreateContainerError", err);
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
            netns: self.netns.clone().unwrap_or_default(),
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
        let created = match parts.runtime.run(&cspec).await {
            Ok(id) => id,
            Err(err) => {
                parts
                    .events
                    .record(pod, true, "Failed", format!("Error: {err}"));
                // `runc run` ran and the process could not be started
                // (say, its command is not in the image): the shim recorded
                // that as the attempt's exit, which the next refresh reports
                // as a StartError and restarts with back-off, like the
                // kubelet's RunContainerError.
                let id = cspec.id();
                let state = parts.runtime.status(&id).await.map(|s| s.state);
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
        parts.events.record(
            pod,
            false,
            "Created",
            format!("Created container {}", spec.name),
        );
        tracing::debug!(container = %spec.name, "container started");
        parts.events.record(
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

    /// Runs the due probes of running container `i`; returns whether its
    /// liveness probe failed and it was stopped.
    pub(super) async fn probe(&mut self, init: bool, i: usize, pod: &Pod) -> bool {
        let parts = Arc::clone(&self.parts);
        let ip = self.ip.map(IpAddr::V4);
        let c = self.ctr(init, i);
        let Some(id) = c.id.clone() else {
            return false;
        };
        let spec = c.spec.clone();
        if c.init {
            return false;
        }
        // Runs one probe if due; a failure is recorded as upstream words it.
        // Returns whether the probe passes, when it ran.
        let tick = async |probe: Option<&mut ProbeState>, what: &str| {
            let p = probe?;
            let r = p.tick(parts.runtime.as_ref(), &id, &spec, ip).await?;
            if let ProbeResult::Failure(m) = &r {
                parts
                    .events
                    .record(pod, true, "Unhealthy", format!("{what} probe failed: {m}"));
            }
            Some(p.passing)
        };
        if !c.started {
            if tick(c.startup.as_mut(), "Startup").await == Some(true) {
                c.started = true;
            }
            if c.readiness.is_none() {
                c.ready = c.started;
            }
            return false;
        }
        if let Some(passing) = tick(c.readiness.as_mut(), "Readiness").await {
            c.ready = passing;
        }
        if tick(c.liveness.as_mut(), "Liveness").await == Some(false) {
            parts.events.record(
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
            let _ = parts
                .runtime
                .stop(&id, Duration::from_secs(u64::try_from(grace).unwrap_or(0)))
                .await;
            return true;
        }
        false
    }
}
