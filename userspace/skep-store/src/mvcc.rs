//! MVCC reads over the `versions` and `events` column families: a key at a
//! revision, a prefix listing at a revision, and the change log for watches.
//!
//! Readers take a `RocksDB` snapshot, so the revisions and the data they read
//! agree even while the state machine applies and compacts.

use bytes::Bytes;
use rocksdb::{DB, DBRawIteratorWithThreadMode, ReadOptions, SnapshotWithThreadMode};

use crate::db::{CF_EVENTS, CF_SM_META, CF_VERSIONS, cf};
use crate::error::StoreError;
use crate::keys::{
    StoredVersion, after_key, be, decode_version_key, from_be, prefix_start, version_key,
};
use crate::types::{Event, EventKind, KeyValue};

/// The `sm_meta` key of [`Revisions`].
pub(crate) const KEY_REVISIONS: &[u8] = b"revisions";

/// The current revision and the compaction point, stored together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Revisions {
    /// The revision of the last applied write (0 before the first).
    pub(crate) revision: u64,
    /// History at or before this revision is gone (0: nothing compacted).
    pub(crate) compacted: u64,
}

impl Revisions {
    pub(crate) fn encode(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&be(self.revision));
        out[8..].copy_from_slice(&be(self.compacted));
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 16 {
            return None;
        }
        Some(Revisions {
            revision: from_be(&bytes[..8])?,
            compacted: from_be(&bytes[8..])?,
        })
    }
}

/// A version found by a read: its revision and content.
pub(crate) type Found = (u64, StoredVersion);

/// Reads the store, through a snapshot when one is given.
pub(crate) struct Reader<'a> {
    db: &'a DB,
    snapshot: Option<SnapshotWithThreadMode<'a, DB>>,
}

