//! In-memory [`ContainerRuntime`] and [`PodNetworks`], for unit tests of
//! code written against the traits (the agent's pod worker): no root, no
//! runc, no netlink, no waiting.
//!
//! They keep the real implementations' rules where a caller can see them:
//! ids are [`ContainerSpec::id`], a container is created, then started,
//! then exits (only through a signal or [`FakeRuntime::finish`]); lists
//! are sorted by id; removing or tearing down what is gone is fine; an
//! address stays its pod's until teardown. Time does not pass: a stop's
//! grace period is recorded, not waited for. Each records its calls
//! ([`FakeRuntime::calls`], [`FakePodNetworks::calls`]) and can be told to
//! fail the next call of an operation.
//!
//! Enabled by the `fake` feature (a dev-dependency's), so test doubles stay
//! out of the agent and shim binaries.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::ipam::{self, IpamError};
use crate::runtime::{
    ContainerMeta, ContainerSpec, ContainerState, ContainerStatus, ExecOutput, RuntimeError,
};
use crate::sandbox::{self, PodNetwork, SandboxError};
use crate::shim::ExitRecord;
use crate::{ContainerRuntime, PodNetworkError, PodNetworks};

/// An operation of [`FakeRuntime`], to make it fail ([`FakeRuntime::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`ContainerRuntime::create`].
    Create,
    /// [`ContainerRuntime::start`].
    Start,
    /// [`ContainerRuntime::status`].
    Status,
    /// [`ContainerRuntime::list`] and [`ContainerRuntime::list_pod`].
    List,
    /// [`ContainerRuntime::kill`] (and the signals [`ContainerRuntime::stop`] sends).
    Kill,
    /// [`ContainerRuntime::stop`].
    Stop,
    /// [`ContainerRuntime::remove`].
    Remove,
    /// [`ContainerRuntime::exec`].
    Exec,
}

impl Op {
    /// The verb a [`RuntimeError::Command`] of this operation carries.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Status => "inspect",
            Self::List => "list",
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Remove => "remove",
            Self::Exec => "exec in",
        }
    }
}

/// A call [`FakeRuntime`] received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `create` of this container id.
    Create(String),
    /// `start`.
    Start(String),
    /// `kill` with this signal (also each signal `stop` sends).
    Kill(String, String),
    /// `stop` with this grace period.
    Stop(String, Duration),
    /// `remove`.
    Remove(String),
    /// `exec` of this argv.
    Exec(String, Vec<String>),
}

#[derive(Debug)]
struct Container {
    spec: ContainerSpec,
    status: ContainerStatus,
    ignores_term: bool,
}

#[derive(Debug, Default)]
struct RuntimeState {
    containers: BTreeMap<String, Container>,
    next_pid: i32,
    calls: Vec<Call>,
    failures: HashMap<Op, VecDeque<String>>,
    exec_outputs: HashMap<String, VecDeque<ExecOutput>>,
    oom_killed: HashSet<(String, String)>,
}

/// An in-memory [`ContainerRuntime`].
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<RuntimeState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the state from the others.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The exit code and signal number a signal name ends a process with
/// (`None` for one that does not end it here).
fn deadly(signal: &str) -> Option<i32> {
    match signal.trim_start_matches("SIG") {
        "KILL" | "9" => Some(9),
        "TERM" | "15" => Some(15),
        "INT" | "2" => Some(2),
        _ => None,
    }
}

fn exited(code: i32, signal: Option<i32>) -> ContainerState {
    ContainerState::Exited(ExitRecord {
        exit_code: code,
        signal,
        finished_at: SystemTime::now(),
        error: None,
    })
}

impl RuntimeState {
    fn injected(&mut self, op: Op, id: &str) -> Result<(), RuntimeError> {
        match self.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(detail) => Err(RuntimeError::Command {
                op: op.verb(),
                id: id.to_owned(),
                detail,
            }),
            None => Ok(()),
        }
    }

    fn container(&mut self, id: &str) -> Result<&mut Container, RuntimeError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_owned() })
    }

    fn kill(&mut self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.calls
            .push(Call::Kill(id.to_owned(), signal.to_owned()));
        self.injected(Op::Kill, id)?;
        let Some(c) = self.containers.get_mut(id) else {
            // runc knows no such container, and no exit was recorded.
            return Err(RuntimeError::Command {
                op: "kill",
                id: id.to_owned(),
                detail: "container does not exist".to_owned(),
            });
        };
        if matches!(c.status.state, ContainerState::Exited(_)) {
            return Ok(());
        }
        match deadly(signal) {
            Some(15) if c.ignores_term => {}
            Some(sig) => c.status.state = exited(128 + sig, Some(sig)),
            None => {}
        }
        Ok(())
    }

    /// How container `id` ended; `None` while it runs or when there is no
    /// such container (as the real one finds no exit file).
    fn exit_record(&self, id: &str) -> Option<ExitRecord> {
        match &self.containers.get(id)?.status.state {
            ContainerState::Exited(exit) => Some(exit.clone()),
            _ => None,
        }
    }
}

