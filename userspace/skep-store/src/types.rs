//! The store's data model: keys with revisions, the writes that go through
//! Raft, their outcomes, and watch events.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One version of a key, as reads, write results and watch events return it.
///
/// The API server uses `mod_revision` as the object's `resourceVersion`; the
/// value bytes never contain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web-0`.
    pub key: Bytes,
    /// The value bytes (a JSON object for the API server).
    pub value: Bytes,
    /// The revision that created this key (since its last deletion).
    pub create_revision: u64,
    /// The revision of the write that produced this version.
    pub mod_revision: u64,
    /// How many writes this key has seen since it was created, starting at 1.
    pub version: u64,
}

/// A write: the application data of one Raft log entry.
///
/// Every successful `Create`, `Update` and `Delete` takes the next global
/// revision; a failed precondition writes nothing and takes no revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Create a key that must not exist.
    Create {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Replace the value of a key that must exist, optionally only if it is
    /// still at `expected_mod_revision`.
    Update {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// The mod revision the caller read, for optimistic concurrency.
        expected_mod_revision: Option<u64>,
    },
    /// Delete a key that must exist, optionally only if it is still at
    /// `expected_mod_revision`.
    Delete {
        /// The key.
        key: Bytes,
        /// The mod revision the caller read, for optimistic concurrency.
        expected_mod_revision: Option<u64>,
    },
    /// Drop history at and before `revision` (reads and watches there then
    /// fail with `Compacted`). Takes no revision of its own.
    Compact {
        /// The new compaction point.
        revision: u64,
    },
    /// Several creates, updates and deletes as one log entry: the store
    /// batches concurrent writers this way, because openraft 0.9 syncs the
    /// log once per entry. Each op applies in order and takes its own
    /// revision; a failed precondition fails only its own op. A nested
    /// `Batch` or `Compact` fails with [`WriteFailure::NotBatchable`].
    Batch(Vec<Request>),
    /// Creates, updates and deletes of distinct keys, all or nothing: every
    /// precondition is checked first and, if one fails, nothing is written
    /// ([`Response::TxnFailed`] names the op). Otherwise each op applies in
    /// order with its own revision, answered by [`Response::Batch`]. Used to
    /// write an object together with the keys that reserve what it holds
    /// (a Service's cluster IP and node ports).
    Txn(Vec<Request>),
}

impl Request {
    /// A short name of the operation, for logs and metrics.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Create { .. } => "create",
            Request::Update { .. } => "update",
            Request::Delete { .. } => "delete",
            Request::Compact { .. } => "compact",
            Request::Batch(_) => "batch",
            Request::Txn(_) => "txn",
        }
    }
}

/// The outcome of applying one log entry, returned to the writer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Response {
    /// A Raft-internal entry (blank or membership): no data changed.
    #[default]
    None,
    /// A create or update succeeded.
    Put {
        /// The new version.
        kv: KeyValue,
        /// The version it replaced, for updates.
        prev: Option<KeyValue>,
    },
    /// A delete succeeded.
    Deleted {
        /// The revision the delete took.
        revision: u64,
        /// The version that was deleted.
        prev: KeyValue,
    },
    /// A compaction was applied, or was already covered.
    Compacted {
        /// The compaction point after the entry.
        revision: u64,
    },
    /// A precondition failed; nothing was written.
    Failed(WriteFailure),
    /// The outcomes of a [`Request::Batch`] or a successful
    /// [`Request::Txn`], one per op, in order.
    Batch(Vec<Response>),
    /// A [`Request::Txn`] wrote nothing: the op at `index` failed.
    TxnFailed {
        /// The position of the failing op in the transaction.
        index: usize,
        /// Why it failed.
        failure: WriteFailure,
    },
}

/// Why a write changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteFailure {
    /// A create found the key present.
    AlreadyExists,
    /// An update or delete found no such key.
    NotFound,
    /// An update or delete expected another mod revision.
    Conflict {
        /// The mod revision the key is at.
        current: u64,
    },
    /// A compaction asked for a revision the store has not reached.
    FutureRevision {
        /// The current revision.
        current: u64,
    },
    /// A `Batch` or `Compact` inside a `Batch`, or anything but a create,
    /// update or delete inside a `Txn`.
    NotBatchable,
    /// A key written twice in one `Txn`.
    DuplicateKey,
}

/// What a watch event did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new version; for a delete, the key with an empty
    /// value and `mod_revision` set to the delete's revision.
    pub kv: KeyValue,
    /// The version before this change (always present for a delete, unless
    /// compacted away for a put that recreated the key).
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of this change.
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read started (confirms
    /// leadership with a quorum; a follower asks the leader for a read index).
    #[default]
    Linearizable,
    /// Whatever this replica has applied; cheapest, possibly stale.
    Local,
}

/// A page of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListRequest {
    /// List keys starting with this prefix (empty: all keys).
    pub prefix: Bytes,
    /// Resume after this key (the last key of the previous page).
    pub start_after: Option<Bytes>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read at this revision (the first page's revision, to keep pages
    /// consistent); `None` reads the current revision.
    pub revision: Option<u64>,
}

/// One page of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Live keys in key order.
    pub items: Vec<KeyValue>,
    /// The revision the page is consistent at; pass it as
    /// `ListRequest::revision` for the next page.
    pub revision: u64,
    /// Whether more keys follow the last item.
    pub more: bool,
}

/// The result of a successful delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The revision the delete took.
    pub revision: u64,
    /// The version that was deleted.
    pub prev: KeyValue,
}
