//! The node authorizer and NodeRestriction admission for skep, as a pure
//! library: no HTTP and no storage. A node's credential (`system:node:NAME`
//! in `system:nodes`) reads only the secrets, config maps, claims, volumes
//! and service account tokens of pods bound to it, and changes only its own
//! Node and Lease and the status of its own pods, with kube-apiserver's
//! reasons and messages (Kubernetes v1.32).
//!
//! How the API server uses it, on REST and on node sync alike:
//! - keep one [`Graph`] fed from the store's watches of pods and persistent
//!   volumes ([`Graph::upsert_pod`]/[`Graph::remove_pod`],
//!   [`Graph::upsert_pv`]/[`Graph::remove_pv`]), behind a lock;
//! - per request, before RBAC: [`NodeAuthorizer::authorize`]; Allow lets the
//!   request in, NoOpinion hands it to RBAC (and its reason joins the 403
//!   message if RBAC also says no), as with `--authorization-mode=Node,RBAC`;
//! - per write, after authorization: [`admission::admit`], answering 403 or
//!   404 with the error's message.
#![deny(missing_docs)]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ConfigMap, NodeRestriction, …) are plain words in these docs"
)]

pub mod admission;
pub mod authorizer;
pub mod graph;
pub mod refs;

pub use admission::{AdmissionError, AdmissionRequest, Lookup, Operation, PodFacts, admit};
pub use authorizer::{NodeAuthorizer, node_identity, node_rules};
pub use graph::{Graph, ObjectKind};
