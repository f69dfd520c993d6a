//! skep-policy compiles Kubernetes `networking.k8s.io/v1` `NetworkPolicy` into
//! the contents of one node's policy maps, as defined in
//! [`skep_ebpf_common::policy`] (read its module doc: identities, ipcache,
//! policy endpoints, rules LPM). Pure: no maps, no I/O.
//!
//! # Why identities
//!
//! The datapath judges a new flow with one ipcache longest-prefix match and
//! at most three rule lookups, whatever the number of policies: the
//! compiler does the set algebra (selectors, namespaces, `except`, named
//! ports, port ranges) ahead of time, into exact-match identities and
//! protocol/port prefixes. Pods with the same namespace, labels and named
//! ports share an identity, so rules scale with distinct pod shapes, not
//! pods; a label change moves a pod's /32 to another identity (one ipcache
//! write) instead of rewriting rules everywhere. CIDRs become identities
//! too, and because prefixes nest, "inside `cidr` and no `except`" is a
//! subset test on the longest-matching CIDR identity: the ipcache entry of
//! an address carries the identity of the longest policy CIDR containing
//! it, `P`, and the address is in `cidr` exactly when `P ⊆ cidr`.
//!
//! # What a node gets
//!
//! The ipcache and peer names cover every pod of the cluster; CIDR
//! identities, rules, policy ids and endpoints only what the policies
//! selecting *local* pods need, so map sizes follow the node's own pods.
//!
//! # Choices where Kubernetes leaves room
//!
//! - `ipBlock` applies to pod addresses too (Calico does the same).
//! - A named port with an `ipBlock` peer matches nothing: the name is
//!   resolved per destination pod, and an identity-free CIDR cannot carry
//!   it exactly (pods of one identity may sit inside and outside the CIDR).
//! - A named port in an egress rule without `to` allows that port on every
//!   pod that names it (never a non-pod address).
//! - Invalid content the API server should refuse (bad CIDR, unknown
//!   protocol, empty peer, `endPort` below `port`) matches nothing.
//!
//! # Use
//!
//! ```
//! # let (pods, namespaces, policies) = (vec![], vec![], vec![]);
//! let mut ids = skep_policy::Identities::default(); // persisted by the agent
//! let current = skep_policy::PolicyState::default(); // what the maps hold
//! let desired = skep_policy::compile("node-1", &pods, &namespaces, &policies, &mut ids);
//! let diff = current.diff(&desired); // apply in PolicyDiff's documented order
//! assert!(diff.is_empty());
//! ```
//!
//! [`lookup::allows`] replays the datapath's lookups on a state, so tests
//! and end-to-end expectations share one meaning with the kernel.

mod cidr;
mod compile;
mod identity;
pub mod lookup;
mod pod;
mod ports;
mod state;

#[cfg(test)]
mod compile_test;

pub use cidr::{Cidr, CidrError};
pub use compile::{NAMESPACE_NAME_LABEL, compile};
pub use identity::{Identities, IdentitiesError, PodIdentityKey};
pub use lookup::{Verdict, allows};
pub use pod::{NamedPort, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PolicyPod, protocol_number};
pub use ports::{PortMatch, range_blocks};
pub use state::{MapDiff, PolicyDiff, PolicyState};
