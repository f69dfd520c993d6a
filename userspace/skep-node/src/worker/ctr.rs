//! What a pod worker tracks of one container, and its Kubernetes status.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as K8sStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

use crate::probe::ProbeState;

pub(super) fn ts(t: SystemTime) -> Time {
    Time(crate::agent::timestamp(t))
}

/// What the worker tracks of one container.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags of a container's life, as the kubelet keeps them"
)]
pub(super) struct Ctr {
    pub(super) spec: Container,
    pub(super) init: bool,
    pub(super) id: Option<String>,
    pub(super) next_attempt: u32,
    pub(super) restarts: i32,
    pub(super) running_since: Option<SystemTime>,
    pub(super) exited: Option<ContainerStateTerminated>,
    pub(super) last_terminated: Option<ContainerStateTerminated>,
    pub(super) waiting: Option<(String, String)>,
    pub(super) backoff: Duration,
    pub(super) retry_at: Option<Instant>,
    pub(super) image_id: String,
    pub(super) done: bool,
    pub(super) ready: bool,
    pub(super) started: bool,
    pub(super) liveness: Option<ProbeState>,
    pub(super) readiness: Option<ProbeState>,
    pub(super) startup: Option<ProbeState>,
    pub(super) pull_failed: bool,
}

impl Ctr {
    pub(super) fn new(spec: &Container, init: bool) -> Self {
        Self {
            spec: spec.clone(),
            init,
            id: None,
            next_attempt: 0,
            restarts: 0,
            running_since: None,
            exited: None,
            last_terminated: None,
            waiting: Some(("ContainerCreating".into(), String::new())),
            backoff: Duration::ZERO,
            retry_at: None,
            image_id: String::new(),
            done: false,
            ready: false,
            started: false,
            liveness: None,
            readiness: None,
            startup: None,
            pull_failed: false,
        }
    }

    pub(super) fn status(&self) -> K8sStatus {
        let state = if let Some((reason, message)) = &self.waiting {
            K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..K8sState::default()
            }
        } else if let Some(t) = &self.exited {
            K8sState {
                terminated: Some(t.clone()),
                ..K8sState::default()
            }
        } else if let Some(since) = self.running_since {
            K8sState {
                running: Some(ContainerStateRunning {
                    started_at: Some(ts(since)),
                }),
                ..K8sState::default()
            }
        } else {
            K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..K8sState::default()
            }
        };
        K8sStatus {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.id.as_ref().map(|id| format!("skep://{id}")),
            restart_count: self.restarts,
            ready: self.ready,
            started: Some(self.started),
            state: Some(state),
            // Waiting to run again (back-off): the exit it waits after is the last state.
            last_state: self
                .exited
                .as_ref()
                .filter(|_| self.waiting.is_some())
                .or(self.last_terminated.as_ref())
                .map(|t| K8sState {
                    terminated: Some(t.clone()),
                    ..K8sState::default()
                }),
            ..K8sStatus::default()
        }
    }
}

/// Sets up `c`'s probes for a container that just started (or was just
/// adopted): not ready until its readiness probe passes, not started until
/// its startup probe does.
pub(super) fn arm_probes(c: &mut Ctr, now: Instant) {
    let spec = &c.spec;
    c.started = spec.startup_probe.is_none();
    c.ready = false;
    c.liveness = spec
        .liveness_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now, true));
    c.readiness = spec
        .readiness_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now, false));
    c.startup = spec
        .startup_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now, false));
    if c.readiness.is_none() && !c.init {
        c.ready = c.started;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_crashing_container() {
        let mut c = Ctr::new(
            &Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Container::default()
            },
            false,
        );
        assert_eq!(
            c.status()
                .state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref(),
            Some("ContainerCreating")
        );
        c.id = Some("u-app-1".into());
        c.restarts = 1;
        c.waiting = Some(("CrashLoopBackOff".into(), "back-off 10s".into()));
        c.last_terminated = Some(ContainerStateTerminated {
            exit_code: 1,
            reason: Some("Error".into()),
            ..ContainerStateTerminated::default()
        });
        let s = c.status();
        assert_eq!(s.container_id.as_deref(), Some("skep://u-app-1"));
        assert_eq!(s.restart_count, 1);
        assert_eq!(
            s.last_state.and_then(|l| l.terminated).map(|t| t.exit_code),
            Some(1)
        );
    }
}
