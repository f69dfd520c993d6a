//! What a host must have before skep can run its datapath: privileges, kernel
//! BTF, a bpffs and a cgroup v2 mount. Each failure is one line naming what is
//! missing and how to get it.
//!
//! Host paths are parameters ([`Host`]) so the checks are unit-tested against
//! fake `/proc` trees without root.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The Linux capabilities the datapath needs, as `(bit, name)`.
const REQUIRED_CAPABILITIES: &[(u32, &str)] = &[
    (12, "CAP_NET_ADMIN"),
    (21, "CAP_SYS_ADMIN"),
    (39, "CAP_BPF"),
];

/// The host roots the checks read. [`Host::system`] is the real machine.
#[derive(Clone, Debug)]
pub struct Host {
    /// `/proc` (for `self/status` and `self/mounts`).
    pub proc_root: PathBuf,
    /// Kernel BTF, normally `/sys/kernel/btf/vmlinux`.
    pub btf_path: PathBuf,
    /// Where bpffs should be mounted, normally `/sys/fs/bpf`.
    pub bpffs: PathBuf,
}

impl Host {
    /// The real machine's paths.
    #[must_use]
    pub fn system() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
            bpffs: PathBuf::from("/sys/fs/bpf"),
        }
    }
}

/// A requirement the host does not meet.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Not root (or not enough capabilities).
    #[error("skep must run as root: it lacks {missing}")]
    NotPrivileged {
        /// The missing capabilities, comma-separated.
        missing: String,
    },
    /// No kernel BTF.
    #[error(
        "no kernel BTF at {path}: skep needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (or pass --btf FILE)"
    )]
    MissingBtf {
        /// Where BTF was looked for.
        path: PathBuf,
    },
    /// No bpffs where maps are pinned.
    #[error("no bpffs mounted at {path}: mount it with `mount -t bpf bpf {path}`")]
    NoBpffs {
        /// Where bpffs was expected.
        path: PathBuf,
    },
    /// No cgroup v2 hierarchy for the socket hooks.
    #[error(
        "no cgroup v2 mount: skep's service load-balancing needs one (mount -t cgroup2 none /sys/fs/cgroup/unified)"
    )]
    NoCgroup2,
    /// A proc file could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A mount point from `/proc/self/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type (`bpf`, `cgroup2`, …).
    pub fstype: String,
    /// Where it is mounted.
    pub target: PathBuf,
}

/// Runs every check, in the order a newcomer would fix them.
pub fn check(host: &Host) -> Result<(), PreflightError> {
    check_privileges(host)?;
    check_btf(host)?;
    let mounts = mounts(host)?;
    check_bpffs(host, &mounts)?;
    cgroup2_mount(&mounts)?;
    Ok(())
}

/// Checks the effective capabilities of this process.
pub fn check_privileges(host: &Host) -> Result<(), PreflightError> {
    let path = host.proc_root.join("self/status");
    let status = read(&path)?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = REQUIRED_CAPABILITIES
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::NotPrivileged {
            missing: missing.join(", "),
        })
    }
}

/// Checks that kernel BTF exists (aya relocates the programs against it).
pub fn check_btf(host: &Host) -> Result<(), PreflightError> {
    if host.btf_path.is_file() {
        Ok(())
    } else {
        Err(PreflightError::MissingBtf {
            path: host.btf_path.clone(),
        })
    }
}

/// Checks that bpffs is mounted at `host.bpffs`.
pub fn check_bpffs(host: &Host, mounts: &[Mount]) -> Result<(), PreflightError> {
    if mounts
        .iter()
        .any(|m| m.fstype == "bpf" && m.target == host.bpffs)
    {
        Ok(())
    } else {
        Err(PreflightError::NoBpffs {
            path: host.bpffs.clone(),
        })
    }
}

/// Finds the cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid v1/v2
/// machines, `/sys/fs/cgroup` on most current distributions.
pub fn cgroup2_mount(mounts: &[Mount]) -> Result<PathBuf, PreflightError> {
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| m.target.clone())
        // The shortest path is the hierarchy's root, not a bind mount inside it.
        .min_by_key(|p| p.as_os_str().len())
        .ok_or(PreflightError::NoCgroup2)
}

/// Reads this process's mount table.
pub fn mounts(host: &Host) -> Result<Vec<Mount>, PreflightError> {
    let path = host.proc_root.join("self/mounts");
    Ok(parse_mounts(&read(&path)?))
}

fn parse_mounts(table: &str) -> Vec<Mount> {
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _source = fields.next()?;
            let target = unescape_mount_path(fields.next()?);
            let fstype = fields.next()?.to_owned();
            Some(Mount {
                fstype,
                target: PathBuf::from(target),
            })
        })
        .collect()
}

