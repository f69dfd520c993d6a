//! Opening a map another process pinned, by name.

use std::path::{Path, PathBuf};

use aya::maps::{MapData, MapError};

use crate::DatapathError;

/// The map `name` pinned in `pin_dir`; a clear error when nothing is pinned
/// there (the datapath was never loaded for that node).
pub(crate) fn open(pin_dir: &Path, name: &'static str) -> Result<MapData, DatapathError> {
    open_with(
        pin_dir,
        name,
        |path| DatapathError::MissingMap { name, path },
        |source| map_err(name, source),
    )
}

/// [`open`] for a module with its own error type: `missing` builds the
/// error for nothing pinned at the path, `failed` the one for a kernel
/// refusal.
pub(crate) fn open_with<E>(
    pin_dir: &Path,
    name: &'static str,
    missing: impl FnOnce(PathBuf) -> E,
    failed: impl FnOnce(MapError) -> E,
) -> Result<MapData, E> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Err(missing(path));
    }
    MapData::from_pin(&path).map_err(failed)
}

/// A [`DatapathError::Map`] for map `name`.
pub(crate) fn map_err(name: &'static str, source: MapError) -> DatapathError {
    DatapathError::Map {
        name,
        source: Box::new(source),
    }
}

/// Whether a map error says the key is not there (aya reports a delete of a
/// missing key as the syscall's `ENOENT`).
pub(crate) fn is_missing(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
