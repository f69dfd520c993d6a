//! Byte layouts of `RocksDB` keys and values.
//!
//! - `logs`: big-endian log index → postcard entry, so key order is index order.
//! - `events`: big-endian revision → the user key changed at that revision.
//! - `versions`: `escape(user key) 00 01 be(!revision)` → [`StoredVersion`].
//!   The escape (`00` → `00 ff`) keeps byte order and makes the encoding a
//!   prefix code, so all versions of one key are contiguous, a user-key prefix
//!   is an encoded prefix, and inverting the revision puts the newest version
//!   of each key first: one seek finds the version at or before a revision.

use bytes::Bytes;

use crate::types::KeyValue;

const TERMINATOR: [u8; 2] = [0x00, 0x01];
const AFTER_TERMINATOR: [u8; 2] = [0x00, 0x02];

/// Big-endian bytes of a log index or revision.
pub(crate) fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads a big-endian u64 key.
pub(crate) fn from_be(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Appends the order-preserving escape of a user key (no terminator).
pub(crate) fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
}

/// The encoded prefix that every version of every key starting with `prefix`
/// begins with.
pub(crate) fn prefix_start(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 2);
    escape_into(prefix, &mut out);
    out
}

/// The `versions` key of `key` at `revision`.
pub(crate) fn version_key(key: &[u8], revision: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    escape_into(key, &mut out);
    out.extend_from_slice(&TERMINATOR);
    out.extend_from_slice(&be(!revision));
    out
}

/// The smallest `versions` key after every version of `key`.
pub(crate) fn after_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    escape_into(key, &mut out);
    out.extend_from_slice(&AFTER_TERMINATOR);
    out
}

/// Splits a `versions` key into the user key and the revision.
pub(crate) fn decode_version_key(encoded: &[u8]) -> Option<(Vec<u8>, u64)> {
    let split = encoded.len().checked_sub(10)?;
    let (escaped, rest) = encoded.split_at(split);
    if rest[..2] != TERMINATOR {
        return None;
    }
    let revision = !from_be(&rest[2..])?;
    let mut key = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        key.push(b);
        if b == 0 && bytes.next() != Some(&0xff) {
            return None;
        }
    }
    Some((key, revision))
}

/// One stored version of a key: a value or a deletion marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredVersion {
    /// The key holds a value.
    Live {
        /// The revision that created the key.
        create_revision: u64,
        /// Writes since creation, from 1.
        version: u64,
        /// The value.
        value: Bytes,
    },
    /// The key was deleted at this revision.
    Tombstone,
}

const TAG_TOMBSTONE: u8 = 0;
const TAG_LIVE: u8 = 1;

impl StoredVersion {
    /// Encodes as `tag | be(create_revision) | be(version) | value`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            StoredVersion::Tombstone => vec![TAG_TOMBSTONE],
            StoredVersion::Live {
                create_revision,
                version,
                value,
            } => {
                let mut out = Vec::with_capacity(17 + value.len());
                out.push(TAG_LIVE);
                out.extend_from_slice(&be(*create_revision));
                out.extend_from_slice(&be(*version));
                out.extend_from_slice(value);
                out
            }
        }
    }

    /// Decodes what [`StoredVersion::encode`] wrote.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        match *bytes.first()? {
            TAG_TOMBSTONE => Some(StoredVersion::Tombstone),
            TAG_LIVE if bytes.len() >= 17 => Some(StoredVersion::Live {
                create_revision: from_be(&bytes[1..9])?,
                version: from_be(&bytes[9..17])?,
                value: Bytes::copy_from_slice(&bytes[17..]),
            }),
            _ => None,
        }
    }

    /// The API view of this version, if it is live.
    pub(crate) fn to_kv(&self, key: &Bytes, mod_revision: u64) -> Option<KeyValue> {
        match self {
            StoredVersion::Tombstone => None,
            StoredVersion::Live {
                create_revision,
                version,
                value,
            } => Some(KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: *create_revision,
                mod_revision,
                version: *version,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_sort_by_key_then_newest_first() {
        let mut keys = [
            version_key(b"a", 1),
            version_key(b"a", 7),
            version_key(b"a\x00", 3),
            version_key(b"ab", 2),
            version_key(b"", 9),
            version_key(b"a\x00\x01", 4),
        ];
        keys.sort();
        let decoded: Vec<_> = keys
            .iter()
            .map(|k| {
                decode_version_key(k)
                    .map(|(key, rev)| (String::from_utf8_lossy(&key).into_owned(), rev))
            })
            .collect::<Option<_>>()
            .unwrap_or_default();
        let expected: Vec<(String, u64)> = vec![
            (String::new(), 9),
            ("a".into(), 7),
            ("a".into(), 1),
            ("a\u{0}".into(), 3),
            ("a\u{0}\u{1}".into(), 4),
            ("ab".into(), 2),
        ];
        assert_eq!(decoded, expected);
    }

    #[test]
    fn after_key_bounds_all_versions_and_nothing_else() {
        for (key, bigger) in [
            (&b"a"[..], &b"a\x00"[..]),
            (b"a", b"ab"),
            (b"a\x00", b"a\x01"),
        ] {
            let after = after_key(key);
            assert!(version_key(key, 0) < after);
            assert!(version_key(key, u64::MAX) < after);
            assert!(
                after <= version_key(bigger, u64::MAX),
                "{key:?} vs {bigger:?}"
            );
        }
    }

    #[test]
    fn prefix_start_is_a_prefix_of_exactly_the_keys_with_that_prefix() {
        let prefix = prefix_start(b"/registry/pods/\x00");
        assert!(version_key(b"/registry/pods/\x00x", 5).starts_with(&prefix));
        assert!(!version_key(b"/registry/pods/", 5).starts_with(&prefix));
        assert!(!version_key(b"/registry/pods/\x01", 5).starts_with(&prefix));
    }

    #[test]
    fn stored_version_round_trips() {
        let live = StoredVersion::Live {
            create_revision: 3,
            version: 2,
            value: Bytes::from_static(b"{}"),
        };
        assert_eq!(StoredVersion::decode(&live.encode()), Some(live));
        assert_eq!(
            StoredVersion::decode(&StoredVersion::Tombstone.encode()),
            Some(StoredVersion::Tombstone)
        );
        assert_eq!(StoredVersion::decode(&[1, 2]), None);
        assert_eq!(decode_version_key(b"short"), None);
    }
}
