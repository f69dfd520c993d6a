use std::os::unix::fs::PermissionsExt as _;

use super::*;

/// The key id computed from scratch: SHA-256 over the fixed P-256 SPKI
/// prefix and the point, base64url without padding.
#[test]
fn key_id_is_upstreams() {
    let key = SigningKey::generate().expect("key");
    let Signer::Ecdsa(pair) = &key.signer else {
        panic!("ES256 by default")
    };
    let prefix = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let spki = [&prefix[..], pair.public_key().as_ref()].concat();
    assert_eq!(key.public_key().spki_der(), spki.as_slice());
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    assert_eq!(key.key_id(), URL_SAFE_NO_PAD.encode(digest.as_ref()));
    assert_eq!(key.key_id().len(), 43);
    assert_eq!(key.algorithm(), Algorithm::Es256);
}

#[test]
fn pem_save_load_round_trip_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sa.key");
    let key = SigningKey::load_or_generate(&path).expect("generated");
    let mode = std::fs::metadata(&path).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = SigningKey::load_or_generate(&path).expect("loaded");
    assert_eq!(again.key_id(), key.key_id());
    assert_eq!(again.to_pem(), key.to_pem());
    // Only the key file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    // The public half reads back from PEM, as --service-account-key-file.
    let public = PublicKey::from_pem(&key.public_key().to_pem()).expect("public");
    assert_eq!(public, vec![key.public_key().clone()]);
    let from_private = PublicKey::from_pem(&key.to_pem()).expect("private");
    assert_eq!(from_private, vec![key.public_key().clone()]);
}

#[test]
fn bad_input_is_refused() {
    assert!(matches!(
        SigningKey::from_pem("nothing here"),
        Err(KeyError::NoPemBlock { .. })
    ));
    let junk = pem::encode("PRIVATE KEY", b"not a key");
    assert!(matches!(
        SigningKey::from_pem(&junk),
        Err(KeyError::Rejected { .. })
    ));
    assert!(matches!(
        PublicKey::from_spki_der(b"junk"),
        Err(KeyError::UnsupportedPublicKey)
    ));
}
