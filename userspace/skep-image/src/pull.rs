//! Pulling from OCI/Docker registries (through `oci-client`) and Kubernetes'
//! `imagePullPolicy` on top of the local store.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::blobs::Digest;
use crate::error::ImageError;
use crate::spec::{ACCEPTED_MANIFEST_TYPES, ManifestOrIndex};
use crate::store::{Image, Store, parse_reference};

/// Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the reference against the registry on every start.
    Always,
    /// Pull only when the image is not on the node.
    IfNotPresent,
    /// Never pull; fail when the image is not on the node.
    Never,
}

impl PullPolicy {
    /// The policy for a container spec's `imagePullPolicy`, defaulting like
    /// Kubernetes: `Always` for `:latest` or untagged images, else `IfNotPresent`.
    pub fn from_k8s(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("IfNotPresent") => Self::IfNotPresent,
            _ => {
                let latest = image
                    .parse::<Reference>()
                    .is_ok_and(|r| r.digest().is_none() && r.tag().is_none_or(|t| t == "latest"));
                if latest {
                    Self::Always
                } else {
                    Self::IfNotPresent
                }
            }
        }
    }
}

/// A username and password for one registry (from an `imagePullSecret`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Credentials by registry host (`docker.io`, `127.0.0.1:5000`); registries
/// not listed are accessed anonymously.
#[derive(Debug, Clone, Default)]
pub struct RegistryCredentials {
    by_registry: HashMap<String, Credentials>,
}

impl RegistryCredentials {
    /// No credentials: anonymous everywhere.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Adds credentials for `registry`.
    #[must_use]
    pub fn with(mut self, registry: &str, username: &str, password: &str) -> Self {
        self.by_registry.insert(
            registry.to_string(),
            Credentials {
                username: username.to_string(),
                password: password.to_string(),
            },
        );
        self
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        self.by_registry
            .get(registry)
            .map_or(RegistryAuth::Anonymous, |c| {
                RegistryAuth::Basic(c.username.clone(), c.password.clone())
            })
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.")
}

impl Store {
    /// Makes `reference` present according to `policy` and returns it:
    /// Kubernetes' `imagePullPolicy` semantics.
    #[tracing::instrument(skip_all, fields(image = %reference, ?policy))]
    pub async fn ensure_image(
        &self,
        reference: &str,
        policy: PullPolicy,
        credentials: &RegistryCredentials,
    ) -> Result<Image, ImageError> {
        let normalized = crate::store::normalize_reference(reference)?;
        if policy != PullPolicy::Always {
            let store = self.clone();
            let lookup = normalized.clone();
            let local = tokio::task::spawn_blocking(move || store.image(&lookup))
                .await
                .map_err(|source| ImageError::Task { source })??;
            if let Some(image) = local {
                tracing::debug!("image present, not pulling");
                return Ok(image);
            }
            if policy == PullPolicy::Never {
                return Err(ImageError::NeverPull {
                    reference: normalized,
                });
            }
        }
        self.pull(&normalized, credentials).await
    }

    /// Pulls `reference` (linux/amd64 from an index), fetching only blobs
    /// that are not yet stored, unpacks its layers and names it.
    #[tracing::instrument(skip_all, fields(image = %reference))]
    pub async fn pull(
        &self,
        reference: &str,
        credentials: &RegistryCredentials,
    ) -> Result<Image, ImageError> {
        let image_ref = parse_reference(reference)?;
        let normalized = image_ref.whole();
        let registry = image_ref.registry().to_string();
        let protocol = if is_loopback(&registry) || self.insecure_registries.contains(&registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_mins(1)),
            ..ClientConfig::default()
        });
        let auth = credentials.auth_for(&registry);
        let classify = |e| classify(&normalized, &registry, e);

