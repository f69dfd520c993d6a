//! The pod's status as the worker computes it (conditions, container
//! statuses, phase), handed to the status manager.

use k8s_openapi::api::core::v1::{HostIP, Pod, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skep_runtime::{ContainerRuntime, PodNetworks};

use super::Worker;
use super::ctr::Ctr;

impl<R: ContainerRuntime, N: PodNetworks> Worker<R, N> {
    fn set_condition(&mut self, type_: &str, ok: bool) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry = self
            .conditions
            .entry(type_.to_owned())
            .or_insert_with(|| PodCondition {
                type_: type_.to_owned(),
                status: String::new(),
                ..PodCondition::default()
            });
        if entry.status != status {
            status.clone_into(&mut entry.status);
            entry.last_transition_time = Some(Time(crate::agent::now()));
        }
        entry.clone()
    }

    /// The pod's status as this worker sees it.
    pub(super) fn status(&mut self, pod: &Pod) -> PodStatus {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let initialized = self.init.iter().all(|c| c.done);
        let init_failed = policy == "Never"
            && self
                .init
                .iter()
                .any(|c| c.exited.as_ref().is_some_and(|t| t.exit_code != 0));
        let all_exited = self.main.iter().all(|c| c.exited.is_some());
        let any_failed = self
            .main
            .iter()
            .any(|c| c.exited.as_ref().is_some_and(|t| t.exit_code != 0));
        let phase = if init_failed || (all_exited && any_failed && policy == "Never") {
            "Failed"
        } else if all_exited && !any_failed && policy != "Always" {
            "Succeeded"
        } else if initialized && self.main.iter().any(|c| c.id.is_some()) {
            "Running"
        } else {
            "Pending"
        };
        let ready = initialized && self.main.iter().all(|c| c.ready);
        let scheduled = self.set_condition("PodScheduled", true);
        let init_c = self.set_condition("Initialized", initialized);
        let cr = self.set_condition("ContainersReady", ready);
        let r = self.set_condition("Ready", ready);
        let ip = self.ip.map(|i| i.to_string());
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![init_c, r, cr, scheduled]),
            host_ip: Some(self.parts.cfg.node_ip.to_string()),
            host_ips: Some(vec![HostIP {
                ip: self.parts.cfg.node_ip.to_string(),
            }]),
            pod_ip: ip.clone(),
            pod_ips: ip.map(|ip| vec![PodIP { ip }]),
            start_time: self.start_time.clone(),
            qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
            message: self.failed_message.clone(),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(Ctr::status).collect()),
            container_statuses: Some(self.main.iter().map(Ctr::status).collect()),
            ..PodStatus::default()
        }
    }

    /// Hands the pod's status to the status manager (which writes it when
    /// it changed).
    pub(super) fn report(&mut self, pod: &Pod) {
        let status = self.status(pod);
        self.parts.status.set(&self.uid, status);
    }
}
