//! Attaching the routing programs: `skep_pod_ingress` on every pod's
//! host-side veth and `skep_underlay_ingress` on the node's underlay device,
//! both at TC ingress.
//!
//! They are attached by TCX links pinned in the pin directory
//! (`link_<program>_<interface>`), not by legacy clsact filters, because:
//! - a pinned link outlives the agent (even `kill -9`), like a filter, but a
//!   restarted agent swaps its new program into the same link atomically
//!   (`BPF_LINK_UPDATE`): no moment without the program, never two of them,
//!   and no need to find "our" filter again by priority and handle among
//!   whatever else is attached;
//! - the pin is the record of what skep attached: detaching is removing the
//!   pin, and a reconcile lists the pins instead of dumping every interface's
//!   filters;
//! - TCX coexists with other TCX programs on the same hook (the metrics
//!   programs, other tools) without qdisc management.
//!
//! When an interface is deleted the kernel detaches its link by itself; the
//! pin then names a defunct link. [`prune_route_links`] removes such pins, and
//! attaching to a re-created interface of the same name replaces the pin.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::{SchedClassifier, TcAttachType};
use aya_obj::generated::bpf_attach_type;
use skep_ebpf_common::program;

use crate::{Datapath, DatapathError, link};

/// A routing program and where it attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteHook {
    /// A pod's host-side veth: routes what the pod sends.
    Pod,
    /// The node's underlay device: delivers arriving traffic to local pods.
    Underlay,
}

impl RouteHook {
    /// Both hooks.
    pub const ALL: [Self; 2] = [Self::Pod, Self::Underlay];

    /// The program's name in the object.
    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Self::Pod => program::POD_INGRESS,
            Self::Underlay => program::UNDERLAY_INGRESS,
        }
    }

    /// The pin name of this hook's link on `interface`.
    #[must_use]
    pub fn pin_name(self, interface: &str) -> String {
        format!("link_{}_{interface}", self.program())
    }

    /// The hook and interface a pin name stands for, if it is a routing link.
    #[must_use]
    pub fn parse_pin_name(name: &str) -> Option<(Self, &str)> {
        let rest = name.strip_prefix("link_")?;
        Self::ALL.into_iter().find_map(|hook| {
            let interface = rest.strip_prefix(hook.program())?.strip_prefix('_')?;
            (!interface.is_empty()).then_some((hook, interface))
        })
    }
}

