//! Builds small, deterministic images in memory and writes them as OCI
//! image-layout or `docker save` tarballs: the busybox demo image that
//! `cargo xtask up` imports, and hand-crafted images for tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::blobs::Digest;
use crate::spec::{
    Descriptor, ImageConfig, ImageConfigFile, Index, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_TAR, MEDIA_TYPE_OCI_MANIFEST, Manifest, RootFs,
};

/// Where Debian's `busybox-static` puts its binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets linked in the demo image's `/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "sleep",
    "httpd",
    "wget",
    "nc",
    "env",
    "id",
    "hostname",
    "ps",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "touch",
    "grep",
    "sed",
    "head",
    "tail",
    "wc",
    "true",
    "false",
    "test",
    "[",
    "printf",
    "kill",
    "mount",
    "ip",
    "ifconfig",
    "ping",
    "nslookup",
    "date",
    "uname",
    "whoami",
    "stat",
    "ln",
    "chmod",
    "chown",
    "pwd",
    "df",
    "du",
    "find",
    "xargs",
    "tee",
    "vi",
    "top",
    "nohup",
    "timeout",
    "seq",
    "sort",
    "uniq",
    "cut",
    "tr",
    "basename",
    "dirname",
    "readlink",
    "netstat",
    "yes",
    "dd",
    "md5sum",
    "sha256sum",
];

/// Errors of image building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading a host file (e.g. the busybox binary) failed.
    #[error("failed to read {}", path.display())]
    ReadHost {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a tar stream or the output file failed.
    #[error("failed to write {what}")]
    Write {
        /// What was being written.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Serializing JSON failed.
    #[error("failed to encode {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// One entry of a layer being built. Paths are relative to the image root;
/// a whiteout is just a `File` named `.wh.<name>` (or `.wh..wh..opq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    /// A directory.
    Dir {
        /// Path inside the image.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Path inside the image.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Path inside the image.
        path: String,
        /// Link target, as written.
        target: String,
    },
    /// A hard link to an earlier entry of the same layer.
    Hardlink {
        /// Path inside the image.
        path: String,
        /// Path of the linked entry inside the image.
        target: String,
    },
}

impl LayerEntry {
    /// A directory with mode 0755.
    pub fn dir(path: &str) -> Self {
        Self::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }

    /// A regular file with mode 0644.
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Self {
        Self::File {
            path: path.into(),
            mode: 0o644,
            data: data.into(),
        }
    }

    /// A symbolic link.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }

    /// An OCI whiteout deleting `path` from lower layers.
    pub fn whiteout(path: &str) -> Self {
        let p = Path::new(path);
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let wh = p.with_file_name(format!(".wh.{name}"));
        Self::file(&wh.to_string_lossy(), Vec::new())
    }

    /// An OCI opaque marker hiding lower-layer contents of directory `dir`.
    pub fn opaque(dir: &str) -> Self {
        Self::file(
            &Path::new(dir).join(".wh..wh..opq").to_string_lossy(),
            Vec::new(),
        )
    }
}

/// An image assembled in memory: the blobs a registry or tarball would hold.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The reference the image is named by.
    pub reference: String,
    /// Manifest JSON.
    pub manifest: Vec<u8>,
    /// Digest of `manifest`.
    pub manifest_digest: Digest,
    /// Config JSON.
    pub config: Vec<u8>,
    /// Digest of `config`.
    pub config_digest: Digest,
    /// Layer blobs (as stored: gzip or plain tar), bottom first, with their
    /// digests and media types.
    pub layers: Vec<(Digest, String, Vec<u8>)>,
}

/// Assembles a small deterministic image (fixed mtimes and owners).
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    reference: String,
    config: ImageConfig,
    layers: Vec<Vec<LayerEntry>>,
    gzip: bool,
}

impl ImageBuilder {
    /// An empty image named `reference`.
    pub fn new(reference: &str) -> Self {
        Self {
            reference: reference.into(),
            config: ImageConfig::default(),
            layers: Vec::new(),
            gzip: false,
        }
    }

