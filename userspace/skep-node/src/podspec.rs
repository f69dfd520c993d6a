//! Turning a Pod's container spec into what the runtime runs: argv (command
//! and args merged with the image's Entrypoint/Cmd like Kubernetes), the
//! environment (literals, ConfigMap/Secret keys, `envFrom`, the downward
//! API), and the pod's volumes as host directories to bind-mount
//! (persistentVolumeClaim volumes: the hostPath or local directory of the
//! PersistentVolume the claim is bound to).
//!
//! Everything here is a pure function of the pod, the image config and the
//! node's copy of ConfigMaps, Secrets, claims and volumes, so it is tested
//! without root.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use skep_runtime::runtime::BindMount;

use crate::atomic_writer;
use crate::projected::{self, Tokens};

/// Why a container's configuration could not be built
/// (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum PodSpecError {
    /// A referenced ConfigMap or Secret (or a key in it) is missing.
    #[error("failed to find {what}")]
    Missing {
        /// `configmap "x"`, `key "k" in secret "y"`.
        what: String,
    },
    /// A volume's source is missing or not ready (the kubelet's
    /// `FailedMount`: the pod waits in ContainerCreating and is retried).
    #[error("failed to set up volume {volume:?}: {reason}")]
    Mount {
        /// The volume name.
        volume: String,
        /// What is missing, as the kubelet says it (`configmap "x" not found`).
        reason: String,
    },
    /// A volume of a kind this node does not support.
    #[error("failed to set up volume {volume:?}: {why}")]
    Unsupported {
        /// The volume name.
        volume: String,
        /// What is not supported.
        why: String,
    },
    /// A volume mount names no volume of the pod.
    #[error("failed to find volume {volume:?} for mount {mount_path:?}")]
    NoVolume {
        /// The volume name.
        volume: String,
        /// The mount path.
        mount_path: String,
    },
    /// Writing volume content failed.
    #[error("failed to {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The ConfigMaps, Secrets and PersistentVolumeClaims of a namespace the
/// node knows, by name, and the PersistentVolumes it knows.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// ConfigMaps by name.
    pub config_maps: HashMap<String, ConfigMap>,
    /// Secrets by name.
    pub secrets: HashMap<String, Secret>,
    /// PersistentVolumeClaims by name.
    pub claims: HashMap<String, PersistentVolumeClaim>,
    /// PersistentVolumes by name.
    pub volumes: HashMap<String, PersistentVolume>,
}

impl Sources {
    /// ConfigMap `name`'s keys (`data` and `binaryData`), if the node has it.
    pub(crate) fn config_map_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.config_map(name).ok()
    }

    /// Secret `name`'s keys, if the node has it.
    pub(crate) fn secret_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secret(name).ok()
    }

    fn config_map(&self, name: &str) -> Result<BTreeMap<String, Vec<u8>>, PodSpecError> {
        let cm = self
            .config_maps
            .get(name)
            .ok_or_else(|| PodSpecError::Missing {
                what: format!("configmap {name:?}"),
            })?;
        let mut out: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        out.extend(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone())),
        );
        Ok(out)
    }

    fn secret(&self, name: &str) -> Result<BTreeMap<String, Vec<u8>>, PodSpecError> {
        let s = self
            .secrets
            .get(name)
            .ok_or_else(|| PodSpecError::Missing {
                what: format!("secret {name:?}"),
            })?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        out.extend(
            s.string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
        );
        Ok(out)
    }
}

