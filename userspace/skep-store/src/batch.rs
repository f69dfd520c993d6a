//! Group commit of concurrent writes.
//!
//! openraft 0.9's core appends one client write per log append and waits for
//! that append's fsync before taking the next, so one entry per write caps
//! throughput at one write per fsync. The batcher collects the writes that
//! queue up while a proposal is in flight and proposes them as one
//! [`Request::Batch`] entry, then hands each writer its own [`Response`].

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::typ::{ClientWriteError, Raft, RaftError};
use crate::types::{Request, Response};

/// Most writes in one log entry.
const MAX_BATCH: usize = 512;
/// Proposals in flight at once: one being synced, one queued behind it.
const MAX_IN_FLIGHT: usize = 2;
/// Queued writes before `submit` waits.
const QUEUE: usize = 4096;

/// What a proposal returns to one writer.
pub(crate) type WriteResult = Result<Response, RaftError<ClientWriteError>>;

type Pending = (Request, oneshot::Sender<WriteResult>);

/// Submits writes to the batching task.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task; it ends when every `Batcher` is dropped.
    pub(crate) fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Batcher { tx }
    }

    /// Proposes `request` (possibly together with others) and waits for its
    /// outcome. `None` means the store is shutting down.
    pub(crate) async fn submit(&self, request: Request) -> Option<WriteResult> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((request, tx)).await.ok()?;
        rx.await.ok()
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        // Everything that queued while we waited for a slot goes in too.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn propose(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        if let Some((request, tx)) = batch.pop() {
            // A writer that went away needs no answer.
            let _ = tx.send(raft.client_write(request).await.map(|reply| reply.data));
        }
        return;
    }
    let (requests, waiters): (Vec<Request>, Vec<oneshot::Sender<WriteResult>>) =
        batch.into_iter().unzip();
    let count = requests.len();
    tracing::trace!(count, "proposing a batch of writes");
    match raft.client_write(Request::Batch(requests)).await {
        Ok(reply) => match reply.data {
            Response::Batch(responses) if responses.len() == count => {
                for (tx, response) in waiters.into_iter().zip(responses) {
                    let _ = tx.send(Ok(response));
                }
            }
            other => {
                // Cannot happen with this crate's state machine; fail loudly
                // rather than hand out wrong answers.
                tracing::error!(
                    ?other,
                    count,
                    "failed to match a batch response to its writes"
                );
                let err = RaftError::Fatal(openraft::error::Fatal::Panicked);
                for tx in waiters {
                    let _ = tx.send(Err(err.clone()));
                }
            }
        },
        Err(err) => {
            for tx in waiters {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }
}
