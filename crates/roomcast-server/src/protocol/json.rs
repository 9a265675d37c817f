//! Building JSON text frames with one allocation.

use bytes::Bytes;
use roomcast_ws::{FrameHeader, OpCode};

/// The most a frame header takes (2 + 8, servers never mask).
const HEAD_ROOM: usize = 10;

/// A JSON object written straight after room reserved for its frame header, so that the
/// finished frame (header + text) is one buffer, sliced without a copy.
#[derive(Debug)]
pub struct JsonFrame {
    buf: Vec<u8>,
}

impl JsonFrame {
    /// Starts a frame with room for about `capacity` bytes of JSON.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(HEAD_ROOM + capacity);
        buf.resize(HEAD_ROOM, 0);
        Self { buf }
    }

    /// Appends raw bytes (already JSON).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends a JSON string literal, escaped.
    pub fn string(&mut self, s: &str) -> &mut Self {
        // serde_json's escaping; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, s);
        self
    }

    /// The JSON written so far, to append to.
    pub fn json_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends a number.
    pub fn number(&mut self, n: u64) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.buf.extend_from_slice(b.format(n).as_bytes());
        self
    }

    /// Appends `,"ref":N` when there is a ref.
    pub fn reference(&mut self, r: Option<u64>) -> &mut Self {
        if let Some(r) = r {
            self.raw(b",\"ref\":").number(r);
        }
        self
    }

    /// Finishes the text frame; returns it and where the JSON starts in it.
    pub fn finish(mut self) -> (Bytes, u8) {
        let len = self.buf.len() - HEAD_ROOM;
        let header = FrameHeader::new(OpCode::Text, len as u64);
        let mut head = [0u8; FrameHeader::MAX_SIZE];
        let n = header.write(&mut head);
        let start = HEAD_ROOM - n;
        self.buf[start..HEAD_ROOM].copy_from_slice(&head[..n]);
        (Bytes::from(self.buf).slice(start..), n as u8)
    }

    /// Finishes the text frame.
    pub fn frame(self) -> Bytes {
        self.finish().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_every_length_class() {
        for len in [0usize, 5, 125, 126, 70_000] {
            let mut f = JsonFrame::with_capacity(8);
            f.string(&"x".repeat(len));
            let (bytes, at) = f.finish();
            let expected = roomcast_ws::frame::encode_shared(
                FrameHeader::new(OpCode::Text, 0),
                &bytes[usize::from(at)..],
            );
            assert_eq!(bytes, expected);
            assert_eq!(bytes.len() - usize::from(at), len + 2);
        }
        let mut f = JsonFrame::with_capacity(8);
        f.raw(b"{\"s\":")
            .string("quote\" and \\ and \u{1}")
            .raw(b"}");
        let (bytes, at) = f.finish();
        let v: serde_json::Value = serde_json::from_slice(&bytes[usize::from(at)..]).unwrap();
        assert_eq!(v["s"], "quote\" and \\ and \u{1}");
    }
}
