//! The little DER this crate needs: reading and writing SubjectPublicKeyInfo
//! (PKIX) for P-256 and RSA keys, the bytes upstream's key id is hashed over
//! (`x509.MarshalPKIXPublicKey`).

/// DER of the AlgorithmIdentifier `{ id-ecPublicKey, prime256v1 }`.
const EC_P256_ALGORITHM: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];

/// DER of the AlgorithmIdentifier `{ rsaEncryption, NULL }`.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;

/// A public key's algorithm and its key bytes as found in a PKIX structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubjectPublicKey {
    /// An uncompressed P-256 point (`04 || x || y`).
    EcP256(Vec<u8>),
    /// A PKCS#1 `RSAPublicKey` (`SEQUENCE { n, e }`).
    Rsa(Vec<u8>),
}

/// Encodes `SubjectPublicKeyInfo` as Go's `x509.MarshalPKIXPublicKey` does.
pub(crate) fn encode_spki(key: &SubjectPublicKey) -> Vec<u8> {
    let (algorithm, bits) = match key {
        SubjectPublicKey::EcP256(point) => (EC_P256_ALGORITHM, point.as_slice()),
        SubjectPublicKey::Rsa(pkcs1) => (RSA_ALGORITHM, pkcs1.as_slice()),
    };
    // A BIT STRING starts with the count of unused bits in its last byte.
    let mut bit_string = Vec::with_capacity(bits.len() + 1);
    bit_string.push(0);
    bit_string.extend_from_slice(bits);
    let mut body = algorithm.to_vec();
    body.extend(tlv(BIT_STRING, &bit_string));
    tlv(SEQUENCE, &body)
}

/// Decodes `SubjectPublicKeyInfo`; `None` for anything but P-256 and RSA.
pub(crate) fn decode_spki(der: &[u8]) -> Option<SubjectPublicKey> {
    let (body, rest) = read(der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let algorithm_len = body.len() - read(body, SEQUENCE)?.1.len();
    let (algorithm, after) = body.split_at(algorithm_len);
    let (bits, rest) = read(after, BIT_STRING)?;
    let (&unused, key) = bits.split_first()?;
    if unused != 0 || !rest.is_empty() {
        return None;
    }
    match algorithm {
        EC_P256_ALGORITHM if key.len() == 65 && key[0] == 4 => {
            Some(SubjectPublicKey::EcP256(key.to_vec()))
        }
        RSA_ALGORITHM => {
            rsa_components(key)?;
            Some(SubjectPublicKey::Rsa(key.to_vec()))
        }
        _ => None,
    }
}

/// The modulus and public exponent of a PKCS#1 `RSAPublicKey`, big-endian
/// without leading zeros (how JWK's `n` and `e` carry them).
pub(crate) fn rsa_components(pkcs1: &[u8]) -> Option<(&[u8], &[u8])> {
    let (body, rest) = read(pkcs1, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, rest) = read(body, INTEGER)?;
    let (e, rest) = read(rest, INTEGER)?;
    if !rest.is_empty() {
        return None;
    }
    Some((strip_zeros(n), strip_zeros(e)))
}

fn strip_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// Reads one TLV with the given tag; returns its contents and what follows.
fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, input) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    (input.len() >= len).then(|| input.split_at(len))
}

/// Writes one TLV with a definite, minimal length.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_both_kinds() {
        let mut point = vec![4];
        point.extend(1..=64);
        let ec = SubjectPublicKey::EcP256(point);
        assert_eq!(decode_spki(&encode_spki(&ec)), Some(ec));

        // SEQUENCE { INTEGER 0x00 0x80.. (257 bytes), INTEGER 65537 }
        let mut n = vec![0];
        n.extend(std::iter::repeat_n(0x80, 256));
        let mut body = tlv(INTEGER, &n);
        body.extend(tlv(INTEGER, &[1, 0, 1]));
        let rsa = SubjectPublicKey::Rsa(tlv(SEQUENCE, &body));
        let der = encode_spki(&rsa);
        assert_eq!(decode_spki(&der), Some(rsa.clone()));
        let SubjectPublicKey::Rsa(pkcs1) = rsa else {
            unreachable!()
        };
        let (n, e) = rsa_components(&pkcs1).expect("valid RSAPublicKey");
        assert_eq!((n.len(), e), (256, &[1, 0, 1][..]));
    }

    #[test]
    fn truncated_input_is_refused() {
        let mut point = vec![4];
        point.extend(1..=64);
        let der = encode_spki(&SubjectPublicKey::EcP256(point));
        for len in 0..der.len() {
            assert_eq!(decode_spki(&der[..len]), None, "{len}");
        }
    }
}
