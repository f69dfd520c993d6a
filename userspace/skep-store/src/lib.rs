//! The replicated store under the skep API server, replacing etcd.
//!
//! Writes go through openraft and are applied to an MVCC history in `RocksDB`;
//! each successful write takes the next global revision, which the API server
//! uses as `resourceVersion`. Reads (point, prefix pages at a revision) and
//! watches (history replay, then live, in revision order) are served from the
//! local replica. History is compacted through Raft after a configurable
//! window. Replicas talk Raft over tonic gRPC (`proto/raft.proto`).
//!
//! Start with [`Store::open`].
#![deny(missing_docs)]
#![expect(
    clippy::result_large_err,
    reason = "openraft's StorageError, which the storage traits return, is large"
)]

mod batch;
mod db;
mod error;
mod keys;
mod log_store;
mod mvcc;
mod network;
mod state_machine;
mod store;
pub mod typ;
mod types;
mod watch;

pub use error::StoreError;
pub use log_store::LogStore;
pub use network::{Connection, NetworkFactory};
pub use state_machine::{SnapshotBuilder, StateMachine};
pub use store::{CompactionConfig, RaftTuning, Store, StoreConfig};
pub use types::{
    Deleted, Event, EventKind, KeyValue, ListRequest, ListResult, ReadConsistency, Request,
    Response, WriteFailure,
};
pub use watch::WatchStream;

#[cfg(test)]
mod cluster_test;
#[cfg(test)]
mod store_test;
#[cfg(test)]
mod suite_test;
