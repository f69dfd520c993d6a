//! A work queue of object keys, like client-go's `workqueue`: a key waiting
//! once however often it is added, never handed to two workers at once
//! (added again while being processed, it comes back after `done`), and
//! retried after failures with per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// First retry delay after a failure.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// Longest retry delay.
const MAX_DELAY: Duration = Duration::from_mins(1);

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

/// A deduplicating, rate-limited queue of `namespace/name` keys.
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut state = self.lock();
        if state.shut_down || state.dirty.contains(&key) {
            return;
        }
        state.dirty.insert(key.clone());
        if state.processing.contains(&key) {
            return;
        }
        state.queue.push_back(key);
        drop(state);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Queues `key` after its backoff, which doubles with each failure.
    pub fn add_rate_limited(&self, key: &str) {
        let failures = {
            let mut state = self.lock();
            let n = state.failures.entry(key.to_owned()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let delay = BASE_DELAY
            .checked_mul(1 << failures.min(20))
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY);
        self.add_after(key, delay);
    }

    /// Clears `key`'s failure count (it succeeded).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to process, waiting for one; `None` once shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            // Registered before looking, so a wake-up between the look and
            // the wait is not lost.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.shut_down {
                    return None;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.to_owned());
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Stops handing out keys; waiting `get`s return `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }

    /// How many keys are waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_never_processed_twice_at_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.get().await;
        assert_eq!(first.as_deref(), Some("a"));
        // Added while processing: not handed out again until done.
        q.add("a");
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.get().await.as_deref(), Some("a"));
        q.done("a");
        q.done("b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn failures_back_off_and_shutdown_wakes_workers() {
        let q = WorkQueue::new();
        q.add_rate_limited("x");
        q.add_rate_limited("x");
        let got = tokio::time::timeout(Duration::from_secs(2), q.get()).await;
        assert_eq!(got.ok().flatten().as_deref(), Some("x"));
        q.forget("x");
        assert!(q.lock().failures.is_empty());
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        };
        tokio::task::yield_now().await;
        q.shut_down();
        let got = tokio::time::timeout(Duration::from_secs(2), waiter).await;
        assert!(matches!(got, Ok(Ok(None))));
    }
}
