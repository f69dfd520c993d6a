//! The ClusterRole aggregation controller (kube-controller-manager's
//! `clusterrole-aggregation-controller`): a ClusterRole with an
//! `aggregationRule` holds the rules of every ClusterRole its selectors
//! match, kept current as those change (so `admin`, `edit` and `view` grow
//! with each `rbac.authorization.k8s.io/aggregate-to-*` role a user adds).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::ClusterRole;
use skep_api::StatusReason;
use skep_objects::Objects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ControllerError;
use crate::informer::Informers;
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// The one work item: every change re-aggregates all ClusterRoles (there
/// are a few hundred at most, and chains such as view → edit → admin
/// settle in one pass).
const ALL: &str = "*";

/// Keeps aggregated ClusterRoles' rules current.
pub struct ClusterRoleAggregationController {
    objects: Objects,
}

impl ClusterRoleAggregationController {
    /// Registers with the informers and starts the worker.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        _config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let roles = informers.of_type::<ClusterRole>();
        {
            let queue = queue.clone();
            roles.add_handler(Box::new(move |_old, _new| queue.add(ALL.to_owned())));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
        });
        spawn_workers(&controller, &queue, vec![roles], 1, shutdown)
    }
}

impl Reconciler for ClusterRoleAggregationController {
    const NAME: &'static str = "clusterrole-aggregation-controller";

    #[tracing::instrument(skip_all)]
    async fn reconcile(&self, _key: &str) -> Result<Requeue, ControllerError> {
        let (mut roles, _) = self
            .objects
            .list_typed::<ClusterRole>("", "")
            .await
            .map_err(|e| ControllerError::api("list cluster roles", "", e))?;
        let changed = match skep_rbac::aggregation::aggregate_all(&mut roles) {
            Ok(changed) => changed,
            Err(err) => {
                tracing::warn!(%err, "a ClusterRole's aggregationRule does not parse");
                return Ok(None);
            }
        };
        for role in roles
            .iter()
            .filter(|r| changed.iter().any(|c| Some(c) == r.metadata.name.as_ref()))
        {
            let name = role.metadata.name.clone().unwrap_or_default();
            match self.objects.update_typed(role, "", Self::NAME).await {
                Ok(_) => tracing::info!(role = %name, "aggregated rules updated"),
                // Changed meanwhile: the change queues another pass.
                Err(err) if err.reason == StatusReason::Conflict => {}
                Err(err) => return Err(ControllerError::api("update cluster role", name, err)),
            }
        }
        Ok(None)
    }
}
