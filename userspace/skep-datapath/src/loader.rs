//! Loading the embedded eBPF object, pinning its maps and attaching programs.

use std::{
    fs,
    path::{Path, PathBuf},
};

use std::os::fd::AsFd as _;

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{CgroupSockAddr, SchedClassifier, TcAttachType, tc},
};
use skep_ebpf_common::{map, program};

use crate::{DatapathError, EBPF_OBJECT, link};

/// Where the loader pins maps and which BTF it relocates against.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// Directory (on a bpffs) where maps are pinned, e.g. `/sys/fs/bpf/skep/<node>`.
    pub pin_dir: PathBuf,
    /// Kernel BTF to use instead of `/sys/kernel/btf/vmlinux`.
    pub btf: Option<PathBuf>,
    /// Entries of each LRU map (per-socket reverse NAT, affinity, conntrack,
    /// external affinity); `None`
    /// sizes them from the machine's memory ([`lru_entries_for_memory`]).
    /// Only applies when the maps are created, not when pinned ones are reused.
    pub lru_entries: Option<u32>,
}

/// Share of memory the LRU maps may take, as Cilium's `bpf-map-dynamic-size-ratio`.
const LRU_MEMORY_RATIO: f64 = 0.0025;
/// Rough kernel cost of one LRU entry (key, value, element header).
const LRU_ENTRY_BYTES: u64 = 96;
const LRU_MIN_ENTRIES: u32 = 16 * 1024;
const LRU_MAX_ENTRIES: u32 = 4 * 1024 * 1024;

