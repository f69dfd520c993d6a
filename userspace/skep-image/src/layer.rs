//! Layers unpacked once into `layers/sha256/<diffid>/`, shared by every image
//! and container that uses them. OCI whiteouts become overlayfs whiteouts so
//! that stacking the directories as overlay lowerdirs gives the image's view.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::blobs::{Digest, HashingReader};

/// OCI whiteout prefix: `.wh.<name>` deletes `<name>` from lower layers.
const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI opaque marker: `.wh..wh..opq` hides everything lower in its directory.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Errors of layer unpacking.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A tar entry tried to leave the layer directory.
    #[error("failed to unpack layer {diff_id}: entry {entry:?} escapes the layer root")]
    PathTraversal {
        /// The layer being unpacked.
        diff_id: Digest,
        /// The offending entry path.
        entry: String,
    },
    /// The uncompressed content does not hash to the diff id the config lists.
    #[error("failed to verify layer: expected diff id {expected}, content hashes to {actual}")]
    DiffIdMismatch {
        /// The diff id from the image config.
        expected: Digest,
        /// The digest of the uncompressed tar stream.
        actual: Digest,
    },
    /// Reading the archive or writing the tree failed.
    #[error("failed to unpack layer {diff_id}: {what}")]
    Unpack {
        /// The layer being unpacked.
        diff_id: Digest,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on the layer store failed.
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
}

/// The directory of unpacked layers of an image store.
#[derive(Debug, Clone)]
pub struct LayerStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl LayerStore {
    /// Opens (creating if needed) `root/layers/sha256`.
    pub fn open(root: &Path) -> Result<Self, LayerError> {
        let dir = root.join("layers").join("sha256");
        let tmp = root.join("tmp");
        for d in [&dir, &tmp] {
            fs::create_dir_all(d).map_err(|source| LayerError::Io {
                op: "create",
                path: d.clone(),
                source,
            })?;
        }
        Ok(Self { dir, tmp })
    }

