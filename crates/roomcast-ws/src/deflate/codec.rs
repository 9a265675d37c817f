//! Compressing and decompressing messages as RFC 7692 section 7.2 says: raw DEFLATE,
//! each message ended with a sync flush whose last four bytes (`00 00 ff ff`) are taken
//! off by the sender and put back by the receiver.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The end of a sync flush, which the sender removes ("Remove 4 octets (that are 0x00
/// 0x00 0xff 0xff) from the tail end") and the receiver appends.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output grows at most this much per step, so an inflated message is allocated as it
/// arrives, never ahead of it.
const STEP: usize = 16 * 1024;

/// A deflate failure: the peer sent data that is not DEFLATE, or a message that inflates
/// past the limit (close codes 1007 and 1009).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// Not a valid DEFLATE stream.
    #[error("invalid compressed data: {0}")]
    Corrupt(String),
    /// The message inflates past the limit.
    #[error("a compressed message inflates past {limit} bytes")]
    TooLarge {
        /// The message size limit.
        limit: usize,
    },
}

/// zlib cannot make a raw DEFLATE stream with a 256-byte window; with 512 bytes it never
/// reaches further back than 250, so what it writes is readable with a window of 8 bits.
fn zlib_bits(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// zlib state between messages, kept per thread for the codecs that start every message
/// afresh (no context takeover): such a codec holds none while it is not in the middle
/// of a message, so an idle connection costs no compression memory, and a thread that
/// compresses for many connections in turn reuses the same few states.
mod spare {
    use std::cell::RefCell;

    use flate2::{Compress, Decompress};

    /// States kept per thread and kind (a compressor per window size): enough for a
    /// message in flight on each of a few connections, without hoarding.
    const KEEP: usize = 4;

    thread_local! {
        static COMPRESSORS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
        static DECOMPRESSORS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
    }

    /// A reset compressor with a window of `bits`, if one is kept.
    pub(super) fn take_compress(bits: u8) -> Option<Compress> {
        COMPRESSORS.with_borrow_mut(|v| {
            let at = v.iter().position(|(b, _)| *b == bits)?;
            Some(v.swap_remove(at).1)
        })
    }

    /// Keeps `z` (already reset) for the next message of any codec on this thread.
    pub(super) fn give_compress(bits: u8, z: Compress) {
        COMPRESSORS.with_borrow_mut(|v| {
            if v.len() < KEEP * 2 {
                v.push((bits, z));
            }
        });
    }

    /// A reset decompressor (with the largest window, which reads any smaller one).
    pub(super) fn take_decompress() -> Option<Decompress> {
        DECOMPRESSORS.with_borrow_mut(Vec::pop)
    }

    /// Keeps `z` (already reset) for the next message.
    pub(super) fn give_decompress(z: Decompress) {
        DECOMPRESSORS.with_borrow_mut(|v| {
            if v.len() < KEEP {
                v.push(z);
            }
        });
    }
}

/// Our side's compressor.
pub struct Deflater {
    /// zlib's state: `None` between messages when it resets after each (it is kept per
    /// thread meanwhile), or after [`Deflater::release`].
    z: Option<Compress>,
    bits: u8,
    reset_each_message: bool,
    /// In the middle of a fragmented message.
    mid_message: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("reset_each_message", &self.reset_each_message)
            .field("holds_state", &self.z.is_some())
            .finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor with a window of `window_bits`, reset after every message when
    /// `no_context_takeover`. Its zlib state is made at its first message.
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Self {
            z: None,
            bits: zlib_bits(window_bits),
            reset_each_message: no_context_takeover,
            mid_message: false,
        }
    }

    /// Whether it resets after every message, so that what it compresses can be read
    /// by any peer that agreed to the same or a larger window.
    pub fn resets_each_message(&self) -> bool {
        self.reset_each_message
    }

    /// The window it compresses with, as zlib takes it (9 to 15).
    pub fn window_bits(&self) -> u8 {
        self.bits
    }

    /// Whether it holds zlib state now.
    pub fn holds_state(&self) -> bool {
        self.z.is_some()
    }

    /// Gives its zlib state back (an idle connection's): the next message starts with
    /// an empty window. That is always allowed, even with context takeover: the RFC
    /// lets a compressor refer back, never requires it, so the peer reads what a fresh
    /// compressor writes. Kept in the middle of a fragmented message. Whether any
    /// state was given back.
    pub fn release(&mut self) -> bool {
        if self.mid_message {
            return false;
        }
        self.z.take().is_some()
    }

    fn state(&mut self) -> &mut Compress {
        let bits = self.bits;
        let pooled = self.reset_each_message;
        self.z.get_or_insert_with(|| {
            pooled
                .then(|| spare::take_compress(bits))
                .flatten()
                .unwrap_or_else(|| Compress::new_with_window_bits(Compression::fast(), false, bits))
        })
    }

    /// Compresses `data`, one message or one fragment of it, onto `out`. The last
    /// fragment of a message (`fin`) loses the flush's four-byte tail.
    pub fn compress(&mut self, data: &[u8], fin: bool, out: &mut Vec<u8>) {
        let start = out.len();
        let mut input = data;
        let z = self.state();
        loop {
            // A sync flush adds a few bytes; incompressible data grows by a little too.
            out.reserve(input.len() / 2 + 64);
            let before_in = z.total_in();
            let before_out = z.total_out();
            // Only a full output buffer stops a flush early; it is grown and called again.
            let _ = z.compress_vec(input, out, FlushCompress::Sync);
            let consumed = (z.total_in() - before_in) as usize;
            let produced = (z.total_out() - before_out) as usize;
            input = &input[consumed..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if consumed == 0 && produced == 0 {
                break;
            }
        }
        self.mid_message = !fin;
        if fin {
            if out[start..].ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
            }
            if out.len() == start {
                // Nothing new to flush (zlib writes nothing for a second sync flush in a
                // row): one empty stored block's first byte, which the receiver's
                // appended tail completes (RFC 7692 section 7.2.3.6).
                out.push(0x00);
            }
            if self.reset_each_message
                && let Some(mut z) = self.z.take()
            {
                z.reset();
                spare::give_compress(self.bits, z);
            }
        }
    }
}

