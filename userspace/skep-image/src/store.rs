//! The image store: blobs, unpacked layers, and the refs index that names
//! images, all under one root directory (e.g. `/var/lib/skep/images`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobStore, Digest};
use crate::error::{ImageError, io_err};
use crate::layer::LayerStore;
use crate::spec::{
    Descriptor, ImageConfig, ImageConfigFile, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_MANIFEST, Manifest, ManifestOrIndex,
};

/// Normalizes a reference by Docker's rules: `busybox` →
/// `docker.io/library/busybox:latest`; digests are kept (`…@sha256:…`).
pub fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    parse_reference(reference).map(|r| r.whole())
}

pub(crate) fn parse_reference(reference: &str) -> Result<oci_client::Reference, ImageError> {
    reference
        .parse::<oci_client::Reference>()
        .map_err(|source| ImageError::InvalidReference {
            reference: reference.to_string(),
            source,
        })
}

/// An image present on the node, ready to be mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Normalized reference it was looked up by.
    pub reference: String,
    /// Digest of the (platform) manifest: the repo digest.
    pub manifest_digest: Digest,
    /// Digest of the config blob: the image id.
    pub config_digest: Digest,
    /// Runtime defaults: Entrypoint, Cmd, Env, `WorkingDir`, User, `ExposedPorts`.
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom first.
    pub layer_dirs: Vec<PathBuf>,
}