/// How many entries each LRU map gets on a machine with `mem_total` bytes:
/// 0.25 % of memory, between 16 Ki and 4 Mi entries.
#[must_use]
pub fn lru_entries_for_memory(mem_total: u64) -> u32 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an estimate, clamped below"
    )]
    let budget = (mem_total as f64 * LRU_MEMORY_RATIO) as u64;
    u32::try_from(budget / LRU_ENTRY_BYTES)
        .unwrap_or(LRU_MAX_ENTRIES)
        .clamp(LRU_MIN_ENTRIES, LRU_MAX_ENTRIES)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
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
    /// Every TC hook; each program is loaded once at start.
    pub const ALL: [Self; 2] = [Self::MetricsIngress, Self::MetricsEgress];

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
        let lru_entries = config
            .lru_entries
            .unwrap_or_else(|| mem_total().map_or(LRU_MIN_ENTRIES, lru_entries_for_memory));
        let mut loader = EbpfLoader::new();
        loader.btf(btf.as_ref()).map_pin_path(&config.pin_dir);
        for name in map::LRU {
            loader.set_max_entries(name, lru_entries);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|err| DatapathError::Load(Box::new(err)))?;
        for hook in TcHook::ALL {
            let prog = classifier(&mut ebpf, hook)?;
            prog.load().map_err(|source| DatapathError::ProgramLoad {
                name: hook.program(),
                hook: hook.hook_name(),
                source: Box::new(source),
            })?;
        }
        for name in program::ROUTE {
            let prog = ebpf
                .program_mut(name)
                .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
                .ok_or(DatapathError::MissingProgram { name })?;
            prog.load().map_err(|source| DatapathError::ProgramLoad {
                name,
                hook: "tc ingress",
                source: Box::new(source),
            })?;
        }
        for name in program::SOCK_LB {
            let prog = sock_addr(&mut ebpf, name)?;
            prog.load().map_err(|source| DatapathError::ProgramLoad {
                name,
                hook: "cgroup sock_addr",
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

    /// Attaches the socket load-balancing programs (`connect4`, `sendmsg4`,
    /// `recvmsg4`, `getpeername4`) to the cgroup v2 directory `cgroup` (the
    /// node's: `<cgroup2 mount>/skep/<node>`) through links pinned in the pin
    /// directory, so they stay attached after this process exits. Links
    /// already pinned there get this object's programs swapped in atomically.
    #[tracing::instrument(skip(self), fields(cgroup = %cgroup.display()))]
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let cgroup_dir = fs::File::open(cgroup).map_err(|source| DatapathError::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        for name in program::SOCK_LB {
            let pin = self.pin_dir.join(link_pin_name(name));
            let attach_type =
                link::attach_type(name).ok_or(DatapathError::MissingProgram { name })?;
            let prog = sock_addr(&mut self.ebpf, name)?;
            let prog_fd = prog.fd().map_err(|source| DatapathError::ProgramLoad {
                name,
                hook: "cgroup sock_addr",
                source: Box::new(source),
            })?;
            let link_err = |source| DatapathError::Link { name, source };
            if let Some(existing) = link::open_pinned(&pin).map_err(link_err)? {
                link::update(existing.as_fd(), prog_fd.as_fd(), &pin).map_err(link_err)?;
                tracing::info!(program = name, "pinned link updated");
            } else {
                link::create_and_pin(prog_fd.as_fd(), cgroup_dir.as_fd(), attach_type, &pin)
                    .map_err(link_err)?;
                tracing::info!(program = name, "attached and pinned");
            }
        }
        Ok(())
    }

    /// Detaches the socket load-balancing programs: removes their link pins.
    pub fn detach_cgroup(pin_dir: &Path) -> Result<(), DatapathError> {
        for name in program::SOCK_LB {
            let pin = pin_dir.join(link_pin_name(name));
            match fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(DatapathError::PinDir { path: pin, source }),
            }
        }
        Ok(())
    }

    /// The descriptor of the loaded TC program `name` (for links made
    /// outside aya).
    pub(crate) fn classifier_fd(
        &mut self,
        name: &'static str,
    ) -> Result<std::os::fd::BorrowedFd<'_>, DatapathError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
            .ok_or(DatapathError::MissingProgram { name })?;
        let fd = prog.fd().map_err(|source| DatapathError::ProgramLoad {
            name,
            hook: "tc ingress",
            source: Box::new(source),
        })?;
        Ok(fd.as_fd())
    }

    /// Pins the loaded TC program `name` at `path` (on bpffs), so another
    /// process can open it (`SchedClassifier::from_pin`), e.g. to read the
    /// kernel's run statistics of it; a pin inside [`Self::pin_dir`] goes
    /// with [`Self::remove_pins`].
    pub fn pin_program(&mut self, name: &'static str, path: &Path) -> Result<(), DatapathError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
            .ok_or(DatapathError::MissingProgram { name })?;
        prog.pin(path).map_err(|source| DatapathError::ProgramPin {
            name,
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The directory the maps are pinned in.
    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Removes every pin in `pin_dir` (maps and cgroup links: the socket
    /// programs detach), then the directory: what a node leaving for good (or
    /// a test) does. Missing pins are not an error.
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

/// The pin name of a program's cgroup link.
fn link_pin_name(program: &str) -> String {
    format!("link_{program}")
}

fn sock_addr<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    ebpf.program_mut(name)
        .and_then(|p| <&mut CgroupSockAddr>::try_from(p).ok())
        .ok_or(DatapathError::MissingProgram { name })
}

fn classifier(ebpf: &mut Ebpf, hook: TcHook) -> Result<&mut SchedClassifier, DatapathError> {
    ebpf.program_mut(hook.program())
        .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
        .ok_or(DatapathError::MissingProgram {
            name: hook.program(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_size_follows_memory_within_bounds() {
        const GIB: u64 = 1 << 30;
        assert_eq!(lru_entries_for_memory(0), LRU_MIN_ENTRIES);
        assert_eq!(lru_entries_for_memory(u64::MAX), LRU_MAX_ENTRIES);
        let small = lru_entries_for_memory(8 * GIB);
        let large = lru_entries_for_memory(24 * GIB);
        assert!(small < large, "{small} < {large}");
        // 24 GiB × 0.25 % / 96 bytes ≈ 671 Ki entries.
        assert_eq!(large, 671_088);
    }
}
