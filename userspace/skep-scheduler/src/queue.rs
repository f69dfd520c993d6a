//! The scheduling queue, like kube-scheduler's `PriorityQueue`: an active
//! queue (priority, then FIFO), a backoff queue (1s doubling per attempt up
//! to 10s) and a set of unschedulable pods that go back to the active (or
//! backoff) queue when a cluster event that may help them happens, or after
//! they waited 5 minutes.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::algorithm::plugin;
use crate::model::PodInfo;

/// Queue timings.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Backoff after the first failed attempt (kube: 1s).
    pub initial_backoff: Duration,
    /// Backoff cap (kube: 10s).
    pub max_backoff: Duration,
    /// Longest an unschedulable pod waits for a helpful event (kube: 5min).
    pub max_unschedulable_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable_wait: Duration::from_secs(300),
        }
    }
}

/// A cluster change that may make unschedulable pods schedulable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node was added.
    NodeAdd,
    /// A node changed (labels, taints, allocatable, unschedulable).
    NodeUpdate,
    /// A bound pod was added (affinity may now be satisfied).
    AssignedPodAdd,
    /// A bound pod changed (labels).
    AssignedPodUpdate,
    /// A bound pod went away, or an assumed pod was forgotten.
    AssignedPodDelete,
}

impl ClusterEvent {
    /// Whether the event may help a pod rejected by `plugins`.
    fn may_help(self, plugins: u8) -> bool {
        if plugins == 0 {
            return true;
        }
        let helps = match self {
            Self::NodeAdd | Self::NodeUpdate => u8::MAX,
            Self::AssignedPodAdd | Self::AssignedPodUpdate => {
                plugin::INTER_POD_AFFINITY | plugin::POD_TOPOLOGY_SPREAD
            }
            Self::AssignedPodDelete => {
                plugin::NODE_RESOURCES_FIT
                    | plugin::INTER_POD_AFFINITY
                    | plugin::POD_TOPOLOGY_SPREAD
            }
        };
        plugins & helps != 0
    }
}

/// A pod handed out by [`SchedulingQueue::pop`].
#[derive(Debug, Clone)]
pub struct QueuedPod {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far, this one included.
    pub attempts: u32,
    /// When the pod first entered the queue (latency metrics).
    pub initial_enqueue: Instant,
    /// The scheduling cycle this attempt runs in.
    pub cycle: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    attempts: u32,
    initial_enqueue: Instant,
    /// Last time it was added or failed (FIFO order and backoff base).
    timestamp: Instant,
    place: Place,
    /// Bumped on every move; heap entries with an old seq are stale.
    seq: u64,
    plugins: u8,
    /// An update arrived while in flight: retry at once if it fails.
    updated_in_flight: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    key: String,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Keys of the pods in `Place::Unschedulable` (events scan only these).
    unschedulable: HashSet<String>,
    /// Last scan for pods that waited `max_unschedulable_wait`.
    last_stale_scan: Option<Instant>,
    seq: u64,
    cycle: u64,
    move_request_cycle: u64,
    closed: bool,
}

/// Queue sizes, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLengths {
    /// Ready to schedule.
    pub active: usize,
    /// Waiting out a backoff.
    pub backoff: usize,
    /// Waiting for a cluster event.
    pub unschedulable: usize,
    /// Being scheduled or bound.
    pub in_flight: usize,
}

