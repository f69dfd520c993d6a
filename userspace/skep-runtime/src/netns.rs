//! Named network namespaces: created by a short-lived thread that unshares
//! its network namespace and bind-mounts it onto a file (like `ip netns add`),
//! and a way to run netlink work inside a given namespace.

use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Errors from namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A file operation on the namespace file failed.
    #[error("failed to {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A namespace syscall (unshare, setns, mount) failed.
    #[error("failed to {op} for {path}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// Namespace file involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: nix::Error,
    },
    /// The helper thread panicked or went away.
    #[error("failed to run namespace helper thread for {path}")]
    Thread {
        /// Namespace file involved.
        path: PathBuf,
    },
}

/// Creates a new network namespace pinned by a bind mount at `path`.
///
/// `proc_root` is the procfs mount (normally `/proc`). Fails if `path`
/// already holds a namespace.
pub fn create(path: &Path, proc_root: &Path) -> Result<(), NetnsError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| NetnsError::Io {
            op: "create directory",
            path: parent.to_owned(),
            source,
        })?;
    }
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| NetnsError::Io {
            op: "create namespace file",
            path: path.to_owned(),
            source,
        })?;
    let target = path.to_owned();
    let self_ns = proc_root.join("thread-self/ns/net");
    let result = std::thread::spawn(move || -> Result<(), NetnsError> {
        // This thread ends right after, so its namespace change does not leak.
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Sys {
            op: "unshare network namespace",
            path: target.clone(),
            source,
        })?;
        nix::mount::mount(
            Some(&self_ns),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetnsError::Sys {
            op: "bind-mount network namespace",
            path: target.clone(),
            source,
        })
    })
    .join()
    .map_err(|_| NetnsError::Thread {
        path: path.to_owned(),
    })?;
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Unmounts and removes the namespace file at `path`; missing is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                op: "unmount network namespace",
                path: path.to_owned(),
                source,
            });
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            op: "remove namespace file",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Runs `f` on a fresh thread that first joins the network namespace at
/// `netns` (or stays in the caller's namespace when `None`), driving the
/// returned future on a single-threaded tokio runtime. Netlink sockets opened
/// inside belong to that namespace.
pub async fn run_in<F, Fut, T, E>(netns: Option<PathBuf>, f: F) -> Result<Result<T, E>, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>>,
    T: Send + 'static,
    E: Send + 'static,
{
    let label = netns.clone().unwrap_or_else(|| PathBuf::from("<current>"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_label = label.clone();
    std::thread::spawn(move || {
        let outcome = (|| {
            if let Some(path) = &netns {
                let file = File::open(path).map_err(|source| NetnsError::Io {
                    op: "open namespace file",
                    path: path.clone(),
                    source,
                })?;
                nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetnsError::Sys {
                        op: "join network namespace",
                        path: path.clone(),
                        source,
                    }
                })?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| NetnsError::Io {
                    op: "start runtime in namespace",
                    path: thread_label.clone(),
                    source,
                })?;
            Ok(rt.block_on(f()))
        })();
        let _ = tx.send(outcome);
    });
    rx.await.map_err(|_| NetnsError::Thread { path: label })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_enter_remove() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(format!("ns-{}", std::process::id()));
        create(&path, Path::new("/proc"))?;
        // A second create on the same path fails instead of clobbering.
        assert!(create(&path, Path::new("/proc")).is_err());
        let here = fs::read_link("/proc/thread-self/ns/net")?;
        let inside = run_in(Some(path.clone()), || async {
            fs::read_link("/proc/thread-self/ns/net")
        })
        .await??;
        assert_ne!(here, inside);
        remove(&path)?;
        assert!(!path.exists());
        remove(&path)?;
        Ok(())
    }
}
