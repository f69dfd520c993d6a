//! The errors the store returns to its callers.

use std::net::SocketAddr;
use std::path::PathBuf;

/// An error from a store operation.
///
/// Precondition failures (`AlreadyExists`, `NotFound`, `Conflict`) and
/// `Compacted` are part of the API contract: the API server maps them to
/// Kubernetes `Status` codes (409, 404, 409, 410). The rest are failures of the
/// store itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key, lossily decoded as UTF-8.
        key: String,
    },
    /// An update or delete found no such key.
    #[error("key {key} not found")]
    NotFound {
        /// The key, lossily decoded as UTF-8.
        key: String,
    },
    /// An update or delete expected another mod revision.
    #[error("key {key} is at mod revision {current}, not the expected {expected}")]
    Conflict {
        /// The key, lossily decoded as UTF-8.
        key: String,
        /// The mod revision the caller expected.
        expected: u64,
        /// The mod revision the key is at.
        current: u64,
    },
    /// A read or watch asked for history that compaction has removed.
    #[error("revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The compaction point: history at or before it is gone.
        compacted: u64,
    },
    /// A read or compaction asked for a revision the store has not reached.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The current revision.
        current: u64,
    },
    /// A linearizable operation reached a replica that cannot serve it and
    /// could not forward it.
    #[error("this replica is not the leader (leader: {leader_id:?})")]
    NotLeader {
        /// The leader this replica knows of, if any.
        leader_id: Option<u64>,
    },
    /// The configuration cannot work.
    #[error("invalid store configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The data directory could not be created.
    #[error("failed to create the store directory {}", path.display())]
    CreateDir {
        /// The data directory.
        path: PathBuf,
        /// The filesystem error.
        #[source]
        source: std::io::Error,
    },
    /// The `RocksDB` directory could not be opened.
    #[error("failed to open the store database at {}", path.display())]
    Open {
        /// The data directory.
        path: PathBuf,
        /// The `RocksDB` error.
        #[source]
        source: rocksdb::Error,
    },
    /// A `RocksDB` read or write failed.
    #[error("failed to {op} in the store database")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The `RocksDB` error.
        #[source]
        source: rocksdb::Error,
    },
    /// Stored bytes did not decode.
    #[error("failed to decode {what} from the store database")]
    Decode {
        /// What was being decoded.
        what: &'static str,
    },
    /// Raft could not start, or failed.
    #[error("failed to {op} through raft: {message}")]
    Raft {
        /// What was being done.
        op: &'static str,
        /// The openraft error, rendered.
        message: String,
    },
    /// The raft gRPC listener could not be bound.
    #[error("failed to bind the raft gRPC listener on {addr}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Forwarding a request to the leader failed.
    #[error("failed to forward {op} to the leader {leader_id}: {message}")]
    Forward {
        /// What was being forwarded.
        op: &'static str,
        /// The leader it was sent to.
        leader_id: u64,
        /// The transport or remote error, rendered.
        message: String,
    },
    /// The store is shutting down or has shut down.
    #[error("the store is shut down")]
    Shutdown,
}

/// Renders a key for error messages and logs.
pub(crate) fn key_string(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}
