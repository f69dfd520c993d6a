//! skep-node: the node agent (kubelet role) over the runtime half in
//! `skep-runtime` (pod IPs, pod network sandboxes, runc containers under a
//! per-container shim, CRI logs, cleanup).
//!
//! [`agent`] is the kubelet loop: node registration and heartbeat, the
//! node-sync watch, and one [`worker`] per pod ([`podspec`] turns a
//! container spec into argv, env and mounts; [`probe`] runs probes).
//! [`policy`] keeps the node's network-policy maps compiled from the view;
//! [`metrics`] serves them (and the datapath counters) to Prometheus.
//! [`server`] is the node's HTTPS endpoint the API server streams logs
//! (`skep_runtime::logs`) and runs `kubectl exec` ([`remotecommand`])
//! through.

#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ConfigMap, CrashLoopBackOff, …) are plain words in these docs"
)]

pub mod agent;
pub mod dns;
pub mod endpoints;
pub mod metrics;
pub mod pod_dns;
pub mod podspec;
pub mod policy;
pub mod probe;
pub mod remotecommand;
pub mod routes;
pub mod server;
pub mod services;
pub mod worker;