fn db_err(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

impl<'a> Reader<'a> {
    /// A reader of one consistent point in time.
    pub(crate) fn snapshot(db: &'a DB) -> Self {
        Reader {
            db,
            snapshot: Some(db.snapshot()),
        }
    }

    /// A reader of the latest data (for the state machine, the only writer).
    pub(crate) fn latest(db: &'a DB) -> Self {
        Reader { db, snapshot: None }
    }

    fn opts(&self) -> ReadOptions {
        let mut opts = ReadOptions::default();
        if let Some(snapshot) = &self.snapshot {
            opts.set_snapshot(snapshot);
        }
        opts
    }

    fn raw_iter(&self, name: &'static str) -> DBRawIteratorWithThreadMode<'a, DB> {
        self.db.raw_iterator_cf_opt(cf(self.db, name), self.opts())
    }

    /// The revisions this reader sees.
    pub(crate) fn revisions(&self) -> Result<Revisions, StoreError> {
        let bytes = self
            .db
            .get_pinned_cf_opt(cf(self.db, CF_SM_META), KEY_REVISIONS, &self.opts())
            .map_err(db_err("read the revisions"))?;
        match bytes {
            None => Ok(Revisions::default()),
            Some(bytes) => {
                Revisions::decode(&bytes).ok_or(StoreError::Decode { what: "revisions" })
            }
        }
    }

    /// The newest version of `key` at or before revision `at`.
    pub(crate) fn get_at(&self, key: &[u8], at: u64) -> Result<Option<Found>, StoreError> {
        let mut iter = self.raw_iter(CF_VERSIONS);
        iter.seek(version_key(key, at));
        read_version_of(&iter, key)
    }

    /// The live value of `key` at revision `at`.
    pub(crate) fn get_kv(&self, key: &Bytes, at: u64) -> Result<Option<KeyValue>, StoreError> {
        Ok(self
            .get_at(key, at)?
            .and_then(|(revision, version)| version.to_kv(key, revision)))
    }

    /// Live keys starting with `prefix` and after `start_after`, as of
    /// revision `at`, at most `limit` (0: all). Returns the items and whether
    /// more live keys follow.
    pub(crate) fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        at: u64,
    ) -> Result<(Vec<KeyValue>, bool), StoreError> {
        let encoded_prefix = prefix_start(prefix);
        let start = match start_after {
            Some(after) => after_key(after).max(encoded_prefix.clone()),
            None => encoded_prefix.clone(),
        };
        let mut items = Vec::new();
        let mut iter = self.raw_iter(CF_VERSIONS);
        iter.seek(&start);
        while let Some(encoded) = iter.key() {
            if !encoded.starts_with(&encoded_prefix) {
                break;
            }
            let (key, revision) = decode_version_key(encoded).ok_or(StoreError::Decode {
                what: "a version key",
            })?;
            if revision > at {
                iter.next();
                continue;
            }
            let value = iter.value().unwrap_or_default();
            let version =
                StoredVersion::decode(value).ok_or(StoreError::Decode { what: "a version" })?;
            if let Some(kv) = version.to_kv(&Bytes::from(key.clone()), revision) {
                if limit != 0 && items.len() == limit {
                    return Ok((items, true));
                }
                items.push(kv);
            }
            iter.seek(after_key(&key));
        }
        iter.status().map_err(db_err("list keys"))?;
        Ok((items, false))
    }

    /// Changes after revision `after` whose key starts with `prefix`,
    /// scanning at most `max_scan` revisions. Returns the events and the last
    /// revision covered (every revision up to it was examined).
    pub(crate) fn events_after(
        &self,
        after: u64,
        prefix: &[u8],
        max_scan: usize,
    ) -> Result<(Vec<Event>, u64), StoreError> {
        let revisions = self.revisions()?;
        if after < revisions.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: revisions.compacted,
            });
        }
        let mut events = Vec::new();
        let mut covered = after.max(revisions.revision);
        let mut iter = self.raw_iter(CF_EVENTS);
        iter.seek(be(after.saturating_add(1)));
        let mut scanned = 0;
        while let (Some(rev_key), Some(key)) = (iter.key(), iter.value()) {
            let revision = from_be(rev_key).ok_or(StoreError::Decode {
                what: "an event key",
            })?;
            if scanned == max_scan {
                covered = revision - 1;
                break;
            }
            scanned += 1;
            if key.starts_with(prefix) {
                events.push(self.event_at(Bytes::copy_from_slice(key), revision)?);
            }
            iter.next();
        }
        iter.status().map_err(db_err("read the change log"))?;
        Ok((events, covered))
    }

    /// The distinct keys changed in revisions `(after, upto]`.
    pub(crate) fn keys_changed(
        &self,
        after: u64,
        upto: u64,
    ) -> Result<std::collections::HashSet<Bytes>, StoreError> {
        let mut keys = std::collections::HashSet::new();
        let mut iter = self.raw_iter(CF_EVENTS);
        iter.seek(be(after.saturating_add(1)));
        while let (Some(rev_key), Some(key)) = (iter.key(), iter.value()) {
            let revision = from_be(rev_key).ok_or(StoreError::Decode {
                what: "an event key",
            })?;
            if revision > upto {
                break;
            }
            if !keys.contains(key) {
                keys.insert(Bytes::copy_from_slice(key));
            }
            iter.next();
        }
        iter.status().map_err(db_err("read the change log"))?;
        Ok(keys)
    }

    /// The change of `key` at `revision`, with the version before it.
    fn event_at(&self, key: Bytes, revision: u64) -> Result<Event, StoreError> {
        let mut iter = self.raw_iter(CF_VERSIONS);
        iter.seek(version_key(&key, revision));
        let (found_revision, version) =
            read_version_of(&iter, &key)?.ok_or(StoreError::Decode {
                what: "a change log entry",
            })?;
        if found_revision != revision {
            return Err(StoreError::Decode {
                what: "a change log entry",
            });
        }
        iter.next();
        let prev_kv = read_version_of(&iter, &key)?
            .and_then(|(prev_revision, prev)| prev.to_kv(&key, prev_revision));
        Ok(match version.to_kv(&key, revision) {
            Some(kv) => Event {
                kind: EventKind::Put,
                kv,
                prev_kv,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: tombstone_kv(key, revision),
                prev_kv,
            },
        })
    }
}

/// The `kv` of a delete event: the key, no value, the delete's revision.
pub(crate) fn tombstone_kv(key: Bytes, revision: u64) -> KeyValue {
    KeyValue {
        key,
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
    }
}

/// Decodes the version under the iterator if it belongs to `key`.
fn read_version_of(
    iter: &DBRawIteratorWithThreadMode<'_, DB>,
    key: &[u8],
) -> Result<Option<Found>, StoreError> {
    let (Some(encoded), Some(value)) = (iter.key(), iter.value()) else {
        iter.status().map_err(db_err("read a key"))?;
        return Ok(None);
    };
    let (found_key, revision) = decode_version_key(encoded).ok_or(StoreError::Decode {
        what: "a version key",
    })?;
    if found_key != key {
        return Ok(None);
    }
    let version = StoredVersion::decode(value).ok_or(StoreError::Decode { what: "a version" })?;
    Ok(Some((revision, version)))
}