impl FakeRuntime {
    /// An empty runtime.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next call of `op` fail with a [`RuntimeError::Command`]
    /// carrying `detail` (queued: call it twice for two failures).
    pub fn fail_next(&self, op: Op, detail: &str) {
        lock(&self.state)
            .failures
            .entry(op)
            .or_default()
            .push_back(detail.to_owned());
    }

    /// The calls received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// The spec container `id` was created from.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        lock(&self.state).containers.get(id).map(|c| c.spec.clone())
    }

    /// Ends container `id`'s process with `exit_code`, as if it returned
    /// (a created one too: `runc create` failing looks like this).
    pub fn finish(&self, id: &str, exit_code: i32) -> Result<(), RuntimeError> {
        let mut state = lock(&self.state);
        state.container(id)?.status.state = exited(exit_code, None);
        Ok(())
    }

    /// Makes container `id` ignore SIGTERM, so only SIGKILL ends it (a
    /// stop then uses its whole grace period).
    pub fn ignore_term(&self, id: &str) -> Result<(), RuntimeError> {
        lock(&self.state).container(id)?.ignores_term = true;
        Ok(())
    }

    /// Queues what the next exec in container `id` returns; without one,
    /// an exec succeeds with no output.
    pub fn push_exec_output(&self, id: &str, output: ExecOutput) {
        lock(&self.state)
            .exec_outputs
            .entry(id.to_owned())
            .or_default()
            .push_back(output);
    }

    /// Marks container `name` of pod `pod_uid` as killed by the OOM killer.
    pub fn set_oom_killed(&self, pod_uid: &str, name: &str) {
        lock(&self.state)
            .oom_killed
            .insert((pod_uid.to_owned(), name.to_owned()));
    }

    fn list_where(
        &self,
        wanted: impl Fn(&ContainerStatus) -> bool,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let mut state = lock(&self.state);
        state.injected(Op::List, "")?;
        Ok(state
            .containers
            .values()
            .map(|c| c.status.clone())
            .filter(wanted)
            .collect())
    }
}

