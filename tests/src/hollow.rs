//! Hollow nodes, like kubemark's: Node objects registered through the API
//! and a stand-in kubelet (a thread of the test) that keeps their
//! heartbeats up and plays the pods the scheduler binds to them. Nothing
//! runs: a bound pod is reported Running with a made-up IP, Ready unless
//! its annotation [`READY`] says `"false"`, and a pod being deleted is
//! finished off (deleted with grace period 0), as a kubelet does once its
//! containers stopped. [`HollowNodes::kill`] stops a node's kubelet
//! mid-test: no more heartbeats, its pods left as they are.
//!
//! The kubelet talks HTTPS to the API with the admin client certificate,
//! not through kubectl, so a few nodes cost the machine next to nothing.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::cluster::Server;

/// Pod annotation the hollow kubelet obeys: `"false"` keeps the pod
/// Running but not Ready (its readiness probe "fails").
pub const READY: &str = "e2e.skep.io/ready";

/// How often the hollow kubelet looks at pods.
const POD_SYNC: Duration = Duration::from_millis(250);
/// How often it posts a node heartbeat (the Ready condition's
/// `lastHeartbeatTime`, which the node lifecycle controller watches).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A node to register: name, labels, taints and capacity.
#[derive(Debug, Clone)]
pub struct HollowNode {
    name: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Value>,
    cpu: String,
    memory: String,
    pods: u32,
}

impl HollowNode {
    /// A node with 4 CPUs, 8 GiB and room for 110 pods, labelled with its
    /// hostname like a kubelet labels its node.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let labels = [
            ("kubernetes.io/hostname", name),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            name: name.to_owned(),
            labels,
            taints: Vec::new(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: 110,
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a taint (`effect` `NoSchedule`, `PreferNoSchedule` or `NoExecute`).
    #[must_use]
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints
            .push(json!({"key": key, "value": value, "effect": effect}));
        self
    }

    /// Sets the allocatable CPU and memory (`"2"`, `"4Gi"`).
    #[must_use]
    pub fn resources(mut self, cpu: &str, memory: &str) -> Self {
        cpu.clone_into(&mut self.cpu);
        memory.clone_into(&mut self.memory);
        self
    }

    /// The node's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn object(&self, index: usize) -> Value {
        let resources =
            json!({"cpu": self.cpu, "memory": self.memory, "pods": self.pods.to_string()});
        let now = rfc3339(SystemTime::now());
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {"taints": self.taints},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "addresses": [
                    {"type": "InternalIP", "address": node_ip(index)},
                    {"type": "Hostname", "address": self.name},
                ],
                "conditions": [ready_condition(&now, &now)],
            },
        })
    }
}

fn ready_condition(heartbeat: &str, since: &str) -> Value {
    json!({
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "hollow kubelet is posting ready status",
        "lastHeartbeatTime": heartbeat,
        "lastTransitionTime": since,
    })
}

/// A documentation-range address per node (nothing routes there).
fn node_ip(index: usize) -> String {
    format!("192.0.2.{}", index % 250 + 1)
}

/// What the hollow kubelet knows of one node.
#[derive(Debug)]
struct NodeState {
    index: usize,
    alive: bool,
    ready_since: String,
    last_heartbeat: Option<Instant>,
    next_pod_ip: u32,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<String, NodeState>,
    /// Pod uid → the IP it was given.
    pod_ips: HashMap<String, String>,
    last_error: Option<String>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A `skep server` with short node-monitor periods, hollow nodes on it,
/// and its data in a temp dir. Dropped in that order: kubelet, server, dir.
#[derive(Debug)]
pub struct HollowCluster {
    /// The hollow nodes' kubelet.
    pub nodes: HollowNodes,
    /// The server, with kubectl.
    pub server: Server,
    _dir: tempfile::TempDir,
}

/// The grace period after which a silent node is `NotReady`, in these clusters.
pub const GRACE_PERIOD: &str = "4s";

impl HollowCluster {
    /// Starts a server whose node lifecycle controller checks every second
    /// and gives up on a node after [`GRACE_PERIOD`], and registers `nodes`.
    pub fn start(nodes: &[HollowNode]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let server = Server::start_with(
            dir.path(),
            &[
                "--node-monitor-grace-period",
                GRACE_PERIOD,
                "--node-monitor-period",
                "1s",
            ],
        )?;
        let hollow = HollowNodes::start(&server)?;
        for node in nodes {
            hollow.add(&server, node)?;
        }
        Ok(Self {
            nodes: hollow,
            server,
            _dir: dir,
        })
    }

