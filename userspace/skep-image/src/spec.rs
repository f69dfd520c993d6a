//! The subset of the OCI image spec (and Docker's schema 2, which has the
//! same shape) that skep reads and writes: manifests, indexes, image configs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// OCI image manifest media type.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer media type.
pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker schema 2 manifest media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Media types accepted when fetching a manifest by reference.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
];

/// A content descriptor: what a manifest or index points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>` digest of the referenced content.
    pub digest: String,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Platform, present on index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (e.g. `org.opencontainers.image.ref.name` in an index).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform an index entry is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest: one config blob and its layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type of the manifest itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image index (or Docker manifest list): manifests for several platforms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type of the index itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The referenced manifests.
    pub manifests: Vec<Descriptor>,
}

/// Either a manifest or an index, told apart by their fields.
#[derive(Debug, Clone)]
pub enum ManifestOrIndex {
    /// A single-platform image manifest.
    Manifest(Manifest),
    /// A multi-platform index.
    Index(Index),
}

impl ManifestOrIndex {
    /// Parses a manifest or an index from its JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        if probe.manifests.is_some() {
            Ok(Self::Index(serde_json::from_slice(bytes)?))
        } else {
            Ok(Self::Manifest(serde_json::from_slice(bytes)?))
        }
    }
}

impl Index {
    /// Picks the linux/amd64 manifest, the platform skep nodes run.
    pub fn select_linux_amd64(&self) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
    }
}

/// The image config blob: runtime defaults plus the layer diff ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigFile {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Runtime defaults for containers.
    #[serde(default)]
    pub config: ImageConfig,
    /// Uncompressed layer digests, bottom first.
    pub rootfs: RootFs,
}

/// The `rootfs` section of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub typ: String,
    /// `sha256:<hex>` of each uncompressed layer tar, bottom first.
    pub diff_ids: Vec<String>,
}

/// What the runtime needs from an image to start a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// Default user (`uid`, `uid:gid`, or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ports the image declares, e.g. `80/tcp`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    /// Environment, `KEY=value`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    /// Entrypoint argv.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub entrypoint: Vec<String>,
    /// Default arguments (or command when there is no entrypoint).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub cmd: Vec<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// Docker writes `null` for empty lists and maps; treat it as empty.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_with_nulls_parses() -> anyhow::Result<()> {
        let raw = br#"{"architecture":"amd64","os":"linux",
            "config":{"Env":null,"Cmd":["sh"],"Entrypoint":null,"WorkingDir":"","ExposedPorts":{"80/tcp":{}}},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let cfg: ImageConfigFile = serde_json::from_slice(raw)?;
        assert_eq!(cfg.config.cmd, vec!["sh"]);
        assert!(cfg.config.env.is_empty());
        assert!(cfg.config.exposed_ports.contains_key("80/tcp"));
        assert_eq!(cfg.rootfs.diff_ids, vec!["sha256:aa"]);
        Ok(())
    }

    #[test]
    fn index_selects_linux_amd64() -> anyhow::Result<()> {
        let raw = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"m","digest":"sha256:arm","size":1,"platform":{"architecture":"arm64","os":"linux"}},
            {"mediaType":"m","digest":"sha256:amd","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let ManifestOrIndex::Index(index) = ManifestOrIndex::parse(raw)? else {
            anyhow::bail!("expected an index");
        };
        assert_eq!(
            index.select_linux_amd64().map(|d| d.digest.as_str()),
            Some("sha256:amd")
        );
        Ok(())
    }
}