/// Our side's decompressor of the peer's messages.
pub struct Inflater {
    /// zlib's state: `None` between messages when the peer resets after each.
    z: Option<Decompress>,
    window_bits: u8,
    reset_each_message: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("reset_each_message", &self.reset_each_message)
            .field("holds_state", &self.z.is_some())
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// A decompressor for a peer compressing with a window of `window_bits`, and
    /// resetting after each message when `no_context_takeover`. Its zlib state is made
    /// at the first compressed message.
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Self {
            z: None,
            window_bits,
            reset_each_message: no_context_takeover,
        }
    }

    /// Whether it holds zlib state now (between messages, only with context takeover).
    pub fn holds_state(&self) -> bool {
        self.z.is_some()
    }

    fn state(&mut self) -> &mut Decompress {
        let bits = zlib_bits(self.window_bits);
        let pooled = self.reset_each_message;
        self.z.get_or_insert_with(|| {
            pooled
                .then(spare::take_decompress)
                .flatten()
                // The pooled ones have the largest window, to serve every peer.
                .unwrap_or_else(|| {
                    Decompress::new_with_window_bits(false, if pooled { 15 } else { bits })
                })
        })
    }

    /// Inflates one frame's payload of a compressed message onto `out`, which holds what
    /// the message inflated to so far. The last frame (`fin`) gets the four-byte tail
    /// back. `out` never grows past `limit`: a message that would is refused with
    /// [`InflateError::TooLarge`] once `limit` bytes are out, whatever its compressed
    /// size (a deflate bomb costs the limit, no more).
    pub fn inflate(
        &mut self,
        data: &[u8],
        fin: bool,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        let fed = self.feed(data, limit, out);
        let fed = match fed {
            Ok(()) if fin => self.feed(&TAIL, limit, out),
            other => other,
        };
        if (fin || fed.is_err())
            && self.reset_each_message
            && let Some(mut z) = self.z.take()
        {
            // The message is over, or so is the connection (every inflate error fails
            // it): the state is reset and kept for the next message on this thread.
            z.reset(false);
            spare::give_decompress(z);
        }
        fed
    }

    fn feed(&mut self, data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let mut input = data;
        let z = self.state();
        loop {
            let room = limit.saturating_sub(out.len()).min(STEP);
            if room == 0 {
                // At the limit: one byte more, into a probe, says whether there is more.
                let mut probe = [0u8; 1];
                let before = z.total_out();
                z.decompress(input, &mut probe, FlushDecompress::Sync)
                    .map_err(|e| InflateError::Corrupt(e.to_string()))?;
                if z.total_out() > before {
                    return Err(InflateError::TooLarge { limit });
                }
                return Ok(());
            }
            if out.capacity() - out.len() < room {
                out.reserve_exact(room);
            }
            let before_in = z.total_in();
            let before_out = z.total_out();
            let status = z
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            let consumed = (z.total_in() - before_in) as usize;
            let produced = (z.total_out() - before_out) as usize;
            input = &input[consumed..];
            if out.len() > limit {
                // An allocator that gave more room than asked for.
                return Err(InflateError::TooLarge { limit });
            }
            if status == Status::StreamEnd {
                // A final block (BFINAL) ended the stream: the next data starts a new
                // one, with nothing to refer back to.
                z.reset(false);
                if input.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let full = out.len() == out.capacity();
            if input.is_empty() && !full {
                return Ok(());
            }
            if consumed == 0 && produced == 0 && !full {
                return Err(InflateError::Corrupt("no progress".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(bits: u8, reset: bool, messages: &[&[u8]]) {
        let mut d = Deflater::new(bits, reset);
        let mut i = Inflater::new(bits, reset);
        for m in messages {
            let mut wire = Vec::new();
            d.compress(m, true, &mut wire);
            assert!(
                !wire.ends_with(&TAIL) || m.is_empty(),
                "the tail was left on"
            );
            let mut back = Vec::new();
            i.inflate(&wire, true, 1 << 20, &mut back).unwrap();
            assert_eq!(back, *m);
        }
    }

    #[test]
    fn messages_survive_every_window_with_and_without_context() {
        let chat = br#"{"type":"message","room":"lobby","data":{"text":"hello there"}}"#;
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for bits in 8..=15 {
            for reset in [false, true] {
                roundtrip(bits, reset, &[chat, chat, b"", &noise, chat]);
            }
        }
    }

    #[test]
    fn context_takeover_makes_repeats_smaller_and_reset_does_not() {
        let chat = br#"{"type":"message","room":"lobby","data":{"text":"hello there"}}"#;
        let sizes = |reset| {
            let mut d = Deflater::new(15, reset);
            (0..2)
                .map(|_| {
                    let mut w = Vec::new();
                    d.compress(chat, true, &mut w);
                    w.len()
                })
                .collect::<Vec<_>>()
        };
        let kept = sizes(false);
        assert!(kept[1] < kept[0] / 2, "{kept:?}");
        let reset = sizes(true);
        assert_eq!(reset[0], reset[1]);
    }

    #[test]
    fn codecs_without_context_hold_no_state_between_messages() {
        let text = "a message, a message, a message, a message".repeat(3);
        let (whole, half) = (text.as_bytes(), &text.as_bytes()[..40]);
        let mut d = Deflater::new(15, true);
        let mut i = Inflater::new(15, true);
        assert!(!d.holds_state() && !i.holds_state());
        let mut wire = Vec::new();
        d.compress(whole, true, &mut wire);
        let mut back = Vec::new();
        i.inflate(&wire, true, 1 << 20, &mut back).unwrap();
        assert_eq!(back, whole);
        assert!(!d.holds_state() && !i.holds_state());
        // In the middle of a message the state is held, and not given up.
        let mut first = Vec::new();
        d.compress(half, false, &mut first);
        assert!(d.holds_state());
        assert!(!d.release());
        // Meanwhile another codec on this thread takes a kept state and gives it back.
        let mut other = Deflater::new(15, true);
        let mut wire = Vec::new();
        other.compress(whole, true, &mut wire);
        let mut back = Vec::new();
        Inflater::new(15, true)
            .inflate(&wire, true, 1 << 20, &mut back)
            .unwrap();
        assert_eq!(back, whole);
        let mut rest = Vec::new();
        d.compress(&whole[40..], true, &mut rest);
        let mut back = Vec::new();
        i.inflate(&first, false, 1 << 20, &mut back).unwrap();
        assert!(i.holds_state());
        i.inflate(&rest, true, 1 << 20, &mut back).unwrap();
        assert_eq!(back, whole);
        assert!(!d.holds_state() && !i.holds_state());
    }

    #[test]
    fn a_deflater_with_context_released_between_messages_is_still_read() {
        let chat = br#"{"type":"message","room":"lobby","data":{"text":"hello there"}}"#;
        let mut d = Deflater::new(15, false);
        let mut i = Inflater::new(15, false);
        let mut sizes = Vec::new();
        for n in 0..4 {
            if n == 2 {
                assert!(d.release());
                assert!(!d.holds_state());
            }
            let mut wire = Vec::new();
            d.compress(chat, true, &mut wire);
            sizes.push(wire.len());
            let mut back = Vec::new();
            i.inflate(&wire, true, 1 << 20, &mut back).unwrap();
            assert_eq!(back, chat);
            assert!(i.holds_state(), "the peer's context is kept");
        }
        // Released, the next message starts afresh, and the one after refers back again.
        assert_eq!(sizes[2], sizes[0], "{sizes:?}");
        assert!(sizes[3] < sizes[2] / 2, "{sizes:?}");
    }

    #[test]
    fn fragments_compress_and_inflate_in_parts() {
        let text = "a fragmented, compressed message ".repeat(100);
        let mut d = Deflater::new(15, false);
        let mut i = Inflater::new(15, false);
        let parts: Vec<&[u8]> = text.as_bytes().chunks(700).collect();
        let mut back = Vec::new();
        for (n, part) in parts.iter().enumerate() {
            let fin = n + 1 == parts.len();
            let mut wire = Vec::new();
            d.compress(part, fin, &mut wire);
            i.inflate(&wire, fin, 1 << 20, &mut back).unwrap();
        }
        assert_eq!(back, text.as_bytes());
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_refused() {
        let zeros = vec![0u8; 10 << 20];
        let mut d = Deflater::new(15, true);
        let mut wire = Vec::new();
        d.compress(&zeros, true, &mut wire);
        assert!(wire.len() < zeros.len() / 50, "{}", wire.len());
        let mut out = Vec::new();
        let limit = 1 << 20;
        let r = Inflater::new(15, true).inflate(&wire, true, limit, &mut out);
        assert_eq!(r, Err(InflateError::TooLarge { limit }));
        assert!(out.capacity() <= limit, "allocated {}", out.capacity());
        // Exactly at the limit is fine.
        let mut exact = Vec::new();
        let mut wire = Vec::new();
        Deflater::new(15, true).compress(&zeros[..limit], true, &mut wire);
        Inflater::new(15, true)
            .inflate(&wire, true, limit, &mut exact)
            .unwrap();
        assert_eq!(exact.len(), limit);
        let mut out = Vec::new();
        let r = Inflater::new(15, false).inflate(&[0xff, 0xff, 0xff, 0x13], true, limit, &mut out);
        assert!(matches!(r, Err(InflateError::Corrupt(_))), "{r:?}");
    }
}
