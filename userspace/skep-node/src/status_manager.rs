//! The status manager (the kubelet's `status_manager`): pod workers hand it
//! the status they computed; one task writes it when it differs from what
//! was last written, keeping only the newest per pod while a write is in
//! flight (rapid updates coalesce), on the view's newest copy of the pod
//! (or the newer `resourceVersion` its own last write returned).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::Notify;

use crate::api::NodeApi;
use crate::view::ViewReader;

/// How long a failed write waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// How many pods' status writes are in flight at once.
const IN_FLIGHT: usize = 32;

#[derive(Debug, Default)]
struct Inner {
    /// How many statuses workers handed over.
    handed: u64,
    /// Pod UID → the newest status a worker handed over, not yet written.
    pending: HashMap<String, PodStatus>,
    /// Pod UID → what was last written and the `resourceVersion` it got.
    written: HashMap<String, (PodStatus, String)>,
}

/// Workers' side of the status manager: cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StatusManager {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
}

impl StatusManager {
    /// A manager with nothing to write; [`StatusManager::run`] writes.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Pod `uid`'s status is now `status`: written unless it is what was
    /// written last (a newer one handed over before it is written
    /// replaces it).
    pub fn set(&self, uid: &str, status: PodStatus) {
        let mut inner = crate::lock(&self.inner);
        inner.handed += 1;
        if inner.written.get(uid).is_some_and(|(w, _)| *w == status) {
            inner.pending.remove(uid);
            return;
        }
        inner.pending.insert(uid.to_owned(), status);
        drop(inner);
        self.wake.notify_one();
    }

    /// How many statuses workers handed over (one per worker pass).
    pub fn handed(&self) -> u64 {
        crate::lock(&self.inner).handed
    }

    /// The status last written for pod `uid`.
    pub fn written(&self, uid: &str) -> Option<PodStatus> {
        crate::lock(&self.inner)
            .written
            .get(uid)
            .map(|(s, _)| s.clone())
    }

    /// Pod `uid` is gone: nothing more is written for it.
    pub fn forget(&self, uid: &str) {
        let mut inner = crate::lock(&self.inner);
        inner.pending.remove(uid);
        inner.written.remove(uid);
    }

    /// Writes pending statuses through `api` until aborted, reading each
    /// pod's newest copy from `view`.
    pub async fn run(self, api: Arc<dyn NodeApi>, view: ViewReader) {
        loop {
            self.wake.notified().await;
            if !self.flush(api.as_ref(), &view).await {
                tokio::time::sleep(RETRY).await;
                self.wake.notify_one();
            }
        }
    }

    /// Writes what is pending once, up to [`IN_FLIGHT`] pods at a time (a
    /// burst's writes commit together instead of queueing behind each
    /// other); returns whether everything was written.
    pub async fn flush(&self, api: &dyn NodeApi, view: &ViewReader) -> bool {
        let batch: Vec<(String, PodStatus)> = crate::lock(&self.inner).pending.drain().collect();
        if batch.is_empty() {
            return true;
        }
        let pods = view.pods();
        let writes = batch.into_iter().filter_map(|(uid, status)| {
            // Gone from the node: nobody reads its status any more.
            let pod = pods.get(&uid)?;
            let span = tracing::info_span!("status_write", pod_uid = %uid);
            let write = self.write(api, uid, Pod::clone(pod), status);
            Some(tracing::Instrument::instrument(write, span))
        });
        futures::stream::iter(writes)
            .buffer_unordered(IN_FLIGHT)
            .fold(true, |ok, written| async move { ok && written })
            .await
    }

