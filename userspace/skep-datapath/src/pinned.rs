//! Opening a map another process pinned, by name.

use std::path::Path;

use aya::maps::MapData;

use crate::DatapathError;

/// The map `name` pinned in `pin_dir`; a clear error when nothing is pinned
/// there (the datapath was never loaded for that node).
pub(crate) fn open(pin_dir: &Path, name: &'static str) -> Result<MapData, DatapathError> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Err(DatapathError::MissingMap { name, path });
    }
    MapData::from_pin(&path).map_err(|source| map_err(name, source))
}

/// A [`DatapathError::Map`] for map `name`.
pub(crate) fn map_err(name: &'static str, source: aya::maps::MapError) -> DatapathError {
    DatapathError::Map {
        name,
        source: Box::new(source),
    }
}
