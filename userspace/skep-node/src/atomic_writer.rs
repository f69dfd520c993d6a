//! Writing a volume's files so that a reader never sees a half-written
//! set, as the kubelet's `AtomicWriter` (`pkg/volume/util/atomic_writer.go`)
//! does for Secret, ConfigMap, downward API and projected volumes:
//!
//! ```text
//! <dir>/..2025_01_31_10_00_00.123456789/token   the payload, in a timestamped directory
//! <dir>/..data -> ..2025_01_31_10_00_00.123456789
//! <dir>/token  -> ..data/token                  what the user sees
//! ```
//!
//! A new payload goes into a new timestamped directory; `..data` is then
//! swapped to it in one `rename(2)` of a fresh symlink over the old one, so
//! a reader following `token` sees either the old file or the new one.
//! User-visible names that are no longer in the payload are removed, and
//! the old directory last. A payload identical to what is there writes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Component, Path, PathBuf};

/// The symlink naming the current timestamped directory.
pub const DATA_DIR_NAME: &str = "..data";
const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The content.
    pub data: Vec<u8>,
    /// The permission bits.
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Errors of writing a payload.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// A payload path is absolute, has `..`, or starts with `..`.
    #[error("invalid path {path:?}: {why}")]
    InvalidPath {
        /// The path.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A file system operation failed.
    #[error("failed to {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError {
    let path = path.to_owned();
    move |source| AtomicWriteError::Io { op, path, source }
}

/// Upstream's `validatePath`: relative, no `..` element, not starting
/// with `..`, not longer than 4096 bytes.
fn validate_path(path: &str) -> Result<(), AtomicWriteError> {
    let invalid = |why| AtomicWriteError::InvalidPath {
        path: path.to_owned(),
        why,
    };
    if path.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if path.len() > 4096 {
        return Err(invalid("must be less than or equal to 4096 characters"));
    }
    if Path::new(path).is_absolute() {
        return Err(invalid("must be relative path"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(invalid("must not contain '..'"));
    }
    if path.starts_with("..") {
        return Err(invalid("must not start with '..'"));
    }
    Ok(())
}

/// The first element of a payload path: the user-visible name.
fn top_level(path: &str) -> &str {
    path.trim_start_matches("./")
        .split('/')
        .find(|c| !c.is_empty() && *c != ".")
        .unwrap_or(path)
}

/// Whether the timestamped directory `dir` holds exactly `payload`.
fn holds(dir: &Path, payload: &Payload) -> bool {
    let mut found = BTreeSet::new();
    if !collect_files(dir, dir, &mut found) {
        return false;
    }
    let wanted: BTreeSet<PathBuf> = payload.keys().map(|p| clean(p)).collect();
    if found != wanted {
        return false;
    }
    payload.iter().all(|(p, f)| {
        let path = dir.join(clean(p));
        let same_mode =
            fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == f.mode);
        same_mode && fs::read(&path).is_ok_and(|d| d == f.data)
    })
}

fn clean(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            return false;
        };
        if kind.is_dir() {
            if !collect_files(root, &path, out) {
                return false;
            }
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_owned());
        }
    }
    true
}

/// A fresh `..YYYY_MM_DD_hh_mm_ss.<digits>` directory in `target`
/// (upstream's `os.MkdirTemp(target, now.Format("..2006_01_02_15_04_05."))`).
fn new_timestamped_dir(target: &Path) -> Result<PathBuf, AtomicWriteError> {
    let now = std::time::SystemTime::now();
    let stamp = crate::agent::timestamp(now)
        .strftime("..%Y_%m_%d_%H_%M_%S.")
        .to_string();
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut seed = u64::from(nanos) ^ u64::from(std::process::id());
    for _ in 0..100 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let dir = target.join(format!("{stamp}{}", seed % 1_000_000_000));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
    }
    Err(io_err("create", target)(io::Error::from(
        io::ErrorKind::AlreadyExists,
    )))
}