/// The process argv: `command` replaces the image Entrypoint, `args`
/// replaces its Cmd (and drops Cmd when `command` is given).
pub fn argv(container: &Container, entrypoint: &[String], cmd: &[String]) -> Vec<String> {
    match (&container.command, &container.args) {
        (Some(command), args) if !command.is_empty() => {
            let mut v = command.clone();
            v.extend(args.iter().flatten().cloned());
            v
        }
        (_, Some(args)) if !args.is_empty() => {
            let mut v = entrypoint.to_vec();
            v.extend(args.iter().cloned());
            v
        }
        _ => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

/// Expands `$(VAR)` references in `s` from `env` (`$$` escapes), like Kubernetes.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = env.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API value of `field_path` for `pod` (with its IP).
fn field_ref(pod: &Pod, pod_ip: &str, host_ip: &str, field_path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => Some(pod_ip.to_owned()),
        "status.hostIP" => Some(host_ip.to_owned()),
        p => {
            let key = p
                .strip_prefix("metadata.labels['")
                .or_else(|| p.strip_prefix("metadata.annotations['"))?
                .strip_suffix("']")?;
            let map = if p.starts_with("metadata.labels") {
                meta.labels.as_ref()
            } else {
                meta.annotations.as_ref()
            };
            map?.get(key).cloned()
        }
    }
}

/// The Services whose variables every container gets, as the kubelet's
/// `getServiceEnvVarMap` picks them: the `kubernetes` Service of `default`
/// always, and with `enableServiceLinks` (the default) every Service of
/// the pod's namespace; only Services with a cluster IP.
pub fn linked_services<'a>(
    pod: &Pod,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<&'a Service> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut by_name: BTreeMap<&str, &Service> = BTreeMap::new();
    for svc in services {
        let ip = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let svc_ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        if svc_ns == "default" && name == "kubernetes" {
            by_name.entry(name).or_insert(svc);
        } else if svc_ns == ns && links {
            by_name.insert(name, svc);
        }
    }
    by_name.into_values().collect()
}

/// Upstream's `envvars.FromServices`: `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT` (first port), `<NAME>_SERVICE_PORT_<PORTNAME>`,
/// and the Docker link variables `<NAME>_PORT`, `<NAME>_PORT_<p>_<PROTO>`
/// with `_PROTO`, `_PORT`, `_ADDR`.
pub fn service_env(services: &[&Service]) -> Vec<(String, String)> {
    let var = |s: &str| s.replace('-', "_").to_uppercase();
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else {
            continue;
        };
        let prefix = var(svc.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        let port_var = format!("{prefix}_SERVICE_PORT");
        out.push((port_var.clone(), first.port.to_string()));
        for p in ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{port_var}_{}", var(name)), p.port.to_string()));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            let lower = protocol.to_lowercase();
            let host_port = if ip.contains(':') {
                format!("[{ip}]:{}", p.port)
            } else {
                format!("{ip}:{}", p.port)
            };
            if i == 0 {
                out.push((format!("{prefix}_PORT"), format!("{lower}://{host_port}")));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            out.push((port_prefix.clone(), format!("{lower}://{host_port}")));
            out.push((format!("{port_prefix}_PROTO"), lower));
            out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

/// The container's environment as `NAME=value`: the image's, then
/// `envFrom`, then `env` (later wins), with `$(VAR)` expanded (Service
/// variables too), then the Service variables ([`service_env`]) the
/// container does not set itself, as the kubelet appends them.
pub fn environment(
    pod: &Pod,
    container: &Container,
    image_env: &[String],
    sources: &Sources,
    service_vars: &[(String, String)],
    (pod_ip, host_ip): (&str, &str),
) -> Result<Vec<String>, PodSpecError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |env: &mut BTreeMap<String, String>, k: String, v: String| {
        if !env.contains_key(&k) {
            order.push(k.clone());
        }
        env.insert(k, v);
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(&mut env, k.to_owned(), v.to_owned());
    }
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    set(&mut env, "HOSTNAME".into(), hostname);
    // What the image says, for Service variables to override like the
    // container's own (the runtime lays the container's over the image's).
    let image_only = env.clone();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name) {
                Ok(d) => d,
                Err(_) if r.optional == Some(true) => BTreeMap::new(),
                Err(e) => return Err(e),
            }
        } else if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name) {
                Ok(d) => d,
                Err(_) if r.optional == Some(true) => BTreeMap::new(),
                Err(e) => return Err(e),
            }
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            set(
                &mut env,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match sources.config_map(&r.name).map(|d| d.get(&r.key).cloned()) {
                    Ok(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
                    Ok(None) | Err(_) if optional => None,
                    Ok(None) => {
                        return Err(PodSpecError::Missing {
                            what: format!("key {:?} in configmap {:?}", r.key, r.name),
                        });
                    }
                    Err(e) => return Err(e),
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match sources.secret(&r.name).map(|d| d.get(&r.key).cloned()) {
                    Ok(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
                    Ok(None) | Err(_) if optional => None,
                    Ok(None) => {
                        return Err(PodSpecError::Missing {
                            what: format!("key {:?} in secret {:?}", r.key, r.name),
                        });
                    }
                    Err(e) => return Err(e),
                }
            } else if let Some(f) = &from.field_ref {
                field_ref(pod, pod_ip, host_ip, &f.field_path)
            } else {
                None
            }
        } else {
            let mut lookup: BTreeMap<String, String> = service_vars.iter().cloned().collect();
            lookup.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(expand(var.value.as_deref().unwrap_or(""), &lookup))
        };
        if let Some(v) = value {
            set(&mut env, var.name.clone(), v);
        }
    }
    for (k, v) in service_vars {
        let own =
            image_only.get(k) != env.get(k) || container.env.iter().flatten().any(|e| e.name == *k);
        if !env.contains_key(k) {
            order.push(k.clone());
            env.insert(k.clone(), v.clone());
        } else if !own {
            env.insert(k.clone(), v.clone());
        }
    }
    Ok(order
        .iter()
        .filter_map(|k| env.get(k).map(|v| format!("{k}={v}")))
        .collect())
}

