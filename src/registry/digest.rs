//! sha256 digests in the `sha256:<64 hex>` form registries use.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read};

/// `sha256:<hex>` of a byte slice.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Streams a reader to its end and returns (`sha256:<hex>`, byte count).
pub fn sha256_reader(r: impl Read) -> io::Result<(String, u64)> {
    crate::transport::host::sha256_reader(r).map(|(hex, n)| (format!("sha256:{hex}"), n))
}

/// True for `sha256:` followed by 64 lowercase hex digits (the only algorithm we accept, so
/// a digest can always be used safely as a file name).
pub fn is_valid(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The hex part of a valid digest.
pub fn hex_part(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(sha256(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let (d, n) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(d, sha256(b"abc"));
        assert_eq!(n, 3);
    }

    #[test]
    fn validity() {
        assert!(is_valid(&sha256(b"x")));
        assert!(!is_valid("sha256:ABC"));
        assert!(!is_valid("sha512:00"));
        assert!(!is_valid(&format!("sha256:{}", "g".repeat(64))));
        assert!(!is_valid(&format!("sha256:../{}", "a".repeat(61))));
    }
}
