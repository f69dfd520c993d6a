//! openraft's storage conformance suite against the `RocksDB` log store and
//! state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use crate::log_store::LogStore;
use crate::state_machine::{Shared, StateMachine};
use crate::typ::{StorageError, StorageIOError, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let db = crate::db::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let log_store = LogStore::new(Arc::clone(&db)).map_err(|e| StorageIOError::write(&e))?;
        let state_machine = StateMachine::new(db, Arc::new(Shared::new(16)))?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn rocksdb_store_passes_the_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder)
}