impl ContainerRuntime for FakeRuntime {
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        let result = (|| {
            let id = spec.id();
            let mut state = lock(&self.state);
            state.calls.push(Call::Create(id.clone()));
            state.injected(Op::Create, &id)?;
            if state.containers.contains_key(&id) {
                return Err(RuntimeError::Command {
                    op: "create",
                    id,
                    detail: "container with given ID already exists".to_owned(),
                });
            }
            let meta = ContainerMeta {
                id: id.clone(),
                pod_uid: spec.pod_uid.clone(),
                name: spec.name.clone(),
                attempt: spec.attempt,
                log_path: spec.log_path.clone(),
                created_at: SystemTime::now(),
            };
            state.containers.insert(
                id.clone(),
                Container {
                    spec: spec.clone(),
                    status: ContainerStatus {
                        meta,
                        state: ContainerState::Created,
                        started_at: None,
                    },
                    ignores_term: false,
                },
            );
            Ok(id)
        })();
        std::future::ready(result)
    }

    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let result = (|| {
            let mut state = lock(&self.state);
            state.calls.push(Call::Start(id.to_owned()));
            state.injected(Op::Start, id)?;
            state.next_pid += 1;
            let pid = 1000 + state.next_pid;
            let c = state.container(id)?;
            if c.status.state != ContainerState::Created {
                return Err(RuntimeError::Command {
                    op: "start",
                    id: id.to_owned(),
                    detail: "cannot start a container that is not created".to_owned(),
                });
            }
            c.status.state = ContainerState::Running { pid };
            c.status.started_at = Some(SystemTime::now());
            Ok(())
        })();
        std::future::ready(result)
    }

    fn status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerStatus, RuntimeError>> + Send {
        let result = (|| {
            let mut state = lock(&self.state);
            state.injected(Op::Status, id)?;
            Ok(state.container(id)?.status.clone())
        })();
        std::future::ready(result)
    }

    fn list(&self) -> impl Future<Output = Result<Vec<ContainerStatus>, RuntimeError>> + Send {
        std::future::ready(self.list_where(|_| true))
    }

    fn list_pod(
        &self,
        pod_uid: &str,
    ) -> impl Future<Output = Result<Vec<ContainerStatus>, RuntimeError>> + Send {
        std::future::ready(self.list_where(|c| c.meta.pod_uid == pod_uid))
    }

    fn kill(
        &self,
        id: &str,
        signal: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        std::future::ready(lock(&self.state).kill(id, signal))
    }

    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<ExitRecord, RuntimeError>> + Send {
        let result = (|| {
            let mut state = lock(&self.state);
            state.calls.push(Call::Stop(id.to_owned(), grace));
            state.injected(Op::Stop, id)?;
            if let Some(exit) = state.exit_record(id) {
                return Ok(exit);
            }
            if !grace.is_zero() {
                state.kill(id, "TERM")?;
                if let Some(exit) = state.exit_record(id) {
                    return Ok(exit);
                }
            }
            state.kill(id, "KILL")?;
            state.exit_record(id).ok_or_else(|| RuntimeError::Timeout {
                op: "stop",
                id: id.to_owned(),
                timeout: grace,
            })
        })();
        std::future::ready(result)
    }

    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let result = (|| {
            let mut state = lock(&self.state);
            state.calls.push(Call::Remove(id.to_owned()));
            state.injected(Op::Remove, id)?;
            state.containers.remove(id);
            Ok(())
        })();
        std::future::ready(result)
    }

    fn exec(
        &self,
        id: &str,
        argv: &[String],
        _timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send {
        let result = (|| {
            let mut state = lock(&self.state);
            state.calls.push(Call::Exec(id.to_owned(), argv.to_vec()));
            state.injected(Op::Exec, id)?;
            if !matches!(
                state.container(id)?.status.state,
                ContainerState::Running { .. }
            ) {
                return Err(RuntimeError::Command {
                    op: "exec in",
                    id: id.to_owned(),
                    detail: "cannot exec in a stopped container".to_owned(),
                });
            }
            Ok(state
                .exec_outputs
                .get_mut(id)
                .and_then(VecDeque::pop_front)
                .unwrap_or(ExecOutput {
                    exit_code: 0,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                }))
        })();
        std::future::ready(result)
    }

    fn oom_killed(&self, pod_uid: &str, name: &str) -> bool {
        lock(&self.state)
            .oom_killed
            .contains(&(pod_uid.to_owned(), name.to_owned()))
    }
}

/// A call [`FakePodNetworks`] received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCall {
    /// `setup` of this pod UID.
    Setup(String),
    /// `inspect`.
    Inspect(String),
    /// `teardown`.
    Teardown(String),
}

#[derive(Debug, Default)]
struct NetState {
    addresses: BTreeMap<String, Ipv4Addr>,
    sandboxes: BTreeMap<String, PodNetwork>,
    next_ifindex: u32,
    calls: Vec<NetCall>,
    fail_setup: VecDeque<String>,
    fail_teardown: VecDeque<String>,
}

/// An in-memory [`PodNetworks`]: addresses from a pod CIDR (the first
/// usable one reserved for the node, as [`ipam::Ipam`] does; the lowest
/// free one handed out, not round-robin) and sandboxes as records, with a
/// namespace path under a directory nothing is written to.
#[derive(Debug)]
pub struct FakePodNetworks {
    run_dir: PathBuf,
    first: u32,
    last: u32,
    cidr: String,
    state: Mutex<NetState>,
}

impl FakePodNetworks {
    /// Pod networks from `cidr` (`a.b.c.d/n`, at most `/29`), namespace
    /// paths under `run_dir/netns/`.
    pub fn new(cidr: &str, run_dir: impl Into<PathBuf>) -> Result<Self, IpamError> {
        let (network, prefix) = ipam::parse_cidr(cidr)?;
        if prefix > 29 {
            return Err(IpamError::BadCidr {
                cidr: cidr.to_owned(),
                reason: "prefix longer than /29 leaves no pod addresses",
            });
        }
        let network = u32::from(network);
        let broadcast = network | (u32::MAX >> prefix);
        Ok(Self {
            run_dir: run_dir.into(),
            first: network + 2,
            last: broadcast - 1,
            cidr: cidr.to_owned(),
            state: Mutex::new(NetState {
                next_ifindex: 100,
                ..NetState::default()
            }),
        })
    }

