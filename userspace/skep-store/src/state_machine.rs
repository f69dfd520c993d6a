//! The replicated state machine: applies writes to the MVCC history in
//! `RocksDB`, assigns revisions, feeds the watch hub, compacts, and builds and
//! installs snapshots.
//!
//! Each `apply` call writes one `WriteBatch` holding every change of its
//! entries together with `last_applied`, membership and revisions, so a
//! restart sees either all of a batch or none of it.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{DB, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::db::{CF_EVENTS, CF_SM_META, CF_SNAPSHOT, CF_VERSIONS, cf};
use crate::error::StoreError;
use crate::keys::{StoredVersion, be, version_key};
use crate::mvcc::{Found, KEY_REVISIONS, Reader, Revisions, tombstone_kv};
use crate::typ::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    TypeConfig,
};
use crate::types::{Event, EventKind, KeyValue, Request, Response, WriteFailure};
use crate::watch::HubMessage;

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// The column families a snapshot carries, with their tags in the stream.
const SNAPSHOT_CFS: [(u8, &str); 3] = [(1, CF_SM_META), (2, CF_VERSIONS), (3, CF_EVENTS)];

/// State the store handle reads without going through the state machine.
#[derive(Debug)]
pub(crate) struct Shared {
    revision: AtomicU64,
    compacted: AtomicU64,
    /// Applied changes, fanned out to watchers.
    pub(crate) hub: broadcast::Sender<HubMessage>,
}

impl Shared {
    pub(crate) fn new(hub_capacity: usize) -> Self {
        Shared {
            revision: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            hub: broadcast::channel(hub_capacity).0,
        }
    }

    /// The revision of the last applied write.
    pub(crate) fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The compaction point.
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }

    fn set(&self, revisions: Revisions) {
        self.revision.store(revisions.revision, Ordering::Release);
        self.compacted.store(revisions.compacted, Ordering::Release);
    }
}

/// What the state machine has applied.
#[derive(Debug, Clone, Default)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revisions: Revisions,
}

/// The Raft state machine of one replica.
pub struct StateMachine {
    db: Arc<DB>,
    applied: AppliedState,
    shared: Arc<Shared>,
}

/// Builds snapshots from a consistent view of the state machine.
pub struct SnapshotBuilder {
    db: Arc<DB>,
}

