//! The crate-level error: what callers of [`crate::Store`] see, with a
//! [`ErrorKind`] the node agent maps to pod reasons (`ErrImagePull`,
//! `ImagePullBackOff`, `ErrImageNeverPull`, `InvalidImageName`).

use std::io;
use std::path::PathBuf;

use crate::blobs::BlobError;
use crate::builder::BuildError;
use crate::layer::LayerError;
use crate::rootfs::RootfsError;

/// The class of an image failure, for choosing a pod status reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The reference does not parse (`InvalidImageName`).
    InvalidReference,
    /// The registry has no such repository, tag or digest.
    NotFound,
    /// The registry refused the credentials (or their absence).
    Unauthorized,
    /// The registry could not be reached (DNS, connect, TLS, timeout).
    Unreachable,
    /// Pull policy `Never` and the image is not on the node (`ErrImageNeverPull`).
    NeverPull,
    /// The registry answered with an error not covered above (e.g. 5xx).
    Registry,
    /// The image content is unusable (bad manifest, no linux/amd64, bad tarball).
    InvalidImage,
    /// A local failure: disk, permissions, mounts.
    Local,
}

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error("failed to parse image reference {reference:?}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// The cause.
        #[source]
        source: oci_client::ParseError,
    },
    /// The registry does not have the image.
    #[error("failed to pull image {reference:?}: not found: {message}")]
    NotFound {
        /// The normalized reference.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The registry refused access.
    #[error("failed to pull image {reference:?}: unauthorized: {message}")]
    Unauthorized {
        /// The normalized reference.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The registry could not be reached.
    #[error("failed to pull image {reference:?}: registry {registry} unreachable")]
    Unreachable {
        /// The normalized reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// The cause.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// Any other registry failure.
    #[error("failed to pull image {reference:?}: registry error")]
    Registry {
        /// The normalized reference.
        reference: String,
        /// The cause.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// Pull policy `Never` and the image is not present.
    #[error("failed to find image {reference:?} on the node and pull policy is Never")]
    NeverPull {
        /// The normalized reference.
        reference: String,
    },
    /// Image content (manifest, config, tarball layout) is unusable.
    #[error("failed to use image {reference:?}: {what}")]
    InvalidImage {
        /// The reference (or tarball path).
        reference: String,
        /// What is wrong.
        what: String,
    },
    /// A JSON document could not be decoded.
    #[error("failed to decode {what}")]
    Decode {
        /// Which document.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A filesystem operation failed.
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
    /// A blocking task panicked or was cancelled.
    #[error("failed to run a blocking image task")]
    Task {
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Blob store failure.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Layer unpacking failure.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// Rootfs mount failure.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Image building failure.
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl ImageError {
    /// The class of this error, for the agent's pod status reason.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidReference { .. } => ErrorKind::InvalidReference,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Unauthorized { .. } => ErrorKind::Unauthorized,
            Self::Unreachable { .. } => ErrorKind::Unreachable,
            Self::NeverPull { .. } => ErrorKind::NeverPull,
            Self::Registry { .. } => ErrorKind::Registry,
            Self::InvalidImage { .. }
            | Self::Decode { .. }
            | Self::Blob(BlobError::DigestMismatch { .. })
            | Self::Layer(LayerError::DiffIdMismatch { .. } | LayerError::PathTraversal { .. }) => {
                ErrorKind::InvalidImage
            }
            Self::Io { .. }
            | Self::Task { .. }
            | Self::Blob(_)
            | Self::Layer(_)
            | Self::Rootfs(_)
            | Self::Build(_) => ErrorKind::Local,
        }
    }
}

pub(crate) fn io_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { op, path, source }
}
