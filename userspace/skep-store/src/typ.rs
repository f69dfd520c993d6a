//! Type aliases that keep openraft's generics out of the rest of the crate.

use std::io::Cursor;

use crate::types::{Request, Response};

openraft::declare_raft_types!(
    /// The openraft type configuration of the skep store.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A replica's id.
pub type NodeId = u64;
/// A replica's address book entry (its Raft gRPC address).
pub type Node = openraft::BasicNode;
/// The Raft instance.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// A Raft vote.
pub type Vote = openraft::Vote<NodeId>;
/// Membership as stored by the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// Errors the storage traits return.
pub type StorageError = openraft::StorageError<NodeId>;
/// I/O errors inside [`StorageError`].
pub type StorageIOError = openraft::StorageIOError<NodeId>;
/// The log-state summary the log store reports.
pub type LogState = openraft::storage::LogState<TypeConfig>;
/// The callback a log append reports durability through.
pub type LogFlushed = openraft::storage::LogFlushed<TypeConfig>;
/// The request of the `AppendEntries` RPC.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// The response of the `AppendEntries` RPC.
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
/// The request of the Vote RPC.
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
/// The response of the Vote RPC.
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
/// The request of the `InstallSnapshot` RPC (one chunk).
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
/// The response of the `InstallSnapshot` RPC.
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
/// A Raft API error with an API-specific error type.
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
/// The error of an RPC as openraft's network layer sees it.
pub type RpcError<E = openraft::error::Infallible> =
    openraft::error::RPCError<NodeId, Node, RaftError<E>>;
/// The error of a client write.
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
/// The error of a leadership check.
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
/// The error of an install-snapshot API call.
pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