/// The index of `interface` in the calling thread's network namespace.
fn ifindex(interface: &str) -> Option<u32> {
    let name = CString::new(interface).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

impl Datapath {
    /// Attaches `hook`'s program at TC ingress of `interface` (in the calling
    /// thread's network namespace) through a pinned TCX link. If a link is
    /// already pinned for it (an earlier agent), this object's program is
    /// swapped in; a pin left by a deleted interface is replaced.
    pub fn attach_route(&mut self, interface: &str, hook: RouteHook) -> Result<(), DatapathError> {
        self.route_program(hook)?.attach(interface)
    }

    /// A handle on `hook`'s loaded program that attaches it without this
    /// loader: callers attaching from many threads at once (a burst of pod
    /// sandboxes) need no lock around it, and each attach waits out its
    /// own RCU grace period in parallel.
    pub fn route_program(&mut self, hook: RouteHook) -> Result<RouteProgram, DatapathError> {
        let pin_dir = self.pin_dir().to_owned();
        let name = hook.program();
        let fd = self
            .classifier_fd(name)?
            .try_clone_to_owned()
            .map_err(|source| DatapathError::Link {
                name,
                source: link::LinkError::Syscall {
                    operation: "duplicate the program descriptor",
                    path: pin_dir.clone(),
                    source,
                },
            })?;
        Ok(RouteProgram { fd, hook, pin_dir })
    }
}

/// One routing program, held open (a duplicate of the loader's descriptor
/// keeps it loaded), and the pin directory its links go in.
#[derive(Debug)]
pub struct RouteProgram {
    fd: OwnedFd,
    hook: RouteHook,
    pin_dir: PathBuf,
}

impl RouteProgram {
    /// Attaches the program at TC ingress of `interface` (in the calling
    /// thread's network namespace) through a pinned TCX link, as
    /// [`Datapath::attach_route`] describes.
    #[tracing::instrument(skip(self), fields(program = self.hook.program()))]
    pub fn attach(&self, interface: &str) -> Result<(), DatapathError> {
        let name = self.hook.program();
        let pin = self.pin_dir.join(self.hook.pin_name(interface));
        let index = ifindex(interface).ok_or_else(|| DatapathError::NoInterface {
            interface: interface.to_owned(),
        })?;
        let link_err = |source| DatapathError::Link { name, source };
        let existing = link::open_pinned(&pin).map_err(link_err)?;
        let prog = self.fd.as_fd();
        if let Some(existing) = existing {
            match link::update(existing.as_fd(), prog, &pin) {
                Ok(()) => {
                    tracing::info!("pinned tc link updated");
                    return Ok(());
                }
                Err(err) if err.is_defunct_link() => {
                    tracing::info!("pinned tc link of a deleted interface replaced");
                    remove_pin(&pin)?;
                }
                Err(err) => return Err(link_err(err)),
            }
        }
        link::create_tcx_and_pin(prog, index, bpf_attach_type::BPF_TCX_INGRESS as u32, &pin)
            .map_err(link_err)?;
        tracing::info!(ifindex = index, "attached by a pinned tc link");
        Ok(())
    }
}

/// Names of the programs attached at TC ingress of `interface` by TCX, in
/// the order they run (the kernel keeps the first 15 bytes of a name).
pub fn ingress_programs(interface: &str) -> Result<Vec<String>, DatapathError> {
    let (_, programs) =
        SchedClassifier::query_tcx(interface, TcAttachType::Ingress).map_err(|source| {
            DatapathError::Attach {
                name: "(query)",
                interface: interface.to_owned(),
                hook: "tcx ingress",
                source: Box::new(source),
            }
        })?;
    Ok(programs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect())
}

/// Detaches `hook`'s program from `interface`: removes its pin. Returns
/// whether one was pinned.
pub fn detach_route(
    pin_dir: &Path,
    interface: &str,
    hook: RouteHook,
) -> Result<bool, DatapathError> {
    remove_pin(&pin_dir.join(hook.pin_name(interface)))
}

/// The routing links pinned in `pin_dir`: hook and interface name, sorted.
pub fn route_links(pin_dir: &Path) -> Result<Vec<(RouteHook, String)>, DatapathError> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DatapathError::PinDir {
                path: pin_dir.to_owned(),
                source,
            });
        }
    };
    let mut links: Vec<(RouteHook, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let (hook, interface) = RouteHook::parse_pin_name(name.to_str()?)?;
            Some((hook, interface.to_owned()))
        })
        .collect();
    links.sort();
    Ok(links)
}

/// Removes the pins of routing links whose interface no longer exists in
/// the calling thread's network namespace (their links are already
/// detached). Returns the interfaces pruned.
pub fn prune_route_links(pin_dir: &Path) -> Result<Vec<String>, DatapathError> {
    let mut pruned = Vec::new();
    for (hook, interface) in route_links(pin_dir)? {
        if ifindex(&interface).is_none() {
            remove_pin(&pin_dir.join(hook.pin_name(&interface)))?;
            tracing::info!(%interface, program = hook.program(), "pin of a deleted interface removed");
            pruned.push(interface);
        }
    }
    Ok(pruned)
}

fn remove_pin(pin: &Path) -> Result<bool, DatapathError> {
    match fs::remove_file(pin) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DatapathError::PinDir {
            path: pin.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        for hook in RouteHook::ALL {
            let name = hook.pin_name("skep0123456789a");
            assert_eq!(
                RouteHook::parse_pin_name(&name),
                Some((hook, "skep0123456789a"))
            );
        }
        assert_eq!(RouteHook::parse_pin_name("link_skep_sock_connect4"), None);
        assert_eq!(RouteHook::parse_pin_name("link_skep_pod_ingress_"), None);
        assert_eq!(RouteHook::parse_pin_name("SKEP_ENDPOINTS"), None);
    }
}
