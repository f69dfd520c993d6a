//! skep-scheduler binds pods to nodes like kube-scheduler's default profile.
//!
//! - [`cache::Cache`]: nodes, the pods on them (bound or assumed while the
//!   binding is in flight), indexes for inter-pod affinity and spreading;
//! - [`algorithm::Algorithm`]: PreFilter/Filter/Score over a rotating sample
//!   of nodes, and the kube-style [`algorithm::FitError`] message;
//! - [`queue::SchedulingQueue`]: active, backoff and unschedulable pods;
//! - [`scheduler::Scheduler`]: ties them together with a [`scheduler::Binder`].
//!
//! Wiring to the store: feed node/pod/namespace watch events to
//! [`scheduler::Scheduler::upsert_node`], [`scheduler::Scheduler::upsert_pod`],
//! [`scheduler::Scheduler::remove_pod`] …, spawn [`scheduler::Scheduler::run`],
//! and implement [`scheduler::Binder`] by posting `pods/binding`.

pub mod algorithm;
pub mod cache;
pub mod model;
pub mod queue;
pub mod resources;
pub mod scheduler;
#[cfg(test)]
mod testutil;

pub use algorithm::{Algorithm, FitError, ScheduleResult};
pub use cache::{Cache, CacheError};
pub use model::PodInfo;
pub use queue::{ClusterEvent, QueueConfig, SchedulingQueue};
pub use scheduler::{BindError, Binder, Scheduler, SchedulerConfig};
