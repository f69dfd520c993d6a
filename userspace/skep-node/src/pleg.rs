//! The pod lifecycle event generator (the kubelet's PLEG): one relist of
//! the runtime for the whole node on one timer, compared with the last,
//! waking only the workers of pods whose containers changed state
//! (started, exited, appeared, went away). The shim records every exit in
//! the runtime's state directory, so a relist is file reads, not runc
//! calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skep_runtime::ContainerRuntime;
use skep_runtime::runtime::{ContainerState, ContainerStatus};
use tokio::sync::Notify;

/// How often the runtime is relisted (the kubelet's period).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// What a relist compares of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Created,
    Running,
    Exited,
    Unknown,
}

fn seen(c: &ContainerStatus) -> Seen {
    match c.state {
        ContainerState::Created => Seen::Created,
        ContainerState::Running { .. } => Seen::Running,
        ContainerState::Exited(_) => Seen::Exited,
        ContainerState::Unknown => Seen::Unknown,
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Pod UID → its worker's wake-up.
    watchers: HashMap<String, Arc<Notify>>,
    /// Container id → (pod UID, state) at the last relist.
    last: HashMap<String, (String, Seen)>,
}

/// The node's pod lifecycle events: workers [`Pleg::watch`] their pod;
/// [`Pleg::relist`] (run by [`run`]) wakes them.
#[derive(Debug, Clone, Default)]
pub struct Pleg {
    inner: Arc<Mutex<Inner>>,
}

impl Pleg {
    /// A PLEG with no watchers and no earlier list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The wake-up of pod `uid`'s worker: notified when a relist finds one
    /// of its containers changed (a wake-up while the worker is busy is
    /// kept for its next wait).
    pub fn watch(&self, uid: &str) -> Arc<Notify> {
        Arc::clone(
            crate::lock(&self.inner)
                .watchers
                .entry(uid.to_owned())
                .or_default(),
        )
    }

    /// Pod `uid`'s worker is gone.
    pub fn unwatch(&self, uid: &str) {
        crate::lock(&self.inner).watchers.remove(uid);
    }

    /// Lists the runtime once and wakes the workers whose containers
    /// changed since the last list; returns their pod UIDs.
    pub async fn relist<R: ContainerRuntime>(&self, runtime: &R) -> Vec<String> {
        let list = match runtime.list().await {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(%err, "failed to relist containers");
                return Vec::new();
            }
        };
        let mut inner = crate::lock(&self.inner);
        let now: HashMap<String, (String, Seen)> = list
            .iter()
            .map(|c| (c.meta.id.clone(), (c.meta.pod_uid.clone(), seen(c))))
            .collect();
        let mut changed: Vec<String> = now
            .iter()
            .filter(|(id, new)| inner.last.get(*id) != Some(*new))
            .map(|(_, (uid, _))| uid.clone())
            .chain(
                inner
                    .last
                    .iter()
                    .filter(|(id, _)| !now.contains_key(*id))
                    .map(|(_, (uid, _))| uid.clone()),
            )
            .collect();
        changed.sort();
        changed.dedup();
        for uid in &changed {
            if let Some(w) = inner.watchers.get(uid) {
                w.notify_one();
            }
        }
        inner.last = now;
        changed
    }
}

/// Relists `runtime` every `period` until aborted.
pub async fn run<R: ContainerRuntime>(pleg: Pleg, runtime: Arc<R>, period: Duration) {
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        pleg.relist(runtime.as_ref()).await;
    }
}

#[cfg(test)]
mod tests {
    use skep_runtime::fake::FakeRuntime;
    use skep_runtime::runtime::{ContainerSpec, Resources};

    use super::*;

    fn spec(pod: &str, name: &str) -> ContainerSpec {
        ContainerSpec {
            pod_uid: pod.into(),
            name: name.into(),
            attempt: 0,
            rootfs: "/r".into(),
            readonly_rootfs: false,
            args: vec!["sleep".into()],
            env: Vec::new(),
            cwd: None,
            uid: 0,
            gid: 0,
            hostname: pod.into(),
            netns: "/n".into(),
            mounts: Vec::new(),
            resources: Resources::default(),
            log_path: "/l".into(),
        }
    }

    #[tokio::test]
    async fn a_relist_wakes_only_the_pods_whose_containers_changed() -> anyhow::Result<()> {
        let rt = FakeRuntime::new();
        let pleg = Pleg::new();
        let a = rt.create(&spec("a", "c")).await?;
        let b = rt.create(&spec("b", "c")).await?;
        rt.start(&a).await?;
        rt.start(&b).await?;
        let (wa, wb) = (pleg.watch("a"), pleg.watch("b"));
        assert_eq!(pleg.relist(&rt).await, ["a", "b"], "first sight");
        assert!(pleg.relist(&rt).await.is_empty(), "nothing changed");
        rt.finish(&b, 1)?;
        assert_eq!(pleg.relist(&rt).await, ["b"]);
        rt.remove(&b).await?;
        assert_eq!(pleg.relist(&rt).await, ["b"], "gone is a change");
        // b's worker was woken (its permit kept); a's only by the first list.
        tokio::time::timeout(Duration::from_millis(10), wb.notified()).await?;
        tokio::time::timeout(Duration::from_millis(10), wa.notified()).await?;
        assert!(
            tokio::time::timeout(Duration::from_millis(10), wa.notified())
                .await
                .is_err()
        );
        pleg.unwatch("a");
        Ok(())
    }
}