    /// Registers another node.
    pub fn add(&self, node: &HollowNode) -> anyhow::Result<()> {
        self.nodes.add(&self.server, node)
    }

    /// [`Server::wait_for`], with the hollow kubelet's last error too.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        crate::wait::until(what, timeout, check, || {
            format!(
                "hollow kubelet: {}\nserver log:\n{}",
                self.nodes.last_error().unwrap_or_else(|| "no error".into()),
                self.server.log_tail()
            )
        })
    }
}

/// The hollow kubelet of every hollow node of one server; stops when dropped.
#[derive(Debug)]
pub struct HollowNodes {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HollowNodes {
    /// Starts the hollow kubelet against `server` (no nodes yet).
    pub fn start(server: &Server) -> anyhow::Result<Self> {
        let api = Api::from_kubeconfig(server)?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("hollow-kubelet".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(err) => {
                            lock(&state).last_error = Some(format!("no runtime: {err}"));
                            return;
                        }
                    };
                    runtime.block_on(kubelet(&api, &state, &stop));
                })?
        };
        Ok(Self {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Registers `node` (`kubectl create` of the Node, Ready) and starts
    /// keeping its heartbeat and its pods.
    pub fn add(&self, server: &Server, node: &HollowNode) -> anyhow::Result<()> {
        let index = lock(&self.state).nodes.len();
        let object = node.object(index);
        server.kubectl_ok_with(&["create", "-f", "-"], &object.to_string())?;
        let since = object["status"]["conditions"][0]["lastTransitionTime"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        lock(&self.state).nodes.insert(
            node.name.clone(),
            NodeState {
                index,
                alive: true,
                ready_since: since,
                last_heartbeat: Some(Instant::now()),
                next_pod_ip: 0,
            },
        );
        Ok(())
    }

    /// Stops `node`'s kubelet, as if the machine died: no heartbeats, and
    /// its pods are no longer looked after.
    pub fn kill(&self, node: &str) -> anyhow::Result<()> {
        match lock(&self.state).nodes.get_mut(node) {
            Some(n) => {
                n.alive = false;
                Ok(())
            }
            None => bail!("no hollow node {node}"),
        }
    }

    /// The last error the hollow kubelet met, for failure messages.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        lock(&self.state).last_error.clone()
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The kubelet loop: heartbeats, pod status and finished deletions.
async fn kubelet(api: &Api, state: &Mutex<State>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if let Err(err) = heartbeats(api, state).await {
            lock(state).last_error = Some(format!("{err:#}"));
        }
        if let Err(err) = sync_pods(api, state).await {
            lock(state).last_error = Some(format!("{err:#}"));
        }
        tokio::time::sleep(POD_SYNC).await;
    }
}

async fn heartbeats(api: &Api, state: &Mutex<State>) -> anyhow::Result<()> {
    let due: Vec<(String, String)> = {
        let state = lock(state);
        state
            .nodes
            .iter()
            .filter(|(_, n)| n.alive && n.last_heartbeat.is_none_or(|t| t.elapsed() >= HEARTBEAT))
            .map(|(name, n)| (name.clone(), n.ready_since.clone()))
            .collect()
    };
    for (name, since) in due {
        let now = rfc3339(SystemTime::now());
        let patch = json!({"status": {"conditions": [ready_condition(&now, &since)]}});
        api.merge_patch(&format!("/api/v1/nodes/{name}/status"), &patch)
            .await
            .with_context(|| format!("heartbeat of node {name}"))?;
        if let Some(n) = lock(state).nodes.get_mut(&name) {
            n.last_heartbeat = Some(Instant::now());
        }
    }
    Ok(())
}

async fn sync_pods(api: &Api, state: &Mutex<State>) -> anyhow::Result<()> {
    let pods = api.get("/api/v1/pods").await?;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let (uid, ns, name) = (
            pod["metadata"]["uid"].as_str().unwrap_or_default(),
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let node_index = {
            let mut state = lock(state);
            let Some(n) = state.nodes.get_mut(node).filter(|n| n.alive) else {
                continue;
            };
            let index = n.index;
            let seq = n.next_pod_ip;
            let ip = pod["status"]["podIP"].as_str().map(str::to_owned);
            if !state.pod_ips.contains_key(uid) {
                let ip = ip.unwrap_or_else(|| {
                    format!("10.{}.{}.{}", 200 + index % 50, seq / 250, seq % 250 + 1)
                });
                state.pod_ips.insert(uid.to_owned(), ip);
                if let Some(n) = state.nodes.get_mut(node) {
                    n.next_pod_ip += 1;
                }
            }
            index
        };
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            // The containers "stopped": finish the graceful deletion.
            let options = json!({
                "apiVersion": "v1", "kind": "DeleteOptions",
                "gracePeriodSeconds": 0, "preconditions": {"uid": uid},
            });
            api.delete(&path, &options)
                .await
                .with_context(|| format!("finishing deletion of pod {ns}/{name}"))?;
            continue;
        }
        if matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let ready = pod["metadata"]["annotations"][READY].as_str() != Some("false");
        let running = pod["status"]["phase"].as_str() == Some("Running");
        let ready_now = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if running && ready_now == ready {
            continue;
        }
        let ip = lock(state).pod_ips.get(uid).cloned().unwrap_or_default();
        let status = pod_status(pod, &ip, &node_ip(node_index), ready);
        api.merge_patch(&format!("{path}/status"), &json!({"status": status}))
            .await
            .with_context(|| format!("status of pod {ns}/{name}"))?;
    }
    let mut state = lock(state);
    let live: std::collections::HashSet<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["uid"].as_str())
        .collect();
    state.pod_ips.retain(|uid, _| live.contains(uid.as_str()));
    Ok(())
}