/// Writes `files` (relative path → content) under `dir` with `mode`,
/// replacing what was there.
fn write_files(dir: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<(), PodSpecError> {
    let io_err = |op, path: &Path| {
        let path = path.to_owned();
        move |source| PodSpecError::Io { op, path, source }
    };
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io_err("clear", dir))?;
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    for (rel, data, mode) in files {
        let rel = rel.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        fs::write(&path, data).map_err(io_err("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

/// Keyed content projected as files: `items` pick and rename keys, else
/// every key becomes a file; modes from the item, else `default_mode`.
fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    default_mode: Option<i32>,
    volume: &str,
) -> Result<Vec<(String, Vec<u8>, u32)>, PodSpecError> {
    let default_mode = u32::try_from(default_mode.unwrap_or(0o644)).unwrap_or(0o644);
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|item| {
                let data = data.get(&item.key).ok_or_else(|| PodSpecError::Missing {
                    what: format!("key {:?} for volume {volume:?}", item.key),
                })?;
                let mode = item
                    .mode
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(default_mode);
                Ok((item.path.clone(), data.clone(), mode))
            })
            .collect(),
        _ => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), default_mode))
            .collect()),
    }
}

/// The host directory behind claim `claim_name` of `namespace`: the
/// hostPath or local path of the PersistentVolume it is bound to. A claim
/// that is missing, not bound yet, or bound to a volume the node does not
/// have (yet) is a [`PodSpecError::Mount`], like the kubelet's `FailedMount`.
pub fn claim_path(
    volume: &str,
    claim_name: &str,
    namespace: &str,
    sources: &Sources,
) -> Result<PathBuf, PodSpecError> {
    let mount = |reason: String| PodSpecError::Mount {
        volume: volume.to_owned(),
        reason,
    };
    let claim = sources
        .claims
        .get(claim_name)
        .ok_or_else(|| mount(format!("persistentvolumeclaim {claim_name:?} not found")))?;
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let pv_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty() && phase == Some("Bound"))
        .ok_or_else(|| mount(format!("PVC {namespace}/{claim_name} is not bound")))?;
    let pv = sources
        .volumes
        .get(pv_name)
        .ok_or_else(|| mount(format!("persistentvolume {pv_name:?} not found")))?;
    let spec = pv.spec.as_ref();
    let claimed_by_other = spec.and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
        r.uid.is_some() && claim.metadata.uid.is_some() && r.uid != claim.metadata.uid
    });
    if claimed_by_other {
        return Err(mount(format!(
            "persistentvolume {pv_name:?} is bound to a different claim"
        )));
    }
    if let Some(hp) = spec.and_then(|s| s.host_path.as_ref()) {
        let path = PathBuf::from(&hp.path);
        if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
            fs::create_dir_all(&path).map_err(|source| PodSpecError::Io {
                op: "create",
                path: path.clone(),
                source,
            })?;
        } else if !path.exists() && hp.type_.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(mount(format!(
                "hostPath type check failed: {} does not exist",
                hp.path
            )));
        }
        return Ok(path);
    }
    if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
        let path = PathBuf::from(&local.path);
        if !path.is_dir() {
            return Err(mount(format!(
                "path {:?} of local volume {pv_name:?} does not exist",
                local.path
            )));
        }
        return Ok(path);
    }
    Err(PodSpecError::Unsupported {
        volume: volume.to_owned(),
        why: format!("persistentvolume {pv_name:?} is neither hostPath nor local"),
    })
}

