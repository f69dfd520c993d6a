//! The pod worker and pod manager over fakes: no root, no runc, no
//! netlink, no registry. Time is tokio's paused clock where back-off
//! matters.

use std::sync::Mutex;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Event, PodStatus};
use serde_json::{Value, json};
use skep_proto::v1::WriteRequest;
use skep_runtime::fake::{Call, FakePodNetworks, FakeRuntime, NetCall};
use skep_runtime::runtime::{ContainerSpec, ExecOutput, Resources};
use skep_runtime::sandbox::PodNetwork;
use tokio::task::JoinHandle;

use super::*;
use crate::images::FakeImages;
use crate::node_sync::Workers;
use crate::pod_network::DatapathEntry;
use crate::view::ViewWriter;

/// Records writes; a status write is stored with the next resourceVersion.
#[derive(Default)]
struct FakeApi {
    writes: Mutex<Vec<WriteRequest>>,
    rv: Mutex<u64>,
    /// Tokens issued so far (`token-N`), when it issues any.
    issued: Mutex<Option<u32>>,
}

impl NodeApi for FakeApi {
    fn write(&self, request: WriteRequest) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        let mut object = request.object.clone();
        if request.subresource == "status" {
            let mut rv = crate::lock(&self.rv);
            *rv += 1000;
            if let Ok(mut pod) = serde_json::from_slice::<Pod>(&object) {
                pod.metadata.resource_version = Some(rv.to_string());
                object = serde_json::to_vec(&pod).unwrap_or_default();
            }
        }
        crate::lock(&self.writes).push(request);
        Box::pin(std::future::ready(Ok(object)))
    }

    fn request_token(
        &self,
        request: skep_proto::v1::TokenRequest,
    ) -> BoxFuture<'_, Result<skep_proto::v1::TokenResponse, tonic::Status>> {
        let mut issued = crate::lock(&self.issued);
        let Some(n) = issued.as_mut() else {
            return Box::pin(std::future::ready(Err(tonic::Status::unimplemented(""))));
        };
        *n += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = skep_proto::v1::TokenResponse {
            token: format!("token-{n}"),
            expiration_unix: i64::try_from(now).unwrap_or(0) + request.expiration_seconds,
        };
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// Records the datapath entries; a removal notes whether the runtime
/// still had containers (it must come after them).
struct FakeDatapath {
    runtime: Arc<FakeRuntime>,
    added: Mutex<Vec<String>>,
    removed: Mutex<Vec<(String, bool)>>,
}

impl DatapathEntry for FakeDatapath {
    fn add(&self, name: &str, _net: &PodNetwork) {
        crate::lock(&self.added).push(name.to_owned());
    }

    fn remove(&self, uid: &str, _ip: Option<Ipv4Addr>) {
        let containers_left =
            futures::executor::block_on(self.runtime.list_pod(uid)).map_or(true, |l| !l.is_empty());
        crate::lock(&self.removed).push((uid.to_owned(), containers_left));
    }

    fn reconcile(&self, _allocated: &BTreeMap<Ipv4Addr, String>) {}
}

type Parts = PodParts<FakeRuntime, FakePodNetworks>;

