//! Loading the embedded eBPF object, pinning its maps and attaching programs.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{SchedClassifier, TcAttachType, tc},
};
use skep_ebpf_common::program;

use crate::{DatapathError, EBPF_OBJECT};

/// Where the loader pins maps and which BTF it relocates against.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// Directory (on a bpffs) where maps are pinned, e.g. `/sys/fs/bpf/skep/<node>`.
    pub pin_dir: PathBuf,
    /// Kernel BTF to use instead of `/sys/kernel/btf/vmlinux`.
    pub btf: Option<PathBuf>,
}

/// A TC hook skep attaches: which program, and which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    /// Count packets entering an interface.
    MetricsIngress,
    /// Count packets leaving an interface.
    MetricsEgress,
}

impl TcHook {
    /// The program's name in the object.
    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Self::MetricsIngress => program::METRICS_INGRESS,
            Self::MetricsEgress => program::METRICS_EGRESS,
        }
    }

    /// The TC direction the program attaches to.
    #[must_use]
    pub const fn attach_type(self) -> TcAttachType {
        match self {
            Self::MetricsIngress => TcAttachType::Ingress,
            Self::MetricsEgress => TcAttachType::Egress,
        }
    }

    /// A human name of the kernel hook, for errors.
    #[must_use]
    pub const fn hook_name(self) -> &'static str {
        match self {
            Self::MetricsIngress => "tc ingress",
            Self::MetricsEgress => "tc egress",
        }
    }
}

/// The loaded datapath. Programs stay attached while this value lives; the
/// pinned maps outlive it (see [`Datapath::remove_pins`]).
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the embedded object: creates `pin_dir`, pins (or reuses already
    /// pinned) maps there, and loads every TC program into the kernel.
    #[tracing::instrument(skip_all, fields(pin_dir = %config.pin_dir.display()))]
    pub fn load(config: &DatapathConfig) -> Result<Self, DatapathError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DatapathError::NoObject);
        }
        fs::create_dir_all(&config.pin_dir).map_err(|source| DatapathError::PinDir {
            path: config.pin_dir.clone(),
            source,
        })?;
        let btf = match &config.btf {
            Some(path) => Some(
                Btf::parse_file(path, aya::Endianness::default())
                    .map_err(|err| DatapathError::Load(Box::new(aya::EbpfError::BtfError(err))))?,
            ),
            None => Btf::from_sys_fs().ok(),
        };
        let mut ebpf = EbpfLoader::new()
            .btf(btf.as_ref())
            .map_pin_path(&config.pin_dir)
            .load(EBPF_OBJECT)
            .map_err(|err| DatapathError::Load(Box::new(err)))?;
        for hook in [TcHook::MetricsIngress, TcHook::MetricsEgress] {
            let prog = classifier(&mut ebpf, hook)?;
            prog.load().map_err(|source| DatapathError::ProgramLoad {
                name: hook.program(),
                hook: hook.hook_name(),
                source: Box::new(source),
            })?;
        }
        tracing::info!("eBPF object loaded");
        Ok(Self {
            ebpf,
            pin_dir: config.pin_dir.clone(),
        })
    }

    /// Attaches `hook`'s program to `interface` in the calling thread's
    /// network namespace. Detached when this `Datapath` is dropped.
    #[tracing::instrument(skip(self), fields(program = hook.program()))]
    pub fn attach_tc(&mut self, interface: &str, hook: TcHook) -> Result<(), DatapathError> {
        // Kernels before 6.6 attach TC programs under a clsact qdisc; newer ones
        // use TCX links and do not need it. It may already exist: fine.
        if let Err(err) = tc::qdisc_add_clsact(interface) {
            tracing::debug!(%err, "clsact qdisc not added");
        }
        let prog = classifier(&mut self.ebpf, hook)?;
        prog.attach(interface, hook.attach_type())
            .map_err(|source| DatapathError::Attach {
                name: hook.program(),
                interface: interface.to_owned(),
                hook: hook.hook_name(),
                source: Box::new(source),
            })?;
        tracing::info!("attached");
        Ok(())
    }

    /// The directory the maps are pinned in.
    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Removes every pin in `pin_dir`, then the directory: what a node leaving
    /// for good (or a test) does. Missing pins are not an error.
    pub fn remove_pins(pin_dir: &Path) -> Result<(), DatapathError> {
        let err = |source| DatapathError::PinDir {
            path: pin_dir.to_owned(),
            source,
        };
        let entries = match fs::read_dir(pin_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        for entry in entries {
            fs::remove_file(entry.map_err(err)?.path()).map_err(err)?;
        }
        fs::remove_dir(pin_dir).map_err(err)
    }
}

fn classifier(ebpf: &mut Ebpf, hook: TcHook) -> Result<&mut SchedClassifier, DatapathError> {
    ebpf.program_mut(hook.program())
        .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
        .ok_or(DatapathError::MissingProgram {
            name: hook.program(),
        })
}
