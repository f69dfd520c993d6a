//! skep's eBPF datapath from userspace: the embedded eBPF object, the checks a
//! host must pass before it can run it, loading and attaching its programs,
//! and reading the maps they pin.
#![deny(missing_docs)]

pub mod conntrack;
pub mod endpoint;
mod error;
mod link;
mod loader;
pub mod metrics;
mod name;
pub mod nodeport;
mod pinned;
pub mod policy;
pub mod preflight;
pub mod routing;
pub mod service;

pub use endpoint::{Endpoint, EndpointMap, EndpointMapError, Mac};
pub use error::DatapathError;
pub use link::LinkError;
pub use loader::{Datapath, DatapathConfig, TcHook, lru_entries_for_memory};
pub use policy::{FlowNames, FlowReader, PolicyCounter, PolicyMaps, format_flow};
pub use routing::RouteHook;
pub use service::{Frontend, Protocol, ServiceMap, ServiceMapError, ServiceSpec, format_table};

/// The eBPF object built from `ebpf/skep-ebpf` by this crate's build script.
/// Empty when the crate was built with `SKEP_SKIP_EBPF=1`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skep"));

/// Where a node's maps are pinned by default: `<bpffs>/skep/<node>`.
#[must_use]
pub fn default_pin_dir(bpffs: &std::path::Path, node: &str) -> std::path::PathBuf {
    bpffs.join("skep").join(node)
}

#[cfg(test)]
mod tests {
    use skep_ebpf_common::{map, program};

    use super::*;

    /// The embedded object must hold every program and map the loader names:
    /// a rename on one side only would otherwise surface as a runtime error.
    #[test]
    fn embedded_object_has_every_program_and_map() {
        assert!(
            !EBPF_OBJECT.is_empty(),
            "built with SKEP_SKIP_EBPF=1: the test needs the real object"
        );
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        for name in program::ALL {
            assert!(
                object.programs.contains_key(*name),
                "program {name} missing from the eBPF object"
            );
        }
        for name in map::ALL {
            assert!(
                object.maps.contains_key(*name),
                "map {name} missing from the eBPF object"
            );
        }
    }
}
