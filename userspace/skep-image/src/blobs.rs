//! Content-addressed blob store: `blobs/sha256/<hex>`, every write verified
//! against its digest and committed by an atomic rename, so two writers of
//! the same blob race harmlessly (the second rename replaces identical bytes).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("failed to parse digest {digest:?}: expected sha256:<64 hex digits>")]
    InvalidDigest {
        /// The offending string.
        digest: String,
    },
    /// Content did not hash to the digest it was stored or referenced under.
    #[error("failed to verify blob: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// The digest the content has.
        actual: Digest,
    },
    /// A blob that should be present is not.
    #[error("failed to find blob {digest} in the store")]
    Missing {
        /// The absent blob.
        digest: Digest,
    },
    /// A filesystem operation failed.
    #[error("failed to {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BlobError {
    let path = path.to_path_buf();
    move |source| BlobError::Io { op, path, source }
}

/// A `sha256:<hex>` content digest (the only algorithm skep accepts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }
}

impl FromStr for Digest {
    type Err = BlobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || BlobError::InvalidDigest {
            digest: s.to_string(),
        };
        let hex = s.strip_prefix("sha256:").ok_or_else(invalid)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// A reader adapter that hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads the rest of the stream (tar archives end before their padding)
    /// and returns the digest of everything read.
    pub(crate) fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(Digest::from_hasher(self.hasher))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The blob directory of an image store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob store under `root` (`root/blobs/sha256`,
    /// temporary files in `root/tmp`).
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let dir = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        Ok(Self { dir, tmp })
    }

    /// Where the blob with `digest` lives (whether or not it is present).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Reads a (small) blob fully and verifies it against its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let bytes = fs::read(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                BlobError::Missing {
                    digest: digest.clone(),
                }
            } else {
                BlobError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming reads (not verified; layers are verified
    /// against their diff id while unpacking).
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        let path = self.path(digest);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                BlobError::Missing {
                    digest: digest.clone(),
                }
            } else {
                BlobError::Io {
                    op: "open",
                    path,
                    source,
                }
            }
        })
    }

    /// Stores `bytes`, checking them against `expected` when given; returns their digest.
    pub fn write_bytes(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Digest, BlobError> {
        let actual = Digest::of(bytes);
        if let Some(expected) = expected
            && expected != &actual
        {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if self.contains(&actual) {
            return Ok(actual);
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        self.persist(tmp, &actual)?;
        Ok(actual)
    }

    /// A fresh temporary file on the store's filesystem, for streaming a blob in.
    pub fn temp_file(&self) -> Result<NamedTempFile, BlobError> {
        NamedTempFile::new_in(&self.tmp).map_err(io_err("create a temporary file in", &self.tmp))
    }

    /// Hashes a fully written temporary file and, if it matches `expected`,
    /// renames it into place.
    pub fn commit(&self, tmp: NamedTempFile, expected: &Digest) -> Result<(), BlobError> {
        let file = File::open(tmp.path()).map_err(io_err("open", tmp.path()))?;
        let actual = HashingReader::new(file)
            .finish()
            .map_err(io_err("read", tmp.path()))?;
        if &actual != expected {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.persist(tmp, expected)
    }

    /// Copies the file at `src` in as a blob, verified against `expected` when given.
    pub fn import_file(&self, src: &Path, expected: Option<&Digest>) -> Result<Digest, BlobError> {
        let mut reader = HashingReader::new(File::open(src).map_err(io_err("open", src))?);
        let mut tmp = self.temp_file()?;
        io::copy(&mut reader, &mut tmp).map_err(io_err("copy", src))?;
        let actual = reader.finish().map_err(io_err("read", src))?;
        if let Some(expected) = expected
            && expected != &actual
        {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.persist(tmp, &actual)?;
        Ok(actual)
    }

    fn persist(&self, tmp: NamedTempFile, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        tmp.as_file()
            .sync_all()
            .map_err(io_err("sync", tmp.path()))?;
        tmp.persist(&path).map_err(|e| BlobError::Io {
            op: "rename into place",
            path: path.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Deletes a blob; absent blobs are not an error.
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(BlobError::Io {
                op: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Digests of every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parse_rejects_garbage() {
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("md5:0000".parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
    }

    #[test]
    fn write_verifies_and_is_idempotent() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = BlobStore::open(dir.path())?;
        let d = store.write_bytes(b"content", None)?;
        assert_eq!(store.read(&d)?, b"content");
        assert_eq!(store.write_bytes(b"content", Some(&d))?, d);
        let wrong = Digest::of(b"other");
        assert!(matches!(
            store.write_bytes(b"content", Some(&wrong)),
            Err(BlobError::DigestMismatch { .. })
        ));
        assert!(!store.contains(&wrong));
        assert_eq!(store.list()?, vec![d.clone()]);
        // A corrupted blob is caught on read.
        fs::write(store.path(&d), b"tampered")?;
        assert!(matches!(
            store.read(&d),
            Err(BlobError::DigestMismatch { .. })
        ));
        Ok(())
    }
}
