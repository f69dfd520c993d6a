//! Files other processes read while they change: the shim's exit record,
//! container metadata, IPAM state, a pod's `/etc/hosts`.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to `path` via a temporary file and rename, so readers see
/// either the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}
