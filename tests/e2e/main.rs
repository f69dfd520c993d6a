//! skep's end-to-end tests: one binary, run serially by `cargo xtask test`
//! (as root), each test making and removing its own namespaces and pins.
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ReplicaSet, EndpointSlice, …) are plain words in these docs"
)]

mod agent;
mod agent_input;
mod agent_registry;
mod api_conformance;
mod cli;
mod control_plane;
mod datapath;
mod lab;
mod lab_dns;
mod lab_nodeauthz;
mod lab_nodeport;
mod lab_policy_wire;
mod lab_services;
mod lab_wakeups;
mod netpol;
mod policy_validation;
mod python_client;
mod rbac;
mod scheduling;
mod service_alloc;
mod serviceaccount;
mod services;
mod tokens;
mod workloads;
