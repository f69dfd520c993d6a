//! skep-node: the node agent's runtime core — pod IPs, pod network
//! sandboxes, and containers run by runc under a per-container shim.
//!
//! One pod, start to end (what the agent's pod worker does):
//!
//! ```text
//! ip    = ipam.allocate(uid)                         // ipam: host-local style, on disk
//! net   = sandboxes.create(uid, ip)                  // sandbox: netns + veth + routes
//! files = sandbox::write_pod_files(pod_dir, name, ip, &dns)
//! id    = runtime.create(&ContainerSpec { netns: net.netns_path, mounts: [hosts, resolv.conf, volumes], .. })
//! runtime.start(&id)                                 // shim records output + exit
//! runtime.status(&id) / runtime.list()               // also after an agent restart
//! runtime.exec(&id, argv, timeout)                   // exec probes, kubectl exec
//! cleanup::remove_pod(parts, uid, grace)             // TERM, grace, KILL, then everything
//! cleanup::leftovers(parts)                          // must be empty when no pods remain
//! ```
//!
//! [`agent`] wires the kubelet role together over these parts:
//! [`node_status`] registers the Node and keeps its heartbeat;
//! [`node_sync`] follows the node-sync watch as the one writer of the
//! [`view`] and runs one [`worker`] per pod ([`podspec`] turns a container
//! spec into argv, env and mounts; [`probe`] runs probes). Loops that read
//! the view take a [`view::ViewReader`] and the change signal of what they
//! read: [`services`] and [`dns`] (Services, EndpointSlices), [`policy`]
//! (the node's network-policy maps), [`routes`] (other nodes' pod CIDRs).
//! Writes go through [`api::NodeApi`]; [`metrics`] serves the policy and
//! datapath counters and the loops' run counts to Prometheus.
//! [`server`] is the node's HTTPS endpoint the API server streams logs
//! ([`logs`]) and runs `kubectl exec` ([`remotecommand`]) through.
//!
//! Host roots (`/proc`, `/sys/fs/cgroup`, run and state directories, the
//! runc and shim binaries, the node's network namespace) are constructor
//! parameters, so several test nodes can share one machine.

#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ConfigMap, CrashLoopBackOff, …) are plain words in these docs"
)]

pub mod agent;
pub mod api;
pub mod cleanup;
pub mod dns;
pub mod endpoints;
pub mod ipam;
pub mod logs;
pub mod metrics;
pub mod netns;
pub mod node_status;
pub mod node_sync;
pub mod pod_dns;
pub mod podspec;
pub mod policy;
pub mod probe;
pub mod quantity;
pub mod remotecommand;
pub mod routes;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod services;
pub mod shim;
pub mod view;
pub mod worker;
