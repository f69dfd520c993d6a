//! The kernel seam: what the agent asks of the host, as two small traits
//! with the real Linux implementations here and in-memory ones in
//! `crate::fake` (feature `fake`).
//!
//! The methods return `impl Future + Send` rather than being `async fn`, so
//! a caller can spawn the futures on a multi-threaded runtime. That makes
//! the traits generic-only (not `dyn`-compatible): a pod worker is written
//! as `Worker<R: ContainerRuntime, N: PodNetworks>`, and the agent picks the
//! real pair once. Nothing needs a `dyn` of them today; if something does,
//! a blanket `DynContainerRuntime` with boxed futures can be added beside
//! these without touching the implementations.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::ipam::{Ipam, IpamError};
use crate::runtime::{ContainerSpec, ContainerStatus, ExecOutput, Runtime, RuntimeError};
use crate::sandbox::{PodNetwork, SandboxError, SandboxManager};
use crate::shim::ExitRecord;

/// Containers: what the agent's pod worker does with them. The real one is
/// [`Runtime`] (runc under a per-container shim).
pub trait ContainerRuntime: Send + Sync {
    /// Creates container `spec` (its process waits until [`start`]);
    /// returns its id, [`ContainerSpec::id`].
    ///
    /// [`start`]: ContainerRuntime::start
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Starts a created container.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Creates and starts container `spec`, for when nothing has to happen
    /// between the two; returns its id. The real runtime does it in one
    /// runc process (`runc run --detach`). A failed start leaves the
    /// created container, as [`start`] does.
    ///
    /// [`start`]: ContainerRuntime::start
    fn run(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        async move {
            let id = self.create(spec).await?;
            self.start(&id).await?;
            Ok(id)
        }
    }

    /// The current status of container `id` ([`RuntimeError::NotFound`]
    /// if there is none).
    fn status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerStatus, RuntimeError>> + Send;

    /// Every container with its status, sorted by id (after an agent
    /// restart too: this is how containers are adopted).
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerStatus>, RuntimeError>> + Send;

    /// The containers of pod `pod_uid` with their status, sorted by id.
    fn list_pod(
        &self,
        pod_uid: &str,
    ) -> impl Future<Output = Result<Vec<ContainerStatus>, RuntimeError>> + Send;

    /// Sends `signal` (`"TERM"`, `"KILL"`, …) to the container's init; a
    /// container that already ended is fine.
    fn kill(&self, id: &str, signal: &str)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Graceful stop: SIGTERM, up to `grace` for it to end, then SIGKILL
    /// (at once when `grace` is zero). Returns how it ended.
    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<ExitRecord, RuntimeError>> + Send;

    /// Force-removes container `id` and everything it holds; missing is fine.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs `argv` in the running container, for exec probes; returns its
    /// exit code and output ([`RuntimeError::Timeout`] after `timeout`).
    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send;

    /// Whether the OOM killer killed a process of container `name` of pod
    /// `pod_uid` (meaningful until the container is removed).
    fn oom_killed(&self, pod_uid: &str, name: &str) -> bool;
}

impl ContainerRuntime for Runtime {
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        Runtime::create(self, spec)
    }

    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        Runtime::start(self, id)
    }

    fn run(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        Runtime::run(self, spec)
    }

    fn status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerStatus, RuntimeError>> + Send {
        Runtime::status(self, id)
    }

    fn list(&self) -> impl Future<Output = Result<Vec<ContainerStatus>, RuntimeError>> + Send {
        Runtime::list(self)
    }

    fn list_pod(
        &self,
        pod_uid: &str,
    ) -> impl Future<Output = Result<Vec<ContainerStatus>, RuntimeError>> + Send {
        Runtime::list_pod(self, pod_uid)
    }

    fn kill(
        &self,
        id: &str,
        signal: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        Runtime::kill(self, id, signal)
    }

    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<ExitRecord, RuntimeError>> + Send {
        Runtime::stop(self, id, grace)
    }

    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        Runtime::remove(self, id)
    }

    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send {
        Runtime::exec(self, id, argv, timeout)
    }

    fn oom_killed(&self, pod_uid: &str, name: &str) -> bool {
        Runtime::oom_killed(self, pod_uid, name)
    }
}

