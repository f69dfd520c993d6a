//! The [`Store`] handle: open, write through Raft, read, watch, compact,
//! shut down.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError as CwError, RaftError as OrRaftError};
use openraft::{BasicNode, SnapshotPolicy};
use rocksdb::DB;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batch::Batcher;
use crate::error::{StoreError, key_string};
use crate::log_store::LogStore;
use crate::mvcc::Reader;
use crate::network::{self, NetworkFactory, RaftService};
use crate::state_machine::{Shared, StateMachine};
use crate::typ::{ClientWriteError, NodeId, Raft, RaftError};
use crate::types::{
    Deleted, KeyValue, ListRequest, ListResult, ReadConsistency, Request, Response, WriteFailure,
};
use crate::watch::{self as watch_mod, WatchStream};

/// How many applied batches the watch hub keeps for slow watchers before
/// they fall back to replaying from disk.
const DEFAULT_HUB_CAPACITY: usize = 4096;
/// How long `open` waits for a single replica to elect itself.
const SINGLE_REPLICA_ELECTION: Duration = Duration::from_secs(10);
/// How long `shutdown` waits for background users of the database to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// When history is compacted automatically.
///
/// A revision is compacted once it is older than *every* configured window:
/// more than `retain_revisions` behind the current revision and written more
/// than `retain_for` ago. With both `None`, nothing is compacted
/// automatically. Compaction goes through Raft, so replicas agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Keep at least this many most recent revisions.
    pub retain_revisions: Option<u64>,
    /// Keep at least this much recent history (kube-apiserver compacts
    /// etcd every 5 minutes to the revision of 5 minutes ago).
    pub retain_for: Option<Duration>,
    /// How often the leader checks; also the granularity of `retain_for`.
    pub interval: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            retain_revisions: Some(10_000),
            retain_for: Some(Duration::from_secs(300)),
            interval: Duration::from_secs(30),
        }
    }
}

/// Raft timing and log retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTuning {
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// Build a snapshot (and let the log be purged) after this many entries.
    pub snapshot_after_logs: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_secs(1),
            snapshot_after_logs: 100_000,
        }
    }
}

/// Everything [`Store::open`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The `RocksDB` directory (created if missing).
    pub data_dir: PathBuf,
    /// This replica's id (non-zero).
    pub node_id: NodeId,
    /// Where this replica serves Raft gRPC; required with peers.
    pub listen_addr: Option<SocketAddr>,
    /// Every replica of the cluster, this one included: id → Raft gRPC
    /// address (`host:port`). Empty means a single replica without network.
    pub peers: BTreeMap<NodeId, String>,
    /// Automatic compaction.
    pub compaction: CompactionConfig,
    /// Raft timing.
    pub raft: RaftTuning,
    /// How many applied batches the watch hub buffers before a slow watcher
    /// falls back to replaying from disk.
    pub watch_hub_capacity: usize,
}

impl StoreConfig {
    /// A single replica (node 1) in `data_dir` with default settings.
    pub fn single(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            node_id: 1,
            listen_addr: None,
            peers: BTreeMap::new(),
            compaction: CompactionConfig::default(),
            raft: RaftTuning::default(),
            watch_hub_capacity: DEFAULT_HUB_CAPACITY,
        }
    }
}

/// A cheap-to-clone handle to one replica of the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    raft: Raft,
    batcher: Batcher,
    db: Arc<DB>,
    shared: Arc<Shared>,
    peers: BTreeMap<NodeId, String>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    leader_clients: Mutex<HashMap<NodeId, network::Client>>,
}