    /// Sets the runtime config (Cmd, Env, …).
    #[must_use]
    pub fn config(mut self, config: ImageConfig) -> Self {
        self.config = config;
        self
    }

    /// Appends a layer on top of the previous ones.
    #[must_use]
    pub fn layer(mut self, entries: Vec<LayerEntry>) -> Self {
        self.layers.push(entries);
        self
    }

    /// Stores layers gzip-compressed (`…tar+gzip`) instead of plain tar.
    #[must_use]
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Builds the blobs.
    pub fn build(&self) -> Result<BuiltImage, BuildError> {
        let mut diff_ids = Vec::new();
        let mut layers = Vec::new();
        for (i, entries) in self.layers.iter().enumerate() {
            let tar = layer_tar(entries).map_err(|source| BuildError::Write {
                what: format!("layer {i}"),
                source,
            })?;
            diff_ids.push(Digest::of(&tar).to_string());
            if self.gzip {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                let gz = enc
                    .write_all(&tar)
                    .and_then(|()| enc.finish())
                    .map_err(|source| BuildError::Write {
                        what: format!("gzip of layer {i}"),
                        source,
                    })?;
                layers.push((
                    Digest::of(&gz),
                    format!("{MEDIA_TYPE_OCI_LAYER_TAR}+gzip"),
                    gz,
                ));
            } else {
                layers.push((Digest::of(&tar), MEDIA_TYPE_OCI_LAYER_TAR.to_string(), tar));
            }
        }
        let config_file = ImageConfigFile {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: self.config.clone(),
            rootfs: RootFs {
                typ: "layers".into(),
                diff_ids,
            },
        };
        let config = serde_json::to_vec(&config_file).map_err(|source| BuildError::Encode {
            what: "image config",
            source,
        })?;
        let config_digest = Digest::of(&config);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
            config: descriptor(MEDIA_TYPE_OCI_CONFIG, &config_digest, config.len()),
            layers: layers
                .iter()
                .map(|(d, mt, b)| descriptor(mt, d, b.len()))
                .collect(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|source| BuildError::Encode {
            what: "manifest",
            source,
        })?;
        Ok(BuiltImage {
            reference: self.reference.clone(),
            manifest_digest: Digest::of(&manifest),
            manifest,
            config_digest,
            config,
            layers,
        })
    }

    /// Writes an OCI image-layout tarball (`oci-layout`, `index.json`,
    /// `blobs/sha256/…`) naming the image by its reference.
    pub fn write_oci_tarball(&self, path: &Path) -> Result<BuiltImage, BuildError> {
        let image = self.build()?;
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.ref.name".into(),
            image.reference.clone(),
        );
        annotations.insert("io.containerd.image.name".into(), image.reference.clone());
        let mut entry = descriptor(
            MEDIA_TYPE_OCI_MANIFEST,
            &image.manifest_digest,
            image.manifest.len(),
        );
        entry.annotations = annotations;
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.into()),
            manifests: vec![entry],
        };
        let index = serde_json::to_vec(&index).map_err(|source| BuildError::Encode {
            what: "index",
            source,
        })?;
        let mut files: Vec<(String, &[u8])> = vec![
            ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json".into(), &index),
            (
                format!("blobs/sha256/{}", image.manifest_digest.hex()),
                &image.manifest,
            ),
            (
                format!("blobs/sha256/{}", image.config_digest.hex()),
                &image.config,
            ),
        ];
        for (d, _, b) in &image.layers {
            files.push((format!("blobs/sha256/{}", d.hex()), b));
        }
        write_tarball(path, &["blobs", "blobs/sha256"], &files)?;
        Ok(image)
    }

    /// Writes a `docker save` tarball (`manifest.json`, `<config>.json`, `<layer>/layer.tar`).
    pub fn write_docker_tarball(&self, path: &Path) -> Result<BuiltImage, BuildError> {
        let image = self.build()?;
        let config_name = format!("{}.json", image.config_digest.hex());
        let layer_names: Vec<String> = image
            .layers
            .iter()
            .map(|(d, _, _)| format!("{}/layer.tar", d.hex()))
            .collect();
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [image.reference],
            "Layers": layer_names,
        }]);
        let manifest = serde_json::to_vec(&manifest).map_err(|source| BuildError::Encode {
            what: "manifest.json",
            source,
        })?;
        let dirs: Vec<String> = image
            .layers
            .iter()
            .map(|(d, _, _)| d.hex().to_string())
            .collect();
        let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let mut files: Vec<(String, &[u8])> = vec![
            ("manifest.json".into(), &manifest),
            (config_name, &image.config),
        ];
        for (name, (_, _, b)) in layer_names.into_iter().zip(&image.layers) {
            files.push((name, b));
        }
        write_tarball(path, &dirs, &files)?;
        Ok(image)
    }
}

