//! skep-node: the node agent's runtime core — pod IPs, pod network
//! sandboxes, and containers run by runc under a per-container shim.

pub mod cleanup;
pub mod ipam;
pub mod netns;
pub mod quantity;
pub mod runtime;
pub mod sandbox;
pub mod shim;
