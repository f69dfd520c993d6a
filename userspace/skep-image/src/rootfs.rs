//! A container's root filesystem: the image's layers as overlayfs lowerdirs
//! with a private upper and work directory inside the container directory.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::store::Image;

/// Longest overlay option string `mount(2)` accepts (one page, with the NUL).
const MAX_MOUNT_DATA: usize = 4095;

/// Errors of rootfs mounting.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Preparing the container directory failed.
    #[error("failed to {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The overlay option string is longer than `mount(2)` takes.
    #[error("failed to mount {}: {layers} layers make {len} bytes of overlay options (max {MAX_MOUNT_DATA})", target.display())]
    TooManyLayers {
        /// The mount point.
        target: PathBuf,
        /// Number of layers.
        layers: usize,
        /// Length of the option string.
        len: usize,
    },
    /// The overlay mount failed.
    #[error("failed to mount overlay at {}", target.display())]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Unmounting failed.
    #[error("failed to unmount {}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// A mounted container rootfs (`<container_dir>/rootfs`). Unmounted by
/// [`RootfsMount::release`] or, failing that, on drop (lazily); call
/// [`RootfsMount::keep`] to leave it mounted past this value's life.
#[derive(Debug)]
pub struct RootfsMount {
    target: PathBuf,
    mounted: bool,
}

impl RootfsMount {
    /// The mounted rootfs directory, for the OCI runtime spec's `root.path`.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts the rootfs.
    pub fn release(mut self) -> Result<(), RootfsError> {
        self.mounted = false;
        umount2(&self.target, MntFlags::empty()).map_err(|source| RootfsError::Unmount {
            target: self.target.clone(),
            source,
        })
    }

    /// Leaves the rootfs mounted (the container outlives this value, e.g.
    /// across an agent restart) and returns its path; unmount later with
    /// [`unmount_rootfs`].
    pub fn keep(mut self) -> PathBuf {
        self.mounted = false;
        self.target.clone()
    }
}

impl Drop for RootfsMount {
    fn drop(&mut self) {
        if self.mounted
            && let Err(err) = umount2(&self.target, MntFlags::MNT_DETACH)
        {
            tracing::error!(?err, target = %self.target.display(), "failed to unmount rootfs on drop");
        }
    }
}

/// Whether `dir` is a mount point (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let Some(parent) = dir.parent() else {
        return Ok(true);
    };
    match fs::metadata(dir) {
        Ok(m) => Ok(m.dev() != fs::metadata(parent)?.dev()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Mounts `image` as an overlay at `<container_dir>/rootfs`, with
/// `<container_dir>/upper` and `<container_dir>/work` holding the
/// container's writes. If the rootfs is already mounted (agent restart),
/// that mount is returned as is.
#[tracing::instrument(skip_all, fields(image = %image.reference, dir = %container_dir.display()))]
pub fn prepare_rootfs(image: &Image, container_dir: &Path) -> Result<RootfsMount, RootfsError> {
    let began = std::time::Instant::now();
    let io_err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Io { op, path, source }
    };
    let target = container_dir.join("rootfs");
    let upper = container_dir.join("upper");
    let work = container_dir.join("work");
    for d in [&target, &upper, &work] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    if is_mount_point(&target).map_err(io_err("stat", &target))? {
        tracing::info!(target = %target.display(), "rootfs already mounted");
        return Ok(RootfsMount {
            target,
            mounted: true,
        });
    }
    // overlayfs wants lowerdirs top first; the image lists them bottom first.
    let lower: Vec<String> = image
        .layer_dirs
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(RootfsError::TooManyLayers {
            target,
            layers: lower.len(),
            len: data.len(),
        });
    }
    mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| RootfsError::Mount {
        target: target.clone(),
        source,
    })?;
    tracing::info!(target = %target.display(), layers = lower.len(), "rootfs mounted");
    // The agent's start-up timing (see skep_runtime::timing).
    tracing::debug!(
        target: "skep_startup",
        phase = "rootfs",
        elapsed_us = began.elapsed().as_micros(),
        end_us = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
    );
    Ok(RootfsMount {
        target,
        mounted: true,
    })
}

/// Unmounts `<container_dir>/rootfs` if it is mounted (for containers whose
/// [`RootfsMount`] was kept).
pub fn unmount_rootfs(container_dir: &Path) -> Result<(), RootfsError> {
    let target = container_dir.join("rootfs");
    if is_mount_point(&target).map_err(|source| RootfsError::Io {
        op: "stat",
        path: target.clone(),
        source,
    })? {
        umount2(&target, MntFlags::empty())
            .map_err(|source| RootfsError::Unmount { target, source })?;
    }
    Ok(())
}