    /// Makes the next `setup` fail after the address is allocated, as a
    /// failing netlink request would (queued).
    pub fn fail_next_setup(&self, detail: &str) {
        lock(&self.state).fail_setup.push_back(detail.to_owned());
    }

    /// Makes the next `teardown` fail before anything is removed (queued).
    pub fn fail_next_teardown(&self, detail: &str) {
        lock(&self.state).fail_teardown.push_back(detail.to_owned());
    }

    /// The calls received so far, in order.
    pub fn calls(&self) -> Vec<NetCall> {
        lock(&self.state).calls.clone()
    }

    /// The sandboxes that exist, by pod UID.
    pub fn sandboxes(&self) -> BTreeMap<String, PodNetwork> {
        lock(&self.state).sandboxes.clone()
    }

    /// Removes pod `uid`'s sandbox but keeps its address, as a reboot
    /// would (namespaces and veths gone, IPAM files kept).
    pub fn lose_sandbox(&self, uid: &str) {
        lock(&self.state).sandboxes.remove(uid);
    }

    fn injected(detail: Option<String>, uid: &str, path: PathBuf) -> Result<(), PodNetworkError> {
        match detail {
            Some(detail) => Err(SandboxError::Io {
                op: "set up fake sandbox",
                path,
                source: io::Error::other(format!("pod {uid}: {detail}")),
            }
            .into()),
            None => Ok(()),
        }
    }
}

impl NetState {
    fn allocate(&mut self, uid: &str, net: &FakePodNetworks) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.addresses.get(uid) {
            return Ok(*ip);
        }
        let taken: HashSet<Ipv4Addr> = self.addresses.values().copied().collect();
        let ip = (net.first..=net.last)
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| IpamError::Exhausted {
                uid: uid.to_owned(),
                cidr: net.cidr.clone(),
            })?;
        self.addresses.insert(uid.to_owned(), ip);
        Ok(ip)
    }
}

impl PodNetworks for FakePodNetworks {
    fn netns_path(&self, uid: &str) -> PathBuf {
        self.run_dir.join("netns").join(uid)
    }

    fn address(&self, uid: &str) -> Result<Option<Ipv4Addr>, PodNetworkError> {
        Ok(lock(&self.state).addresses.get(uid).copied())
    }

    fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, PodNetworkError> {
        let mut out: Vec<(Ipv4Addr, String)> = lock(&self.state)
            .addresses
            .iter()
            .map(|(uid, ip)| (*ip, uid.clone()))
            .collect();
        out.sort();
        Ok(out)
    }

    fn setup(&self, uid: &str) -> impl Future<Output = Result<PodNetwork, PodNetworkError>> + Send {
        let result = (|| {
            let mut state = lock(&self.state);
            state.calls.push(NetCall::Setup(uid.to_owned()));
            let ip = state.allocate(uid, self)?;
            // A half-built earlier attempt is cleared first, as the real one does.
            state.sandboxes.remove(uid);
            Self::injected(state.fail_setup.pop_front(), uid, self.netns_path(uid))?;
            state.next_ifindex += 1;
            let [a, b, c, d] = ip.octets();
            let net = PodNetwork {
                netns_path: self.netns_path(uid),
                host_veth: sandbox::host_veth_name(uid),
                ip,
                host_ifindex: state.next_ifindex,
                host_mac: [0x02, 0x00, a, b, c, d],
                pod_mac: [0x02, 0x01, a, b, c, d],
            };
            state.sandboxes.insert(uid.to_owned(), net.clone());
            Ok(net)
        })();
        std::future::ready(result)
    }