fn sm_read_err(e: &(impl std::error::Error + 'static)) -> StorageError {
    StorageIOError::read_state_machine(e).into()
}

fn sm_write_err(e: &(impl std::error::Error + 'static)) -> StorageError {
    StorageIOError::write_state_machine(e).into()
}

fn get_meta<T: DeserializeOwned>(
    reader_db: &DB,
    opts: &rocksdb::ReadOptions,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    let Some(bytes) = reader_db
        .get_pinned_cf_opt(cf(reader_db, CF_SM_META), key, opts)
        .map_err(|e| sm_read_err(&e))?
    else {
        return Ok(None);
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| sm_read_err(&e))
}

fn load_applied(db: &DB) -> Result<AppliedState, StorageError> {
    let opts = rocksdb::ReadOptions::default();
    Ok(AppliedState {
        last_applied: get_meta::<Option<LogId>>(db, &opts, KEY_LAST_APPLIED)?.flatten(),
        membership: get_meta(db, &opts, KEY_MEMBERSHIP)?.unwrap_or_default(),
        revisions: Reader::latest(db)
            .revisions()
            .map_err(|e| sm_read_err(&e))?,
    })
}

impl StateMachine {
    /// Loads the applied state from the shared database.
    pub(crate) fn new(db: Arc<DB>, shared: Arc<Shared>) -> Result<Self, StorageError> {
        let applied = load_applied(&db)?;
        shared.set(applied.revisions);
        tracing::debug!(
            last_applied = ?applied.last_applied,
            revision = applied.revisions.revision,
            compacted = applied.revisions.compacted,
            "loaded state machine"
        );
        Ok(StateMachine {
            db,
            applied,
            shared,
        })
    }

    /// Writes `pending` with the applied state, then publishes its events.
    fn commit(&mut self, pending: &mut Pending) -> Result<(), StorageError> {
        let sm_meta = cf(&self.db, CF_SM_META);
        let mut batch = std::mem::take(&mut pending.batch);
        let last_applied =
            postcard::to_stdvec(&pending.applied.last_applied).map_err(|e| sm_write_err(&e))?;
        let membership =
            postcard::to_stdvec(&pending.applied.membership).map_err(|e| sm_write_err(&e))?;
        batch.put_cf(sm_meta, KEY_LAST_APPLIED, last_applied);
        batch.put_cf(sm_meta, KEY_MEMBERSHIP, membership);
        batch.put_cf(sm_meta, KEY_REVISIONS, pending.applied.revisions.encode());
        self.db.write(batch).map_err(|e| sm_write_err(&e))?;
        pending.overlay.clear();
        self.applied = pending.applied.clone();
        self.shared.set(self.applied.revisions);
        if !pending.events.is_empty() {
            let events: Arc<[Event]> = std::mem::take(&mut pending.events).into();
            // No receiver means no watcher: nothing to do.
            let _ = self.shared.hub.send(HubMessage::Events(events));
        }
        Ok(())
    }

    /// Drops history at and before `target`, in `pending.batch`.
    ///
    /// Keeps, for every key, the newest version at or before `target` unless
    /// it is a deletion, so reads at `target` and later still work.
    fn compact(&self, pending: &mut Pending, target: u64) -> Result<Response, StoreError> {
        let revisions = pending.applied.revisions;
        if target <= revisions.compacted {
            return Ok(Response::Compacted {
                revision: revisions.compacted,
            });
        }
        if target > revisions.revision {
            return Ok(Response::Failed(WriteFailure::FutureRevision {
                current: revisions.revision,
            }));
        }
        let keys = Reader::latest(&self.db).keys_changed(revisions.compacted, target)?;
        let versions = cf(&self.db, CF_VERSIONS);
        let mut deleted = 0_usize;
        for key in &keys {
            let mut iter = self.db.raw_iterator_cf(versions);
            iter.seek(version_key(key, target));
            let mut first = true;
            while let Some(encoded) = iter.key() {
                let Some((found_key, _)) = crate::keys::decode_version_key(encoded) else {
                    return Err(StoreError::Decode {
                        what: "a version key",
                    });
                };
                if found_key != key.as_ref() {
                    break;
                }
                let tombstone = iter.value() == Some(&StoredVersion::Tombstone.encode()[..]);
                if !first || tombstone {
                    pending.batch.delete_cf(versions, encoded);
                    deleted += 1;
                }
                first = false;
                iter.next();
            }
            iter.status().map_err(|source| StoreError::Db {
                op: "compact",
                source,
            })?;
        }
        pending
            .batch
            .delete_range_cf(cf(&self.db, CF_EVENTS), be(0), be(target + 1));
        pending.applied.revisions.compacted = target;
        tracing::info!(
            revision = target,
            keys = keys.len(),
            versions_deleted = deleted,
            "compacted history"
        );
        Ok(Response::Compacted { revision: target })
    }
}

/// Changes of one `apply` call not yet written.
struct Pending {
    batch: WriteBatch,
    applied: AppliedState,
    /// The newest version of each key written in this batch.
    overlay: HashMap<Bytes, Found>,
    events: Vec<Event>,
}

impl Pending {
    fn current(&self, db: &DB, key: &Bytes) -> Result<Option<KeyValue>, StoreError> {
        let found = match self.overlay.get(key) {
            Some(found) => Some(found.clone()),
            None => Reader::latest(db).get_at(key, u64::MAX)?,
        };
        Ok(found.and_then(|(revision, version)| version.to_kv(key, revision)))
    }

    fn write_version(&mut self, db: &DB, key: &Bytes, version: StoredVersion) -> u64 {
        let revision = self.applied.revisions.revision + 1;
        self.applied.revisions.revision = revision;
        self.batch.put_cf(
            cf(db, CF_VERSIONS),
            version_key(key, revision),
            version.encode(),
        );
        self.batch.put_cf(cf(db, CF_EVENTS), be(revision), key);
        self.overlay.insert(key.clone(), (revision, version));
        revision
    }

    fn apply(&mut self, db: &DB, request: Request) -> Result<Response, StoreError> {
        match request {
            Request::Create { key, value } => {
                if self.current(db, &key)?.is_some() {
                    return Ok(Response::Failed(WriteFailure::AlreadyExists));
                }
                let revision = self.applied.revisions.revision + 1;
                let version = StoredVersion::Live {
                    create_revision: revision,
                    version: 1,
                    value,
                };
                self.put(db, &key, version, None)
            }
            Request::Update {
                key,
                value,
                expected_mod_revision,
            } => {
                let current = match check(self.current(db, &key)?, expected_mod_revision) {
                    Ok(current) => current,
                    Err(failure) => return Ok(Response::Failed(failure)),
                };
                let version = StoredVersion::Live {
                    create_revision: current.create_revision,
                    version: current.version + 1,
                    value,
                };
                self.put(db, &key, version, Some(current))
            }
            Request::Delete {
                key,
                expected_mod_revision,
            } => {
                let current = match check(self.current(db, &key)?, expected_mod_revision) {
                    Ok(current) => current,
                    Err(failure) => return Ok(Response::Failed(failure)),
                };
                let revision = self.write_version(db, &key, StoredVersion::Tombstone);
                self.events.push(Event {
                    kind: EventKind::Delete,
                    kv: tombstone_kv(key, revision),
                    prev_kv: Some(current.clone()),
                });
                Ok(Response::Deleted {
                    revision,
                    prev: current,
                })
            }
            Request::Txn(ops) => self.apply_txn(db, ops),
            Request::Compact { .. } | Request::Batch(_) => {
                Ok(Response::Failed(WriteFailure::NotBatchable))
            }
        }
    }

    /// Checks every op of a transaction before writing any: the keys are
    /// distinct, so one op's outcome does not depend on another's.
    fn apply_txn(&mut self, db: &DB, ops: Vec<Request>) -> Result<Response, StoreError> {
        let mut keys = std::collections::HashSet::new();
        for (index, op) in ops.iter().enumerate() {
            let failure = match op {
                Request::Create { key, .. } if keys.insert(key) => {
                    self.current(db, key)?.map(|_| WriteFailure::AlreadyExists)
                }
                Request::Update {
                    key,
                    expected_mod_revision,
                    ..
                }
                | Request::Delete {
                    key,
                    expected_mod_revision,
                } if keys.insert(key) => {
                    check(self.current(db, key)?, *expected_mod_revision).err()
                }
                Request::Create { .. } | Request::Update { .. } | Request::Delete { .. } => {
                    Some(WriteFailure::DuplicateKey)
                }
                Request::Compact { .. } | Request::Batch(_) | Request::Txn(_) => {
                    Some(WriteFailure::NotBatchable)
                }
            };
            if let Some(failure) = failure {
                return Ok(Response::TxnFailed { index, failure });
            }
        }
        let responses = ops
            .into_iter()
            .map(|op| self.apply(db, op))
            .collect::<Result<_, _>>()?;
        Ok(Response::Batch(responses))
    }

    fn put(
        &mut self,
        db: &DB,
        key: &Bytes,
        version: StoredVersion,
        prev: Option<KeyValue>,
    ) -> Result<Response, StoreError> {
        let kv_of = version.clone();
        let revision = self.write_version(db, key, version);
        let kv = kv_of.to_kv(key, revision).ok_or(StoreError::Decode {
            what: "a new version",
        })?;
        self.events.push(Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev_kv: prev.clone(),
        });
        Ok(Response::Put { kv, prev })
    }
}

/// Checks that a key exists and, if asked, that it is at the expected revision.
fn check(current: Option<KeyValue>, expected: Option<u64>) -> Result<KeyValue, WriteFailure> {
    let current = current.ok_or(WriteFailure::NotFound)?;
    match expected {
        Some(expected) if expected != current.mod_revision => Err(WriteFailure::Conflict {
            current: current.mod_revision,
        }),
        _ => Ok(current),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    #[tracing::instrument(level = "trace", skip_all)]
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut pending = Pending {
            batch: WriteBatch::default(),
            applied: self.applied.clone(),
            overlay: HashMap::new(),
            events: Vec::new(),
        };
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let response = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(membership) => {
                    pending.applied.membership = StoredMembership::new(Some(log_id), membership);
                    Response::None
                }
                EntryPayload::Normal(Request::Compact { revision }) => {
                    // Compaction reads what earlier entries wrote: write them first.
                    self.commit(&mut pending)?;
                    self.compact(&mut pending, revision)
                        .map_err(|e| StorageIOError::apply(log_id, &e))?
                }
                EntryPayload::Normal(Request::Batch(requests)) => Response::Batch(
                    requests
                        .into_iter()
                        .map(|request| pending.apply(&self.db, request))
                        .collect::<Result<_, _>>()
                        .map_err(|e| StorageIOError::apply(log_id, &e))?,
                ),
                EntryPayload::Normal(request) => pending
                    .apply(&self.db, request)
                    .map_err(|e| StorageIOError::apply(log_id, &e))?,
            };
            pending.applied.last_applied = Some(log_id);
            responses.push(response);
        }
        self.commit(&mut pending)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: Arc::clone(&self.db),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[tracing::instrument(skip_all, fields(snapshot_id = %meta.snapshot_id, last_log_id = ?meta.last_log_id))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let db = Arc::clone(&self.db);
        let meta_owned = meta.clone();
        let signature = meta.signature();
        tokio::task::spawn_blocking(move || install(&db, &meta_owned, &data))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))??;
        self.applied = load_applied(&self.db)?;
        self.shared.set(self.applied.revisions);
        // Watchers replay from disk: the snapshot may skip revisions they need.
        let _ = self.shared.hub.send(HubMessage::Reset);
        tracing::info!(
            revision = self.applied.revisions.revision,
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snapshot_cf = cf(&self.db, CF_SNAPSHOT);
        let read = |key| {
            self.db
                .get_cf(snapshot_cf, key)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))
        };
        let (Some(meta), Some(data)) = (read(KEY_SNAPSHOT_META)?, read(KEY_SNAPSHOT_DATA)?) else {
            return Ok(None);
        };
        let meta: SnapshotMeta =
            postcard::from_bytes(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    #[tracing::instrument(skip_all)]
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let db = Arc::clone(&self.db);
        let (meta, data) = tokio::task::spawn_blocking(move || build(&db))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))??;
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Serializes the state machine column families of one `RocksDB` snapshot and
/// saves the result as the current snapshot.
fn build(db: &DB) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
    let snapshot = db.snapshot();
    let mut opts = rocksdb::ReadOptions::default();
    opts.set_snapshot(&snapshot);
    let last_applied = get_meta::<Option<LogId>>(db, &opts, KEY_LAST_APPLIED)?.flatten();
    let membership: StoredMembership = get_meta(db, &opts, KEY_MEMBERSHIP)?.unwrap_or_default();
    let mut data = Vec::new();
    for (tag, name) in SNAPSHOT_CFS {
        let mut iter = db.raw_iterator_cf_opt(cf(db, name), {
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_snapshot(&snapshot);
            opts
        });
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            write_record(&mut data, tag, key, value)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            iter.next();
        }
        iter.status()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let snapshot_id = match last_applied {
        Some(log_id) => format!(
            "{}-{}-{}-{nanos}",
            log_id.leader_id,
            log_id.index,
            data.len()
        ),
        None => format!("empty-{nanos}"),
    };
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id,
    };
    save_snapshot(db, &meta, &data, None)?;
    Ok((meta, data))
}