/// One entry of [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalized reference.
    pub reference: String,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Config digest (image id).
    pub config_digest: Digest,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RefsIndex {
    refs: BTreeMap<String, RefRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefRecord {
    manifest: String,
    config: String,
}

/// A content-addressed image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) blobs: BlobStore,
    pub(crate) layers: LayerStore,
    pub(crate) insecure_registries: Vec<String>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    #[tracing::instrument(skip_all, fields(root = %root.display()))]
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        fs::create_dir_all(root).map_err(io_err("create", root))?;
        let root = root.canonicalize().map_err(io_err("resolve", root))?;
        if root.to_string_lossy().contains([':', ',']) {
            return Err(ImageError::InvalidImage {
                reference: root.display().to_string(),
                what: "store root must not contain ':' or ',' (overlayfs option syntax)".into(),
            });
        }
        Ok(Self {
            blobs: BlobStore::open(&root)?,
            layers: LayerStore::open(&root)?,
            root,
            insecure_registries: Vec::new(),
        })
    }

    /// Registries (`host:port`) spoken to over plain HTTP. Loopback
    /// registries (`127.0.0.1:*`, `localhost:*`, `[::1]:*`) always are.
    #[must_use]
    pub fn with_insecure_registries(mut self, registries: Vec<String>) -> Self {
        self.insecure_registries = registries;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store (for callers that serve or push blobs).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Looks an image up locally. `Ok(None)` when the reference is unknown or
    /// its content is incomplete; layers whose blob is present but whose
    /// directory is missing are unpacked on the way.
    #[tracing::instrument(skip_all, fields(image = %reference))]
    pub fn image(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let reference = normalize_reference(reference)?;
        let Some(record) = self.read_refs()?.refs.get(&reference).cloned() else {
            return Ok(None);
        };
        let manifest_digest: Digest = record.manifest.parse()?;
        if !self.blobs.contains(&manifest_digest) {
            return Ok(None);
        }
        match self.assemble(&reference, &manifest_digest) {
            Ok(image) => Ok(Some(image)),
            Err(ImageError::Blob(crate::blobs::BlobError::Missing { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Builds an [`Image`] from a stored manifest, unpacking missing layers.
    fn assemble(&self, reference: &str, manifest_digest: &Digest) -> Result<Image, ImageError> {
        let manifest = self.read_manifest(reference, manifest_digest)?;
        let config_digest: Digest = manifest.config.digest.parse()?;
        let config_file: ImageConfigFile =
            serde_json::from_slice(&self.blobs.read(&config_digest)?).map_err(|source| {
                ImageError::Decode {
                    what: format!("image config {config_digest}"),
                    source,
                }
            })?;
        if config_file.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidImage {
                reference: reference.to_string(),
                what: format!(
                    "manifest lists {} layers but config lists {} diff ids",
                    manifest.layers.len(),
                    config_file.rootfs.diff_ids.len()
                ),
            });
        }
        let mut layer_dirs = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(&config_file.rootfs.diff_ids) {
            let diff_id: Digest = diff_id.parse()?;
            if self.layers.contains(&diff_id) {
                layer_dirs.push(self.layers.path(&diff_id));
            } else {
                let blob = self.blobs.open_blob(&desc.digest.parse()?)?;
                layer_dirs.push(self.layers.unpack(blob, &diff_id)?);
            }
        }
        Ok(Image {
            reference: reference.to_string(),
            manifest_digest: manifest_digest.clone(),
            config_digest,
            config: config_file.config,
            layer_dirs,
        })
    }

    fn read_manifest(&self, reference: &str, digest: &Digest) -> Result<Manifest, ImageError> {
        let bytes = self.blobs.read(digest)?;
        match ManifestOrIndex::parse(&bytes).map_err(|source| ImageError::Decode {
            what: format!("manifest {digest}"),
            source,
        })? {
            ManifestOrIndex::Manifest(m) => Ok(m),
            ManifestOrIndex::Index(_) => Err(ImageError::InvalidImage {
                reference: reference.to_string(),
                what: format!("{digest} is an index, not an image manifest"),
            }),
        }
    }

    /// Names a stored manifest (whose config and layer blobs are stored) by
    /// `reference`, after unpacking its layers. Shared by import and pull.
    pub(crate) fn commit_image(
        &self,
        reference: &str,
        manifest_digest: &Digest,
    ) -> Result<Image, ImageError> {
        let image = self.assemble(reference, manifest_digest)?;
        self.update_refs(|refs| {
            refs.refs.insert(
                reference.to_string(),
                RefRecord {
                    manifest: image.manifest_digest.to_string(),
                    config: image.config_digest.to_string(),
                },
            );
        })?;
        tracing::info!(image = %reference, digest = %manifest_digest, "image stored");
        Ok(image)
    }

    /// Every named image.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        self.read_refs()?
            .refs
            .into_iter()
            .map(|(reference, r)| {
                Ok(ImageSummary {
                    reference,
                    manifest_digest: r.manifest.parse()?,
                    config_digest: r.config.parse()?,
                })
            })
            .collect()
    }

    /// Forgets `reference` and deletes blobs and layers no other reference
    /// uses. Returns whether the reference existed. The caller must make sure
    /// no container still has the image mounted.
    #[tracing::instrument(skip_all, fields(image = %reference))]
    pub fn remove(&self, reference: &str) -> Result<bool, ImageError> {
        let reference = normalize_reference(reference)?;
        let _lock = self.lock()?;
        let mut refs = self.read_refs()?;
        if refs.refs.remove(&reference).is_none() {
            return Ok(false);
        }
        self.write_refs(&refs)?;
        // Collect what the remaining images still use.
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers: BTreeSet<Digest> = BTreeSet::new();
        for record in refs.refs.values() {
            let Ok(manifest_digest) = record.manifest.parse::<Digest>() else {
                continue;
            };
            keep_blobs.insert(manifest_digest.clone());
            let Ok(manifest) = self.read_manifest(&reference, &manifest_digest) else {
                continue;
            };
            keep_blobs.insert(manifest.config.digest.parse()?);
            for l in &manifest.layers {
                keep_blobs.insert(l.digest.parse()?);
            }
            if let Ok(bytes) = self.blobs.read(&manifest.config.digest.parse()?)
                && let Ok(cfg) = serde_json::from_slice::<ImageConfigFile>(&bytes)
            {
                for d in cfg.rootfs.diff_ids {
                    keep_layers.insert(d.parse()?);
                }
            }
        }
        for d in self.blobs.list()? {
            if !keep_blobs.contains(&d) {
                self.blobs.remove(&d)?;
            }
        }
        for d in self.layers.list()? {
            if !keep_layers.contains(&d) {
                self.layers.remove(&d)?;
            }
        }
        tracing::info!(image = %reference, "image removed");
        Ok(true)
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    /// Takes the store-wide lock that serializes refs index updates
    /// (an `flock`, so it also excludes other processes).
    fn lock(&self) -> Result<Flock<File>, ImageError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| ImageError::Io {
            op: "lock",
            path,
            source: errno.into(),
        })
    }

    fn read_refs(&self) -> Result<RefsIndex, ImageError> {
        let path = self.refs_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ImageError::Decode {
                what: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RefsIndex::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    fn write_refs(&self, refs: &RefsIndex) -> Result<(), ImageError> {
        let path = self.refs_path();
        let bytes = serde_json::to_vec_pretty(refs).map_err(|source| ImageError::Decode {
            what: path.display().to_string(),
            source,
        })?;
        let mut tmp = self.blobs.temp_file()?;
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io_err("write", tmp.path()))?;
        tmp.persist(&path)
            .map_err(|e| io_err("rename into place", &path)(e.error))?;
        Ok(())
    }

    fn update_refs(&self, f: impl FnOnce(&mut RefsIndex)) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let mut refs = self.read_refs()?;
        f(&mut refs);
        self.write_refs(&refs)
    }

    /// Imports a `docker save` tarball or an OCI image-layout tarball and
    /// returns the normalized references it added.
    #[tracing::instrument(skip_all, fields(path = %path.display()))]
    pub fn import_tarball(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        let work = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(io_err("create a temporary directory in", &self.root))?;
        let file = File::open(path).map_err(io_err("open", path))?;
        tar::Archive::new(std::io::BufReader::new(file))
            .unpack(work.path())
            .map_err(|e| ImageError::InvalidImage {
                reference: path.display().to_string(),
                what: format!("failed to unpack the tarball: {e}"),
            })?;
        let dir = work.path();
        let invalid = |what: String| ImageError::InvalidImage {
            reference: path.display().to_string(),
            what,
        };
        let mut added = Vec::new();
        if dir.join("manifest.json").is_file() {
            let entries: Vec<DockerSaveEntry> = read_json(&dir.join("manifest.json"))?;
            for entry in entries {
                let manifest_digest = self.import_docker_entry(dir, &entry)?;
                for tag in entry.repo_tags.unwrap_or_default() {
                    let reference = normalize_reference(&tag)?;
                    self.commit_image(&reference, &manifest_digest)?;
                    added.push(reference);
                }
            }
        } else if dir.join("index.json").is_file() {
            let index: crate::spec::Index = read_json(&dir.join("index.json"))?;
            for desc in &index.manifests {
                let name = desc
                    .annotations
                    .get("io.containerd.image.name")
                    .or_else(|| desc.annotations.get("org.opencontainers.image.ref.name"))
                    .ok_or_else(|| {
                        invalid(format!("index entry {} has no image name", desc.digest))
                    })?;
                if !name.contains(['/', ':', '@']) {
                    return Err(invalid(format!(
                        "index entry {} is named only by the tag {name:?}",
                        desc.digest
                    )));
                }
                let reference = normalize_reference(name)?;
                let manifest_digest = self.import_oci_manifest(dir, desc, &reference)?;
                self.commit_image(&reference, &manifest_digest)?;
                added.push(reference);
            }
        } else {
            return Err(invalid("neither manifest.json nor index.json found".into()));
        }
        Ok(added)
    }

    fn import_docker_entry(
        &self,
        dir: &Path,
        entry: &DockerSaveEntry,
    ) -> Result<Digest, ImageError> {
        let config_path = inside(dir, &entry.config)?;
        let config_digest = self.blobs.import_file(&config_path, None)?;
        let config_size = file_size(&config_path)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let layer_path = inside(dir, layer)?;
            let digest = self.blobs.import_file(&layer_path, None)?;
            let mut magic = [0u8; 4];
            let n = std::io::Read::read(
                &mut File::open(&layer_path).map_err(io_err("open", &layer_path))?,
                &mut magic,
            )
            .map_err(io_err("read", &layer_path))?;
            let media_type = if magic[..n].starts_with(&[0x1f, 0x8b]) {
                format!("{MEDIA_TYPE_OCI_LAYER_TAR}+gzip")
            } else if magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                format!("{MEDIA_TYPE_OCI_LAYER_TAR}+zstd")
            } else {
                MEDIA_TYPE_OCI_LAYER_TAR.to_string()
            };
            layers.push(plain_descriptor(
                media_type,
                &digest,
                file_size(&layer_path)?,
            ));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
            config: plain_descriptor(MEDIA_TYPE_OCI_CONFIG.into(), &config_digest, config_size),
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|source| ImageError::Decode {
            what: "synthesized manifest".into(),
            source,
        })?;
        Ok(self.blobs.write_bytes(&bytes, None)?)
    }

    fn import_oci_manifest(
        &self,
        dir: &Path,
        desc: &Descriptor,
        reference: &str,
    ) -> Result<Digest, ImageError> {
        let blob_path = |d: &Digest| dir.join("blobs").join("sha256").join(d.hex());
        let mut digest: Digest = desc.digest.parse()?;
        // Follow indexes down to the linux/amd64 manifest.
        loop {
            self.blobs.import_file(&blob_path(&digest), Some(&digest))?;
            let bytes = self.blobs.read(&digest)?;
            match ManifestOrIndex::parse(&bytes).map_err(|source| ImageError::Decode {
                what: format!("manifest {digest}"),
                source,
            })? {
                ManifestOrIndex::Index(index) => {
                    let next =
                        index
                            .select_linux_amd64()
                            .ok_or_else(|| ImageError::InvalidImage {
                                reference: reference.to_string(),
                                what: "no linux/amd64 manifest in the index".into(),
                            })?;
                    digest = next.digest.parse()?;
                }
                ManifestOrIndex::Manifest(m) => {
                    for d in std::iter::once(&m.config).chain(&m.layers) {
                        let d: Digest = d.digest.parse()?;
                        if !self.blobs.contains(&d) {
                            self.blobs.import_file(&blob_path(&d), Some(&d))?;
                        }
                    }
                    return Ok(digest);
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Decode {
        what: path.display().to_string(),
        source,
    })
}

/// Resolves a path named inside an unpacked tarball, refusing escapes.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let rel = Path::new(rel);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(ImageError::InvalidImage {
            reference: dir.display().to_string(),
            what: format!("tarball names a file outside itself: {}", rel.display()),
        });
    }
    Ok(dir.join(rel))
}

fn file_size(path: &Path) -> Result<u64, ImageError> {
    Ok(fs::metadata(path).map_err(io_err("stat", path))?.len())
}

fn plain_descriptor(media_type: String, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type,
        digest: digest.to_string(),
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}