    fn inspect(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Option<PodNetwork>, PodNetworkError>> + Send {
        let mut state = lock(&self.state);
        state.calls.push(NetCall::Inspect(uid.to_owned()));
        let found = state
            .addresses
            .contains_key(uid)
            .then(|| state.sandboxes.get(uid).cloned())
            .flatten();
        std::future::ready(Ok(found))
    }

    fn teardown(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Option<Ipv4Addr>, PodNetworkError>> + Send {
        let result = (|| {
            let mut state = lock(&self.state);
            state.calls.push(NetCall::Teardown(uid.to_owned()));
            Self::injected(state.fail_teardown.pop_front(), uid, self.netns_path(uid))?;
            state.sandboxes.remove(uid);
            Ok(state.addresses.remove(uid))
        })();
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pod: &str, name: &str, attempt: u32) -> ContainerSpec {
        ContainerSpec {
            pod_uid: pod.into(),
            name: name.into(),
            attempt,
            rootfs: "/rootfs".into(),
            readonly_rootfs: false,
            args: vec!["sleep".into(), "1".into()],
            env: Vec::new(),
            cwd: None,
            uid: 0,
            gid: 0,
            hostname: "p".into(),
            netns: "/run/netns/p".into(),
            mounts: Vec::new(),
            resources: crate::runtime::Resources::default(),
            log_path: format!("/logs/{name}/{attempt}.log").into(),
        }
    }

    /// A caller that knows only the trait, as the pod worker will.
    async fn run_one<R: ContainerRuntime>(
        rt: &R,
        spec: &ContainerSpec,
    ) -> Result<String, RuntimeError> {
        let id = rt.create(spec).await?;
        rt.start(&id).await?;
        Ok(id)
    }

    #[tokio::test]
    async fn container_lifecycle() -> anyhow::Result<()> {
        let rt = FakeRuntime::new();
        let id = rt.create(&spec("p1", "app", 0)).await?;
        assert_eq!(id, "p1-app-0");
        assert_eq!(rt.status(&id).await?.state, ContainerState::Created);
        assert!(
            rt.exec(&id, &["true".into()], Duration::ZERO)
                .await
                .is_err()
        );
        rt.start(&id).await?;
        let status = rt.status(&id).await?;
        assert!(matches!(status.state, ContainerState::Running { .. }));
        assert!(status.started_at.is_some());
        assert!(
            rt.start(&id).await.is_err(),
            "a running container starts once"
        );
        assert!(
            rt.create(&spec("p1", "app", 0)).await.is_err(),
            "ids are unique"
        );

        rt.push_exec_output(
            &id,
            ExecOutput {
                exit_code: 1,
                stdout: b"no".to_vec(),
                stderr: Vec::new(),
            },
        );
        assert_eq!(
            rt.exec(&id, &["probe".into()], Duration::ZERO)
                .await?
                .exit_code,
            1
        );
        assert_eq!(
            rt.exec(&id, &["probe".into()], Duration::ZERO)
                .await?
                .exit_code,
            0
        );

        rt.finish(&id, 3)?;
        let ContainerState::Exited(exit) = rt.status(&id).await?.state else {
            anyhow::bail!("not exited");
        };
        assert_eq!((exit.exit_code, exit.signal), (3, None));
        rt.kill(&id, "KILL").await?;
        assert_eq!(rt.stop(&id, Duration::from_secs(5)).await?.exit_code, 3);

        rt.remove(&id).await?;
        rt.remove(&id).await?;
        assert!(matches!(
            rt.status(&id).await,
            Err(RuntimeError::NotFound { .. })
        ));
        assert!(rt.kill(&id, "TERM").await.is_err());
        assert!(
            matches!(
                rt.stop(&id, Duration::ZERO).await,
                Err(RuntimeError::Command { op: "kill", .. })
            ),
            "stopping what is gone fails as runc kill does"
        );
        Ok(())
    }

    #[tokio::test]
    async fn stop_uses_term_then_kill() -> anyhow::Result<()> {
        let rt = FakeRuntime::new();
        let a = run_one(&rt, &spec("p1", "a", 0)).await?;
        let b = run_one(&rt, &spec("p1", "b", 0)).await?;
        let c = run_one(&rt, &spec("p1", "c", 0)).await?;
        let exit = rt.stop(&a, Duration::from_secs(30)).await?;
        assert_eq!((exit.exit_code, exit.signal), (143, Some(15)));
        rt.ignore_term(&b)?;
        let exit = rt.stop(&b, Duration::from_secs(30)).await?;
        assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
        let exit = rt.stop(&c, Duration::ZERO).await?;
        assert_eq!(exit.signal, Some(9), "no grace: SIGKILL at once");
        let kills: Vec<Call> = rt
            .calls()
            .into_iter()
            .filter(|call| matches!(call, Call::Kill(..)))
            .collect();
        assert_eq!(
            kills,
            [
                Call::Kill(a, "TERM".into()),
                Call::Kill(b.clone(), "TERM".into()),
                Call::Kill(b, "KILL".into()),
                Call::Kill(c, "KILL".into()),
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn lists_sorted_and_by_pod() -> anyhow::Result<()> {
        let rt = FakeRuntime::new();
        for (pod, name) in [("p2", "x"), ("p1", "b"), ("p1", "a")] {
            rt.create(&spec(pod, name, 0)).await?;
        }
        let ids = |list: Vec<ContainerStatus>| -> Vec<String> {
            list.into_iter().map(|c| c.meta.id).collect()
        };
        assert_eq!(ids(rt.list().await?), ["p1-a-0", "p1-b-0", "p2-x-0"]);
        assert_eq!(ids(rt.list_pod("p1").await?), ["p1-a-0", "p1-b-0"]);
        assert!(rt.list_pod("p3").await?.is_empty());
        assert_eq!(rt.spec("p2-x-0").map(|s| s.name), Some("x".to_owned()));
        Ok(())
    }

    #[tokio::test]
    async fn injected_failures_are_one_shot() -> anyhow::Result<()> {
        let rt = FakeRuntime::new();
        rt.fail_next(Op::Create, "no space left");
        let err = rt.create(&spec("p", "c", 0)).await.err();
        assert!(
            matches!(&err, Some(RuntimeError::Command { op: "create", detail, .. }) if detail == "no space left"),
            "{err:?}"
        );
        assert!(
            rt.list().await?.is_empty(),
            "a failed create leaves nothing"
        );
        let id = run_one(&rt, &spec("p", "c", 0)).await?;
        rt.fail_next(Op::List, "state dir unreadable");
        assert!(rt.list().await.is_err());
        assert_eq!(rt.list().await?.len(), 1);
        assert!(!rt.oom_killed("p", "c"));
        rt.set_oom_killed("p", "c");
        assert!(rt.oom_killed("p", "c"));
        assert_eq!(rt.calls().first(), Some(&Call::Create(id)));
        Ok(())
    }

    #[tokio::test]
    async fn network_setup_inspect_teardown() -> anyhow::Result<()> {
        let net = FakePodNetworks::new("10.244.1.0/29", "/run/skep/n1")?;
        let a = net.setup("a").await?;
        assert_eq!(
            a.ip,
            Ipv4Addr::new(10, 244, 1, 2),
            "first usable is the node's"
        );
        assert_eq!(a.netns_path, net.netns_path("a"));
        assert_eq!(a.host_veth, sandbox::host_veth_name("a"));
        assert_eq!(net.setup("a").await?.ip, a.ip, "same pod, same address");
        assert_eq!(net.address("a")?, Some(a.ip));
        assert_eq!(net.inspect("a").await?.map(|n| n.ip), Some(a.ip));
        assert_eq!(net.inspect("b").await?, None);

        assert_eq!(net.teardown("a").await?, Some(a.ip));
        assert_eq!(net.teardown("a").await?, None, "teardown repeats");
        assert!(net.allocations()?.is_empty());
        assert!(net.sandboxes().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn network_failures_keep_the_address() -> anyhow::Result<()> {
        let net = FakePodNetworks::new("10.244.1.0/29", "/run")?;
        net.fail_next_setup("veth exists");
        assert!(matches!(
            net.setup("a").await,
            Err(PodNetworkError::Sandbox(_))
        ));
        let kept = net.address("a")?;
        assert!(kept.is_some(), "the address stays the pod's");
        assert_eq!(net.inspect("a").await?, None, "no sandbox was built");
        assert_eq!(
            net.setup("a").await?.ip,
            kept.unwrap_or(Ipv4Addr::UNSPECIFIED)
        );

        net.lose_sandbox("a");
        assert_eq!(net.inspect("a").await?, None);
        net.fail_next_teardown("busy");
        assert!(net.teardown("a").await.is_err());
        assert_eq!(net.address("a")?, kept, "a failed teardown frees nothing");

        // /29: .2 to .6 for pods.
        for uid in ["b", "c", "d", "e"] {
            net.setup(uid).await?;
        }
        assert!(matches!(
            net.setup("f").await,
            Err(PodNetworkError::Ipam(IpamError::Exhausted { .. }))
        ));
        assert_eq!(net.allocations()?.len(), 5);
        assert!(FakePodNetworks::new("10.0.0.0/30", "/run").is_err());
        assert_eq!(net.calls().first(), Some(&NetCall::Setup("a".to_owned())));
        Ok(())
    }
}