/// Saves `meta`/`data` as the current snapshot, in `batch` if given or
/// synced on its own.
fn save_snapshot(
    db: &DB,
    meta: &SnapshotMeta,
    data: &[u8],
    batch: Option<&mut WriteBatch>,
) -> Result<(), StorageError> {
    let signature = meta.signature();
    let meta_bytes = postcard::to_stdvec(meta)
        .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))?;
    let snapshot_cf = cf(db, CF_SNAPSHOT);
    if let Some(batch) = batch {
        batch.put_cf(snapshot_cf, KEY_SNAPSHOT_META, meta_bytes);
        batch.put_cf(snapshot_cf, KEY_SNAPSHOT_DATA, data);
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    batch.put_cf(snapshot_cf, KEY_SNAPSHOT_META, meta_bytes);
    batch.put_cf(snapshot_cf, KEY_SNAPSHOT_DATA, data);
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
}

/// Replaces the state machine column families with a snapshot, in one
/// synced batch.
fn install(db: &DB, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let signature = meta.signature();
    let snap_err = |what: &'static str| {
        StorageError::from(StorageIOError::read_snapshot(
            Some(signature.clone()),
            openraft::AnyError::error(what),
        ))
    };
    let mut batch = WriteBatch::default();
    for (_, name) in SNAPSHOT_CFS {
        clear_cf(db, name, &mut batch).map_err(|e| sm_write_err(&e))?;
    }
    let mut rest = data;
    while !rest.is_empty() {
        let (tag, key, value, tail) =
            read_record(rest).ok_or_else(|| snap_err("truncated snapshot record"))?;
        let (_, name) = SNAPSHOT_CFS
            .iter()
            .find(|(t, _)| *t == tag)
            .ok_or_else(|| snap_err("unknown snapshot column family"))?;
        batch.put_cf(cf(db, name), key, value);
        rest = tail;
    }
    let sm_meta = cf(db, CF_SM_META);
    let last_applied = postcard::to_stdvec(&meta.last_log_id).map_err(|e| sm_write_err(&e))?;
    let membership = postcard::to_stdvec(&meta.last_membership).map_err(|e| sm_write_err(&e))?;
    batch.put_cf(sm_meta, KEY_LAST_APPLIED, last_applied);
    batch.put_cf(sm_meta, KEY_MEMBERSHIP, membership);
    save_snapshot(db, meta, data, Some(&mut batch))?;
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
        .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e).into())
}