/// What projected and downward API volumes are made of besides the pod and
/// its ConfigMaps and Secrets.
#[derive(Debug, Clone, Copy)]
pub struct VolumeFacts<'a> {
    /// The pod's ServiceAccount tokens ([`projected::token_keys`]).
    pub tokens: &'a Tokens,
    /// The node's allocatable resources (limits containers do not set).
    pub allocatable: &'a BTreeMap<String, String>,
}

/// (Re)writes the pod's `projected` and `downwardAPI` volumes under
/// `volumes_dir` from what their sources say now; each is swapped in
/// atomically and only when its content changed. Returns the names of the
/// volumes that changed.
pub fn refresh_volumes(
    pod: &Pod,
    volumes_dir: &Path,
    sources: &Sources,
    facts: &VolumeFacts<'_>,
) -> Result<Vec<String>, PodSpecError> {
    let mut changed = Vec::new();
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(payload) = projected::payload(pod, vol, sources, facts.tokens, facts.allocatable)
        else {
            continue;
        };
        let dir = volumes_dir.join(&vol.name);
        let wrote = atomic_writer::write(&dir, &payload?).map_err(|e| PodSpecError::Mount {
            volume: vol.name.clone(),
            reason: e.to_string(),
        })?;
        if wrote {
            changed.push(vol.name.clone());
        }
    }
    Ok(changed)
}

/// Makes every volume of `pod` a host directory (under `volumes_dir` for
/// emptyDir, configMap, secret, projected and downwardAPI: the last two
/// written atomically, see [`refresh_volumes`]; a configMap or secret directory that
/// exists already is kept as it is, so containers that run with it — after
/// an agent restart too — keep what they see); returns them by volume name.
/// A missing source is a [`PodSpecError::Mount`].
pub fn prepare_volumes(
    pod: &Pod,
    volumes_dir: &Path,
    sources: &Sources,
    facts: &VolumeFacts<'_>,
) -> Result<HashMap<String, PathBuf>, PodSpecError> {
    let mut out = HashMap::new();
    let io_err = |op, path: &Path| {
        let path = path.to_owned();
        move |source| PodSpecError::Io { op, path, source }
    };
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = volumes_dir.join(&vol.name);
        let mount = |reason: &str| PodSpecError::Mount {
            volume: vol.name.clone(),
            reason: reason.to_owned(),
        };
        let path = if let Some(payload) =
            projected::payload(pod, vol, sources, facts.tokens, facts.allocatable)
        {
            atomic_writer::write(&dir, &payload?).map_err(|e| mount(&e.to_string()))?;
            dir
        } else if vol.empty_dir.is_some() {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            dir
        } else if let Some(hp) = &vol.host_path {
            let path = PathBuf::from(&hp.path);
            if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                fs::create_dir_all(&path).map_err(io_err("create", &path))?;
            } else if !path.exists() && hp.type_.as_deref().is_some_and(|t| !t.is_empty()) {
                return Err(mount(&format!(
                    "hostPath type check failed: {} does not exist",
                    hp.path
                )));
            }
            path
        } else if let Some(cm) = &vol.config_map {
            if !dir.is_dir() {
                let data = match sources.config_map(&cm.name) {
                    Ok(d) => d,
                    Err(_) if cm.optional == Some(true) => BTreeMap::new(),
                    Err(_) => return Err(mount(&format!("configmap {:?} not found", cm.name))),
                };
                let files = project(&data, cm.items.as_ref(), cm.default_mode, &vol.name)
                    .map_err(|e| mount(&format!("configmap {:?}: {e}", cm.name)))?;
                write_files(&dir, &files)?;
            }
            dir
        } else if let Some(s) = &vol.secret {
            if !dir.is_dir() {
                let name = s.secret_name.clone().unwrap_or_default();
                let data = match sources.secret(&name) {
                    Ok(d) => d,
                    Err(_) if s.optional == Some(true) => BTreeMap::new(),
                    Err(_) => return Err(mount(&format!("secret {name:?} not found"))),
                };
                let files = project(&data, s.items.as_ref(), s.default_mode, &vol.name)
                    .map_err(|e| mount(&format!("secret {name:?}: {e}")))?;
                write_files(&dir, &files)?;
            }
            dir
        } else if let Some(pvc) = &vol.persistent_volume_claim {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            claim_path(&vol.name, &pvc.claim_name, ns, sources)?
        } else {
            return Err(PodSpecError::Unsupported {
                volume: vol.name.clone(),
                why: "only emptyDir, hostPath, configMap, secret, projected, downwardAPI and persistentVolumeClaim volumes are supported".into(),
            });
        };
        out.insert(vol.name.clone(), path);
    }
    Ok(out)
}