fn raft_err(op: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> StoreError {
    move |err| StoreError::Raft {
        op,
        message: err.to_string(),
    }
}

impl Store {
    /// Opens the replica in `config.data_dir`, starts Raft (and its gRPC
    /// server when `listen_addr` is set) and, on a cluster's first start,
    /// initializes it: a single replica elects itself before this returns;
    /// in a cluster the lowest node id proposes the membership.
    #[tracing::instrument(skip_all, fields(node_id = config.node_id, data_dir = %config.data_dir.display()))]
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        validate(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::CreateDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let db = crate::db::open(&config.data_dir)?;
        let shared = Arc::new(Shared::new(config.watch_hub_capacity.max(1)));
        let log_store = LogStore::new(Arc::clone(&db))
            .map_err(|e| raft_err("start the WAL-sync thread")(&e))?;
        let state_machine = StateMachine::new(Arc::clone(&db), Arc::clone(&shared))
            .map_err(|e| raft_err("load the state machine")(&e))?;
        let raft_config = openraft::Config {
            cluster_name: "skep".into(),
            heartbeat_interval: millis(config.raft.heartbeat_interval),
            election_timeout_min: millis(config.raft.election_timeout_min),
            election_timeout_max: millis(config.raft.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_after_logs),
            max_in_snapshot_log_to_keep: 1000,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| StoreError::Config {
            reason: e.to_string(),
        })?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetworkFactory,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| raft_err("start")(&e))?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let batcher = Batcher::start(raft.clone());
        let mut tasks = Vec::new();
        if let Some(addr) = config.listen_addr {
            tasks.push(serve(raft.clone(), batcher.clone(), addr, shutdown_rx.clone()).await?);
        }
        tasks.push(tokio::spawn(compactor(
            raft.clone(),
            config.node_id,
            Arc::clone(&shared),
            config.compaction.clone(),
            shutdown_rx,
        )));

        let store = Store {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                raft,
                batcher,
                db,
                shared,
                peers: config.peers.clone(),
                shutdown,
                tasks: Mutex::new(tasks),
                leader_clients: Mutex::new(HashMap::new()),
            }),
        };
        store.initialize(&config).await?;
        tracing::info!(
            revision = store.current_revision(),
            compacted = store.compacted_revision(),
            "store open"
        );
        Ok(store)
    }

    async fn initialize(&self, config: &StoreConfig) -> Result<(), StoreError> {
        let raft = &self.inner.raft;
        if raft
            .is_initialized()
            .await
            .map_err(|e| raft_err("check initialization")(&e))?
        {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = if config.peers.is_empty() {
            BTreeMap::from([(config.node_id, BasicNode::default())])
        } else {
            config
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect()
        };
        if members.keys().next() != Some(&config.node_id) {
            tracing::info!("waiting for the lowest node id to initialize the cluster");
            return Ok(());
        }
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initializing the raft cluster");
        match raft.initialize(members).await {
            Ok(())
            | Err(OrRaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
            Err(err) => return Err(raft_err("initialize the cluster")(&err)),
        }
        if config.peers.is_empty() {
            raft.wait(Some(SINGLE_REPLICA_ELECTION))
                .current_leader(config.node_id, "single replica elects itself")
                .await
                .map_err(|e| raft_err("elect the single replica")(&e))?;
        }
        Ok(())
    }

    /// The database, for tests that look under the API.
    #[cfg(test)]
    pub(crate) fn inner_db(&self) -> Arc<DB> {
        Arc::clone(&self.inner.db)
    }

    /// This replica's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// The underlying Raft instance (membership changes, metrics, tests).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The revision of the last write this replica applied (for bookmarks).
    pub fn current_revision(&self) -> u64 {
        self.inner.shared.revision()
    }

    /// The compaction point: reads and watches at or before it fail with
    /// `Compacted` (reads exactly at it still work).
    pub fn compacted_revision(&self) -> u64 {
        self.inner.shared.compacted()
    }

    /// Creates `key`; fails with `AlreadyExists` if it is present.
    pub async fn create(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<KeyValue, StoreError> {
        let key = key.into();
        let request = Request::Create {
            key: key.clone(),
            value: value.into(),
        };
        match self.write(request).await? {
            Response::Put { kv, .. } => Ok(kv),
            other => Err(failure(&key, other)),
        }
    }

    /// Replaces the value of `key`, if it exists and (when given) is still at
    /// `expected_mod_revision`.
    pub async fn update(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        expected_mod_revision: Option<u64>,
    ) -> Result<KeyValue, StoreError> {
        let key = key.into();
        let request = Request::Update {
            key: key.clone(),
            value: value.into(),
            expected_mod_revision,
        };
        match self.write(request).await? {
            Response::Put { kv, .. } => Ok(kv),
            other => Err(failure_expecting(&key, other, expected_mod_revision)),
        }
    }

    /// Deletes `key`, if it exists and (when given) is still at
    /// `expected_mod_revision`. The delete takes its own revision.
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        expected_mod_revision: Option<u64>,
    ) -> Result<Deleted, StoreError> {
        let key = key.into();
        let request = Request::Delete {
            key: key.clone(),
            expected_mod_revision,
        };
        match self.write(request).await? {
            Response::Deleted { revision, prev } => Ok(Deleted { revision, prev }),
            other => Err(failure_expecting(&key, other, expected_mod_revision)),
        }
    }

    /// Applies `ops` (creates, updates and deletes of distinct keys) all or
    /// nothing; returns each op's outcome, or the failure of the first op
    /// whose precondition does not hold (its key names it), having written
    /// nothing.
    pub async fn txn(&self, ops: Vec<Request>) -> Result<Vec<Response>, StoreError> {
        let preconditions: Vec<(Bytes, Option<u64>)> = ops
            .iter()
            .map(|op| match op {
                Request::Update {
                    key,
                    expected_mod_revision,
                    ..
                }
                | Request::Delete {
                    key,
                    expected_mod_revision,
                } => (key.clone(), *expected_mod_revision),
                Request::Create { key, .. } => (key.clone(), None),
                Request::Compact { .. } | Request::Batch(_) | Request::Txn(_) => {
                    (Bytes::new(), None)
                }
            })
            .collect();
        match self.write(Request::Txn(ops)).await? {
            Response::Batch(responses) => Ok(responses),
            Response::TxnFailed { index, failure } => {
                let (key, expected) = preconditions.get(index).cloned().unwrap_or_default();
                Err(failure_expecting(&key, Response::Failed(failure), expected))
            }
            other => Err(failure(b"", other)),
        }
    }

    /// Compacts history at and before `revision` on every replica; returns
    /// the compaction point afterwards.
    pub async fn compact(&self, revision: u64) -> Result<u64, StoreError> {
        match self.write(Request::Compact { revision }).await? {
            Response::Compacted { revision } => Ok(revision),
            Response::Failed(WriteFailure::FutureRevision { current }) => {
                Err(StoreError::FutureRevision {
                    requested: revision,
                    current,
                })
            }
            other => Err(failure(b"", other)),
        }
    }

    /// Proposes one write through Raft and returns what applying it did.
    /// Concurrent creates, updates and deletes share log entries (see
    /// [`Request::Batch`]). On a follower the write is forwarded to the leader.
    #[tracing::instrument(level = "debug", skip_all, fields(op = request.op_name()))]
    pub async fn write(&self, request: Request) -> Result<Response, StoreError> {
        let result = match request {
            Request::Compact { .. } | Request::Batch(_) => self
                .inner
                .raft
                .client_write(request.clone())
                .await
                .map(|reply| reply.data),
            _ => self
                .inner
                .batcher
                .submit(request.clone())
                .await
                .ok_or(StoreError::Shutdown)?,
        };
        match result {
            Ok(response) => Ok(response),
            Err(OrRaftError::APIError(CwError::ForwardToLeader(forward))) => {
                let Some(leader_id) = forward.leader_id else {
                    return Err(StoreError::NotLeader { leader_id: None });
                };
                let client = self.leader_client(leader_id)?;
                let forwarded = network::forward_write(client, leader_id, &request).await?;
                forwarded.map_err(|err| write_error(&err))
            }
            Err(err) => Err(write_error(&err)),
        }
    }

    fn leader_client(&self, leader_id: NodeId) -> Result<network::Client, StoreError> {
        let mut clients = self
            .inner
            .leader_clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&leader_id) {
            return Ok(client.clone());
        }
        let Some(addr) = self.inner.peers.get(&leader_id) else {
            return Err(StoreError::NotLeader {
                leader_id: Some(leader_id),
            });
        };
        let client = network::client(addr).map_err(|e| StoreError::Forward {
            op: "connect",
            leader_id,
            message: e.to_string(),
        })?;
        clients.insert(leader_id, client.clone());
        Ok(client)
    }

    /// Waits until this replica may serve a read of the given consistency.
    async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), StoreError> {
        if consistency == ReadConsistency::Local {
            return Ok(());
        }
        let raft = &self.inner.raft;
        match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(OrRaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                forward,
            ))) => {
                let Some(leader_id) = forward.leader_id else {
                    return Err(StoreError::NotLeader { leader_id: None });
                };
                let client = self.leader_client(leader_id)?;
                let index = network::read_index(client, leader_id).await?;
                raft.wait(None)
                    .applied_index_at_least(Some(index), "follower read index")
                    .await
                    .map_err(|e| raft_err("wait for the read index")(&e))?;
                Ok(())
            }
            Err(err) => Err(raft_err("confirm leadership for a read")(&err)),
        }
    }

    /// The live value of `key`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn get(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<Option<KeyValue>, StoreError> {
        self.read_barrier(consistency).await?;
        let reader = Reader::snapshot(&self.inner.db);
        let revision = reader.revisions()?.revision;
        reader.get_kv(&Bytes::copy_from_slice(key.as_ref()), revision)
    }

    /// The live values of `keys`, read at one revision behind one read
    /// barrier (a lookup of several related objects pays for one).
    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    pub async fn get_many(
        &self,
        keys: &[Bytes],
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<KeyValue>>, StoreError> {
        self.read_barrier(consistency).await?;
        let reader = Reader::snapshot(&self.inner.db);
        let revision = reader.revisions()?.revision;
        keys.iter()
            .map(|key| reader.get_kv(key, revision))
            .collect()
    }

    /// One page of the live keys under a prefix, consistent at one revision.
    #[tracing::instrument(level = "debug", skip_all, fields(limit = request.limit, revision = request.revision))]
    pub async fn list(
        &self,
        request: ListRequest,
        consistency: ReadConsistency,
    ) -> Result<ListResult, StoreError> {
        // A read at a past revision needs no barrier: history does not change.
        if request.revision.is_none() {
            self.read_barrier(consistency).await?;
        }
        let db = Arc::clone(&self.inner.db);
        tokio::task::spawn_blocking(move || {
            let reader = Reader::snapshot(&db);
            let revisions = reader.revisions()?;
            let at = request.revision.unwrap_or(revisions.revision);
            if at < revisions.compacted {
                return Err(StoreError::Compacted {
                    requested: at,
                    compacted: revisions.compacted,
                });
            }
            if at > revisions.revision {
                return Err(StoreError::FutureRevision {
                    requested: at,
                    current: revisions.revision,
                });
            }
            let (items, more) = reader.list(
                &request.prefix,
                request.start_after.as_deref(),
                request.limit,
                at,
            )?;
            Ok(ListResult {
                items,
                revision: at,
                more,
            })
        })
        .await
        .map_err(|_| StoreError::Shutdown)?
    }

    /// Watches changes under `prefix` after `from_revision`: replays history
    /// first, then follows live. Fails with `Compacted` if history after
    /// `from_revision` is gone. Watch from `current_revision()` for changes
    /// from now on.
    pub fn watch(
        &self,
        prefix: impl Into<Bytes>,
        from_revision: u64,
    ) -> Result<WatchStream, StoreError> {
        let compacted = self.compacted_revision();
        if from_revision < compacted {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compacted,
            });
        }
        if *self.inner.shutdown.borrow() {
            return Err(StoreError::Shutdown);
        }
        Ok(watch_mod::start(
            Arc::downgrade(&self.inner.db),
            &self.inner.shared.hub,
            self.inner.shutdown.subscribe(),
            prefix.into(),
            from_revision,
        ))
    }

    /// Stops Raft, the gRPC server, the compactor and all watches, and waits
    /// for them to release the database so the directory can be reopened.
    #[tracing::instrument(skip_all, fields(node_id = self.inner.node_id))]
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown.send_replace(true);
        let raft_result = self.inner.raft.shutdown().await;
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            if let Err(err) = task.await {
                tracing::warn!(?err, "a store task failed");
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Arc::strong_count(&self.inner.db) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.inner.db) > 1 {
            tracing::warn!("the store database is still in use after shutdown");
        }
        raft_result.map_err(|e| raft_err("shut down")(&e))?;
        tracing::info!("store shut down");
        Ok(())
    }
}

