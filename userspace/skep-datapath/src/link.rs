//! Pinned cgroup links: the four socket-LB programs stay attached to the node's
//! cgroup after the agent exits (even `kill -9`), and a restarted agent swaps
//! its freshly loaded programs into the same links atomically
//! (`BPF_LINK_UPDATE`), so there is never a moment without them and never two
//! of them.
//!
//! The routing programs are attached the same way, by pinned TCX links (see
//! [`crate::routing`]).
//!
//! aya 0.13 cannot pin a cgroup `sock_addr` link (it has no
//! `FdLink: TryFrom<CgroupSockAddrLink>`), so the four `bpf(2)` commands needed
//! are issued here directly.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use aya_obj::generated::{bpf_attach_type, bpf_cmd};

/// Why a link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The pin path has a NUL byte.
    #[error("failed to use pin path {path}: it contains a NUL byte")]
    InvalidPath {
        /// The path.
        path: PathBuf,
    },
    /// A `bpf(2)` command failed.
    #[error("failed to {operation} ({path})")]
    Syscall {
        /// What was being done.
        operation: &'static str,
        /// The pin path or cgroup involved.
        path: PathBuf,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

impl LinkError {
    /// Whether the link exists but its target is gone (`ENOLINK`: a TCX link
    /// whose interface was deleted): the pin should be replaced, not updated.
    #[must_use]
    pub fn is_defunct_link(&self) -> bool {
        matches!(self, Self::Syscall { source, .. } if source.raw_os_error() == Some(libc::ENOLINK))
    }
}

/// The cgroup attach type of a socket-LB program, by program name.
#[must_use]
pub fn attach_type(program: &str) -> Option<u32> {
    use skep_ebpf_common::program;
    let kind = match program {
        program::SOCK_CONNECT4 => bpf_attach_type::BPF_CGROUP_INET4_CONNECT,
        program::SOCK_SENDMSG4 => bpf_attach_type::BPF_CGROUP_UDP4_SENDMSG,
        program::SOCK_RECVMSG4 => bpf_attach_type::BPF_CGROUP_UDP4_RECVMSG,
        program::SOCK_GETPEERNAME4 => bpf_attach_type::BPF_CGROUP_INET4_GETPEERNAME,
        _ => return None,
    };
    Some(kind as u32)
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (cgroup target), zero tail.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    rest: [u64; 4],
}

/// `union bpf_attr` for `BPF_LINK_UPDATE`.
#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN` / `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union
    // bpf_attr` for `cmd`, and its size is passed along so the kernel reads no
    // further; every pointer inside it outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned_fd(ret: i64) -> OwnedFd {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the kernel returns file descriptors as int"
    )]
    let raw = ret as i32;
    // SAFETY: the kernel just returned this new descriptor to us; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd().cast_unsigned()
}

fn c_path(path: &Path) -> Result<CString, LinkError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| LinkError::InvalidPath {
        path: path.to_owned(),
    })
}

/// Attaches `prog` to the cgroup `cgroup` (an open directory) by a new link,
/// and pins the link at `pin`. The program stays attached until the pin is
/// removed and the last descriptor closed.
pub fn create_and_pin(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    pin: &Path,
) -> Result<(), LinkError> {
    create_link_and_pin(prog, fd_u32(cgroup), attach_type, "create cgroup link", pin)
}

/// Attaches the TC program `prog` to interface `ifindex` (in the calling
/// thread's network namespace) by a new TCX link (`attach_type` is
/// `BPF_TCX_INGRESS` or `BPF_TCX_EGRESS`), and pins the link at `pin`. The
/// kernel detaches it by itself when the interface goes away; the pin then
/// names a defunct link until it is removed.
pub fn create_tcx_and_pin(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    pin: &Path,
) -> Result<(), LinkError> {
    create_link_and_pin(prog, ifindex, attach_type, "create tcx link", pin)
}

/// `BPF_LINK_CREATE` on `target` (a cgroup fd or an ifindex, which share the
/// field), then `BPF_OBJ_PIN`.
fn create_link_and_pin(
    prog: BorrowedFd<'_>,
    target: u32,
    attach_type: u32,
    operation: &'static str,
    pin: &Path,
) -> Result<(), LinkError> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog),
        target_fd: target,
        attach_type,
        ..LinkCreateAttr::default()
    };
    let link = bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
        .map(owned_fd)
        .map_err(|source| LinkError::Syscall {
            operation,
            path: pin.to_owned(),
            source,
        })?;
    let path = c_path(pin)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd_u32(link.as_fd()),
        ..ObjAttr::default()
    };
    bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map_err(|source| LinkError::Syscall {
        operation: "pin link",
        path: pin.to_owned(),
        source,
    })?;
    Ok(())
}

/// Opens the link pinned at `pin`, or `None` if nothing is pinned there.
pub fn open_pinned(pin: &Path) -> Result<Option<OwnedFd>, LinkError> {
    let path = c_path(pin)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..ObjAttr::default()
    };
    match bpf(bpf_cmd::BPF_OBJ_GET, &mut attr) {
        Ok(ret) => Ok(Some(owned_fd(ret))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LinkError::Syscall {
            operation: "open pinned link",
            path: pin.to_owned(),
            source,
        }),
    }
}

/// Replaces the program behind `link` by `prog`, atomically.
pub fn update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>, pin: &Path) -> Result<(), LinkError> {
    let mut attr = LinkUpdateAttr {
        link_fd: fd_u32(link),
        new_prog_fd: fd_u32(prog),
        ..LinkUpdateAttr::default()
    };
    bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr).map_err(|source| LinkError::Syscall {
        operation: "update pinned link",
        path: pin.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use skep_ebpf_common::program;

    use super::*;

    #[test]
    fn every_socket_program_has_an_attach_type() {
        for name in program::SOCK_LB {
            assert!(attach_type(name).is_some(), "{name}");
        }
        assert_eq!(attach_type(program::METRICS_INGRESS), None);
        assert_eq!(
            attach_type(program::SOCK_CONNECT4),
            Some(bpf_attach_type::BPF_CGROUP_INET4_CONNECT as u32)
        );
    }

    #[test]
    fn a_missing_pin_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Not a bpffs: the kernel answers ENOENT for a missing path either way.
        let got = open_pinned(&dir.path().join("nothing")).expect("no error for a missing pin");
        assert!(got.is_none());
    }
}
