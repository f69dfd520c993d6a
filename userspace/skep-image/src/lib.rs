//! OCI images for the skep node agent.
//!
//! A [`Store`] rooted at a directory (e.g. `/var/lib/skep/images`) holds
//! content-addressed blobs (`blobs/sha256/<hex>`), layers unpacked once and
//! shared (`layers/sha256/<diffid>/`, OCI whiteouts turned into overlayfs
//! whiteouts), and a refs index naming images by normalized reference.
//! Images arrive by [`Store::ensure_image`] (registry pull under an
//! `imagePullPolicy`) or [`Store::import_tarball`] (`docker save` or OCI
//! layout), and become container root filesystems through
//! [`prepare_rootfs`] (a real overlayfs mount).

pub mod blobs;
pub mod builder;
mod error;
pub mod layer;
mod pull;
pub mod rootfs;
pub mod spec;
mod store;

pub use blobs::Digest;
pub use builder::{BuiltImage, ImageBuilder, LayerEntry, busybox_image};
pub use error::{ErrorKind, ImageError};
pub use pull::{Credentials, PullPolicy, RegistryCredentials};
pub use rootfs::{RootfsMount, prepare_rootfs, unmount_rootfs};
pub use spec::ImageConfig;
pub use store::{Image, ImageSummary, Store, normalize_reference};
