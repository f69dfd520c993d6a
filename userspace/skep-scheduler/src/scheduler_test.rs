use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;
use crate::testutil::{node, owned_by, pod};

#[derive(Default)]
struct TestBinder {
    bound: Mutex<Vec<(String, String)>>,
    failed: Mutex<Vec<(String, String)>>,
    fail_once: Mutex<HashSet<String>>,
    delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("conflict")]
struct Conflict;

impl Binder for TestBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        tokio::time::sleep(self.delay).await;
        if self.fail_once.lock().is_ok_and(|mut f| f.remove(&pod.key)) {
            return Err(BindError {
                pod: pod.key.clone(),
                node: node.to_owned(),
                source: Box::new(Conflict),
            });
        }
        if let Ok(mut b) = self.bound.lock() {
            b.push((pod.key.clone(), node.to_owned()));
        }
        Ok(())
    }

    fn failed_scheduling(&self, pod: &PodInfo, message: &str) {
        if let Ok(mut f) = self.failed.lock() {
            f.push((pod.key.clone(), message.to_owned()));
        }
    }
}

fn fast_config() -> SchedulerConfig {
    SchedulerConfig {
        queue: QueueConfig {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            max_unschedulable_wait: Duration::from_secs(60),
        },
        ..SchedulerConfig::default()
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn bound_count(s: &Scheduler<TestBinder>) -> usize {
    s.binder().bound.lock().map_or(0, |b| b.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pod_binds_once_a_node_appears() {
    let s = Scheduler::new(fast_config(), TestBinder::default());
    let run = tokio::spawn(Arc::clone(&s).run());
    s.upsert_node(&node("small", "1", "1Gi", &[]));
    s.upsert_pod(pod("big", "2", ""));
    wait_for("FailedScheduling", || {
        s.binder().failed.lock().is_ok_and(|f| !f.is_empty())
    })
    .await;
    let failed = s.binder().failed.lock().map(|f| f[0].clone()).ok();
    assert_eq!(
        failed,
        Some((
            "default/big".to_owned(),
            "0/1 nodes are available: 1 Insufficient cpu.".to_owned()
        ))
    );
    assert_eq!(s.queue().lengths().unschedulable, 1);
    s.upsert_node(&node("large", "4", "4Gi", &[]));
    wait_for("binding", || bound_count(&s) == 1).await;
    let b = s.binder().bound.lock().map(|b| b.clone()).ok();
    assert_eq!(
        b,
        Some(vec![("default/big".to_owned(), "large".to_owned())])
    );
    s.shutdown();
    assert!(run.await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_concurrent_bindings_never_overbook() {
    let binder = TestBinder {
        delay: Duration::from_millis(100),
        ..TestBinder::default()
    };
    let s = Scheduler::new(fast_config(), binder);
    s.upsert_node(&node("a", "1", "1Gi", &[]));
    for i in 0..5 {
        s.upsert_pod(pod(&format!("p{i}"), "300m", ""));
    }
    let run = tokio::spawn(Arc::clone(&s).run());
    wait_for("3 bindings", || bound_count(&s) == 3).await;
    wait_for("2 unschedulable", || s.queue().lengths().unschedulable == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(bound_count(&s), 3);
    assert_eq!(
        s.cache().node_by_name("a").map(|n| n.requested.milli_cpu),
        Some(900)
    );
    // Deleting a bound pod frees room for one more.
    let first = s
        .binder()
        .bound
        .lock()
        .map(|b| b[0].0.clone())
        .unwrap_or_default();
    s.remove_pod(&first);
    wait_for("4th binding", || bound_count(&s) == 4).await;
    assert_eq!(
        s.cache().node_by_name("a").map(|n| n.requested.milli_cpu),
        Some(900)
    );
    s.shutdown();
    assert!(run.await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_binding_releases_the_reservation_and_retries() {
    let binder = TestBinder::default();
    if let Ok(mut f) = binder.fail_once.lock() {
        f.insert("default/p".to_owned());
    }
    let s = Scheduler::new(fast_config(), binder);
    s.upsert_node(&node("a", "1", "1Gi", &[]));
    s.upsert_pod(pod("p", "1", ""));
    let run = tokio::spawn(Arc::clone(&s).run());
    wait_for("binding after retry", || bound_count(&s) == 1).await;
    assert_eq!(s.stats.bind_errors.load(Ordering::Relaxed), 1);
    let msg = s.binder().failed.lock().map(|f| f[0].1.clone()).ok();
    assert_eq!(
        msg.as_deref(),
        Some("Binding rejected: failed to bind pod default/p to node a")
    );
    {
        let c = s.cache();
        assert_eq!(
            c.node_by_name("a").map(|n| n.requested.milli_cpu),
            Some(1000)
        );
        assert_eq!(c.pod_placement("default/p"), Some(("a", false)));
    }
    s.shutdown();
    assert!(run.await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_and_bound_pods_from_the_watch_count() {
    let s = Scheduler::new(fast_config(), TestBinder::default());
    for n in ["a", "b", "c"] {
        s.upsert_node(&node(n, "64", "256Gi", &[]));
    }
    // A pod some other scheduler bound, seen through the watch.
    let mut other = owned_by(pod("other", "", ""), "rs");
    other.spec.get_or_insert_with(Default::default).node_name = Some("a".to_owned());
    s.upsert_pod(other);
    for i in 0..5 {
        s.upsert_pod(owned_by(pod(&format!("r{i}"), "", ""), "rs"));
    }
    let run = tokio::spawn(Arc::clone(&s).run());
    wait_for("5 bindings", || bound_count(&s) == 5).await;
    let counts: Vec<usize> = {
        let c = s.cache();
        ["a", "b", "c"]
            .iter()
            .map(|n| c.node_by_name(n).map_or(0, |n| n.pods.len()))
            .collect()
    };
    assert_eq!(counts, vec![2, 2, 2]);
    s.shutdown();
    assert!(run.await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_during_binding_does_not_schedule_twice() {
    let binder = TestBinder {
        delay: Duration::from_millis(100),
        ..TestBinder::default()
    };
    let s = Scheduler::new(fast_config(), binder);
    s.upsert_node(&node("a", "4", "4Gi", &[]));
    let p = pod("p", "1", "");
    s.upsert_pod(p.clone());
    let run = tokio::spawn(Arc::clone(&s).run());
    wait_for("assumed", || s.stats.scheduled.load(Ordering::Relaxed) == 1).await;
    s.upsert_pod(p);
    wait_for("binding", || bound_count(&s) == 1).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(s.stats.scheduled.load(Ordering::Relaxed), 1);
    assert_eq!(bound_count(&s), 1);
    assert_eq!(
        s.cache().node_by_name("a").map(|n| n.requested.milli_cpu),
        Some(1000)
    );
    s.shutdown();
    assert!(run.await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_during_failed_binding_is_not_retried_and_gates_hold_pods() {
    let binder = TestBinder {
        delay: Duration::from_millis(100),
        ..TestBinder::default()
    };
    if let Ok(mut f) = binder.fail_once.lock() {
        f.insert("default/p".to_owned());
    }
    let s = Scheduler::new(fast_config(), binder);
    s.upsert_node(&node("a", "4", "4Gi", &[]));
    let mut gated = pod("gated", "", "");
    gated
        .spec
        .get_or_insert_with(Default::default)
        .scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
        name: "example.com/wait".to_owned(),
    }]);
    s.upsert_pod(gated.clone());
    s.upsert_pod(pod("p", "1", ""));
    let run = tokio::spawn(Arc::clone(&s).run());
    wait_for("assumed", || s.stats.scheduled.load(Ordering::Relaxed) == 1).await;
    s.remove_pod("default/p");
    wait_for("failed binding", || {
        s.stats.bind_errors.load(Ordering::Relaxed) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(s.stats.scheduled.load(Ordering::Relaxed), 1, "not retried");
    assert_eq!(s.queue().lengths(), crate::queue::QueueLengths::default());
    assert_eq!(bound_count(&s), 0);
    // Lifting the gate lets the gated pod schedule.
    if let Some(spec) = gated.spec.as_mut() {
        spec.scheduling_gates = None;
    }
    s.upsert_pod(gated);
    wait_for("gated pod bound", || bound_count(&s) == 1).await;
    s.shutdown();
    assert!(run.await.is_ok());
}