/// The container's volume mounts as bind mounts.
pub fn volume_mounts<S: std::hash::BuildHasher>(
    container: &Container,
    volumes: &HashMap<String, PathBuf, S>,
) -> Result<Vec<BindMount>, PodSpecError> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let source = volumes.get(&m.name).ok_or_else(|| PodSpecError::NoVolume {
                volume: m.name.clone(),
                mount_path: m.mount_path.clone(),
            })?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => source.join(sub.trim_start_matches('/')),
                None => source.clone(),
            };
            Ok(BindMount {
                source,
                destination: PathBuf::from(&m.mount_path),
                read_only: m.read_only == Some(true),
            })
        })
        .collect()
}

/// The process uid/gid: `securityContext.runAsUser/runAsGroup` (container,
/// then pod), else the image's numeric `User`, else root.
pub fn user(pod: &Pod, container: &Container, image_user: Option<&str>) -> (u32, u32) {
    let (mut uid, mut gid) = (0u32, 0u32);
    if let Some(u) = image_user {
        let (u, g) = u.split_once(':').unwrap_or((u, ""));
        if let Ok(u) = u.parse() {
            uid = u;
            gid = u;
        }
        if let Ok(g) = g.parse() {
            gid = g;
        }
    }
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let pick = |c: Option<i64>, p: Option<i64>| c.or(p).and_then(|v| u32::try_from(v).ok());
    if let Some(u) = pick(
        sc.and_then(|s| s.run_as_user),
        pod_sc.and_then(|s| s.run_as_user),
    ) {
        uid = u;
    }
    if let Some(g) = pick(
        sc.and_then(|s| s.run_as_group),
        pod_sc.and_then(|s| s.run_as_group),
    ) {
        gid = g;
    }
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector,
        PodSpec, SecretEnvSource, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn no_facts() -> VolumeFacts<'static> {
        static TOKENS: std::sync::LazyLock<Tokens> = std::sync::LazyLock::new(Tokens::new);
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        VolumeFacts {
            tokens: &TOKENS,
            allocatable: &NONE,
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn argv_merges_like_kubernetes() {
        let (ep, cmd) = (s(&["/ep"]), s(&["a"]));
        let mut c = Container::default();
        assert_eq!(argv(&c, &ep, &cmd), s(&["/ep", "a"]));
        c.args = Some(s(&["b"]));
        assert_eq!(argv(&c, &ep, &cmd), s(&["/ep", "b"]));
        c.command = Some(s(&["/bin/sh", "-c"]));
        assert_eq!(argv(&c, &ep, &cmd), s(&["/bin/sh", "-c", "b"]));
        c.args = None;
        assert_eq!(argv(&c, &ep, &cmd), s(&["/bin/sh", "-c"]));
    }

    #[test]
    fn expand_references() {
        let env: BTreeMap<_, _> = [("A".to_owned(), "1".to_owned())].into();
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
    }

    fn fixture() -> (Pod, Sources) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("team".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                volumes: Some(vec![Volume {
                    name: "creds".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("db".into()),
                        items: Some(vec![KeyToPath {
                            key: "password".into(),
                            path: "sub/pw".into(),
                            mode: Some(0o600),
                        }]),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                }]),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some([("color".to_owned(), "blue".to_owned())].into()),
                ..ConfigMap::default()
            },
        );
        sources.secrets.insert(
            "db".into(),
            Secret {
                data: Some([("password".to_owned(), ByteString(b"hunter2".to_vec()))].into()),
                ..Secret::default()
            },
        );
        (pod, sources)
    }

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "one fixture container with every kind of env source"
    )]
    fn environment_from_all_sources() -> anyhow::Result<()> {
        let (pod, sources) = fixture();
        let var = |name: &str, from: EnvVarSource| EnvVar {
            name: name.into(),
            value_from: Some(from),
            ..EnvVar::default()
        };
        let c = Container {
            env_from: Some(vec![EnvFromSource {
                prefix: Some("S_".into()),
                secret_ref: Some(SecretEnvSource {
                    name: "db".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "LIT".into(),
                    value: Some("x-$(PATH)".into()),
                    ..EnvVar::default()
                },
                var(
                    "COLOR",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "color".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                var(
                    "PW",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "db".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                var(
                    "POD",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.namespace".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                var(
                    "IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
            ]),
            ..Container::default()
        };
        let env = environment(
            &pod,
            &c,
            &s(&["PATH=/bin"]),
            &sources,
            &[],
            ("10.0.0.5", "1.2.3.4"),
        )?;
        assert_eq!(
            env,
            s(&[
                "PATH=/bin",
                "HOSTNAME=web-1",
                "S_password=hunter2",
                "LIT=x-/bin",
                "COLOR=blue",
                "PW=hunter2",
                "POD=team",
                "IP=10.0.0.5"
            ])
        );
        // A missing key is a configuration error.
        let mut bad = c.clone();
        bad.env = Some(vec![var(
            "X",
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "cfg".into(),
                    key: "nope".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            },
        )]);
        assert!(matches!(
            environment(&pod, &bad, &[], &sources, &[], ("", "")),
            Err(PodSpecError::Missing { .. })
        ));
        Ok(())
    }

    #[test]
    fn secret_volume_items_and_mounts() -> anyhow::Result<()> {
        let (pod, sources) = fixture();
        let dir = tempfile::tempdir()?;
        let vols = prepare_volumes(&pod, dir.path(), &sources, &no_facts())?;
        let file = dir.path().join("creds/sub/pw");
        assert_eq!(fs::read(&file)?, b"hunter2");
        assert_eq!(fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
        let c = Container {
            volume_mounts: Some(vec![VolumeMount {
                name: "creds".into(),
                mount_path: "/etc/creds".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        let mounts = volume_mounts(&c, &vols)?;
        assert_eq!(mounts[0].source, dir.path().join("creds"));
        assert!(mounts[0].read_only);
        Ok(())
    }

    #[test]
    fn claims_resolve_to_their_bound_host_path_volume() -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::{
            HostPathVolumeSource, ObjectReference, PersistentVolumeClaimSpec,
            PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec,
        };
        let (mut pod, mut sources) = fixture();
        let host = tempfile::tempdir()?;
        if let Some(spec) = pod.spec.as_mut() {
            spec.volumes = Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "claim".into(),
                    read_only: None,
                }),
                ..Volume::default()
            }]);
        }
        let dir = tempfile::tempdir()?;
        let reason = |r: Result<HashMap<String, PathBuf>, PodSpecError>| match r {
            Err(PodSpecError::Mount { reason, .. }) => reason,
            other => format!("not a mount error: {other:?}"),
        };
        assert_eq!(
            reason(prepare_volumes(&pod, dir.path(), &sources, &no_facts())),
            "persistentvolumeclaim \"claim\" not found"
        );
        let mut claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("claim".into()),
                namespace: Some("team".into()),
                uid: Some("c-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec::default()),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Pending".into()),
                ..PersistentVolumeClaimStatus::default()
            }),
        };
        sources.claims.insert("claim".into(), claim.clone());
        assert_eq!(
            reason(prepare_volumes(&pod, dir.path(), &sources, &no_facts())),
            "PVC team/claim is not bound"
        );
        claim.spec = Some(PersistentVolumeClaimSpec {
            volume_name: Some("pv1".into()),
            ..PersistentVolumeClaimSpec::default()
        });
        claim.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            ..PersistentVolumeClaimStatus::default()
        });
        sources.claims.insert("claim".into(), claim);
        assert_eq!(
            reason(prepare_volumes(&pod, dir.path(), &sources, &no_facts())),
            "persistentvolume \"pv1\" not found"
        );
        let mut pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                host_path: Some(HostPathVolumeSource {
                    path: host.path().to_string_lossy().into_owned(),
                    type_: None,
                }),
                claim_ref: Some(ObjectReference {
                    uid: Some("c-1".into()),
                    ..ObjectReference::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: None,
        };
        sources.volumes.insert("pv1".into(), pv.clone());
        let vols = prepare_volumes(&pod, dir.path(), &sources, &no_facts())?;
        assert_eq!(vols.get("data"), Some(&host.path().to_owned()));
        // A volume claimed by another claim is not mounted.
        if let Some(r) = pv.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
            r.uid = Some("c-2".into());
        }
        sources.volumes.insert("pv1".into(), pv);
        assert!(
            reason(prepare_volumes(&pod, dir.path(), &sources, &no_facts()))
                .contains("different claim")
        );
        Ok(())
    }

    #[test]
    fn a_missing_config_map_volume_is_a_mount_error() -> anyhow::Result<()> {
        let (mut pod, sources) = fixture();
        if let Some(spec) = pod.spec.as_mut() {
            spec.volumes = Some(vec![Volume {
                name: "conf".into(),
                config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                    name: "absent".into(),
                    ..Default::default()
                }),
                ..Volume::default()
            }]);
        }
        let dir = tempfile::tempdir()?;
        match prepare_volumes(&pod, dir.path(), &sources, &no_facts()) {
            Err(PodSpecError::Mount { volume, reason }) => {
                assert_eq!(volume, "conf");
                assert_eq!(reason, "configmap \"absent\" not found");
            }
            other => anyhow::bail!("expected a mount error, got {other:?}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod service_env_tests {
    use k8s_openapi::api::core::v1::{PodSpec, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: n.map(str::to_owned),
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn the_kubernetes_service_always_and_links_of_the_namespace() -> Result<(), PodSpecError> {
        let services = [
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443)],
            ),
            svc("team", "my-db", "10.96.0.7", &[(None, 5432)]),
            svc("team", "headless", "None", &[(None, 80)]),
            svc("other", "web", "10.96.0.8", &[(None, 80)]),
        ];
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("team".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            ..Pod::default()
        };
        let vars = service_env(&linked_services(&pod, &services));
        let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "KUBERNETES_SERVICE_HOST",
                "KUBERNETES_SERVICE_PORT",
                "KUBERNETES_SERVICE_PORT_HTTPS",
                "KUBERNETES_PORT",
                "KUBERNETES_PORT_443_TCP",
                "KUBERNETES_PORT_443_TCP_PROTO",
                "KUBERNETES_PORT_443_TCP_PORT",
                "KUBERNETES_PORT_443_TCP_ADDR",
                "MY_DB_SERVICE_HOST",
                "MY_DB_SERVICE_PORT",
                "MY_DB_PORT",
                "MY_DB_PORT_5432_TCP",
                "MY_DB_PORT_5432_TCP_PROTO",
                "MY_DB_PORT_5432_TCP_PORT",
                "MY_DB_PORT_5432_TCP_ADDR",
            ]
        );
        assert_eq!(vars[0].1, "10.96.0.1");
        assert_eq!(vars[1].1, "443");
        assert_eq!(vars[4].1, "tcp://10.96.0.1:443");
        // Without service links only the API server's.
        if let Some(spec) = pod.spec.as_mut() {
            spec.enable_service_links = Some(false);
        }
        let vars = service_env(&linked_services(&pod, &services));
        assert_eq!(vars.len(), 8);
        // The container's own value wins; `$(VAR)` sees Service variables.
        let c = Container {
            env: Some(vec![
                k8s_openapi::api::core::v1::EnvVar {
                    name: "KUBERNETES_SERVICE_PORT".into(),
                    value: Some("1".into()),
                    ..Default::default()
                },
                k8s_openapi::api::core::v1::EnvVar {
                    name: "API".into(),
                    value: Some("$(KUBERNETES_SERVICE_HOST)".into()),
                    ..Default::default()
                },
            ]),
            ..Container::default()
        };
        let env = environment(&pod, &c, &[], &Sources::default(), &vars, ("", ""))?;
        assert!(env.contains(&"KUBERNETES_SERVICE_PORT=1".to_owned()));
        assert!(env.contains(&"API=10.96.0.1".to_owned()));
        assert!(env.contains(&"KUBERNETES_SERVICE_HOST=10.96.0.1".to_owned()));
        assert_eq!(
            env.iter()
                .filter(|e| e.starts_with("KUBERNETES_SERVICE_PORT="))
                .count(),
            1
        );
        Ok(())
    }
}
