//! skep-dns: the cluster DNS every skep agent answers for its pods.
//!
//! ```text
//! records = Records::build("cluster.local", services, endpoint_slices)?   // the Kubernetes DNS spec
//! server  = DnsServer::bind(ServerConfig { listen, upstreams, .. }, records).await?
//! handle  = server.records();  tokio::spawn(server.run());
//! handle.set(Records::build(..)?)                                          // when the cluster moves
//! ```
//!
//! Names in the cluster domain are answered from [`Records`] (NXDOMAIN and
//! NODATA told apart, SOA in the authority section); other names are
//! forwarded to the node's resolvers ([`ResolvConf::upstreams`]) and answer
//! SERVFAIL quickly when none replies. The crate knows nothing of the agent:
//! it takes k8s-openapi objects.

#![deny(missing_docs)]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (EndpointSlice, ExternalName) and CoreDNS are plain words in these docs"
)]

pub mod forward;
pub mod records;
pub mod resolv_conf;
pub mod server;

pub use records::{Lookup, Records, RecordsError, TTL};
pub use resolv_conf::ResolvConf;
pub use server::{DnsServer, RecordsHandle, ServerConfig, ServerError};
