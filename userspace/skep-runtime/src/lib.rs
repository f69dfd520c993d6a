//! skep-runtime: the node's container runtime half — pod IPs, pod network
//! sandboxes, and containers run by runc under a per-container shim. It
//! knows nothing of Kubernetes: the agent (`skep-node`) turns pods into the
//! plain specs this crate takes.
//!
//! One pod, start to end (what the agent's pod worker does):
//!
//! ```text
//! net   = network.setup(uid)                         // PodNetworks: IP (ipam) + netns, veth, routes (sandbox)
//! files = sandbox::write_pod_files(pod_dir, name, net.ip, &dns)
//! id    = runtime.run(&ContainerSpec { netns: net.netns_path, mounts: [hosts, resolv.conf, volumes], .. })
//!                                                    // one `runc run --detach`; the shim records output + exit
//!                                                    // (or runtime.create, then runtime.start)
//! runtime.status(&id) / runtime.list()               // also after an agent restart
//! runtime.exec(&id, argv, timeout)                   // exec probes, kubectl exec
//! cleanup::remove_pod(parts, uid, grace)             // TERM, grace, KILL, then everything
//! cleanup::leftovers(parts)                          // must be empty when no pods remain
//! ```
//!
//! The privileged operations sit behind two small traits,
//! [`ContainerRuntime`] (runc, [`runtime::Runtime`]) and [`PodNetworks`]
//! ([`ipam::Ipam`] + [`sandbox::SandboxManager`], as [`HostPodNetworks`]);
//! the `fake` feature adds in-memory versions of both
//! (`skep_runtime::fake`) so code written against the traits is
//! unit-tested without root.
//!
//! [`shim`] is the supervisor each container runs under (the `skep-shim`
//! binary), and [`logs`] the CRI log format it writes and the node's log
//! server reads. Without the default `agent` feature the crate is only
//! those two, with none of the agent's dependencies (tokio, netlink, OCI
//! spec builders): what the shim links.
//!
//! Host roots (`/proc`, `/sys/fs/cgroup`, run and state directories, the
//! runc and shim binaries, the node's network namespace) are constructor
//! parameters, so several test nodes can share one machine.

#![deny(missing_docs)]

#[cfg(feature = "agent")]
pub mod cleanup;
#[cfg(all(feature = "agent", any(test, feature = "fake")))]
pub mod fake;
pub mod files;
#[cfg(feature = "agent")]
pub mod ipam;
pub mod logs;
#[cfg(feature = "agent")]
pub mod netns;
#[cfg(feature = "agent")]
pub mod quantity;
#[cfg(feature = "agent")]
pub mod runtime;
#[cfg(feature = "agent")]
pub mod sandbox;
pub mod shim;
#[cfg(feature = "agent")]
pub mod timing;
#[cfg(feature = "agent")]
mod traits;

#[cfg(feature = "agent")]
pub use traits::{ContainerRuntime, HostPodNetworks, PodNetworkError, PodNetworks};
