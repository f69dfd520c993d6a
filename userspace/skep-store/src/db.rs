//! The one `RocksDB` instance behind both the Raft log and the state machine.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options};

use crate::error::StoreError;

/// Raft log entries: `be(index)` → postcard entry.
pub(crate) const CF_LOGS: &str = "logs";
/// Raft log metadata: vote, committed, last purged log id.
pub(crate) const CF_META: &str = "meta";
/// State machine metadata: last applied, membership, revisions.
pub(crate) const CF_SM_META: &str = "sm_meta";
/// MVCC history: every version of every key (see `keys`).
pub(crate) const CF_VERSIONS: &str = "versions";
/// Change log: `be(revision)` → user key, for watch replay and compaction.
pub(crate) const CF_EVENTS: &str = "events";
/// The latest built or installed Raft snapshot.
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

const ALL_CFS: [&str; 6] = [
    CF_LOGS,
    CF_META,
    CF_SM_META,
    CF_VERSIONS,
    CF_EVENTS,
    CF_SNAPSHOT,
];

/// Opens (creating if needed) the store database in `path`.
#[tracing::instrument(skip_all, fields(path = %path.display()))]
pub(crate) fn open(path: &Path) -> Result<Arc<DB>, StoreError> {
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.increase_parallelism(2);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut cf_opts = Options::default();
        cf_opts.set_compression_type(DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(*name, cf_opts)
    });
    let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::debug!("opened store database");
    Ok(Arc::new(db))
}

/// The handle of a column family this module created.
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> &'a ColumnFamily {
    // Every name passed here is one of ALL_CFS, created by `open`; a missing
    // one is a bug in this crate, not an input error.
    db.cf_handle(name).expect("column family created at open")
}
