//! The fixed-size, NUL-padded names the names maps hold (endpoints,
//! policies, services): one encoding for all of them.

/// `name` as NUL-padded bytes, or `None` when it is longer than `N`.
pub(crate) fn encode<const N: usize>(name: &str) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    bytes
        .get_mut(..name.len())?
        .copy_from_slice(name.as_bytes());
    Some(bytes)
}

/// The name in NUL-padded `bytes`: up to the first NUL (all of it when
/// full), invalid UTF-8 replaced.
pub(crate) fn decode(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_does_not_fit() {
        let bytes: [u8; 12] = encode("x/allow-80").expect("fits");
        assert_eq!(&bytes[10..], &[0, 0]);
        assert_eq!(decode(&bytes), "x/allow-80");
        let full: [u8; 4] = encode("abcd").expect("fits exactly");
        assert_eq!(decode(&full), "abcd");
        assert_eq!(encode::<4>("abcde"), None);
    }
}
