//! The Raft log in `RocksDB`: entries in `logs`, vote/committed/purged in `meta`.
//!
//! An append writes all its entries in one `WriteBatch` (not synced, so it is
//! readable at once) and hands the openraft callback to a WAL-sync thread. The
//! thread syncs the WAL once for every callback queued while the previous sync
//! ran (group commit) and only then acknowledges: the synced WAL is the
//! durability point of a write.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{CF_LOGS, CF_META, cf};
use crate::keys::{be, from_be};
use crate::typ::{
    Entry, LogFlushed, LogId, LogState, StorageError, StorageIOError, TypeConfig, Vote,
};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log storage of one replica.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    wal_sync: Arc<WalSync>,
}

/// The WAL-sync thread and the channel feeding it. Dropping the last clone
/// closes the channel and joins the thread, so the thread's handle on the
/// database is gone before the store is (a database still open when the
/// process exits aborts in its static destructors: "pthread lock: Invalid
/// argument").
struct WalSync {
    tx: Option<mpsc::Sender<LogFlushed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WalSync {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            // The last clone can be dropped by the thread itself (a callback
            // holding the store); it ends on its own after this.
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("the raft log WAL-sync thread panicked");
            }
        }
    }
}

impl LogStore {
    /// Wraps the shared database and starts the WAL-sync thread (it ends
    /// when the last clone of this store is dropped).
    pub(crate) fn new(db: Arc<DB>) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel::<LogFlushed>();
        let sync_db = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("skep-wal-sync".into())
            .spawn(move || wal_sync_loop(&sync_db, &rx))?;
        Ok(LogStore {
            db,
            wal_sync: Arc::new(WalSync {
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageIOError> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(cf(&self.db, CF_META), key)
            .map_err(|e| StorageIOError::read(&e))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| StorageIOError::read(&e))
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let bytes = postcard::to_stdvec(value)
            .map_err(|e| StorageIOError::new(subject.clone(), ErrorVerb::Write, &e))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .put_cf_opt(cf(&self.db, CF_META), key, bytes, &opts)
            .map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, &e).into())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(Err(e)) => Err(StorageIOError::read_logs(&e).into()),
            Some(Ok((_, value))) => {
                let entry: Entry =
                    postcard::from_bytes(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

fn wal_sync_loop(db: &DB, rx: &mpsc::Receiver<LogFlushed>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let result = db.flush_wal(true);
        tracing::trace!(appends = waiting.len(), "synced the raft log WAL");
        if let Err(err) = &result {
            tracing::error!(
                ?err,
                entries = waiting.len(),
                "failed to sync the raft log WAL"
            );
        }
        for callback in waiting {
            callback.log_io_completed(
                result
                    .clone()
                    .map_err(|e| std::io::Error::other(e.into_string())),
            );
        }
    }
    tracing::debug!("raft log WAL-sync thread ends");
}

fn range_start(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    #[tracing::instrument(level = "trace", skip_all, fields(range = ?range))]
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range_start(&range);
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_LOGS),
            IteratorMode::From(&be(start), Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let Some(index) = from_be(&key) else {
                return Err(StorageIOError::read_logs(openraft::AnyError::error(
                    "malformed raft log key",
                ))
                .into());
            };
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = postcard::from_bytes(&value)
                .map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(vote = %vote))]
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(KEY_COMMITTED, &committed, false, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    #[tracing::instrument(level = "trace", skip_all)]
    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = cf(&self.db, CF_LOGS);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.put_cf(logs, be(entry.log_id.index), bytes);
        }
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let sent = match &self.wal_sync.tx {
            Some(tx) => tx.send(callback).map_err(|mpsc::SendError(cb)| cb),
            None => Err(callback),
        };
        if let Err(callback) = sent {
            callback.log_io_completed(Err(std::io::Error::other(
                "the raft log WAL-sync thread is gone",
            )));
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(since = %log_id))]
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let logs = cf(&self.db, CF_LOGS);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(logs, be(log_id.index), be(u64::MAX));
        batch.delete_cf(logs, be(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(upto = %log_id))]
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = postcard::to_stdvec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META), KEY_LAST_PURGED, bytes);
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            be(0),
            be(log_id.index.saturating_add(1)),
        );
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
