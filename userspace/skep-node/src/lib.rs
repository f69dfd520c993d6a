//! skep-node: the node agent (kubelet role) over the runtime half in
//! `skep-runtime` (pod IPs, pod network sandboxes, runc containers under a
//! per-container shim, CRI logs, cleanup).
//!
//! [`agent`] wires the kubelet role together over these parts:
//! [`node_status`] registers the Node and keeps its heartbeat;
//! [`node_sync`] follows the node-sync watch as the one writer of the
//! [`view`] and runs one [`worker`] per pod ([`podspec`] turns a container
//! spec into argv, env and mounts; [`projected`] and [`atomic_writer`]
//! make projected and downward API volumes, with ServiceAccount tokens
//! from the [`token`] manager; [`probe`] runs probes). Workers are
//! written against traits: the runtime's `ContainerRuntime`, the
//! [`pod_network`] manager (address, sandbox and datapath entry as one),
//! [`images`]; they are woken by their pod's changes, by the node's one
//! lifecycle event source ([`pleg`]) and by their own probe and back-off
//! timers, and hand their statuses to the [`status_manager`]. Loops that read
//! the view take a [`view::ViewReader`] and the change signal of what they
//! read: [`services`] and [`dns`] (Services, EndpointSlices), [`policy`]
//! (the node's network-policy maps), [`routes`] (other nodes' pod CIDRs).
//! Writes go through [`api::NodeApi`]; [`metrics`] serves the policy and
//! datapath counters and the loops' run counts to Prometheus.
//! [`server`] is the node's HTTPS endpoint the API server streams logs
//! (`skep_runtime::logs`) and runs `kubectl exec` ([`remotecommand`])
//! through.

#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ConfigMap, CrashLoopBackOff, …) are plain words in these docs"
)]

pub mod agent;
pub mod api;
pub mod atomic_writer;
pub mod auth;
pub mod dns;
pub mod endpoints;
pub mod images;
pub mod metrics;
pub mod node_status;
pub mod node_sync;
pub mod pleg;
pub mod pod_dns;
pub mod pod_network;
pub mod podspec;
pub mod policy;
pub mod probe;
pub mod projected;
pub mod remotecommand;
pub mod routes;
pub mod server;
pub mod services;
pub mod status_manager;
pub mod token;
pub mod view;
pub mod worker;

/// Locks `m`; a panicked holder does not hide the state from the others.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
