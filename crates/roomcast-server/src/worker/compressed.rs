//! A fan-out's frame compressed for the members that agreed to permessage-deflate.
//!
//! Members whose compressor resets after every message (the default: the node answers
//! `server_no_context_takeover`) read the same compressed bytes, so a room message is
//! compressed at most once per fan-out and window size, and the result queued to each
//! like the plain frame. Members with context takeover compress it with their own
//! deflater, in the order their frames are queued.

use bytes::Bytes;
use roomcast_ws::Connection;

use crate::stats::Stats;

/// One fan-out's frame, compressed at most once per window size (9 to 15 bits).
#[derive(Debug, Default)]
pub(super) struct Compressed {
    /// Per window: not tried yet, or what compressing gave (`None`: left as it is,
    /// being under the threshold or not a whole data frame).
    by_window: [Option<Option<Bytes>>; 7],
    /// Times the frame was compressed (shared, or for one member).
    runs: u64,
    /// Members it was given to compressed.
    frames: u64,
}

impl Compressed {
    /// `frame` as `ws` is to be sent it: compressed for it when it agreed to
    /// permessage-deflate and the frame is at or over the threshold, else as it is.
    pub(super) fn for_connection(&mut self, ws: &mut Connection, frame: Bytes) -> Bytes {
        let compressed = match ws.shared_compression() {
            Some((bits, min_size)) => {
                let slot = &mut self.by_window[usize::from(bits.clamp(9, 15) - 9)];
                let runs = &mut self.runs;
                slot.get_or_insert_with(|| {
                    let c = roomcast_ws::deflate::compress_frame_shared(&frame, bits, min_size);
                    *runs += u64::from(c.is_some());
                    c
                })
                .clone()
            }
            // With a context of its own (or without the extension: `None` at once).
            None => {
                let c = ws.compress_frame(&frame);
                self.runs += u64::from(c.is_some());
                c
            }
        };
        match compressed {
            Some(c) => {
                self.frames += 1;
                c
            }
            None => frame,
        }
    }

    /// Forgets the frame's compressed forms, keeping the counts: the next call is for
    /// another frame (a backlog's next).
    pub(super) fn next_frame(&mut self) {
        self.by_window = Default::default();
    }

    /// Adds what it compressed, and for how many members, to the node's counters.
    pub(super) fn count(&self, stats: &Stats) {
        if self.frames > 0 {
            Stats::add(&stats.compressions, self.runs);
            Stats::add(&stats.compressed_frames, self.frames);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_ws::deflate::{DeflateConfig, Params};
    use roomcast_ws::frame::{FrameHeader, OpCode, encode_shared};
    use roomcast_ws::{Config, Role};

    fn conn(no_context: bool, bits: u8) -> Connection {
        let mut c = Connection::new(Role::Server, Config::default());
        let agreed = Params {
            server_no_context_takeover: no_context,
            client_no_context_takeover: no_context,
            server_max_window_bits: bits,
            client_max_window_bits: 15,
        };
        c.set_deflate(&agreed, &DeflateConfig::default().min_size(16));
        c
    }

    #[test]
    fn members_without_context_share_one_compression_and_the_others_get_their_own() {
        let frame = encode_shared(
            FrameHeader::new(OpCode::Text, 0),
            "a room message, a room message, a room message".as_bytes(),
        );
        let mut once = Compressed::default();
        let (mut a, mut b) = (conn(true, 15), conn(true, 15));
        let fa = once.for_connection(&mut a, frame.clone());
        let fb = once.for_connection(&mut b, frame.clone());
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "compressed twice");
        assert_eq!(fa[0] & 0x40, 0x40, "RSV1");
        // Another window gets its own; a member with context compresses on its own.
        let small = once.for_connection(&mut conn(true, 9), frame.clone());
        assert_ne!(small.as_ptr(), fa.as_ptr());
        let mut own = conn(false, 15);
        let first = once.for_connection(&mut own, frame.clone());
        let second = once.for_connection(&mut own, frame.clone());
        assert!(second.len() < first.len(), "no context kept");
        // Without the extension, or under the threshold: the frame as it is.
        let mut plain = Connection::new(Role::Server, Config::default());
        assert_eq!(once.for_connection(&mut plain, frame.clone()), frame);
        let short = encode_shared(FrameHeader::new(OpCode::Text, 0), b"short");
        let mut fresh = Compressed::default();
        assert_eq!(fresh.for_connection(&mut a, short.clone()), short);
        // Counted: 15 and 9 bits shared, 2 of its own; 5 members got it compressed.
        assert_eq!((once.runs, once.frames), (4, 5));
        assert_eq!((fresh.runs, fresh.frames), (0, 0));
    }
}