    /// The directory of the unpacked layer with `diff_id`.
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(diff_id.hex())
    }

    /// Whether the layer is unpacked.
    pub fn contains(&self, diff_id: &Digest) -> bool {
        self.path(diff_id).is_dir()
    }

    /// Unpacks a layer blob (tar, tar+gzip or tar+zstd, detected by magic
    /// bytes) unless it is already there, verifying the uncompressed stream
    /// against `diff_id`. Concurrent callers each unpack into a private
    /// directory and the first rename wins; the others discard theirs.
    #[tracing::instrument(skip_all, fields(diff_id = %diff_id))]
    pub fn unpack(&self, blob: File, diff_id: &Digest) -> Result<PathBuf, LayerError> {
        let dst = self.path(diff_id);
        if dst.is_dir() {
            return Ok(dst);
        }
        let work = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&self.tmp)
            .map_err(|source| LayerError::Io {
                op: "create a temporary directory in",
                path: self.tmp.clone(),
                source,
            })?;
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).map_err(|source| {
            LayerError::Io {
                op: "chmod",
                path: work.path().to_path_buf(),
                source,
            }
        })?;
        let actual = unpack_tar(blob, work.path(), diff_id)?;
        if &actual != diff_id {
            return Err(LayerError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual,
            });
        }
        let work = work.keep();
        match fs::rename(&work, &dst) {
            Ok(()) => {
                tracing::debug!(path = %dst.display(), "layer unpacked");
            }
            Err(e) if dst.is_dir() => {
                // Another unpacker won the race: theirs is identical.
                tracing::debug!(error = %e, "layer unpacked concurrently, discarding ours");
                let _ = fs::remove_dir_all(&work);
            }
            Err(source) => {
                let _ = fs::remove_dir_all(&work);
                return Err(LayerError::Io {
                    op: "rename into place",
                    path: dst,
                    source,
                });
            }
        }
        Ok(dst)
    }

    /// Deletes an unpacked layer; absent layers are not an error.
    pub fn remove(&self, diff_id: &Digest) -> Result<(), LayerError> {
        let path = self.path(diff_id);
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LayerError::Io {
                op: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Diff ids of every unpacked layer.
    pub fn list(&self) -> Result<Vec<Digest>, LayerError> {
        let io = |source| LayerError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(d) = format!("sha256:{name}").parse()
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Wraps `blob` in the decompressor its magic bytes call for.
fn decompress(blob: File) -> io::Result<Box<dyn Read>> {
    let mut reader = BufReader::new(blob);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// Unpacks the layer tar into `dst`, returning the digest of the uncompressed stream.
fn unpack_tar(blob: File, dst: &Path, diff_id: &Digest) -> Result<Digest, LayerError> {
    let unpack_err = |what: String| {
        let diff_id = diff_id.clone();
        move |source| LayerError::Unpack {
            diff_id,
            what,
            source,
        }
    };
    let reader = HashingReader::new(
        decompress(blob).map_err(unpack_err("failed to read the blob header".into()))?,
    );
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(unpack_err("failed to read the archive".into()))?;
    for entry in entries {
        let mut entry = entry.map_err(unpack_err("failed to read an entry".into()))?;
        let path = entry
            .path()
            .map_err(unpack_err("failed to read an entry path".into()))?
            .into_owned();
        let shown = path.display().to_string();
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(LayerError::PathTraversal {
                diff_id: diff_id.clone(),
                entry: shown,
            });
        }
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue; // the root itself ("./")
        };
        let parent = rel
            .parent()
            .map_or_else(|| dst.to_path_buf(), |p| dst.join(p));
        let typ = entry.header().entry_type();
        let special = name.starts_with(WHITEOUT_PREFIX)
            || typ.is_character_special()
            || typ.is_block_special()
            || typ.is_fifo();
        if !special {
            entry
                .unpack_in(dst)
                .map_err(unpack_err(format!("failed to unpack {shown}")))?;
            continue;
        }
        unpack_special(&mut entry, dst, &parent, &name, diff_id)?;
    }
    archive
        .into_inner()
        .finish()
        .map_err(unpack_err("failed to read the archive trailer".into()))
}

/// Creates a whiteout, opaque marker or device node entry by hand, after
/// checking that its directory resolves inside the layer (no escape through
/// symlinks).
fn unpack_special<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dst: &Path,
    parent: &Path,
    name: &str,
    diff_id: &Digest,
) -> Result<(), LayerError> {
    let shown = parent.join(name).display().to_string();
    let typ = entry.header().entry_type();
    let unpack_err = |what: String| {
        let diff_id = diff_id.clone();
        move |source| LayerError::Unpack {
            diff_id,
            what,
            source,
        }
    };
    // Special entries are created by hand: make sure their directory
    // resolves inside the layer (no escape through symlinks), checking the
    // deepest existing ancestor before creating anything below it.
    let root = dst
        .canonicalize()
        .map_err(unpack_err("failed to resolve the layer root".into()))?;
    let escapes = |p: &Path| -> io::Result<bool> { Ok(!p.canonicalize()?.starts_with(&root)) };
    let existing = parent
        .ancestors()
        .find(|a| a.symlink_metadata().is_ok())
        .unwrap_or(dst);
    let traversal = || LayerError::PathTraversal {
        diff_id: diff_id.clone(),
        entry: shown.clone(),
    };
    if escapes(existing).map_err(unpack_err(format!(
        "failed to resolve the parent of {shown}"
    )))? {
        return Err(traversal());
    }
    fs::create_dir_all(parent).map_err(unpack_err(format!(
        "failed to create the parent of {shown}"
    )))?;
    let canon = parent.canonicalize().map_err(unpack_err(format!(
        "failed to resolve the parent of {shown}"
    )))?;
    if !canon.starts_with(&root) {
        return Err(traversal());
    }
    if name == OPAQUE_MARKER {
        xattr::set(&canon, OVERLAY_OPAQUE_XATTR, b"y").map_err(unpack_err(format!(
            "failed to mark {} opaque",
            canon.display()
        )))?;
    } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        let target = canon.join(hidden);
        remove_any(&target).map_err(unpack_err(format!("failed to clear {}", target.display())))?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
            .map_err(unpack_err(format!(
                "failed to create whiteout {}",
                target.display()
            )))?;
    } else {
        let header = entry.header();
        let target = canon.join(name);
        let kind = if typ.is_character_special() {
            SFlag::S_IFCHR
        } else if typ.is_block_special() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFIFO
        };
        let num = |v: io::Result<Option<u32>>| v.map(|o| u64::from(o.unwrap_or(0)));
        let major = num(header.device_major())
            .map_err(unpack_err(format!("failed to read device of {shown}")))?;
        let minor = num(header.device_minor())
            .map_err(unpack_err(format!("failed to read device of {shown}")))?;
        let mode = header
            .mode()
            .map_err(unpack_err(format!("failed to read mode of {shown}")))?;
        let uid = header
            .uid()
            .map_err(unpack_err(format!("failed to read owner of {shown}")))?;
        let gid = header
            .gid()
            .map_err(unpack_err(format!("failed to read group of {shown}")))?;
        remove_any(&target).map_err(unpack_err(format!("failed to clear {}", target.display())))?;
        mknod(
            &target,
            kind,
            Mode::from_bits_truncate(mode & 0o7777),
            makedev(major, minor),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
        .map_err(unpack_err(format!(
            "failed to create device {}",
            target.display()
        )))?;
        let owner = |id: u64| {
            u32::try_from(id).map_err(|_| {
                unpack_err(format!("owner of {shown} out of range"))(io::Error::from(
                    io::ErrorKind::InvalidData,
                ))
            })
        };
        let (uid, gid) = (owner(uid)?, owner(gid)?);
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
            .map_err(unpack_err(format!("failed to chown {}", target.display())))?;
    }
    Ok(())
}

