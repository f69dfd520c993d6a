//! PEM armour (RFC 7468): base64 bodies wrapped at 64 columns.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Wraps DER in a PEM block with the given label (`PRIVATE KEY`, …).
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out + "-----END " + label + "-----\n"
}

/// The PEM blocks in `text`, in order, as `(label, der)`. Text outside blocks
/// is ignored, as Go's `pem.Decode` does; a block whose body is not base64
/// is skipped.
pub(crate) fn decode_all(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            body.push_str(line);
        }
        if !closed {
            break;
        }
        if let Ok(der) = STANDARD.decode(body) {
            blocks.push((label.to_owned(), der));
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrapping() {
        let der: Vec<u8> = (0..=200).collect();
        let pem = encode("PRIVATE KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let text = format!("junk before\n{pem}junk after\n");
        assert_eq!(decode_all(&text), vec![("PRIVATE KEY".to_owned(), der)]);
    }

    #[test]
    fn unterminated_block_is_ignored() {
        assert!(decode_all("-----BEGIN PRIVATE KEY-----\nAAAA\n").is_empty());
    }
}
