//! The queue of encoded bytes waiting to be written.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Past this many bytes waiting, a new pong replaces one not yet begun (see
/// [`Outbox::push_pong`]).
pub const PONG_COALESCE_BYTES: usize = 16 * 1024;

/// Encoded frames waiting for the socket, in order.
///
/// Buffers are kept as they were queued (often one `Bytes` shared by many connections)
/// and handed to the driver as `IoSlice`s, so a burst of frames leaves in one vectored
/// write without being copied together.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    pub(crate) queue: VecDeque<Bytes>,
    bytes: usize,
    /// Part of the front buffer has been written: it must be finished, never dropped.
    front_started: bool,
    /// Buffers taken off the front so far, so that `pong` can name a place in the queue.
    popped: u64,
    /// Where a pong waits that has not begun to be written: a newer one takes its place.
    pong: Option<u64>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a buffer at the back.
    pub fn push(&mut self, buf: Bytes) {
        if !buf.is_empty() {
            self.bytes += buf.len();
            self.queue.push_back(buf);
        }
    }

    /// Queues a pong frame; while more than 16 KiB wait, puts it in the
    /// place of one still waiting unbegun instead: "If an endpoint receives a Ping frame
    /// and has not yet sent Pong frame(s) in response to previous Ping frame(s), the
    /// endpoint MAY elect to send a Pong frame for only the most recently processed Ping
    /// frame" (RFC 6455 section 5.5.3). So a peer that reads its pongs gets one per ping,
    /// and one that sends pings and never reads cannot grow the queue with them.
    pub fn push_pong(&mut self, frame: Bytes) {
        if self.bytes > PONG_COALESCE_BYTES
            && let Some(at) = self.pong
            && at >= self.popped
        {
            let i = (at - self.popped) as usize;
            let begun = i == 0 && self.front_started;
            if let Some(slot) = self.queue.get_mut(i)
                && !begun
            {
                self.bytes = self.bytes - slot.len() + frame.len();
                *slot = frame;
                return;
            }
        }
        self.push(frame);
        self.pong = Some(self.popped + self.queue.len() as u64 - 1);
    }

    /// Bytes waiting.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Buffers waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The buffers waiting, front first.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.queue.iter()
    }

    /// Fills `dst` with slices of the front buffers; returns how many it filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, buf) in dst.iter_mut().zip(self.queue.iter()) {
            *slot = IoSlice::new(buf);
            n += 1;
        }
        n
    }

    /// The front buffer, for writers that cannot do vectored writes.
    pub fn front(&self) -> Option<&Bytes> {
        self.queue.front()
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.bytes -= n.min(self.bytes);
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                self.front_started = true;
                return;
            }
            n -= front.len();
            self.queue.pop_front();
            self.popped += 1;
            self.front_started = false;
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.pong = None;
        self.bytes = 0;
        self.front_started = false;
    }

    /// Drops every buffer not yet begun, keeping a front buffer that is partly written
    /// (cutting it would corrupt the stream). For giving up on a slow peer before
    /// queueing a close frame.
    pub fn clear_unstarted(&mut self) {
        if self.front_started {
            self.queue.truncate(1);
            self.pong = None;
            self.bytes = self.queue.front().map_or(0, Bytes::len);
        } else {
            self.clear();
        }
    }

    /// Releases the spare capacity a burst left behind, so an idle connection keeps at
    /// most a few slots.
    pub fn shrink(&mut self) {
        self.shrink_to(4);
    }

    /// When nothing waits and more than `keep` slots are allocated, releases them all:
    /// `shrink_to(0)` leaves an idle outbox owning no memory.
    pub fn shrink_to(&mut self, keep: usize) {
        if self.queue.is_empty() && self.queue.capacity() > keep {
            self.queue = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_keeps_a_busy_queue_and_frees_an_idle_one() {
        let mut o = Outbox::new();
        for _ in 0..16 {
            o.push(Bytes::from_static(b"x"));
        }
        o.shrink_to(0);
        assert_eq!(o.len(), 16, "a queue holding frames is never shrunk");
        o.advance(16);
        o.shrink_to(64);
        assert!(o.queue.capacity() >= 16, "slots under the bound are kept");
        o.shrink();
        assert_eq!(o.queue.capacity(), 0, "over 4 slots: freed");
        o.push(Bytes::from_static(b"x"));
        o.advance(1);
        o.shrink_to(0);
        assert_eq!(o.queue.capacity(), 0);
    }

    #[test]
    fn a_pong_not_begun_gives_its_place_to_a_newer_one() {
        let mut o = Outbox::new();
        // Under the threshold every pong is queued.
        o.push_pong(Bytes::from_static(b"a"));
        o.push_pong(Bytes::from_static(b"b"));
        assert_eq!(o.len(), 2);
        o.clear();
        let big = Bytes::from(vec![0u8; PONG_COALESCE_BYTES]);
        o.push(big.slice(..PONG_COALESCE_BYTES - 3));
        o.push(Bytes::from_static(b"msg1"));
        o.push_pong(Bytes::from_static(b"pong1"));
        o.push(Bytes::from_static(b"msg2"));
        o.push_pong(Bytes::from_static(b"pong22"));
        let queued = |o: &Outbox| o.iter().map(|b| b.to_vec()).collect::<Vec<_>>();
        assert_eq!(&queued(&o)[1..], [&b"msg1"[..], b"pong22", b"msg2"]);
        assert_eq!(o.len_bytes(), PONG_COALESCE_BYTES - 3 + 14);
        // Once the pong has begun to be written, the next one queues behind.
        o.advance(PONG_COALESCE_BYTES - 3 + 4 + 2);
        o.push(big.clone());
        o.push_pong(Bytes::from_static(b"pong3"));
        o.push_pong(Bytes::from_static(b"pong4"));
        assert_eq!(&queued(&o)[..2], [&b"ng22"[..], b"msg2"]);
        assert_eq!(&queued(&o)[3..], [&b"pong4"[..]]);
        // A flood behind a full queue leaves one.
        for _ in 0..1000 {
            o.push_pong(Bytes::from_static(b"p"));
        }
        assert_eq!(o.len(), 4);
        // Dropped with the rest: the next is queued, not put in a stale place.
        o.clear();
        o.push(big.clone());
        o.push(Bytes::from_static(b"data"));
        o.push_pong(Bytes::from_static(b"q"));
        assert_eq!(&queued(&o)[1..], [&b"data"[..], b"q"]);
    }

    #[test]
    fn advance_across_buffers() {
        let mut o = Outbox::new();
        o.push(Bytes::from_static(b"abc"));
        o.push(Bytes::new());
        o.push(Bytes::from_static(b"defg"));
        assert_eq!((o.len(), o.len_bytes()), (2, 7));
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(o.io_slices(&mut slices), 2);
        o.advance(4);
        assert_eq!((o.len(), o.len_bytes()), (1, 3));
        assert_eq!(&o.front().unwrap()[..], b"efg");
        o.advance(3);
        assert!(o.is_empty());
        assert_eq!(o.len_bytes(), 0);
    }

    #[test]
    fn clear_unstarted_keeps_a_partly_written_front() {
        let mut o = Outbox::new();
        o.push(Bytes::from_static(b"abc"));
        o.push(Bytes::from_static(b"def"));
        o.clear_unstarted();
        assert!(o.is_empty());
        o.push(Bytes::from_static(b"abc"));
        o.push(Bytes::from_static(b"def"));
        o.advance(1);
        o.clear_unstarted();
        assert_eq!((o.len(), o.len_bytes()), (1, 2));
        assert_eq!(&o.front().unwrap()[..], b"bc");
    }
}
