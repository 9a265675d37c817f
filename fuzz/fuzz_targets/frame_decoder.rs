//! Arbitrary bytes, cut into arbitrary chunks, received by a `Connection` in both roles.
//!
//! Input layout (so that seeds are just a flag byte in front of real frames):
//! - byte 0: bits 0-3 the number of cut points, bits 4-5 the message size limit
//!   (index into `MESSAGE_LIMITS`), bit 6 allow RSV1 (as a negotiated extension would);
//! - then two bytes per cut point (u16 LE, taken modulo the wire length + 1);
//! - the rest is the wire.
//!
//! Checked, besides "never panics":
//! - every message obeys the protocol (text is UTF-8, control payloads <= 125, sizes
//!   within the limits, close codes valid);
//! - an error leaves the connection `Failed`, a close leaves it `Closed`, and from then
//!   on `receive` returns `Ok(None)` and discards its input;
//! - what the connection queued in reply (pongs, the close echo, the failing close) is
//!   exactly what the rules call for, and a peer of the other role decodes it cleanly;
//! - the outcome does not depend on how the bytes were cut;
//! - `FrameDecoder` alone: payload lengths, masking direction, reserved bits, and
//!   `FrameHeader::parse` / `write` round-trip byte for byte.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roomcast_ws::frame::RSV1;
use roomcast_ws::{
    CloseFrame, Config, Connection, FrameDecoder, FrameHeader, Message, ProtocolError, Role,
    State,
};

const MAX_FRAME: usize = 64 << 10;
const MESSAGE_LIMITS: [usize; 4] = [64 << 10, 1000, 125, 0];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let n_cuts = usize::from(flags & 0x0f);
    let (cut_bytes, wire) = rest.split_at((2 * n_cuts).min(rest.len()));
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (wire.len() + 1))
        .collect();
    cuts.sort_unstable();
    let config = Config::default()
        .max_frame_size(MAX_FRAME)
        .max_message_size(MESSAGE_LIMITS[usize::from((flags >> 4) & 3)]);
    let rsv = if flags & 0x40 != 0 { RSV1 } else { 0 };

    check_header_round_trip(wire);
    for role in [Role::Server, Role::Client] {
        check_frame_decoder(role, rsv, wire);
        let whole = receive_all(role, config, rsv, wire, &[]);
        let chunked = receive_all(role, config, rsv, wire, &cuts);
        assert_eq!(whole, chunked, "{role:?}: the outcome depends on the cuts {cuts:?}");
    }
});

/// What one connection made of the input.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Result<Message, ProtocolError>>,
    state: State,
    /// The outbox as decoded by the peer.
    replies: Vec<Message>,
}

fn receive_all(role: Role, config: Config, rsv: u8, wire: &[u8], cuts: &[usize]) -> Outcome {
    let mut conn = Connection::new(role, config);
    conn.receiver_mut().decoder_mut().set_allowed_rsv(rsv);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut expected_replies = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([wire.len()]) {
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        loop {
            let before = conn.state();
            match conn.receive(&mut buf) {
                Ok(None) => {
                    if before != State::Open {
                        assert!(buf.is_empty(), "input kept after the end");
                    }
                    assert_eq!(conn.state(), before);
                    break;
                }
                Ok(Some(msg)) => {
                    assert_eq!(before, State::Open, "{msg:?} decoded after the end");
                    check_message(&msg, &config);
                    match &msg {
                        Message::Ping(p) => expected_replies.push(Message::Pong(p.clone())),
                        Message::Close(frame) => {
                            assert_eq!(conn.state(), State::Closed);
                            let echo = frame.as_ref().map(|f| CloseFrame {
                                code: f.code,
                                reason: Default::default(),
                            });
                            expected_replies.push(Message::Close(echo));
                        }
                        _ => assert_eq!(conn.state(), State::Open),
                    }
                    events.push(Ok(msg));
                }
                Err(e) => {
                    assert_eq!(before, State::Open, "{e:?} after the end");
                    assert_eq!(conn.state(), State::Failed, "{e:?} did not fail the connection");
                    assert!(conn.should_close_transport());
                    let code = e.close_code();
                    assert!(code.is_valid_on_wire(), "{e:?} maps to {code:?}");
                    expected_replies.push(Message::Close(Some(CloseFrame::new(code, e.to_string()))));
                    events.push(Err(e));
                    // Loop on: the next call must be Ok(None) and discard the buffer.
                }
            }
        }
    }
    // Still nothing after the end, whatever arrives.
    if conn.state() != State::Open {
        let mut more = BytesMut::from(&[0x81u8, 0x80, 0, 0, 0, 0, 0x81, 0x00][..]);
        assert_eq!(conn.receive(&mut more), Ok(None));
        assert!(more.is_empty());
    }
    let replies = peer_decode(role, &mut conn);
    assert_eq!(replies, expected_replies, "{role:?}: wrong replies queued");
    Outcome {
        events,
        state: conn.state(),
        replies,
    }
}