/// Deletes every key of a column family, in `batch`.
fn clear_cf(db: &DB, name: &'static str, batch: &mut WriteBatch) -> Result<(), rocksdb::Error> {
    let handle = cf(db, name);
    let mut iter = db.raw_iterator_cf(handle);
    iter.seek_to_first();
    let Some(first) = iter.key().map(<[u8]>::to_vec) else {
        return iter.status();
    };
    iter.seek_to_last();
    let Some(last) = iter.key().map(<[u8]>::to_vec) else {
        return iter.status();
    };
    batch.delete_range_cf(handle, &first, &last);
    batch.delete_cf(handle, &last);
    Ok(())
}

fn write_record(
    out: &mut Vec<u8>,
    tag: u8,
    key: &[u8],
    value: &[u8],
) -> Result<(), std::num::TryFromIntError> {
    out.push(tag);
    out.extend_from_slice(&u32::try_from(key.len())?.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&u32::try_from(value.len())?.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// One snapshot record: column family tag, key, value, and the bytes after it.
type Record<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn read_record(bytes: &[u8]) -> Option<Record<'_>> {
    let (&tag, rest) = bytes.split_first()?;
    let (key, rest) = read_len_prefixed(rest)?;
    let (value, rest) = read_len_prefixed(rest)?;
    Some((tag, key, value, rest))
}

fn read_len_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}