/// Errors of [`PodNetworks`]: an address or a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum PodNetworkError {
    /// The pod's address could not be allocated, looked up or released.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The pod's sandbox could not be built, inspected or torn down.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Pod networks: an address from the node's pod CIDR and the sandbox
/// (network namespace, veth, routes) holding it, set up and torn down as
/// one. The real one is [`HostPodNetworks`].
pub trait PodNetworks: Send + Sync {
    /// Where pod `uid`'s network namespace is (or will be) pinned, the
    /// path the containers join.
    fn netns_path(&self, uid: &str) -> PathBuf;

    /// The address pod `uid` holds, if any.
    fn address(&self, uid: &str) -> Result<Option<Ipv4Addr>, PodNetworkError>;

    /// Every allocation as (address, pod UID), sorted by address: what an
    /// agent checks against its pods after a restart.
    fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, PodNetworkError>;

    /// Gives pod `uid` its address (the one it holds, else a new one) and
    /// builds its sandbox, first clearing what a half-built earlier attempt
    /// left. When the sandbox fails the address stays the pod's, so a
    /// retry gets the same one; [`teardown`] frees it.
    ///
    /// [`teardown`]: PodNetworks::teardown
    fn setup(&self, uid: &str) -> impl Future<Output = Result<PodNetwork, PodNetworkError>> + Send;

    /// What pod `uid`'s existing sandbox (built by an earlier agent) is
    /// made of, or `None` when the pod has no address or its sandbox is
    /// missing or incomplete.
    fn inspect(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Option<PodNetwork>, PodNetworkError>> + Send;

    /// Removes pod `uid`'s sandbox, then frees its address; returns the
    /// address it held. Safe on a half-built or already removed pod.
    fn teardown(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Option<Ipv4Addr>, PodNetworkError>> + Send;
}

/// Pod networks on this host: [`Ipam`] for addresses, [`SandboxManager`]
/// for namespaces and veths.
#[derive(Debug)]
pub struct HostPodNetworks {
    ipam: Ipam,
    sandboxes: SandboxManager,
}

impl HostPodNetworks {
    /// Pod networks with addresses from `ipam` and sandboxes from `sandboxes`.
    pub fn new(ipam: Ipam, sandboxes: SandboxManager) -> Self {
        Self { ipam, sandboxes }
    }

    /// The address allocator.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// The sandbox manager.
    pub fn sandboxes(&self) -> &SandboxManager {
        &self.sandboxes
    }
}

impl PodNetworks for HostPodNetworks {
    fn netns_path(&self, uid: &str) -> PathBuf {
        self.sandboxes.netns_path(uid)
    }

    fn address(&self, uid: &str) -> Result<Option<Ipv4Addr>, PodNetworkError> {
        Ok(self.ipam.get(uid)?)
    }

    fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, PodNetworkError> {
        Ok(self.ipam.allocated()?)
    }

    async fn setup(&self, uid: &str) -> Result<PodNetwork, PodNetworkError> {
        let ip = self.ipam.allocate(uid)?;
        Ok(self.sandboxes.create(uid, ip).await?)
    }

    async fn inspect(&self, uid: &str) -> Result<Option<PodNetwork>, PodNetworkError> {
        let Some(ip) = self.ipam.get(uid)? else {
            return Ok(None);
        };
        Ok(self.sandboxes.inspect(uid, ip).await?)
    }

    async fn teardown(&self, uid: &str) -> Result<Option<Ipv4Addr>, PodNetworkError> {
        self.sandboxes.teardown(uid).await?;
        Ok(self.ipam.release(uid)?)
    }
}
