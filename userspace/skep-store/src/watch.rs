//! Watches: replay history from disk, then follow live changes, in revision
//! order with no gaps and no duplicates.
//!
//! The state machine publishes each applied batch of events on a broadcast
//! channel (the hub). A watcher subscribes first, then replays the change log
//! from disk up to the revision its snapshot saw, then follows the hub,
//! skipping what it already delivered. When it falls behind (the broadcast
//! lagged, a revision is missing, or a snapshot was installed) it replays from
//! disk again from the last revision it handled, so a slow consumer costs
//! memory on nobody's side and loses nothing unless compaction passes it.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use rocksdb::DB;
use tokio::sync::{broadcast, mpsc, watch};

use crate::error::StoreError;
use crate::mvcc::Reader;
use crate::types::Event;

/// How many events a watcher buffers for its consumer.
const STREAM_BUFFER: usize = 1024;
/// How many revisions one replay step reads from disk.
const REPLAY_STEP: usize = 1024;

/// What the state machine tells watchers.
#[derive(Debug, Clone)]
pub(crate) enum HubMessage {
    /// Changes applied in one batch, in revision order.
    Events(Arc<[Event]>),
    /// The state was replaced (snapshot installed): re-read from disk.
    Reset,
}

/// A stream of changes under a prefix.
///
/// Yields `Ok(event)` in revision order; ends after an `Err` (for example
/// `StoreError::Compacted` when the watcher fell behind compaction) or when
/// the store shuts down. Dropping it stops the watch.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<Result<Event, StoreError>>,
}

impl WatchStream {
    /// The next event, or `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for WatchStream {
    type Item = Result<Event, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Starts a watcher task for changes after `from_revision` under `prefix`.
pub(crate) fn start(
    db: Weak<DB>,
    hub: &broadcast::Sender<HubMessage>,
    shutdown: watch::Receiver<bool>,
    prefix: Bytes,
    from_revision: u64,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let watcher = Watcher {
        db,
        hub: hub.subscribe(),
        tx,
        prefix,
        from_revision,
        cursor: from_revision,
    };
    tokio::spawn(watcher.run(shutdown));
    WatchStream { rx }
}

struct Watcher {
    db: Weak<DB>,
    hub: broadcast::Receiver<HubMessage>,
    tx: mpsc::Sender<Result<Event, StoreError>>,
    prefix: Bytes,
    /// Deliver only events after this revision.
    from_revision: u64,
    /// Every revision up to this one has been delivered or skipped.
    cursor: u64,
}

/// Why a watcher stops.
enum Stop {
    /// The consumer or the store went away.
    Gone,
}

impl Watcher {
    #[tracing::instrument(skip_all, fields(prefix = %String::from_utf8_lossy(&self.prefix), from = self.from_revision))]
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(Stop::Gone) = self.replay().await {
                return;
            }
            tokio::select! {
                caught_up = self.follow() => {
                    if let Err(Stop::Gone) = caught_up {
                        return;
                    }
                    tracing::debug!(cursor = self.cursor, "watcher fell behind, replaying from disk");
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Delivers history from disk after the cursor, up to what the disk has.
    async fn replay(&mut self) -> Result<(), Stop> {
        loop {
            let db = self.db.clone();
            let (cursor, prefix) = (self.cursor, self.prefix.clone());
            let step = tokio::task::spawn_blocking(move || {
                let db = db.upgrade().ok_or(StoreError::Shutdown)?;
                Reader::snapshot(&db).events_after(cursor, &prefix, REPLAY_STEP)
            })
            .await
            .unwrap_or(Err(StoreError::Shutdown));
            let (events, covered) = match step {
                Ok(step) => step,
                Err(err) => {
                    // The consumer learns why the watch ended; nothing else to do.
                    let _ = self.tx.send(Err(err)).await;
                    return Err(Stop::Gone);
                }
            };
            for event in events {
                self.deliver(event).await?;
            }
            if covered == self.cursor {
                return Ok(());
            }
            self.cursor = covered;
        }
    }

    /// Follows the hub. Returns `Ok` when it must replay from disk.
    async fn follow(&mut self) -> Result<(), Stop> {
        loop {
            let message = tokio::select! {
                message = self.hub.recv() => message,
                () = self.tx.closed() => return Err(Stop::Gone),
            };
            match message {
                Ok(HubMessage::Events(events)) => {
                    for event in events.iter() {
                        let revision = event.revision();
                        if revision <= self.cursor {
                            continue;
                        }
                        if revision > self.cursor + 1 {
                            return Ok(());
                        }
                        if revision > self.from_revision && event.kv.key.starts_with(&self.prefix) {
                            self.deliver(event.clone()).await?;
                        }
                        self.cursor = revision;
                    }
                }
                Ok(HubMessage::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
            }
        }
    }

    async fn deliver(&mut self, event: Event) -> Result<(), Stop> {
        self.cursor = self.cursor.max(event.revision());
        self.tx.send(Ok(event)).await.map_err(|_| Stop::Gone)
    }
}