/// One node: the worker's parts over fakes, the view's writer, the pod
/// manager (`Workers`) spawning real workers, and the PLEG and status
/// manager tasks.
struct Node {
    _dir: tempfile::TempDir,
    rt: Arc<FakeRuntime>,
    net: Arc<PodNetworkManager<FakePodNetworks>>,
    api: Arc<FakeApi>,
    images: Arc<FakeImages>,
    datapath: Arc<FakeDatapath>,
    parts: Arc<Parts>,
    writer: ViewWriter,
    workers: Workers,
    rev: u64,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Node {
    fn new(rt: FakeRuntime, net: FakePodNetworks) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("resolv.conf"), "nameserver 10.0.0.1\n")?;
        let rt = Arc::new(rt);
        let datapath = Arc::new(FakeDatapath {
            runtime: Arc::clone(&rt),
            added: Mutex::default(),
            removed: Mutex::default(),
        });
        let network = Arc::new(PodNetworkManager::new(
            Arc::clone(&datapath) as Arc<dyn DatapathEntry>
        ));
        network.open(net);
        let api = Arc::new(FakeApi::default());
        let images = Arc::new(FakeImages::default());
        let mut writer = ViewWriter::new("n1");
        writer.begin_snapshot();
        writer.synced(1);
        let parts = Arc::new(PodParts {
            cfg: WorkerConfig {
                node_ip: Ipv4Addr::new(192, 168, 0, 10),
                cluster_dns: Ipv4Addr::new(10, 96, 0, 10),
                cluster_domain: "cluster.local".into(),
                node_resolv_conf: dir.path().join("resolv.conf"),
                pods_dir: dir.path().join("pods"),
                backoff_base: Duration::from_secs(10),
                backoff_max: Duration::from_mins(5),
            },
            runtime: Arc::clone(&rt),
            network: Arc::clone(&network),
            images: Arc::clone(&images) as Arc<dyn ImageSource>,
            status: StatusManager::new(),
            api: Arc::clone(&api) as Arc<dyn NodeApi>,
            events: EventRecorder::new(Arc::clone(&api) as Arc<dyn NodeApi>, "n1"),
            view: writer.reader(),
            pleg: Pleg::new(),
            cgroups: Arc::new(NoCgroups),
            tokens: TokenManager::new(Arc::clone(&api) as Arc<dyn NodeApi>),
        });
        let tasks = vec![
            tokio::spawn(crate::pleg::run(
                parts.pleg.clone(),
                Arc::clone(&rt),
                crate::pleg::RELIST_PERIOD,
            )),
            tokio::spawn(
                parts
                    .status
                    .clone()
                    .run(Arc::clone(&api) as Arc<dyn NodeApi>, writer.reader()),
            ),
        ];
        let spawn_parts = Arc::clone(&parts);
        let workers = Workers::new(Box::new(move |uid, rx| {
            tokio::spawn(run(Arc::clone(&spawn_parts), uid, rx))
        }));
        Ok(Self {
            _dir: dir,
            rt,
            net: network,
            api,
            images,
            datapath,
            parts,
            writer,
            workers,
            rev: 1,
            tasks,
        })
    }

    /// Pod `u1` (`a/p`) on this node, with `spec` merged into its spec.
    fn pod(spec: &Value) -> Value {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "a", "uid": "u1", "resourceVersion": "1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
        });
        for (k, v) in spec.as_object().into_iter().flatten() {
            pod["spec"][k] = v.clone();
        }
        pod
    }

    /// The API server stores `pod` (a new revision) and node-sync hands it over.
    fn put(&mut self, pod: &Value) {
        self.rev += 1;
        let mut pod = pod.clone();
        pod["metadata"]["resourceVersion"] = json!(self.rev.to_string());
        let body = serde_json::to_vec(&pod).unwrap_or_default();
        let applied = self.writer.apply(self.rev, "Pod", false, &body);
        if let Some(uid) = applied.local_pod {
            let pods = self.parts.view.pods();
            self.workers.hand_off(&uid, pods.get(&uid));
        }
    }

    /// The pod is gone from the API server.
    fn delete(&mut self, pod: &Value) {
        self.rev += 1;
        let body = serde_json::to_vec(pod).unwrap_or_default();
        self.writer.apply(self.rev, "Pod", true, &body);
        self.workers.hand_off("u1", None);
    }

    fn status(&self) -> Option<PodStatus> {
        self.parts.status.written("u1")
    }

    fn container(&self) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
        self.status()?.container_statuses?.into_iter().next()
    }

    fn events(&self) -> Vec<String> {
        crate::lock(&self.api.writes)
            .iter()
            .filter(|w| w.kind == "Event")
            .filter_map(|w| serde_json::from_slice::<Event>(&w.object).ok())
            .filter_map(|e| e.reason)
            .collect()
    }

    fn deletes(&self) -> usize {
        crate::lock(&self.api.writes)
            .iter()
            .filter(|w| w.kind == "Pod" && w.subresource.is_empty())
            .count()
    }

    fn creates(&self) -> Vec<String> {
        self.rt
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Create(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Waits (in tokio time) until `cond` holds, at most `limit`.
    async fn wait(&self, what: &str, limit: Duration, cond: impl Fn(&Self) -> bool) {
        let end = Instant::now() + limit;
        while !cond(self) {
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; status {:?}; runtime calls {:?}",
                self.status(),
                self.rt.calls()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn running_ready(n: &Node) -> bool {
    n.status().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn ready_condition(s: &PodStatus) -> Option<String> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn networks() -> anyhow::Result<FakePodNetworks> {
    Ok(FakePodNetworks::new("10.244.1.0/29", "/run/skep-test")?)
}

#[tokio::test(start_paused = true)]
async fn a_pod_starts_running_with_an_ip_and_ready() -> anyhow::Result<()> {
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    n.put(&Node::pod(&json!({})));
    n.wait("Running and Ready", Duration::from_secs(10), running_ready)
        .await;
    let s = n.status().unwrap_or_default();
    assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.2"));
    assert_eq!(s.host_ip.as_deref(), Some("192.168.0.10"));
    assert_eq!(ready_condition(&s).as_deref(), Some("True"));
    let c = n.container().unwrap_or_default();
    assert_eq!(c.container_id.as_deref(), Some("skep://u1-app-0"));
    assert!(c.ready);
    assert!(c.state.and_then(|s| s.running).is_some());
    assert_eq!(n.creates(), ["u1-app-0"]);
    let spec = n.rt.spec("u1-app-0").unwrap_or_else(|| panic!("no spec"));
    assert_eq!(
        spec.netns,
        n.net
            .get()
            .map(|net| net.netns_path("u1"))
            .unwrap_or_default()
    );
    assert!(
        spec.mounts
            .iter()
            .any(|m| m.destination == std::path::Path::new("/etc/resolv.conf")),
        "{:?}",
        spec.mounts
    );
    assert_eq!(*crate::lock(&n.datapath.added), ["a/p"]);
    for reason in ["Pulling", "Pulled", "Created", "Started"] {
        assert!(
            n.events().iter().any(|e| e == reason),
            "{reason}: {:?}",
            n.events()
        );
    }
    // Nothing changes: the status is written once, not per wake-up.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes = crate::lock(&n.api.writes)
        .iter()
        .filter(|w| w.subresource == "status")
        .count();
    assert!(writes <= 3, "{writes} status writes for one start");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_restarts_with_growing_back_off() -> anyhow::Result<()> {
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    n.put(&Node::pod(&json!({})));
    let mut started = Vec::new();
    for attempt in 0..4 {
        let id = format!("u1-app-{attempt}");
        n.wait(&format!("attempt {attempt}"), Duration::from_mins(2), |n| {
            n.creates().contains(&id)
        })
        .await;
        started.push(Instant::now());
        n.rt.finish(&id, 1)?;
        if attempt == 1 {
            n.wait("CrashLoopBackOff", Duration::from_secs(5), |n| {
                n.container()
                    .and_then(|c| c.state?.waiting?.reason)
                    .as_deref()
                    == Some("CrashLoopBackOff")
            })
            .await;
            let c = n.container().unwrap_or_default();
            assert_eq!(c.restart_count, 1);
            assert_eq!(
                c.last_state.and_then(|l| l.terminated).map(|t| t.exit_code),
                Some(1)
            );
        }
    }
    let gaps: Vec<u64> = started
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    // 10 s, 20 s, 40 s, each plus up to one PLEG relist to see the exit.
    for (gap, backoff) in gaps.iter().zip([10, 20, 40]) {
        assert!(
            (backoff..=backoff + 1).contains(gap),
            "gaps {gaps:?}, expected back-offs 10, 20, 40"
        );
    }
    assert!(n.events().iter().any(|e| e == "BackOff"));
    n.wait("restart count 3", Duration::from_secs(5), |n| {
        n.container().is_some_and(|c| c.restart_count == 3)
    })
    .await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_container() -> anyhow::Result<()> {
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    n.put(&Node::pod(&json!({
        "terminationGracePeriodSeconds": 3,
        "containers": [{"name": "app", "image": "busybox", "livenessProbe": {
            "exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 1}}],
    })));
    n.wait("Running", Duration::from_secs(10), running_ready)
        .await;
    let failed = ExecOutput {
        exit_code: 1,
        stdout: b"unhealthy".to_vec(),
        stderr: Vec::new(),
    };
    n.rt.push_exec_output("u1-app-0", failed);
    n.wait("a restart", Duration::from_secs(30), |n| {
        n.creates().contains(&"u1-app-1".to_owned())
    })
    .await;
    assert!(
        n.rt.calls()
            .contains(&Call::Stop("u1-app-0".into(), Duration::from_secs(3))),
        "stopped with the pod's grace period: {:?}",
        n.rt.calls()
    );
    n.wait("restart count 1", Duration::from_secs(5), |n| {
        n.container().is_some_and(|c| {
            c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
        })
    })
    .await;
    let events = n.events();
    assert!(events.iter().any(|e| e == "Unhealthy"), "{events:?}");
    assert!(events.iter().any(|e| e == "Killing"), "{events:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn deletion_stops_with_the_grace_period_then_tears_down_and_finalizes() -> anyhow::Result<()>
{
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    let mut pod = Node::pod(&json!({}));
    n.put(&pod);
    n.wait("Running", Duration::from_secs(10), running_ready)
        .await;
    n.rt.ignore_term("u1-app-0")?;
    pod["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(5);
    n.put(&pod);
    n.wait("the final delete", Duration::from_secs(30), |n| {
        n.deletes() == 1
    })
    .await;
    let calls = n.rt.calls();
    let at = |call: &Call| calls.iter().position(|c| c == call);
    let stop = at(&Call::Stop("u1-app-0".into(), Duration::from_secs(5)));
    let term = at(&Call::Kill("u1-app-0".into(), "TERM".into()));
    let kill = at(&Call::Kill("u1-app-0".into(), "KILL".into()));
    let remove = at(&Call::Remove("u1-app-0".into()));
    assert!(
        stop.is_some() && stop < term && term < kill && kill < remove,
        "{calls:?}"
    );
    assert!(
        n.net
            .get()
            .is_some_and(|net| net.calls().contains(&NetCall::Teardown("u1".into())))
    );
    assert_eq!(
        *crate::lock(&n.datapath.removed),
        [("u1".to_owned(), false)],
        "the datapath entry goes after the containers"
    );
    assert!(
        n.net
            .get()
            .is_some_and(|net| net.allocations().is_ok_and(|a| a.is_empty()))
    );
    assert!(n.events().iter().any(|e| e == "Killing"));
    assert!(!n.parts.pod_dir("u1").exists());

    // The API server removes it; the pod manager lets the worker go.
    n.delete(&pod);
    tokio::time::sleep(Duration::from_millis(10)).await;
    n.workers.reconcile(&n.parts.view.pods());
    assert!(n.workers.is_empty(), "{:?}", n.workers);
    assert_eq!(n.deletes(), 1, "finalized once");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_adopts_running_pods() -> anyhow::Result<()> {
    // What the previous agent left: a sandbox and the pod's third attempt.
    let rt = FakeRuntime::new();
    let net = networks()?;
    let ip = net.setup("u1").await?.ip;
    let spec = ContainerSpec {
        pod_uid: "u1".into(),
        name: "app".into(),
        attempt: 2,
        rootfs: "/r".into(),
        readonly_rootfs: false,
        args: vec!["sleep".into()],
        env: Vec::new(),
        cwd: None,
        uid: 0,
        gid: 0,
        hostname: "p".into(),
        netns: net.netns_path("u1"),
        mounts: Vec::new(),
        resources: Resources::default(),
        log_path: "/l".into(),
    };
    let id = rt.create(&spec).await?;
    rt.start(&id).await?;
    let mut n = Node::new(rt, net)?;
    n.put(&Node::pod(&json!({})));
    n.wait("Running and Ready", Duration::from_secs(10), running_ready)
        .await;
    let s = n.status().unwrap_or_default();
    assert_eq!(s.pod_ip, Some(ip.to_string()));
    let c = n.container().unwrap_or_default();
    assert_eq!(c.container_id.as_deref(), Some("skep://u1-app-2"));
    assert_eq!(c.restart_count, 2, "restart counts are kept");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(n.creates(), ["u1-app-2"], "nothing created");
    let net_calls = n.net.get().map(FakePodNetworks::calls).unwrap_or_default();
    assert_eq!(
        net_calls,
        [NetCall::Setup("u1".into()), NetCall::Inspect("u1".into())],
        "the sandbox is inspected, not built again"
    );
    assert_eq!(
        *crate::lock(&n.datapath.added),
        ["a/p"],
        "back in the datapath"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_status_echo_does_not_wake_the_worker_a_spec_change_does() -> anyhow::Result<()> {
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    let mut pod = Node::pod(&json!({}));
    n.put(&pod);
    n.wait("Running", Duration::from_secs(10), running_ready)
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let written = n.status();
    // Its own status comes back (new resourceVersion): the view's copy is
    // refreshed; the worker has nothing to do and writes nothing.
    let before = crate::lock(&n.api.writes).len();
    let passes = n.parts.status.handed();
    pod["status"] = serde_json::to_value(&written)?;
    n.put(&pod);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(n.parts.status.handed(), passes, "the echo woke the worker");
    assert_eq!(crate::lock(&n.api.writes).len(), before);
    // Labels feed the downward API: the worker is woken (one pass), finds
    // nothing to change and writes nothing.
    pod["metadata"]["labels"] = json!({"x": "y"});
    n.put(&pod);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(n.parts.status.handed(), passes + 1);
    assert_eq!(crate::lock(&n.api.writes).len(), before);
    assert_eq!(n.creates(), ["u1-app-0"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_shows_err_image_pull_then_image_pull_back_off() -> anyhow::Result<()> {
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    n.images.make_missing("nope");
    n.put(&Node::pod(
        &json!({"containers": [{"name": "app", "image": "nope"}]}),
    ));
    let reason = |n: &Node| n.container().and_then(|c| c.state?.waiting?.reason);
    n.wait("ErrImagePull", Duration::from_secs(5), |n| {
        reason(n).as_deref() == Some("ErrImagePull")
    })
    .await;
    n.wait("ImagePullBackOff", Duration::from_secs(5), |n| {
        reason(n).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    // Pulls are retried with back-off (10 s, 20 s …), not on every pass.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let pulls = n.images.pulls().len();
    assert!((2..=3).contains(&pulls), "{pulls} pulls in 25 s");
    assert!(n.creates().is_empty());
    assert!(n.events().iter().any(|e| e == "Failed"));
    Ok(())
}

/// The volume ServiceAccount admission adds.
fn kube_api_access() -> Value {
    json!({
        "volumes": [{"name": "kube-api-access-abcde", "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        }}],
        "serviceAccountName": "default",
        "containers": [{"name": "app", "image": "busybox", "volumeMounts": [{
            "name": "kube-api-access-abcde", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        }]}],
    })
}

impl Node {
    fn root_ca(&mut self, pem: &str) {
        self.rev += 1;
        let cm = json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "a",
            "resourceVersion": self.rev.to_string()}, "data": {"ca.crt": pem}});
        let body = serde_json::to_vec(&cm).unwrap_or_default();
        self.writer.apply(self.rev, "ConfigMap", false, &body);
    }

    fn volume_file(&self, name: &str) -> String {
        let path = self
            .parts
            .pod_dir("u1")
            .join("volumes/kube-api-access-abcde")
            .join(name);
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

#[tokio::test(start_paused = true)]
async fn the_token_volume_is_written_atomically_and_renewed() -> anyhow::Result<()> {
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    *crate::lock(&n.api.issued) = Some(0);
    n.root_ca("CA-1");
    n.put(&Node::pod(&kube_api_access()));
    n.wait("Running and Ready", Duration::from_secs(10), running_ready)
        .await;
    assert_eq!(n.volume_file("token"), "token-1");
    assert_eq!(n.volume_file("ca.crt"), "CA-1");
    assert_eq!(n.volume_file("namespace"), "a");
    let dir = n.parts.pod_dir("u1").join("volumes/kube-api-access-abcde");
    assert_eq!(
        std::fs::read_link(dir.join("token"))?,
        std::path::Path::new("..data/token")
    );
    let spec = n.rt.spec("u1-app-0").unwrap_or_else(|| panic!("no spec"));
    let mount = spec
        .mounts
        .iter()
        .find(|m| {
            m.destination == std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount")
        })
        .unwrap_or_else(|| panic!("no token mount: {:?}", spec.mounts));
    assert_eq!(mount.source, dir);
    assert!(mount.read_only);
    // Renewed once 80% of 3607 s (less a jitter) have passed, not before.
    tokio::time::sleep(Duration::from_secs(2870)).await;
    assert_eq!(n.volume_file("token"), "token-1");
    tokio::time::sleep(Duration::from_secs(20)).await;
    n.wait("a renewed token", Duration::from_secs(5), |n| {
        n.volume_file("token") == "token-2"
    })
    .await;
    // A changed CA follows.
    n.root_ca("CA-2");
    n.wait("the new CA", Duration::from_secs(5), |n| {
        n.volume_file("ca.crt") == "CA-2"
    })
    .await;
    // The container was never restarted for it.
    assert_eq!(n.creates(), ["u1-app-0"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn without_token_issuing_the_rest_of_the_volume_is_there() -> anyhow::Result<()> {
    let mut n = Node::new(FakeRuntime::new(), networks()?)?;
    n.root_ca("CA-1");
    n.put(&Node::pod(&kube_api_access()));
    n.wait("Running and Ready", Duration::from_secs(10), running_ready)
        .await;
    assert_eq!(n.volume_file("ca.crt"), "CA-1");
    assert_eq!(n.volume_file("namespace"), "a");
    assert_eq!(n.volume_file("token"), "");
    Ok(())
}