fn validate(config: &StoreConfig) -> Result<(), StoreError> {
    let reason = if config.node_id == 0 {
        "node_id must not be 0"
    } else if !config.peers.is_empty() && !config.peers.contains_key(&config.node_id) {
        "peers must include this node"
    } else if !config.peers.is_empty() && config.listen_addr.is_none() {
        "a replica with peers needs a listen_addr"
    } else {
        return Ok(());
    };
    Err(StoreError::Config {
        reason: reason.into(),
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn write_error(err: &RaftError<ClientWriteError>) -> StoreError {
    match err {
        OrRaftError::APIError(CwError::ForwardToLeader(forward)) => StoreError::NotLeader {
            leader_id: forward.leader_id,
        },
        OrRaftError::Fatal(openraft::error::Fatal::Stopped) => StoreError::Shutdown,
        other => raft_err("replicate a write")(other),
    }
}

fn failure(key: &[u8], response: Response) -> StoreError {
    failure_expecting(key, response, None)
}

fn failure_expecting(key: &[u8], response: Response, expected: Option<u64>) -> StoreError {
    let key = key_string(key);
    match response {
        Response::Failed(WriteFailure::AlreadyExists) => StoreError::AlreadyExists { key },
        Response::Failed(WriteFailure::NotFound) => StoreError::NotFound { key },
        Response::Failed(WriteFailure::Conflict { current }) => StoreError::Conflict {
            key,
            expected: expected.unwrap_or_default(),
            current,
        },
        other => StoreError::Raft {
            op: "apply a write",
            message: format!("unexpected response {other:?}"),
        },
    }
}

/// Serves Raft gRPC on `addr` until shutdown.
async fn serve(
    raft: Raft,
    batcher: Batcher,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, StoreError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StoreError::Bind { addr, source })?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(%addr, "serving raft gRPC");
    Ok(tokio::spawn(async move {
        let signal = async move {
            // An error means the store is gone: stop as well.
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(err) = tonic::transport::Server::builder()
            .add_service(RaftService::server(raft, batcher))
            .serve_with_incoming_shutdown(incoming, signal)
            .await
        {
            tracing::error!(?err, %addr, "raft gRPC server failed");
        }
    }))
}

/// Proposes compactions on the leader according to `config`.
async fn compactor(
    raft: Raft,
    node_id: NodeId,
    shared: Arc<Shared>,
    config: CompactionConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    if config.retain_revisions.is_none() && config.retain_for.is_none() {
        return;
    }
    // (when, revision) samples, oldest first, to map `retain_for` to a revision.
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            _ = shutdown.changed() => return,
        }
        let now = Instant::now();
        let current = shared.revision();
        samples.push_back((now, current));
        let mut target = current;
        if let Some(keep) = config.retain_revisions {
            target = target.min(current.saturating_sub(keep));
        }
        if let Some(retain_for) = config.retain_for {
            // The newest sample old enough; drop the ones before it.
            let old_enough = |(when, _): &(Instant, u64)| now.duration_since(*when) >= retain_for;
            while samples.len() > 1 && samples.get(1).is_some_and(old_enough) {
                samples.pop_front();
            }
            target = match samples.front() {
                Some(sample) if old_enough(sample) => target.min(sample.1),
                _ => 0,
            };
        }
        if target <= shared.compacted() || raft.metrics().borrow().current_leader != Some(node_id) {
            continue;
        }
        match raft
            .client_write(Request::Compact { revision: target })
            .await
        {
            Ok(reply) => tracing::debug!(response = ?reply.data, "proposed compaction"),
            Err(err) => tracing::warn!(?err, revision = target, "failed to propose compaction"),
        }
    }
}