        let (bytes, digest) = client
            .pull_manifest_raw(&image_ref, &auth, ACCEPTED_MANIFEST_TYPES)
            .await
            .map_err(classify)?;
        let mut digest: Digest = digest.parse()?;
        self.blobs.write_bytes(&bytes, Some(&digest))?;
        let manifest = match ManifestOrIndex::parse(&bytes).map_err(|source| {
            ImageError::Decode {
                what: format!("manifest of {normalized}"),
                source,
            }
        })? {
            ManifestOrIndex::Manifest(m) => m,
            ManifestOrIndex::Index(index) => {
                let entry = index
                    .select_linux_amd64()
                    .ok_or_else(|| ImageError::InvalidImage {
                        reference: normalized.clone(),
                        what: "no linux/amd64 manifest in the index".into(),
                    })?;
                let by_digest = image_ref.clone_with_digest(entry.digest.clone());
                let (bytes, d) = client
                    .pull_manifest_raw(&by_digest, &auth, ACCEPTED_MANIFEST_TYPES)
                    .await
                    .map_err(classify)?;
                digest = d.parse()?;
                self.blobs.write_bytes(&bytes, Some(&digest))?;
                match ManifestOrIndex::parse(&bytes).map_err(|source| ImageError::Decode {
                    what: format!("manifest {digest} of {normalized}"),
                    source,
                })? {
                    ManifestOrIndex::Manifest(m) => m,
                    ManifestOrIndex::Index(_) => {
                        return Err(ImageError::InvalidImage {
                            reference: normalized,
                            what: "nested image index".into(),
                        });
                    }
                }
            }
        };

        let mut fetched = 0usize;
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let blob: Digest = desc.digest.parse()?;
            if self.blobs.contains(&blob) {
                continue;
            }
            let tmp = self.blobs.temp_file()?;
            let file = tmp
                .reopen()
                .map_err(crate::error::io_err("reopen", tmp.path()))?;
            let mut out = tokio::fs::File::from_std(file);
            client
                .pull_blob(&image_ref, desc.digest.as_str(), &mut out)
                .await
                .map_err(classify)?;
            drop(out);
            let blobs = self.blobs.clone();
            tokio::task::spawn_blocking(move || blobs.commit(tmp, &blob))
                .await
                .map_err(|source| ImageError::Task { source })??;
            fetched += 1;
        }
        tracing::info!(image = %normalized, digest = %digest, fetched, "image pulled");

        let store = self.clone();
        tokio::task::spawn_blocking(move || store.commit_image(&normalized, &digest))
            .await
            .map_err(|source| ImageError::Task { source })?
    }
}

/// Sorts a registry client error into not found / unauthorized / unreachable / other.
fn classify(reference: &str, registry: &str, err: OciDistributionError) -> ImageError {
    let reference = reference.to_string();
    match err {
        OciDistributionError::ImageManifestNotFoundError(message) => {
            ImageError::NotFound { reference, message }
        }
        OciDistributionError::AuthenticationFailure(message) => {
            ImageError::Unauthorized { reference, message }
        }
        OciDistributionError::UnauthorizedError { url } => ImageError::Unauthorized {
            reference,
            message: format!("registry refused access to {url}"),
        },
        OciDistributionError::RegistryError { envelope, url } => {
            let message = format!("{envelope} ({url})");
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ImageError::Unauthorized { reference, message }
            } else if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                ImageError::NotFound { reference, message }
            } else {
                ImageError::Registry {
                    reference,
                    source: OciDistributionError::RegistryError { envelope, url },
                }
            }
        }
        OciDistributionError::ServerError {
            code: 404,
            url,
            message,
        } => ImageError::NotFound {
            reference,
            message: format!("{message} ({url})"),
        },
        OciDistributionError::ServerError {
            code: 401 | 403,
            url,
            message,
        } => ImageError::Unauthorized {
            reference,
            message: format!("{message} ({url})"),
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            ImageError::Unreachable {
                reference,
                registry: registry.to_string(),
                source: OciDistributionError::RequestError(e),
            }
        }
        source => ImageError::Registry { reference, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policy_follows_kubernetes() {
        assert_eq!(PullPolicy::from_k8s(None, "busybox"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::from_k8s(None, "busybox:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::from_k8s(None, "busybox:1.36"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_k8s(Some("Never"), "busybox"),
            PullPolicy::Never
        );
    }

    #[test]
    fn loopback_registries_are_insecure() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("docker.io"));
        assert!(!is_loopback("registry.example.com:5000"));
    }
}
