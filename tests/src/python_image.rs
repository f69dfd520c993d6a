//! A test image with the host's Python and its official Kubernetes client
//! (Debian's `python3-kubernetes`, which `cargo xtask setup` installs),
//! built from the host's files the way the busybox demo image is: the
//! busybox layer, then one layer holding every file of `python3-kubernetes`
//! and of the Python packages it depends on (`dpkg -L`, recursively over
//! `Depends`), and the shared libraries their ELF files need (`ldd`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use skep_image::{ImageBuilder, LayerEntry};

/// The reference the image is imported as.
pub const PYTHON_IMAGE: &str = "skep/python-kubernetes:test";

/// The Debian package whose files (and its Python dependencies') go in.
const CLIENT_PACKAGE: &str = "python3-kubernetes";

/// Imports the image into the store of the node with data directory
/// `data_dir` (as `skep image build-demo` does the busybox one). The host's
/// files are read once per test run.
pub fn import_python_image(data_dir: &Path) -> anyhow::Result<()> {
    static IMAGE: OnceLock<Result<ImageBuilder, String>> = OnceLock::new();
    let image = IMAGE
        .get_or_init(|| python_image().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("failed to build the python image: {e}"))?;
    let dir = tempfile::tempdir()?;
    let tar = dir.path().join("python.tar");
    image.write_oci_tarball(&tar)?;
    let out = crate::process::skep(&[
        "image",
        "import",
        "--data-dir",
        &data_dir.to_string_lossy(),
        &tar.to_string_lossy(),
    ])?;
    if !out.status.success() {
        bail!(
            "skep image import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Builds the image from the host's files.
fn python_image() -> anyhow::Result<ImageBuilder> {
    let mut layer = Layer::default();
    for package in python_packages(CLIENT_PACKAGE)? {
        let out = Command::new("dpkg").args(["-L", &package]).output()?;
        if !out.status.success() {
            bail!(
                "dpkg -L {package}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("/usr/share/doc") || line.starts_with("/usr/share/man") {
                continue;
            }
            let path = Path::new(line);
            // Directories come in as the parents of what they hold.
            if path.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                layer.add(path)?;
            }
        }
    }
    let elves: Vec<PathBuf> = layer.elves.iter().cloned().collect();
    for lib in shared_libraries(&elves)? {
        layer.add(&lib)?;
    }
    // The loader finds the libraries in the multiarch directories through
    // the cache, as on the host.
    if Path::new("/etc/ld.so.cache").exists() {
        layer.add(Path::new("/etc/ld.so.cache"))?;
    }
    Ok(skep_image::busybox_image(PYTHON_IMAGE, &["python3"])?
        .layer(layer.entries.into_values().collect()))
}

/// `package` and, recursively, the installed packages it depends on whose
/// names start `python3` or `libpython3` (the native libraries come from
/// `ldd` instead, so not all of libc6's world comes along).
fn python_packages(package: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![package.to_owned()];
    while let Some(p) = todo.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}\t${Depends}, ${Pre-Depends}", &p])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (status, depends) = text.split_once('\t').unwrap_or_default();
        if !out.status.success() || !status.ends_with("ok installed") {
            if p == package {
                bail!("{package} is not installed: run `cargo xtask setup`");
            }
            seen.remove(&p);
            continue;
        }
        for alternatives in depends.split(',') {
            // The first alternative that is installed, or else the first.
            let names: Vec<&str> = alternatives
                .split('|')
                .filter_map(|a| a.split_whitespace().next())
                .map(|a| a.split(':').next().unwrap_or(a))
                .filter(|n| n.starts_with("python3") || n.starts_with("libpython3"))
                .collect();
            if let Some(n) = names
                .iter()
                .find(|n| installed(n))
                .or_else(|| names.first())
            {
                todo.push((*n).to_owned());
            }
        }
    }
    Ok(seen)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"ok installed"))
}

/// The libraries (and the loader) `ldd` resolves for `elves`.
fn shared_libraries(elves: &[PathBuf]) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for chunk in elves.chunks(64) {
        let out = Command::new("ldd")
            .args(chunk)
            .output()
            .context("failed to run ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let path = line
                .split_once("=>")
                .map_or(line, |(_, p)| p)
                .split_whitespace()
                .next()
                .unwrap_or_default();
            // (With several files, ldd heads each one's list `FILE:`.)
            if path.starts_with('/') && !path.ends_with(':') {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libs)
}

/// A layer's entries by path, so parents precede children and nothing is
/// added twice.
#[derive(Default)]
struct Layer {
    entries: BTreeMap<String, LayerEntry>,
    /// ELF files added, for `ldd`.
    elves: BTreeSet<PathBuf>,
}

impl Layer {
    /// Adds host file or symlink `path` as the host resolves it: a
    /// symlinked library directory on the way (`/lib64` → `usr/lib64`)
    /// becomes a symlink in the image too, and a symlink's target comes
    /// along.
    fn add(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut image_path = PathBuf::new();
        let mut host = PathBuf::from("/");
        let components: Vec<_> = path.components().skip(1).collect();
        for (i, c) in components.iter().enumerate() {
            host.push(c);
            image_path.push(c);
            let rel = image_path.to_string_lossy().into_owned();
            let meta = host
                .symlink_metadata()
                .with_context(|| format!("failed to stat {}", host.display()))?;
            let last = i + 1 == components.len();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host)?;
                // Only the library directories: a host `/bin` → `usr/bin`
                // would hide busybox's `/bin`.
                if last || rel.starts_with("lib") {
                    self.entries
                        .entry(rel.clone())
                        .or_insert_with(|| LayerEntry::symlink(&rel, &target.to_string_lossy()));
                }
                let resolved = host.parent().unwrap_or(Path::new("/")).join(&target);
                let resolved = normalize(&resolved);
                let rest: PathBuf = components[i + 1..].iter().collect();
                return self.add(&resolved.join(rest));
            }
            if last && meta.is_file() {
                if self.entries.contains_key(&rel) {
                    return Ok(());
                }
                let data = std::fs::read(&host)
                    .with_context(|| format!("failed to read {}", host.display()))?;
                if data.starts_with(b"\x7fELF") {
                    self.elves.insert(host.clone());
                }
                self.entries.insert(
                    rel.clone(),
                    LayerEntry::File {
                        path: rel,
                        mode: meta.permissions().mode() & 0o7777,
                        data,
                    },
                );
            } else if meta.is_dir() {
                self.entries
                    .entry(rel.clone())
                    .or_insert_with(|| LayerEntry::Dir {
                        path: rel,
                        mode: meta.permissions().mode() & 0o7777,
                    });
            }
        }
        Ok(())
    }
}

/// `path` with `.` and `..` resolved lexically (symlink targets are).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}
