//! Files other processes read while they change: the shim's exit record,
//! container metadata, IPAM state, a pod's `/etc/hosts`.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to `path` via a temporary file and rename, so readers see
/// either the old or the new content, and the content is on disk before
/// the rename (it survives a host crash).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_renamed(path, data, true)
}

/// [`write_atomic`] without the `fsync`: readers still see the old or the
/// new content, but after a host crash the file may be empty. For what is
/// rewritten before it is used again, or does not outlive the host's
/// processes anyway (a pod's `/etc/hosts`, a container's start time, the
/// IPAM's round-robin hint): an `fsync` costs milliseconds on a busy disk,
/// on every pod start.
pub fn write_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    write_renamed(path, data, false)
}

fn write_renamed(path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)
}
