use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::testutil::{pod, spec};

fn info(name: &str, priority: i32) -> Arc<PodInfo> {
    let mut p = pod(name, "", "");
    spec(&mut p).priority = Some(priority);
    Arc::new(PodInfo::new(p))
}

fn fast() -> QueueConfig {
    QueueConfig {
        initial_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_millis(100),
        max_unschedulable_wait: Duration::from_millis(300),
    }
}

async fn pop_name(q: &SchedulingQueue) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(2), q.pop())
        .await
        .ok()
        .flatten()
        .map(|p| p.info.name.clone())
}

#[tokio::test]
async fn priority_then_fifo() {
    let q = SchedulingQueue::new(QueueConfig::default());
    q.add(info("low-1", 0));
    q.add(info("high", 10));
    q.add(info("low-2", 0));
    q.add(info("mid", 5));
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(pop_name(&q).await.unwrap_or_default());
    }
    assert_eq!(order, ["high", "mid", "low-1", "low-2"]);
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let q = SchedulingQueue::new(QueueConfig::default());
    let secs: Vec<u64> = (1..=6).map(|a| q.backoff_for(a).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
}

#[tokio::test]
async fn unschedulable_pod_waits_for_a_helpful_event() {
    let q = SchedulingQueue::new(QueueConfig {
        max_unschedulable_wait: Duration::from_secs(60),
        ..fast()
    });
    q.add(info("p", 0));
    let qp = tokio::time::timeout(Duration::from_secs(1), q.pop())
        .await
        .ok()
        .flatten();
    let Some(qp) = qp else { panic!("no pod") };
    q.requeue_unschedulable(&qp, plugin::NODE_RESOURCES_FIT);
    assert_eq!(q.lengths().unschedulable, 1);
    // A pod add does not help a resources failure.
    q.on_event(ClusterEvent::AssignedPodAdd);
    assert_eq!(q.lengths().unschedulable, 1);
    // A node add does; the pod still serves its backoff first.
    q.on_event(ClusterEvent::NodeAdd);
    let l = q.lengths();
    assert_eq!((l.unschedulable, l.active + l.backoff), (0, 1));
    assert_eq!(pop_name(&q).await.as_deref(), Some("p"));
}

#[tokio::test]
async fn event_during_the_cycle_sends_the_pod_to_backoff() {
    let q = SchedulingQueue::new(fast());
    q.add(info("p", 0));
    let Some(qp) = q.pop().await else {
        panic!("no pod")
    };
    q.on_event(ClusterEvent::AssignedPodDelete);
    q.requeue_unschedulable(&qp, plugin::NODE_RESOURCES_FIT);
    assert_eq!(q.lengths().backoff, 1);
    let t = Instant::now();
    assert_eq!(pop_name(&q).await.as_deref(), Some("p"));
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn unschedulable_pod_is_retried_after_max_wait() {
    let q = SchedulingQueue::new(fast());
    q.add(info("p", 0));
    let Some(qp) = q.pop().await else {
        panic!("no pod")
    };
    q.requeue_unschedulable(&qp, plugin::NODE_AFFINITY);
    let t = Instant::now();
    assert_eq!(pop_name(&q).await.as_deref(), Some("p"));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn deleted_pods_are_not_popped_and_close_ends_pop() {
    let q = SchedulingQueue::new(fast());
    q.add(info("a", 0));
    q.add(info("b", 0));
    q.delete("default/a");
    assert_eq!(pop_name(&q).await.as_deref(), Some("b"));
    q.close();
    assert!(q.pop().await.is_none());
}