/// A Running pod's status, Ready or not.
fn pod_status(pod: &Value, ip: &str, host_ip: &str, ready: bool) -> Value {
    let now = rfc3339(SystemTime::now());
    let started = pod["status"]["startTime"]
        .as_str()
        .map_or_else(|| now.clone(), str::to_owned);
    let flag = if ready { "True" } else { "False" };
    let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastTransitionTime": now, "lastProbeTime": null});
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            json!({
                "name": name,
                "image": c["image"],
                "imageID": "",
                "containerID": format!("hollow://{uid}/{name}"),
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    json!({
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", flag),
            condition("Ready", flag),
        ],
        "containerStatuses": containers,
    })
}

/// `2026-11-24T09:30:00Z`: RFC 3339 in UTC, seconds like Kubernetes' `Time`.
fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The API over HTTPS with the admin kubeconfig's certificates.
#[derive(Debug)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn from_kubeconfig(server: &Server) -> anyhow::Result<Self> {
        use base64::Engine as _;
        // reqwest is built without a default provider: use ring, like the
        // API server (already installed is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config: Value =
            serde_json::from_str(&server.kubectl_ok(&["config", "view", "--raw", "-o", "json"])?)?;
        let b64 = |v: &Value| -> anyhow::Result<Vec<u8>> {
            Ok(base64::engine::general_purpose::STANDARD
                .decode(v.as_str().context("kubeconfig field missing")?)?)
        };
        let cluster = &config["clusters"][0]["cluster"];
        let user = &config["users"][0]["user"];
        let mut identity = b64(&user["client-certificate-data"])?;
        identity.extend(b64(&user["client-key-data"])?);
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&b64(
                &cluster["certificate-authority-data"],
            )?)?])
            .identity(reqwest::Identity::from_pem(&identity)?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let base = cluster["server"]
            .as_str()
            .context("kubeconfig has no server")?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self { client, base })
    }

    async fn answer(what: &str, resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("{what}: {status}: {body}");
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        Self::answer(&format!("GET {path}"), resp).await
    }

    async fn merge_patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .client
            .patch(format!("{}{path}", self.base))
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .await?;
        Self::answer(&format!("PATCH {path}"), resp).await
    }

    async fn delete(&self, path: &str, options: &Value) -> anyhow::Result<()> {
        let resp = self
            .client
            .delete(format!("{}{path}", self.base))
            .json(options)
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        Self::answer(&format!("DELETE {path}"), resp).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(rfc3339(leap), "2000-02-29T01:01:01Z");
    }
}
