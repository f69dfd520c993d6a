//! This node's pods in the routing datapath: every pod sandbox gets
//! `skep_pod_ingress` on its host veth and an entry in the endpoints map (so
//! traffic to it is delivered by `bpf_redirect_peer`); a torn-down pod loses
//! both; the node's underlay device gets `skep_underlay_ingress`.
//!
//! None of this is needed for pods to talk: without it the kernel forwards
//! as before (the programs fall back to the stack, and a pod missing from
//! the map is still reached through its `/32` route). So failures here are
//! logged, never fatal to a pod.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Pod;

use skep_datapath::routing::{self, RouteHook, RouteProgram};
use skep_datapath::{Datapath, Endpoint, EndpointMap};
use skep_runtime::sandbox::{PodNetwork, host_veth_name};

/// The node's pods in the routing datapath: the loaded datapath (its
/// programs stay loaded while it lives) and the pin directory of its maps.
#[derive(Clone)]
pub struct Endpoints {
    datapath: Arc<Mutex<Datapath>>,
    /// The pod program, attached without taking the loader's lock.
    pod_program: Option<Arc<RouteProgram>>,
    pin_dir: PathBuf,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// The endpoints of `datapath`, whose maps are pinned in `pin_dir`.
    pub fn new(mut datapath: Datapath, pin_dir: PathBuf) -> Self {
        let pod_program = match datapath.route_program(RouteHook::Pod) {
            Ok(p) => Some(Arc::new(p)),
            Err(err) => {
                tracing::warn!(
                    ?err,
                    "the pod routing program is not available; the kernel forwards pods' traffic"
                );
                None
            }
        };
        Self {
            datapath: Arc::new(Mutex::new(datapath)),
            pod_program,
            pin_dir,
        }
    }

    fn datapath(&self) -> std::sync::MutexGuard<'_, Datapath> {
        self.datapath.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches the pod program to `net`'s host veth and programs the endpoint
    /// `name` (`namespace/pod`). Attaching again (an adopted pod, a new agent)
    /// swaps the program in place.
    #[tracing::instrument(skip_all, fields(pod = %name, ip = %net.ip))]
    pub fn add(&self, name: &str, net: &PodNetwork) {
        let began = std::time::Instant::now();
        let attached = self.pod_program.as_ref().map(|p| p.attach(&net.host_veth));
        if let Some(Err(err)) = attached {
            tracing::warn!(?err, interface = %net.host_veth, "failed to attach the pod routing program; the kernel forwards this pod's traffic");
        }
        let endpoint = Endpoint {
            name: name.to_owned(),
            ip: net.ip,
            host_ifindex: net.host_ifindex,
            pod_mac: net.pod_mac,
            host_mac: net.host_mac,
        };
        let programmed =
            EndpointMap::open_pinned(&self.pin_dir).and_then(|mut map| map.upsert(&endpoint));
        if let Err(err) = programmed {
            tracing::warn!(
                ?err,
                "failed to program the pod's endpoint; it is reached through the kernel"
            );
        }
        skep_runtime::timing::phase("endpoint", began);
    }

    /// Removes pod `uid`'s endpoint (when its IP is known) and its program's
    /// link. Missing pieces are fine.
    #[tracing::instrument(skip(self))]
    pub fn remove(&self, uid: &str, ip: Option<Ipv4Addr>) {
        let pin_dir = &self.pin_dir;
        if let Some(ip) = ip {
            let removed = EndpointMap::open_pinned(pin_dir).and_then(|mut map| map.remove(ip));
            if let Err(err) = removed {
                tracing::warn!(?err, "failed to remove the pod's endpoint");
            }
        }
        if let Err(err) = routing::detach_route(pin_dir, &host_veth_name(uid), RouteHook::Pod) {
            tracing::warn!(?err, "failed to detach the pod routing program");
        }
    }

    /// Attaches the underlay program to the device holding `node_ip` (in the
    /// agent's network namespace). Without one, traffic from other nodes to
    /// local pods is forwarded by the kernel.
    pub fn attach_underlay(&self, node_ip: Ipv4Addr) {
        let Some(interface) = interface_with(node_ip) else {
            tracing::warn!(%node_ip, "no interface holds the node IP; underlay routing program not attached");
            return;
        };
        let attached = self
            .datapath()
            .attach_route(&interface, RouteHook::Underlay);
        match attached {
            Ok(()) => tracing::info!(%interface, "underlay routing program attached"),
            Err(err) => {
                tracing::warn!(?err, %interface, "failed to attach the underlay routing program");
            }
        }
    }

    /// After a restart: removes the links of interfaces that are gone and the
    /// endpoints of pods this node no longer has. `allocated` is what the IPAM
    /// holds (pod IP → pod UID); an endpoint stays only if its IP is allocated
    /// and it names that pod's current host veth. Live entries are left as they
    /// are.
    pub fn reconcile(&self, allocated: &BTreeMap<Ipv4Addr, String>) {
        let pin_dir = &self.pin_dir;
        match routing::prune_route_links(pin_dir) {
            Ok(pruned) if !pruned.is_empty() => {
                tracing::info!(?pruned, "links of deleted interfaces removed");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(?err, "failed to prune routing links"),
        }
        let removed = EndpointMap::open_pinned(pin_dir).and_then(|mut map| {
            map.retain(|e| {
                allocated
                    .get(&e.ip)
                    .is_some_and(|uid| host_ifindex(uid) == Some(e.host_ifindex))
            })
        });
        match removed {
            Ok(stale) if !stale.is_empty() => {
                tracing::info!(count = stale.len(), "stale endpoints removed");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(?err, "failed to reconcile the endpoints map"),
        }
    }
}

/// The name of the interface holding `ip`, if one does (loopback aside).
fn interface_with(ip: Ipv4Addr) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifaddr in addrs {
        let holds = ifaddr
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .is_some_and(|a| a.ip() == ip);
        if holds && ifaddr.interface_name != "lo" {
            return Some(ifaddr.interface_name);
        }
    }
    None
}

/// `namespace/name` of a pod, as the endpoints map names it.
pub fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The index of pod `uid`'s host veth in the agent's namespace, if it exists.
fn host_ifindex(uid: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(host_veth_name(uid).as_str()).ok()
}
