//! The datapath's error type.

use std::{io, path::PathBuf};

use crate::preflight::PreflightError;

/// Why a datapath operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The host cannot run the datapath at all.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The binary was built without its eBPF object.
    #[error(
        "this skep binary was built with SKEP_SKIP_EBPF=1 and has no eBPF object; rebuild it without that variable"
    )]
    NoObject,
    /// Creating or cleaning the pin directory failed.
    #[error("failed to prepare pin directory {path}")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the object (maps, BTF relocations).
    #[error("failed to load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object lacks a program the loader asked for.
    #[error("the eBPF object has no program {name}")]
    MissingProgram {
        /// Program name.
        name: &'static str,
    },
    /// The object lacks a map the loader asked for.
    #[error("no map {name} at {path}")]
    MissingMap {
        /// Map name.
        name: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The kernel refused to load a program: usually a kernel without the hook.
    #[error("this kernel cannot load the {hook} program {name}")]
    ProgramLoad {
        /// Program name.
        name: &'static str,
        /// Which kind of kernel hook the program needs.
        hook: &'static str,
        /// What aya reported.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Attaching a loaded program failed.
    #[error("failed to attach {name} to {interface} ({hook})")]
    Attach {
        /// Program name.
        name: &'static str,
        /// Interface it was being attached to.
        interface: String,
        /// Which hook.
        hook: &'static str,
        /// What aya reported.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The cgroup directory to attach the socket programs to cannot be opened.
    #[error("failed to open cgroup {path}")]
    Cgroup {
        /// The cgroup v2 directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Creating, pinning or updating a cgroup link failed.
    #[error("failed to attach {name} through its pinned link")]
    Link {
        /// Program name.
        name: &'static str,
        /// What failed.
        #[source]
        source: crate::link::LinkError,
    },
    /// The interface to attach a routing program to does not exist.
    #[error("failed to attach to interface {interface}: no such interface")]
    NoInterface {
        /// Interface name.
        interface: String,
    },
    /// Reading or writing a map failed.
    #[error("failed to access map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A prefix length outside what a policy map's keys allow.
    #[error("failed to write map {map}: prefix length {prefix_len} is outside {min}..={max}")]
    PolicyPrefix {
        /// Map name.
        map: &'static str,
        /// The prefix length given.
        prefix_len: u32,
        /// The shortest allowed.
        min: u32,
        /// The longest allowed.
        max: u32,
    },
    /// A policy or pod name does not fit the names maps.
    #[error("failed to store name {name}: longer than {max} bytes")]
    NameTooLong {
        /// The name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// Waiting for flows on the ring buffer failed.
    #[error("failed to wait for policy flows")]
    FlowPoll {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}