    /// Writes `status` on `pod`; returns whether it was written (if not, it
    /// stays pending unless a newer one came meanwhile).
    async fn write(&self, api: &dyn NodeApi, uid: String, mut pod: Pod, status: PodStatus) -> bool {
        let last_rv = crate::lock(&self.inner)
            .written
            .get(&uid)
            .map(|(_, rv)| rv.clone());
        if let Some(rv) = last_rv
            && newer(&rv, pod.metadata.resource_version.as_deref())
        {
            pod.metadata.resource_version = Some(rv);
        }
        pod.status = Some(status.clone());
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Ok(body) = serde_json::to_vec(&pod) else {
            return true;
        };
        match api.update_pod_status(&ns, &name, body).await {
            Ok(stored) => {
                let rv = serde_json::from_slice::<Pod>(&stored)
                    .ok()
                    .and_then(|p| p.metadata.resource_version)
                    .unwrap_or_default();
                tracing::debug!(pod = %format!("{ns}/{name}"), phase = ?status.phase, "pod status written");
                crate::lock(&self.inner).written.insert(uid, (status, rv));
                true
            }
            Err(err) => {
                tracing::debug!(pod = %format!("{ns}/{name}"), %err, "failed to write pod status; retrying");
                // Kept unless a newer one came meanwhile.
                crate::lock(&self.inner)
                    .pending
                    .entry(uid)
                    .or_insert(status);
                false
            }
        }
    }
}

/// Whether resourceVersion `a` is newer than `b` (they are revisions).
fn newer(a: &str, b: Option<&str>) -> bool {
    let parse = |s: &str| s.parse::<u64>().ok();
    match (parse(a), b.and_then(parse)) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use serde_json::json;
    use skep_proto::v1::WriteRequest;

    use super::*;
    use crate::view::ViewWriter;

    /// Stores status writes with resourceVersion 100, 101, …
    #[derive(Default)]
    struct Api(Mutex<Vec<Pod>>);

    impl NodeApi for Api {
        fn write(&self, request: WriteRequest) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
            let mut writes = crate::lock(&self.0);
            let mut pod: Pod = serde_json::from_slice(&request.object).unwrap_or_default();
            let stored_rv = 100 + writes.len();
            writes.push(pod.clone());
            pod.metadata.resource_version = Some(stored_rv.to_string());
            Box::pin(std::future::ready(Ok(
                serde_json::to_vec(&pod).unwrap_or_default()
            )))
        }
    }

    fn phase(p: &str) -> PodStatus {
        PodStatus {
            phase: Some(p.into()),
            ..PodStatus::default()
        }
    }

    #[tokio::test]
    async fn writes_the_newest_status_once_on_the_newest_resource_version() {
        let mut writer = ViewWriter::new("n1");
        writer.begin_snapshot();
        writer.synced(1);
        let pod = json!({"metadata": {"name": "p", "namespace": "a", "uid": "u1",
            "resourceVersion": "7"}, "spec": {"nodeName": "n1", "containers": []}});
        writer.apply(
            7,
            "Pod",
            false,
            &serde_json::to_vec(&pod).unwrap_or_default(),
        );
        let (api, view, status) = (Api::default(), writer.reader(), StatusManager::new());

        // Rapid updates coalesce: only the newest is written.
        status.set("u1", phase("Pending"));
        status.set("u1", phase("Running"));
        assert!(status.flush(&api, &view).await);
        assert_eq!(crate::lock(&api.0).len(), 1);
        let first = crate::lock(&api.0)[0].clone();
        assert_eq!(
            first.status.and_then(|s| s.phase).as_deref(),
            Some("Running")
        );
        assert_eq!(first.metadata.resource_version.as_deref(), Some("7"));

        // The same again is not written.
        status.set("u1", phase("Running"));
        assert!(status.flush(&api, &view).await);
        assert_eq!(crate::lock(&api.0).len(), 1);

        // Before the echo reaches the view, the next write carries the
        // resourceVersion the last one got.
        status.set("u1", phase("Succeeded"));
        assert!(status.flush(&api, &view).await);
        let second = crate::lock(&api.0)[1].clone();
        assert_eq!(second.metadata.resource_version.as_deref(), Some("100"));
        assert_eq!(status.handed(), 4);

        // A pod gone from the node is not written.
        status.forget("u1");
        status.set("u9", phase("Running"));
        assert!(status.flush(&api, &view).await);
        assert_eq!(crate::lock(&api.0).len(), 2);
    }
}