fn check_message(msg: &Message, config: &Config) {
    match msg {
        Message::Text(t) => {
            assert!(std::str::from_utf8(t.as_bytes()).is_ok(), "text is not UTF-8: {t:?}");
            assert_eq!(t.as_str().len(), t.len());
            assert!(t.len() <= config.max_message_size);
        }
        Message::Binary(b) => assert!(b.len() <= config.max_message_size),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
        Message::Close(Some(f)) => {
            assert!(f.code.is_valid_on_wire(), "received close code {:?}", f.code);
            assert!(f.reason.len() <= CloseFrame::MAX_REASON);
            assert!(std::str::from_utf8(f.reason.as_bytes()).is_ok());
        }
        Message::Close(None) => {}
    }
}

/// Decodes what `conn` queued with a connection of the other role: it must be valid.
fn peer_decode(role: Role, conn: &mut Connection) -> Vec<Message> {
    let peer_role = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let mut wire = BytesMut::with_capacity(conn.outbox().len_bytes());
    for chunk in conn.outbox().iter() {
        wire.extend_from_slice(chunk);
    }
    assert_eq!(wire.len(), conn.outbox().len_bytes());
    let mut peer = Connection::new(peer_role, Config::default());
    let mut got = Vec::new();
    loop {
        match peer.receive(&mut wire) {
            Ok(Some(msg)) => got.push(msg),
            Ok(None) => break,
            Err(e) => panic!("{role:?} queued bytes its peer cannot decode: {e:?}, {got:?}"),
        }
    }
    assert!(wire.is_empty(), "{role:?} queued a partial frame");
    got
}

fn check_frame_decoder(role: Role, rsv: u8, wire: &[u8]) {
    let mut decoder = FrameDecoder::new(role, MAX_FRAME);
    decoder.set_allowed_rsv(rsv);
    let mut buf = BytesMut::from(wire);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                let h = frame.header;
                assert_eq!(frame.payload.len() as u64, h.payload_len);
                assert!(frame.payload.len() <= MAX_FRAME);
                assert_eq!(h.mask.is_some(), role == Role::Server, "masking direction");
                assert_eq!(h.rsv & !rsv, 0, "reserved bits");
                if h.opcode.is_control() {
                    assert!(h.fin && h.payload_len <= 125, "control frame {h:?}");
                }
                assert_eq!(decoder.remaining(), 0);
                assert!(decoder.partial().is_none());
            }
            Ok(None) => {
                if let Some((h, unmasked)) = decoder.partial() {
                    assert!(unmasked <= buf.len());
                    assert_eq!(unmasked as u64 + decoder.remaining() as u64, h.payload_len);
                } else {
                    assert_eq!(decoder.remaining(), 0);
                }
                break;
            }
            Err(_) => break,
        }
    }
}

fn check_header_round_trip(wire: &[u8]) {
    if let Ok(Some((h, n))) = FrameHeader::parse(wire) {
        assert!(n <= wire.len() && n <= FrameHeader::MAX_SIZE);
        assert_eq!(h.encoded_len(), n);
        let mut out = [0u8; FrameHeader::MAX_SIZE];
        assert_eq!(h.write(&mut out), n);
        assert_eq!(&out[..n], &wire[..n], "{h:?} does not encode back to its bytes");
        // A complete header parses the same from exactly its own bytes.
        assert_eq!(FrameHeader::parse(&wire[..n]), Ok(Some((h, n))));
    }
}