/// The scheduling queue. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    config: QueueConfig,
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.config
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.config.max_backoff)
    }

    /// Adds a pending pod, or updates a queued one (an update of an
    /// unschedulable pod makes it active again, as its spec may now fit).
    pub fn add(&self, info: Arc<PodInfo>) {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(e) = inner.pods.get_mut(&info.key) {
            e.info = Arc::clone(&info);
            match e.place {
                Place::InFlight => e.updated_in_flight = true,
                Place::Active | Place::Backoff => {}
                Place::Unschedulable => {
                    inner.unschedulable.remove(&info.key);
                    e.place = Place::Active;
                    e.seq = seq;
                    inner.active.push(ActiveItem {
                        priority: info.priority,
                        seq,
                        key: info.key.clone(),
                    });
                }
            }
        } else {
            inner.active.push(ActiveItem {
                priority: info.priority,
                seq,
                key: info.key.clone(),
            });
            inner.pods.insert(
                info.key.clone(),
                Entry {
                    info,
                    attempts: 0,
                    initial_enqueue: now,
                    timestamp: now,
                    place: Place::Active,
                    seq,
                    plugins: 0,
                    updated_in_flight: false,
                },
            );
        }
        drop(g);
        self.notify.notify_one();
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&self, key: &str) {
        let mut g = self.lock();
        g.pods.remove(key);
        g.unschedulable.remove(key);
    }

    /// Stops the queue: `pop` returns `None` from now on.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Moves expired backoffs and over-waited unschedulable pods to active.
    fn flush(&self, inner: &mut Inner, now: Instant) {
        while let Some(Reverse((at, seq, _))) = inner.backoff.peek() {
            if *at > now {
                break;
            }
            let seq = *seq;
            let Some(Reverse((_, _, key))) = inner.backoff.pop() else {
                break;
            };
            if let Some(e) = inner.pods.get_mut(&key)
                && e.place == Place::Backoff
                && e.seq == seq
            {
                inner.seq += 1;
                e.seq = inner.seq;
                e.place = Place::Active;
                inner.active.push(ActiveItem {
                    priority: e.info.priority,
                    seq: e.seq,
                    key,
                });
            }
        }
        let wait = self.config.max_unschedulable_wait;
        let interval = (wait / 4).min(Duration::from_secs(1));
        if inner
            .last_stale_scan
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return;
        }
        inner.last_stale_scan = Some(now);
        let stale: Vec<String> = inner
            .unschedulable
            .iter()
            .filter(|k| {
                inner
                    .pods
                    .get(*k)
                    .is_some_and(|e| now.saturating_duration_since(e.timestamp) >= wait)
            })
            .cloned()
            .collect();
        for key in stale {
            self.move_pod(inner, &key, now);
        }
    }

    /// Moves one unschedulable pod to backoff (if still backing off) or active.
    fn move_pod(&self, inner: &mut Inner, key: &str, now: Instant) {
        inner.unschedulable.remove(key);
        let Some(e) = inner.pods.get_mut(key) else {
            return;
        };
        inner.seq += 1;
        e.seq = inner.seq;
        let until = e.timestamp + self.backoff_for(e.attempts);
        if until > now {
            e.place = Place::Backoff;
            inner.backoff.push(Reverse((until, e.seq, key.to_owned())));
        } else {
            e.place = Place::Active;
            inner.active.push(ActiveItem {
                priority: e.info.priority,
                seq: e.seq,
                key: key.to_owned(),
            });
        }
    }

    /// Waits for the next pod to schedule; `None` once closed.
    pub async fn pop(&self) -> Option<QueuedPod> {
        loop {
            let notified = self.notify.notified();
            let wait = {
                let now = Instant::now();
                let mut g = self.lock();
                let inner = &mut *g;
                if inner.closed {
                    return None;
                }
                self.flush(inner, now);
                while let Some(item) = inner.active.pop() {
                    let Some(e) = inner.pods.get_mut(&item.key) else {
                        continue;
                    };
                    if e.place != Place::Active || e.seq != item.seq {
                        continue;
                    }
                    e.place = Place::InFlight;
                    e.attempts += 1;
                    e.updated_in_flight = false;
                    inner.cycle += 1;
                    return Some(QueuedPod {
                        info: Arc::clone(&e.info),
                        attempts: e.attempts,
                        initial_enqueue: e.initial_enqueue,
                        cycle: inner.cycle,
                    });
                }
                let next_backoff = inner
                    .backoff
                    .peek()
                    .map(|Reverse((at, _, _))| at.saturating_duration_since(now));
                next_backoff
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1))
            };
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// The pod was assumed onto a node: the queue stops tracking it.
    /// Returns false when the pod was deleted during its scheduling cycle.
    pub fn done(&self, key: &str) -> bool {
        let mut g = self.lock();
        if g.pods.get(key).is_some_and(|e| e.place == Place::InFlight) {
            g.pods.remove(key);
            true
        } else {
            false
        }
    }

    /// No node fit: park the pod until an event may help (or in backoff if
    /// such an event already happened during its cycle).
    pub fn requeue_unschedulable(&self, pod: &QueuedPod, plugins: u8) {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        let moved_meanwhile = inner.move_request_cycle >= pod.cycle;
        let Some(e) = inner.pods.get_mut(&pod.info.key) else {
            return;
        };
        e.timestamp = now;
        e.plugins = plugins;
        inner.seq += 1;
        e.seq = inner.seq;
        if moved_meanwhile || e.updated_in_flight {
            let until = now + self.backoff_for(e.attempts);
            e.place = Place::Backoff;
            inner
                .backoff
                .push(Reverse((until, e.seq, pod.info.key.clone())));
        } else {
            e.place = Place::Unschedulable;
            inner.unschedulable.insert(pod.info.key.clone());
        }
        drop(g);
        self.notify.notify_one();
    }

    /// An error during the scheduling cycle: retry after backoff (unless
    /// the pod was deleted meanwhile).
    pub fn requeue_backoff(&self, pod: &QueuedPod) {
        self.backoff_pod(pod, false);
    }

    /// A binding failed after [`SchedulingQueue::done`]: track the pod
    /// again and retry it after backoff.
    pub fn readd_backoff(&self, pod: &QueuedPod) {
        self.backoff_pod(pod, true);
    }

    fn backoff_pod(&self, pod: &QueuedPod, readd: bool) {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        if !readd && !inner.pods.contains_key(&pod.info.key) {
            return;
        }
        inner.seq += 1;
        let seq = inner.seq;
        let e = inner
            .pods
            .entry(pod.info.key.clone())
            .or_insert_with(|| Entry {
                info: Arc::clone(&pod.info),
                attempts: pod.attempts,
                initial_enqueue: pod.initial_enqueue,
                timestamp: now,
                place: Place::InFlight,
                seq,
                plugins: 0,
                updated_in_flight: false,
            });
        e.timestamp = now;
        e.seq = seq;
        e.place = Place::Backoff;
        let until = now + self.backoff_for(e.attempts);
        inner
            .backoff
            .push(Reverse((until, seq, pod.info.key.clone())));
        drop(g);
        self.notify.notify_one();
    }

    /// A cluster event: unschedulable pods it may help move to active (or
    /// backoff, if their backoff has not expired).
    pub fn on_event(&self, event: ClusterEvent) {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.move_request_cycle = inner.cycle;
        let keys: Vec<String> = inner
            .unschedulable
            .iter()
            .filter(|k| {
                inner
                    .pods
                    .get(*k)
                    .is_some_and(|e| event.may_help(e.plugins))
            })
            .cloned()
            .collect();
        if keys.is_empty() {
            return;
        }
        tracing::debug!(?event, pods = keys.len(), "moving unschedulable pods");
        for key in keys {
            self.move_pod(inner, &key, now);
        }
        drop(g);
        self.notify.notify_one();
    }

    /// Current queue sizes.
    pub fn lengths(&self) -> QueueLengths {
        let g = self.lock();
        let mut l = QueueLengths::default();
        for e in g.pods.values() {
            match e.place {
                Place::Active => l.active += 1,
                Place::Backoff => l.backoff += 1,
                Place::Unschedulable => l.unschedulable += 1,
                Place::InFlight => l.in_flight += 1,
            }
        }
        l
    }
}

#[cfg(test)]
#[path = "queue_test.rs"]
mod tests;