/// The demo image: the host's static busybox as `/bin/busybox`, applet
/// symlinks, `/etc/passwd`, `/etc/group`, `/tmp`, with `cmd` as its Cmd.
pub fn busybox_image(reference: &str, cmd: &[&str]) -> Result<ImageBuilder, BuildError> {
    busybox_image_from(Path::new(HOST_BUSYBOX), reference, cmd)
}

/// [`busybox_image`] with the busybox binary taken from `busybox`.
pub fn busybox_image_from(
    busybox: &Path,
    reference: &str,
    cmd: &[&str],
) -> Result<ImageBuilder, BuildError> {
    let binary = std::fs::read(busybox).map_err(|source| BuildError::ReadHost {
        path: busybox.to_path_buf(),
        source,
    })?;
    let mut entries = vec![
        LayerEntry::dir("bin"),
        LayerEntry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data: binary,
        },
    ];
    entries.extend(
        BUSYBOX_APPLETS
            .iter()
            .map(|a| LayerEntry::symlink(&format!("bin/{a}"), "busybox")),
    );
    entries.extend([
        LayerEntry::dir("etc"),
        LayerEntry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        LayerEntry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        LayerEntry::file("etc/hosts", "127.0.0.1 localhost\n"),
        LayerEntry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
        },
        LayerEntry::Dir {
            path: "root".into(),
            mode: 0o700,
        },
        LayerEntry::dir("proc"),
        LayerEntry::dir("sys"),
        LayerEntry::dir("dev"),
        LayerEntry::dir("var"),
        LayerEntry::dir("usr"),
        LayerEntry::dir("usr/bin"),
        LayerEntry::symlink("usr/bin/env", "/bin/busybox"),
    ]);
    let config = ImageConfig {
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cmd: cmd.iter().map(|s| (*s).to_string()).collect(),
        ..ImageConfig::default()
    };
    Ok(ImageBuilder::new(reference).config(config).layer(entries))
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size: size as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn header(typ: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(typ);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn layer_tar(entries: &[LayerEntry]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            LayerEntry::Dir { path, mode } => {
                b.append_data(
                    &mut header(tar::EntryType::Directory, *mode, 0),
                    path,
                    io::empty(),
                )?;
            }
            LayerEntry::File { path, mode, data } => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            LayerEntry::Symlink { path, target } => {
                b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), path, target)?;
            }
            LayerEntry::Hardlink { path, target } => {
                b.append_link(&mut header(tar::EntryType::Link, 0o644, 0), path, target)?;
            }
        }
    }
    b.into_inner()
}

fn write_tarball(path: &Path, dirs: &[&str], files: &[(String, &[u8])]) -> Result<(), BuildError> {
    let err = |source| BuildError::Write {
        what: path.display().to_string(),
        source,
    };
    let file = File::create(path).map_err(err)?;
    let mut b = tar::Builder::new(io::BufWriter::new(file));
    for d in dirs {
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            d,
            io::empty(),
        )
        .map_err(err)?;
    }
    for (name, data) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, name, *data).map_err(err)?;
    }
    b.into_inner()
        .and_then(|w| w.into_inner().map_err(io::IntoInnerError::into_error))
        .and_then(|f| f.sync_all())
        .map_err(err)
}
