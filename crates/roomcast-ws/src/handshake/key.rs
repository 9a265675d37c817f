//! `Sec-WebSocket-Key` and `Sec-WebSocket-Accept` (RFC 6455 sections 1.3 and 4.2.2).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID the server appends to the client's key.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`: "the base64-encoded SHA-1
/// of the concatenation of the |Sec-WebSocket-Key| (as a string, not base64-decoded) with
/// the string "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"".
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// A fresh `Sec-WebSocket-Key`: "a randomly selected 16-byte value that has been
/// base64-encoded".
pub fn generate_key() -> String {
    STANDARD.encode(rand::random::<[u8; 16]>())
}

/// Whether `key` is the base64 encoding of exactly 16 bytes ("when decoded, is 16 bytes
/// in length").
pub fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24 && STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys() {
        let k = generate_key();
        assert!(is_valid_key(k.as_bytes()));
        assert_ne!(k, generate_key());
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZSE="), "17 bytes");
        assert!(!is_valid_key(b"!!!!!!!!!!!!!!!!!!!!!!=="));
    }
}
