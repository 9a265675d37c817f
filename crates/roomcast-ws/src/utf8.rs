//! Incremental UTF-8 validation of text messages.
//!
//! A text message may arrive in many frames, and a frame in many reads; a code point may
//! be split anywhere. The validator keeps at most three bytes of an incomplete code point
//! between chunks and fails on the first byte that cannot start or continue a valid
//! sequence, so a connection is failed as soon as the invalid byte arrives (Autobahn
//! cases 6.4.x) rather than when the message ends. The validation itself is `simdutf8`'s,
//! whose `compat` flavour reports, like `std`, whether an error is a bad byte or just the
//! end of the input.

use simdutf8::compat::from_utf8;

/// The bytes are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a byte stream chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a code point cut by the end of the previous chunk.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub const fn new() -> Self {
        Self {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Forgets everything, ready for a new stream.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }

    /// Validates the next chunk. An incomplete code point at the end is kept for later.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            // A code point is at most 4 bytes: complete the pending one from this chunk.
            let take = (4 - have).min(chunk.len());
            let mut joined = self.pending;
            joined[have..have + take].copy_from_slice(&chunk[..take]);
            let joined = &joined[..have + take];
            match from_utf8(joined) {
                Ok(_) => {
                    self.pending_len = 0;
                    chunk = &chunk[take..];
                }
                Err(e) if e.valid_up_to() > 0 => {
                    // The pending code point completed within `joined`; the rest of the
                    // chunk is checked below from where it ended.
                    self.pending_len = 0;
                    chunk = &chunk[e.valid_up_to() - have..];
                }
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still incomplete: the chunk was too short to finish it.
                    self.pending[have..have + take].copy_from_slice(&chunk[..take]);
                    self.pending_len += take as u8;
                    return Ok(());
                }
            }
        }
        match from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The stream ended: an incomplete code point left over is an error.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split_everywhere(bytes: &[u8]) {
        let expected = std::str::from_utf8(bytes).is_ok();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut v = Utf8Validator::new();
                let ok = v.feed(&bytes[..i]).is_ok()
                    && v.feed(&bytes[i..j]).is_ok()
                    && v.feed(&bytes[j..]).is_ok()
                    && v.finish().is_ok();
                assert_eq!(ok, expected, "{bytes:x?} split at {i},{j}");
            }
        }
    }

    #[test]
    fn splits_anywhere() {
        check_split_everywhere("κόσμε".as_bytes());
        check_split_everywhere("a€𝄞z".as_bytes());
        check_split_everywhere(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited");
        check_split_everywhere(b"\xf4\x90\x80\x80");
        check_split_everywhere(b"ab\xc0\xaf");
        check_split_everywhere(b"\xe2\x82");
    }

    #[test]
    fn fails_on_the_first_invalid_byte() {
        // Autobahn 6.4.1: the first fragment ends with \xf4\x90, which no continuation can
        // fix (U+10FFFF is the largest code point): fail now, not at the end.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed("κόσμε".as_bytes()), Ok(()));
        assert_eq!(v.feed(b"\xf4\x90"), Err(InvalidUtf8));

        // One byte at a time, still failing at the bad byte.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
    }

    #[test]
    fn incomplete_at_end_fails_on_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // and the validator is reusable
        assert_eq!(v.feed(b"\xe2\x82\xac"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn reset_forgets_an_incomplete_code_point() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xe2\x82"), Ok(()));
        v.reset();
        assert_eq!(v.feed(b"a"), Ok(()), "a new stream, not the end of U+20AC");
        assert_eq!(v.finish(), Ok(()));
    }
}
