//! Property tests: whatever is encoded decodes to the same thing, for both roles, however
//! the bytes are cut on the way.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use roomcast_ws::frame::{FrameHeader, encode_frame};
use roomcast_ws::{Config, Connection, FrameDecoder, Message, OpCode, Outbox, Role};

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

/// Payload lengths around every boundary of the length encoding.
fn payload_len(control: bool) -> BoxedStrategy<usize> {
    if control {
        (0usize..=125).boxed()
    } else {
        prop_oneof![0usize..=130, 65_530usize..=65_540, 0usize..=200_000].boxed()
    }
}

fn arbitrary_frame() -> impl Strategy<Value = (FrameHeader, Vec<u8>)> {
    (opcode(), any::<bool>(), 0u8..8)
        .prop_flat_map(|(opcode, fin, rsv)| {
            let control = opcode.is_control();
            (
                Just(opcode),
                Just(fin || control),
                Just(rsv),
                payload_len(control),
            )
        })
        .prop_flat_map(|(opcode, fin, rsv, len)| {
            let payload = proptest::collection::vec(any::<u8>(), len);
            (
                Just(FrameHeader {
                    fin,
                    rsv,
                    opcode,
                    mask: None,
                    payload_len: len as u64,
                }),
                payload,
            )
        })
}

/// Cuts `wire` at the given points (taken modulo its length).
fn chunks(wire: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    points.push(wire.len());
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(wire[at..p].to_vec());
        at = p;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip_in_both_roles(
        (header, payload) in arbitrary_frame(),
        sender_is_client in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let (sender, receiver) = if sender_is_client { (Role::Client, Role::Server) } else { (Role::Server, Role::Client) };
        let mask = sender.masks_outgoing().then_some([0xa1, 0xb2, 0xc3, 0xd4]);
        let mut out = Outbox::new();
        encode_frame(&mut out, header, Bytes::from(payload.clone()), mask);
        let wire: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();

        let mut decoder = FrameDecoder::new(receiver, 1 << 20);
        decoder.set_allowed_rsv(0b111);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in chunks(&wire, &cuts) {
            buf.extend_from_slice(&piece);
            while let Some(f) = decoder.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        prop_assert_eq!(frames.len(), 1);
        let f = &frames[0];
        prop_assert_eq!((f.header.fin, f.header.rsv, f.header.opcode), (header.fin, header.rsv, header.opcode));
        prop_assert_eq!(f.header.mask, mask);
        prop_assert_eq!(&f.payload[..], &payload[..]);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn messages_round_trip_through_fragmentation(
        messages in proptest::collection::vec(
            prop_oneof![
                ".{0,300}".prop_map(Message::text),
                proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
            ],
            1..8,
        ),
        fragment_sizes in proptest::collection::vec(1usize..500, 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
        client_sends in any::<bool>(),
    ) {
        let (from, to) = if client_sends { (Role::Client, Role::Server) } else { (Role::Server, Role::Client) };
        let mut sender = Connection::new(from, Config::default());
        for (i, msg) in messages.iter().enumerate() {
            // Every other message goes out in fragments of arbitrary byte sizes.
            let (opcode, payload) = match msg {
                Message::Text(t) => (OpCode::Text, t.clone().into_bytes()),
                Message::Binary(b) => (OpCode::Binary, b.clone()),
                _ => unreachable!(),
            };
            if i % 2 == 0 || payload.is_empty() {
                sender.send(msg.clone()).unwrap();
                continue;
            }
            let mut at = 0;
            let mut first = true;
            let mut k = 0;
            while at < payload.len() {
                let end = (at + fragment_sizes[k % fragment_sizes.len()]).min(payload.len());
                let op = if first { opcode } else { OpCode::Continuation };
                sender.send_frame(op, payload.slice(at..end), end == payload.len()).unwrap();
                if k % 3 == 1 {
                    sender.send(Message::Ping(Bytes::from_static(b"mid"))).unwrap();
                }
                first = false;
                at = end;
                k += 1;
            }
        }
        let wire: Vec<u8> = sender.outbox().iter().flat_map(|b| b.iter().copied()).collect();
        let mut receiver = Connection::new(to, Config::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in chunks(&wire, &cuts) {
            buf.extend_from_slice(&piece);
            while let Some(m) = receiver.receive(&mut buf).unwrap() {
                if m.is_data() {
                    got.push(m);
                }
            }
        }
        prop_assert_eq!(got, messages);
    }
}
