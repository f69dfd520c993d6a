//! A control plane without scheduler or node agent for the controllers'
//! tests: a real store in a temp dir, the controllers running on it, and
//! helpers that play the kubelet's part (pod status) like kubemark's
//! hollow nodes.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use skep_objects::Objects;
use skep_store::{Store, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::{ControllerConfig, run};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Controllers on a store in a temp dir; stopped on drop.
pub struct Harness {
    pub objects: Objects,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    /// The control loops without the scheduler: tests bind pods themselves.
    pub async fn start(config: ControllerConfig) -> Result<Self> {
        Self::start_with(ControllerConfig {
            scheduler: false,
            ..config
        })
        .await
    }

    /// The control loops exactly as `config` says.
    pub async fn start_with(config: ControllerConfig) -> Result<Self> {
        Self::start_with_tokens(config, None).await
    }

    /// The control loops as `config` says, the tokens controller with `tokens`.
    pub async fn start_with_tokens(
        config: ControllerConfig,
        tokens: Option<crate::tokens::TokenIssuer>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreConfig::single(dir.path())).await?;
        let objects = Objects::new(store);
        create_namespace(&objects, "team").await?;
        let shutdown = CancellationToken::new();
        // The join handle is not needed: cancelling stops every task.
        drop(run(&objects, &config, tokens, &shutdown));
        Ok(Self {
            objects,
            shutdown,
            _dir: dir,
        })
    }

    /// The active (not terminating) pods in `team` matching `labels`.
    pub async fn active_pods(&self, labels: &str) -> Result<Vec<Pod>> {
        let (pods, _) = self.objects.list_typed::<Pod>("team", labels).await?;
        Ok(pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// What a kubelet reports once a pod's containers are up and ready.
    pub async fn mark_ready(&self, pod: &Pod, ip: &str) -> Result<Pod> {
        let mut pod = pod.clone();
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(crate::util::now())),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        Ok(self.objects.update_typed(&pod, "status", "kubelet").await?)
    }

    /// A pod running with an IP but not ready.
    pub async fn mark_running(&self, pod: &Pod, ip: &str) -> Result<Pod> {
        let mut pod = pod.clone();
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "False".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        Ok(self.objects.update_typed(&pod, "status", "kubelet").await?)
    }
}

pub async fn create_namespace(objects: &Objects, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    objects.create_typed(&ns, "test").await?;
    Ok(())
}

/// Polls `check` until it returns `Some`, failing after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The usual bound for a controller to converge.
pub const CONVERGE: Duration = Duration::from_secs(10);

/// Label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
