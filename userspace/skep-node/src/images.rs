//! Where a pod worker gets images and container root filesystems: a trait
//! over [`skep_image::Store`] (pull per policy, look up) and the rootfs
//! mounts, so the worker is unit-tested with [`FakeImages`].

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use skep_image::{Image, ImageError, PullPolicy, RegistryCredentials, Store};

/// Images and root filesystems for containers.
pub trait ImageSource: Send + Sync {
    /// Whether `reference` is on the node.
    fn present(&self, reference: &str) -> bool;

    /// Makes `reference` present according to `policy` (Kubernetes'
    /// `imagePullPolicy`) and returns it.
    fn ensure<'a>(
        &'a self,
        reference: &'a str,
        policy: PullPolicy,
        credentials: &'a RegistryCredentials,
    ) -> BoxFuture<'a, Result<Image, ImageError>>;

    /// Mounts `image` as a root filesystem below `container_dir`; returns
    /// the rootfs path (kept mounted until [`ImageSource::unmount`]).
    fn prepare_rootfs(&self, image: &Image, container_dir: &Path) -> Result<PathBuf, String>;

    /// Unmounts the rootfs below `container_dir`; missing is fine.
    fn unmount(&self, container_dir: &Path);

    /// Unmounts every container rootfs below `<pod_dir>/containers`.
    fn unmount_all(&self, pod_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(pod_dir.join("containers")) else {
            return;
        };
        for entry in entries.flatten() {
            self.unmount(&entry.path());
        }
    }
}

impl ImageSource for Store {
    fn present(&self, reference: &str) -> bool {
        self.image(reference).ok().flatten().is_some()
    }

    fn ensure<'a>(
        &'a self,
        reference: &'a str,
        policy: PullPolicy,
        credentials: &'a RegistryCredentials,
    ) -> BoxFuture<'a, Result<Image, ImageError>> {
        Box::pin(self.ensure_image(reference, policy, credentials))
    }

    fn prepare_rootfs(&self, image: &Image, container_dir: &Path) -> Result<PathBuf, String> {
        skep_image::prepare_rootfs(image, container_dir)
            .map(skep_image::RootfsMount::keep)
            .map_err(|e| e.to_string())
    }

    fn unmount(&self, container_dir: &Path) {
        if let Err(err) = skep_image::unmount_rootfs(container_dir) {
            tracing::warn!(%err, dir = %container_dir.display(), "failed to unmount rootfs");
        }
    }
}

/// Images in memory, for tests: every reference is present (with an empty
/// config unless [`FakeImages::with_config`] set one) except those made
/// to fail; a rootfs is a plain directory.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeImages {
    configs: std::sync::Mutex<std::collections::HashMap<String, skep_image::ImageConfig>>,
    missing: std::sync::Mutex<std::collections::HashSet<String>>,
    pulls: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
impl FakeImages {
    /// `reference` gets `config` (entrypoint, env, user …).
    pub fn with_config(&self, reference: &str, config: skep_image::ImageConfig) {
        crate::lock(&self.configs).insert(reference.to_owned(), config);
    }

    /// Pulls of `reference` fail as a registry without it does.
    pub fn make_missing(&self, reference: &str) {
        crate::lock(&self.missing).insert(reference.to_owned());
    }

    /// The references pulled or looked up through `ensure`, in order.
    pub fn pulls(&self) -> Vec<String> {
        crate::lock(&self.pulls).clone()
    }
}

#[cfg(test)]
impl ImageSource for FakeImages {
    fn present(&self, reference: &str) -> bool {
        !crate::lock(&self.missing).contains(reference)
    }

    fn ensure<'a>(
        &'a self,
        reference: &'a str,
        _policy: PullPolicy,
        _credentials: &'a RegistryCredentials,
    ) -> BoxFuture<'a, Result<Image, ImageError>> {
        crate::lock(&self.pulls).push(reference.to_owned());
        let result = if crate::lock(&self.missing).contains(reference) {
            Err(ImageError::NotFound {
                reference: reference.to_owned(),
                message: "manifest unknown".to_owned(),
            })
        } else {
            let config = crate::lock(&self.configs)
                .get(reference)
                .cloned()
                .unwrap_or_default();
            Ok(Image {
                reference: reference.to_owned(),
                manifest_digest: skep_image::Digest::of(reference.as_bytes()),
                config_digest: skep_image::Digest::of(b"config"),
                config,
                layer_dirs: Vec::new(),
            })
        };
        Box::pin(std::future::ready(result))
    }

    fn prepare_rootfs(&self, _image: &Image, container_dir: &Path) -> Result<PathBuf, String> {
        let rootfs = container_dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
        Ok(rootfs)
    }

    fn unmount(&self, _container_dir: &Path) {}
}