/// Removes whatever is at `path` (file, device, or directory tree).
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use anyhow::Context as _;

    use super::*;

    fn tar_with(
        build: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> io::Result<()>,
    ) -> io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b)?;
        b.into_inner()
    }

    fn unpack_bytes(store: &LayerStore, tar: &[u8]) -> Result<PathBuf, LayerError> {
        let mut f = tempfile::tempfile().map_err(|source| LayerError::Io {
            op: "create",
            path: PathBuf::new(),
            source,
        })?;
        f.write_all(tar)
            .and_then(|()| io::Seek::rewind(&mut f))
            .map_err(|source| LayerError::Io {
                op: "write",
                path: PathBuf::new(),
                source,
            })?;
        store.unpack(f, &Digest::of(tar))
    }

    #[test]
    fn dot_dot_entries_are_rejected() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = LayerStore::open(dir.path())?;
        let tar = tar_with(|b| {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..9].copy_from_slice(b"../escape");
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &b"x"[..])
        })?;
        let err = unpack_bytes(&store, &tar)
            .err()
            .context("traversal accepted")?;
        assert!(matches!(err, LayerError::PathTraversal { .. }), "{err}");
        assert!(!dir.path().join("layers/sha256/escape").exists());
        assert!(store.list()?.is_empty(), "a rejected layer was kept");
        Ok(())
    }

    #[test]
    fn writes_through_symlinks_out_of_the_layer_are_rejected() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let store = LayerStore::open(dir.path())?;
        for victim in [
            "evil",
            ".wh.evil",
            "sub/evil",
            "sub/.wh.evil",
            "sub/.wh..wh..opq",
        ] {
            let tar = tar_with(|b| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, "link", outside.path())?;
                let mut h = tar::Header::new_gnu();
                h.set_size(1);
                h.set_mode(0o644);
                b.append_data(&mut h, format!("link/{victim}"), &b"x"[..])
            })?;
            assert!(
                unpack_bytes(&store, &tar).is_err(),
                "{victim} written through a symlink"
            );
            assert_eq!(fs::read_dir(outside.path())?.count(), 0, "{victim} escaped");
        }
        Ok(())
    }

    #[test]
    fn diff_id_is_verified_and_gzip_detected() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = LayerStore::open(dir.path())?;
        let tar = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o600);
            h.set_uid(1234);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_data(&mut h, "owned", &b"hi"[..])
        })?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        let gz = gz.finish()?;
        let mut f = tempfile::tempfile()?;
        f.write_all(&gz)?;
        io::Seek::rewind(&mut f)?;
        let wrong = Digest::of(b"not this");
        let f2 = f.try_clone()?;
        let err = store
            .unpack(f, &wrong)
            .err()
            .context("wrong diff id accepted")?;
        assert!(matches!(err, LayerError::DiffIdMismatch { .. }), "{err:?}");
        let mut f2 = f2;
        io::Seek::rewind(&mut f2)?;
        let path = store.unpack(f2, &Digest::of(&tar))?;
        let meta = fs::metadata(path.join("owned"))?;
        assert_eq!(fs::read(path.join("owned"))?, b"hi");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1234);
        Ok(())
    }
}