/// Writes `payload` into `target` atomically (see the module docs);
/// returns whether anything changed.
pub fn write(target: &Path, payload: &Payload) -> Result<bool, AtomicWriteError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    fs::create_dir_all(target).map_err(io_err("create", target))?;
    let data_link = target.join(DATA_DIR_NAME);
    let old_ts_name = fs::read_link(&data_link).ok();
    let old_ts_dir = old_ts_name.as_ref().map(|n| target.join(n));
    let visible: BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    let links_in_place = visible.iter().all(|name| {
        fs::read_link(target.join(name)).is_ok_and(|l| l == Path::new(DATA_DIR_NAME).join(name))
    });
    if let Some(old) = &old_ts_dir
        && links_in_place
        && holds(old, payload)
    {
        return Ok(false);
    }
    // 1. The new payload, in its own directory.
    let ts_dir = new_timestamped_dir(target)?;
    for (path, file) in payload {
        let dest = ts_dir.join(clean(path));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        fs::write(&dest, &file.data).map_err(io_err("write", &dest))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(file.mode))
            .map_err(io_err("chmod", &dest))?;
    }
    // 2. `..data` swapped in one rename.
    let ts_name = ts_dir.file_name().map(PathBuf::from).unwrap_or_default();
    let tmp_link = target.join(NEW_DATA_DIR_NAME);
    match fs::remove_file(&tmp_link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp_link)(e)),
    }
    symlink(&ts_name, &tmp_link).map_err(io_err("symlink", &tmp_link))?;
    fs::rename(&tmp_link, &data_link).map_err(io_err("rename", &data_link))?;
    // 3. User-visible names, as links into `..data`.
    for name in &visible {
        let link = target.join(name);
        let want = Path::new(DATA_DIR_NAME).join(name);
        match fs::read_link(&link) {
            Ok(l) if l == want => continue,
            Ok(_) => fs::remove_file(&link).map_err(io_err("remove", &link))?,
            Err(_) if fs::symlink_metadata(&link).is_ok() => {
                // A plain file or directory left by an older layout.
                remove_any(&link)?;
            }
            Err(_) => {}
        }
        symlink(&want, &link).map_err(io_err("symlink", &link))?;
    }
    // 4. Names no longer in the payload, then the old directory.
    let entries = fs::read_dir(target).map_err(io_err("read", target))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("..") || visible.contains(name.as_ref()) {
            continue;
        }
        remove_any(&entry.path())?;
    }
    if let Some(old) = old_ts_dir
        && old != ts_dir
    {
        remove_any(&old)?;
    }
    Ok(true)
}

fn remove_any(path: &Path) -> Result<(), AtomicWriteError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(io_err("remove", path))
    } else {
        fs::remove_file(path).map_err(io_err("remove", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    (*p).to_owned(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn writes_through_data_and_swaps_atomically() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let t = dir.path();
        assert!(write(
            t,
            &payload(&[("token", "one", 0o644), ("sub/ns", "team", 0o600)])
        )?);
        let first = fs::read_link(t.join(DATA_DIR_NAME))?;
        let first_name = first.to_string_lossy().into_owned();
        // `..YYYY_MM_DD_hh_mm_ss.<digits>`
        assert!(first_name.starts_with(".."), "{first_name}");
        assert!(
            first_name[2..21]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '_'),
            "{first_name}"
        );
        assert_eq!(&first_name[21..22], ".");
        assert!(first_name[22..].chars().all(|c| c.is_ascii_digit()));
        assert_eq!(fs::read_link(t.join("token"))?, Path::new("..data/token"));
        assert_eq!(fs::read_link(t.join("sub"))?, Path::new("..data/sub"));
        assert_eq!(fs::read_to_string(t.join("token"))?, "one");
        assert_eq!(fs::read_to_string(t.join("sub/ns"))?, "team");
        assert_eq!(
            fs::metadata(t.join("sub/ns"))?.permissions().mode() & 0o777,
            0o600
        );
        // The same payload writes nothing.
        assert!(!write(
            t,
            &payload(&[("token", "one", 0o644), ("sub/ns", "team", 0o600)])
        )?);
        assert_eq!(fs::read_link(t.join(DATA_DIR_NAME))?, first);
        // A new one swaps `..data`, drops what is gone and the old directory.
        assert!(write(t, &payload(&[("token", "two", 0o644)]))?);
        let second = fs::read_link(t.join(DATA_DIR_NAME))?;
        assert_ne!(second, first);
        assert_eq!(fs::read_to_string(t.join("token"))?, "two");
        assert!(fs::symlink_metadata(t.join("sub")).is_err());
        assert!(!t.join(&first).exists());
        let mut names: Vec<String> = fs::read_dir(t)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                second.to_string_lossy().into_owned(),
                "..data".to_owned(),
                "token".to_owned()
            ]
        );
        Ok(())
    }

    #[test]
    fn bad_paths_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for bad in ["/abs", "a/../b", "..hidden", ""] {
            assert!(
                matches!(
                    write(dir.path(), &payload(&[(bad, "x", 0o644)])),
                    Err(AtomicWriteError::InvalidPath { .. })
                ),
                "{bad}"
            );
        }
        Ok(())
    }
}