/// `/proc/self/mounts` escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos + 1..pos + 4);
        if let Some(byte) = escape.and_then(|e| u8::from_str_radix(e, 8).ok()) {
            out.push(char::from(byte));
            rest = &rest[pos + 4..];
        } else {
            out.push('\\');
            rest = &rest[pos + 1..];
        }
    }
    out.push_str(rest);
    out
}

fn read(path: &Path) -> Result<String, PreflightError> {
    fs::read_to_string(path).map_err(|source| PreflightError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_CAPS: &str = "000001ffffffffff";
    const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid 0 0
bpf /sys/fs/bpf bpf rw,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0
cgroup2 /sys/fs/cgroup/unified/some/bind cgroup2 rw 0 0
";

    /// A fake host under a temp dir: `/proc/self/{status,mounts}` and BTF.
    fn fake_host(caps: &str, mounts: &str, with_btf: bool) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc_self = dir.path().join("proc/self");
        fs::create_dir_all(&proc_self).expect("mkdir");
        fs::write(
            proc_self.join("status"),
            format!("Name:\tskep\nCapInh:\t0000000000000000\nCapEff:\t{caps}\n"),
        )
        .expect("write status");
        fs::write(proc_self.join("mounts"), mounts).expect("write mounts");
        let btf_path = dir.path().join("vmlinux");
        if with_btf {
            fs::write(&btf_path, b"btf").expect("write btf");
        }
        let host = Host {
            proc_root: dir.path().join("proc"),
            btf_path,
            bpffs: PathBuf::from("/sys/fs/bpf"),
        };
        (dir, host)
    }

    #[test]
    fn a_complete_host_passes() {
        let (_dir, host) = fake_host(ROOT_CAPS, MOUNTS, true);
        check(&host).expect("complete host passes");
    }

    #[test]
    fn unprivileged_names_the_missing_capabilities() {
        let (_dir, host) = fake_host("0000000000000000", MOUNTS, true);
        let err = check(&host).expect_err("unprivileged fails");
        assert!(matches!(err, PreflightError::NotPrivileged { .. }));
        let line = err.to_string();
        assert!(line.contains("root") && line.contains("CAP_BPF"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn cap_net_admin_alone_is_not_enough() {
        // CAP_NET_ADMIN only (bit 12).
        let (_dir, host) = fake_host("0000000000001000", MOUNTS, true);
        let err = check_privileges(&host).expect_err("missing CAP_BPF");
        let line = err.to_string();
        assert!(
            line.contains("CAP_BPF") && !line.contains("CAP_NET_ADMIN"),
            "{line}"
        );
    }

    #[test]
    fn missing_btf_is_reported() {
        let (_dir, host) = fake_host(ROOT_CAPS, MOUNTS, false);
        let err = check(&host).expect_err("no btf");
        assert!(matches!(err, PreflightError::MissingBtf { .. }), "{err}");
    }

    #[test]
    fn missing_bpffs_is_reported_with_the_mount_command() {
        let mounts = MOUNTS.replace("bpf /sys/fs/bpf bpf", "none /sys/fs/bpf tmpfs");
        let (_dir, host) = fake_host(ROOT_CAPS, &mounts, true);
        let err = check(&host).expect_err("no bpffs");
        assert!(
            err.to_string().contains("mount -t bpf bpf /sys/fs/bpf"),
            "{err}"
        );
    }

    #[test]
    fn cgroup2_root_is_preferred_over_bind_mounts() {
        let mounts = parse_mounts(MOUNTS);
        assert_eq!(
            cgroup2_mount(&mounts).expect("found"),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        let without: Vec<Mount> = mounts
            .into_iter()
            .filter(|m| m.fstype != "cgroup2")
            .collect();
        assert!(matches!(
            cgroup2_mount(&without),
            Err(PreflightError::NoCgroup2)
        ));
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b\011c"), "/a b\tc");
        assert_eq!(unescape_mount_path(r"/trailing\\"), r"/trailing\\");
    }

    #[test]
    fn the_real_host_can_be_read() {
        // Whatever this machine is, reading it must not fail with an I/O error.
        let host = Host::system();
        let mounts = mounts(&host).expect("/proc/self/mounts is readable");
        assert!(!mounts.is_empty());
        match check_privileges(&host) {
            Ok(()) | Err(PreflightError::NotPrivileged { .. }) => {}
            Err(other) => panic!("unexpected error reading /proc/self/status: {other}"),
        }
    }
}
