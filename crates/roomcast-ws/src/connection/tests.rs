//! A client and a server connection joined by in-memory byte pipes: the state machine
//! tested end to end without sockets.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::close::CloseCode;
use crate::frame::{FrameHeader, apply_mask};

struct Pair {
    client: Connection,
    server: Connection,
    /// Bytes in flight towards the server and towards the client.
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Pair {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        Self {
            client: Connection::new(Role::Client, config),
            server: Connection::new(Role::Server, config),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    fn drain(out: &mut Outbox, into: &mut BytesMut) {
        for b in out.iter() {
            into.extend_from_slice(b);
        }
        out.clear();
    }

    /// Moves what each side queued to the other; returns what each received.
    fn pump(&mut self) -> (Vec<Message>, Vec<Message>) {
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        loop {
            Self::drain(self.client.outbox(), &mut self.to_server);
            Self::drain(self.server.outbox(), &mut self.to_client);
            let mut progress = false;
            while let Ok(Some(m)) = self.server.receive(&mut self.to_server) {
                at_server.push(m);
                progress = true;
            }
            while let Ok(Some(m)) = self.client.receive(&mut self.to_client) {
                at_client.push(m);
                progress = true;
            }
            if !progress && self.client.outbox().is_empty() && self.server.outbox().is_empty() {
                return (at_server, at_client);
            }
        }
    }
}

/// A masked client frame, built by hand so it can break the rules.
fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let header = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 7,
        opcode: OpCode::from_bits(b0 & 0xf).expect("test opcode"),
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; FrameHeader::MAX_SIZE];
    let n = header.write(&mut head);
    let mut out = head[..n].to_vec();
    let mut body = payload.to_vec();
    apply_mask(&mut body, key, 0);
    out.extend_from_slice(&body);
    out
}

fn server_gets(wire: &[u8]) -> (Result<Vec<Message>, ProtocolError>, Connection) {
    let mut server = Connection::new(
        Role::Server,
        Config::default().max_message_size(1000).max_frame_size(800),
    );
    let mut buf = BytesMut::from(wire);
    let mut got = Vec::new();
    loop {
        match server.receive(&mut buf) {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (Ok(got), server),
            Err(e) => return (Err(e), server),
        }
    }
}

/// The close frame the server queued, parsed.
fn queued_close(server: &mut Connection) -> Option<CloseFrame> {
    let mut client = Connection::new(Role::Client, Config::default());
    let mut wire = BytesMut::new();
    Pair::drain(server.outbox(), &mut wire);
    let mut last = None;
    while let Ok(Some(m)) = client.receive(&mut wire) {
        last = Some(m);
    }
    match last {
        Some(Message::Close(f)) => f,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[test]
fn messages_both_ways() {
    let mut p = Pair::new();
    p.client.send(Message::text("hello")).unwrap();
    p.client.send(Message::binary(vec![0u8, 1, 2])).unwrap();
    p.client.send(Message::text("")).unwrap();
    p.server
        .send(Message::binary(Bytes::from(vec![7u8; 70_000])))
        .unwrap();
    let (at_server, at_client) = p.pump();
    assert_eq!(
        at_server,
        [
            Message::text("hello"),
            Message::binary(vec![0u8, 1, 2]),
            Message::text("")
        ]
    );
    assert_eq!(at_client, [Message::binary(vec![7u8; 70_000])]);
}

#[test]
fn fragments_with_a_ping_in_between_and_an_auto_pong() {
    let mut p = Pair::new();
    p.client
        .send_frame(OpCode::Text, Bytes::from_static("κό".as_bytes()), false)
        .unwrap();
    p.client
        .send(Message::Ping(Bytes::from_static(b"p1")))
        .unwrap();
    // the split falls inside a two-byte code point
    let rest = "σμε".as_bytes();
    p.client
        .send_frame(
            OpCode::Continuation,
            Bytes::copy_from_slice(&rest[..1]),
            false,
        )
        .unwrap();
    p.client
        .send_frame(
            OpCode::Continuation,
            Bytes::copy_from_slice(&rest[1..]),
            true,
        )
        .unwrap();
    let (at_server, at_client) = p.pump();
    assert_eq!(
        at_server,
        [
            Message::Ping(Bytes::from_static(b"p1")),
            Message::text("κόσμε")
        ]
    );
    assert_eq!(at_client, [Message::Pong(Bytes::from_static(b"p1"))]);
}

#[test]
fn sender_keeps_fragments_in_order() {
    let mut c = Connection::new(Role::Client, Config::default());
    assert!(matches!(
        c.send_frame(OpCode::Continuation, Bytes::new(), true),
        Err(SendError::FragmentOutOfSequence(_))
    ));
    c.send_frame(OpCode::Binary, Bytes::new(), false).unwrap();
    assert!(matches!(
        c.send(Message::text("x")),
        Err(SendError::FragmentOutOfSequence(_))
    ));
    assert_eq!(
        c.send(Message::Ping(Bytes::from(vec![0u8; 126]))),
        Err(SendError::ControlFrameTooLong(126))
    );
}

#[test]
fn close_started_by_the_client() {
    let mut p = Pair::new();
    p.client
        .close(Some(CloseFrame::new(CloseCode(4000), "bye")))
        .unwrap();
    assert_eq!(p.client.state(), State::CloseSent);
    assert_eq!(p.client.send(Message::text("late")), Err(SendError::Closed));
    let (at_server, at_client) = p.pump();
    assert_eq!(
        at_server,
        [Message::Close(Some(CloseFrame::new(
            CloseCode(4000),
            "bye"
        )))]
    );
    // the server echoes the code
    assert_eq!(
        at_client,
        [Message::Close(Some(CloseFrame::new(CloseCode(4000), "")))]
    );
    assert_eq!(
        (p.client.state(), p.server.state()),
        (State::Closed, State::Closed)
    );
    // "the server MUST close the underlying TCP connection immediately"; the client waits
    assert!(p.server.should_close_transport());
    assert!(!p.client.should_close_transport());
}

#[test]
fn close_started_by_the_server_and_without_a_body() {
    let mut p = Pair::new();
    p.server.close(None).unwrap();
    let (at_server, at_client) = p.pump();
    assert_eq!(at_client, [Message::Close(None)]);
    assert_eq!(at_server, [Message::Close(None)]);
    assert_eq!(
        (p.client.state(), p.server.state()),
        (State::Closed, State::Closed)
    );
}

#[test]
fn data_still_arrives_while_our_close_is_in_flight() {
    let mut p = Pair::new();
    p.server
        .close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "drain")))
        .unwrap();
    p.client.send(Message::text("in flight")).unwrap();
    let (at_server, _) = p.pump();
    assert_eq!(at_server[0], Message::text("in flight"));
    assert!(matches!(at_server[1], Message::Close(_)));
}

#[test]
fn protocol_errors_fail_with_the_right_close_code() {
    let cases: Vec<(Vec<u8>, CloseCode)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], CloseCode::PROTOCOL_ERROR), // unmasked
        (client_frame(0xc1, b"x"), CloseCode::PROTOCOL_ERROR),     // RSV1 without an extension
        (vec![0x83, 0x80, 1, 2, 3, 4], CloseCode::PROTOCOL_ERROR), // reserved opcode
        (client_frame(0x80, b"x"), CloseCode::PROTOCOL_ERROR),     // continuation of nothing
        (
            [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(),
            CloseCode::PROTOCOL_ERROR,
        ),
        (client_frame(0x88, &[0x03]), CloseCode::PROTOCOL_ERROR), // close body of 1 byte
        (client_frame(0x88, &[0x03, 0xed]), CloseCode::PROTOCOL_ERROR), // 1005 on the wire
        (
            client_frame(0x88, &[0x03, 0xe8, 0xc0]),
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            client_frame(0x81, b"\xce\xba\xff"),
            CloseCode::INVALID_PAYLOAD,
        ),
        (client_frame(0x82, &[0; 801]), CloseCode::TOO_BIG), // frame limit 800
        (
            [client_frame(0x02, &[0; 600]), client_frame(0x80, &[0; 401])].concat(),
            CloseCode::TOO_BIG,
        ),
    ];
    for (wire, code) in cases {
        let (got, mut server) = server_gets(&wire);
        let err = got.expect_err(&format!("{wire:x?} must fail"));
        assert_eq!(err.close_code(), code, "{err}");
        assert_eq!(server.state(), State::Failed);
        assert!(server.should_close_transport());
        let close = queued_close(&mut server).expect("a close body");
        assert_eq!(close.code, code);
        assert_eq!(close.reason.as_str(), err.to_string());
    }
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    // Autobahn 6.4.4: one text frame arriving in pieces; the invalid byte is in the second.
    let wire = client_frame(
        0x81,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",
    );
    let header_len = 6;
    let mut server = Connection::new(Role::Server, Config::default());
    let mut buf = BytesMut::from(&wire[..header_len + 11]);
    assert_eq!(server.receive(&mut buf), Ok(None), "valid so far");
    buf.extend_from_slice(&wire[header_len + 11..header_len + 13]);
    assert_eq!(
        server.receive(&mut buf),
        Err(ProtocolError::InvalidUtf8),
        "fails at \\xf4\\x90"
    );
}

#[test]
fn invalid_utf8_fails_at_the_fragment_not_the_message() {
    // Autobahn 6.4.1: the first fragment is valid, the second ends the sequence wrongly,
    // the third (never sent) would finish the message.
    let mut server = Connection::new(Role::Server, Config::default());
    let mut buf = BytesMut::from(&client_frame(0x01, "κόσμε".as_bytes())[..]);
    assert_eq!(server.receive(&mut buf), Ok(None));
    buf.extend_from_slice(&client_frame(0x00, b"\xf4\x90\x80\x80")[..]);
    assert_eq!(server.receive(&mut buf), Err(ProtocolError::InvalidUtf8));
}

#[test]
fn nothing_is_decoded_after_close() {
    let wire = [
        client_frame(0x88, &[0x03, 0xe8]),
        client_frame(0x81, b"after"),
    ]
    .concat();
    let (got, server) = server_gets(&wire);
    assert_eq!(
        got.unwrap(),
        [Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]
    );
    assert_eq!(server.state(), State::Closed);
}

#[test]
fn no_pong_after_our_close() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.close(None).unwrap();
    server.outbox().clear();
    let mut buf = BytesMut::from(&client_frame(0x89, b"late")[..]);
    assert_eq!(
        server.receive(&mut buf),
        Ok(Some(Message::Ping(Bytes::from_static(b"late"))))
    );
    assert!(server.outbox().is_empty());
}

#[test]
fn a_frame_and_a_message_of_exactly_the_limit_pass() {
    // server_gets: frames up to 800 bytes, messages up to 1000; one byte more fails
    // (protocol_errors_fail_with_the_right_close_code).
    let (got, _) = server_gets(&client_frame(0x82, &[7; 800]));
    assert_eq!(got.unwrap(), [Message::binary(vec![7u8; 800])]);
    let (got, _) = server_gets(&client_frame(0x89, &[9; 125]));
    assert_eq!(got.unwrap(), [Message::Ping(Bytes::from(vec![9u8; 125]))]);
    let wire = [
        client_frame(0x01, &[b'a'; 600]),
        client_frame(0x80, &[b'b'; 400]),
    ]
    .concat();
    let (got, _) = server_gets(&wire);
    let text = format!("{}{}", "a".repeat(600), "b".repeat(400));
    assert_eq!(got.unwrap(), [Message::text(text)]);
}

#[test]
fn a_single_frame_message_is_held_to_the_message_limit() {
    let config = Config::default()
        .max_message_size(1000)
        .max_frame_size(2000);
    for (len, ok) in [(1000, true), (1001, false)] {
        let mut server = Connection::new(Role::Server, config);
        let mut buf = BytesMut::from(&client_frame(0x81, &vec![b'x'; len])[..]);
        let got = server.receive(&mut buf);
        if ok {
            assert_eq!(got, Ok(Some(Message::text("x".repeat(len)))), "{len} bytes");
        } else {
            assert_eq!(
                got,
                Err(ProtocolError::MessageTooLarge {
                    size: 1001,
                    limit: 1000
                })
            );
        }
    }
}

#[test]
fn read_hint_is_what_the_frame_in_progress_still_needs() {
    let mut server = Connection::new(Role::Server, Config::default());
    assert_eq!(server.read_hint(), 0, "between frames");
    // 300 bytes: a 2 + 2 byte header and a 4-byte key.
    let wire = client_frame(0x82, &[5; 300]);
    let mut buf = BytesMut::from(&wire[..8 + 100]);
    assert_eq!(server.receive(&mut buf), Ok(None));
    assert_eq!(server.read_hint(), 200);
    buf.extend_from_slice(&wire[8 + 100..]);
    assert_eq!(
        server.receive(&mut buf),
        Ok(Some(Message::binary(vec![5u8; 300])))
    );
    assert_eq!(server.read_hint(), 0, "between frames again");
}

#[test]
fn the_receiver_reports_a_close_once_received() {
    let (mut rx, _, _) = Connection::new(Role::Server, Config::default()).into_parts();
    let mut buf = BytesMut::from(&client_frame(0x81, b"before")[..]);
    assert_eq!(rx.receive(&mut buf), Ok(Some(Message::text("before"))));
    assert!(!rx.is_close_received());
    buf.extend_from_slice(&client_frame(0x88, &[0x03, 0xe8]));
    assert!(matches!(rx.receive(&mut buf), Ok(Some(Message::Close(_)))));
    assert!(rx.is_close_received());
}

#[test]
fn abort_queues_its_close_frame_unless_one_was_sent() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.abort(CloseFrame::new(CloseCode(4008), "slow consumer"));
    assert_eq!(server.state(), State::Failed);
    assert!(server.should_close_transport());
    let close = queued_close(&mut server).expect("a close body");
    assert_eq!(
        (close.code, close.reason.as_str()),
        (CloseCode(4008), "slow consumer")
    );

    let mut server = Connection::new(Role::Server, Config::default());
    server.close(None).unwrap();
    server.outbox().clear();
    server.abort(CloseFrame::new(CloseCode::GOING_AWAY, "late"));
    assert!(
        server.outbox().is_empty(),
        "a second close frame was queued"
    );
    assert_eq!(server.state(), State::Failed);
}

#[test]
fn nothing_is_sent_after_an_abort_even_without_a_close_frame() {
    // 1006 may not go on the wire: no close frame is queued, but the connection is failed.
    let mut server = Connection::new(Role::Server, Config::default());
    server.abort(CloseFrame::new(CloseCode::ABNORMAL, ""));
    assert_eq!(server.state(), State::Failed);
    assert!(server.outbox().is_empty());
    assert_eq!(server.send(Message::text("late")), Err(SendError::Closed));
    assert_eq!(
        server.send_frame(OpCode::Binary, Bytes::from_static(b"late"), true),
        Err(SendError::Closed)
    );
    assert_eq!(server.close(None), Err(SendError::Closed));
    assert!(server.outbox().is_empty());
}

#[test]
fn reply_sends_no_pong_once_not_open() {
    // `open` is the caller's word that its own close went out; a driver that tracks it
    // apart from the sender (split halves) relies on it.
    let ping = Ok(Some(Message::Ping(Bytes::from_static(b"p"))));
    let mut tx = Sender::new(Role::Server);
    let mut out = Outbox::new();
    reply(&ping, &mut tx, &mut out, false);
    assert!(out.is_empty());
    reply(&ping, &mut tx, &mut out, true);
    let mut wire = BytesMut::new();
    Pair::drain(&mut out, &mut wire);
    assert_eq!(&wire[..], [0x8a, 0x01, b'p']);
}

#[test]
fn the_sender_refuses_what_may_not_go_on_the_wire() {
    let mut tx = Sender::new(Role::Server);
    let mut out = Outbox::new();
    // The largest control payload goes; one byte more does not (sender_keeps_fragments_in_order).
    tx.send(Message::Ping(Bytes::from(vec![1u8; 125])), &mut out)
        .unwrap();
    assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 2 + 125);
    out.clear();
    // Codes that may not be sent (1005, 1006) are refused and the close is not marked sent.
    for code in [CloseCode::NO_STATUS, CloseCode::ABNORMAL] {
        assert_eq!(
            tx.close(Some(CloseFrame::new(code, "")), &mut out),
            Err(SendError::InvalidCloseCode(code.0))
        );
        assert!(out.is_empty());
        assert!(!tx.is_close_sent());
    }
    tx.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")), &mut out)
        .unwrap();
    assert!(tx.is_close_sent());
    assert!(!out.is_empty());
}

#[test]
fn a_ping_flood_unread_leaves_few_pongs_and_answers_the_latest_ping() {
    let mut pair = Pair::new();
    for i in 0..10_000u32 {
        pair.client
            .send(Message::Ping(Bytes::from(format!("{i:0>100}"))))
            .unwrap();
    }
    Pair::drain(pair.client.outbox(), &mut pair.to_server);
    let mut pings = 0;
    while let Some(msg) = pair.server.receive(&mut pair.to_server).unwrap() {
        assert!(matches!(msg, Message::Ping(_)));
        pings += 1;
    }
    assert_eq!(pings, 10_000, "every ping is still reported");
    let queued = pair.server.outbox().len_bytes();
    assert!(
        queued <= crate::outbox::PONG_COALESCE_BYTES + 2 * 102,
        "{queued} bytes of pongs wait"
    );
    Pair::drain(pair.server.outbox(), &mut pair.to_client);
    let mut last = None;
    while let Some(msg) = pair.client.receive(&mut pair.to_client).unwrap() {
        last = Some(msg);
    }
    assert_eq!(
        last,
        Some(Message::Pong(Bytes::from(format!("{:0>100}", 9999))))
    );
}

/// A pair that agreed on permessage-deflate with `agreed`.
fn deflate_pair(agreed: crate::deflate::Params, config: Config) -> Pair {
    let mut p = Pair::with(config);
    let ours = crate::deflate::DeflateConfig::default();
    p.client.set_deflate(&agreed, &ours);
    p.server.set_deflate(&agreed, &ours);
    p
}

fn agreed(no_context: bool, bits: u8) -> crate::deflate::Params {
    crate::deflate::Params {
        server_no_context_takeover: no_context,
        client_no_context_takeover: no_context,
        server_max_window_bits: bits,
        client_max_window_bits: bits,
    }
}

#[test]
fn compressed_messages_both_ways_whole_and_fragmented_with_a_ping_between() {
    for (no_context, bits) in [(false, 15), (true, 15), (false, 8), (true, 9)] {
        let mut p = deflate_pair(agreed(no_context, bits), Config::default());
        let chat = r#"{"type":"message","room":"lobby","data":"hi"}"#;
        for _ in 0..3 {
            p.client.send(Message::text(chat)).unwrap();
            p.server.send(Message::binary(chat.repeat(50))).unwrap();
        }
        // On the wire: RSV1 on every data frame, and smaller than the text.
        let wire: Vec<u8> = p.server.outbox().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(wire[0] & 0x40, 0x40, "RSV1 on the first frame");
        assert!(wire.len() < 3 * chat.len() * 50 / 4, "{}", wire.len());
        p.client
            .send_frame(OpCode::Text, Bytes::from_static(b"frag"), false)
            .unwrap();
        p.client
            .send(Message::Ping(Bytes::from_static(b"p")))
            .unwrap();
        p.client
            .send_frame(OpCode::Continuation, Bytes::from_static(b"mented"), false)
            .unwrap();
        p.client
            .send_frame(OpCode::Continuation, Bytes::new(), true)
            .unwrap();
        p.client.send(Message::text("")).unwrap();
        let (at_server, at_client) = p.pump();
        let texts: Vec<_> = at_server
            .iter()
            .filter_map(|m| match m {
                Message::Text(t) => Some(t.as_str().to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(
            texts,
            [chat, chat, chat, "fragmented", ""],
            "{no_context} {bits}"
        );
        assert!(at_server.contains(&Message::Ping(Bytes::from_static(b"p"))));
        assert_eq!(
            at_client,
            vec![Message::binary(chat.repeat(50)); 3]
                .into_iter()
                .chain([Message::Pong(Bytes::from_static(b"p"))])
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn below_the_threshold_a_message_goes_uncompressed() {
    let mut server = Connection::new(Role::Server, Config::default());
    let ours = crate::deflate::DeflateConfig {
        min_size: 100,
        ..Default::default()
    };
    server.set_deflate(&agreed(true, 15), &ours);
    server.send(Message::text("short")).unwrap();
    server.send(Message::text("long ".repeat(40))).unwrap();
    let frames: Vec<Bytes> = server.outbox().iter().cloned().collect();
    assert_eq!(frames[0][0], 0x81, "short: no RSV1");
    let long = frames.iter().skip(1).find(|f| f[0] & 0x0f == 1).unwrap();
    assert_eq!(long[0], 0xc1, "long: RSV1");
}

#[test]
fn rsv1_where_deflate_forbids_it_and_broken_data_fail_the_connection() {
    let mut compressed = Vec::new();
    crate::deflate::Deflater::new(15, true).compress(b"hello", true, &mut compressed);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // RSV1 on a ping, on a continuation.
        (client_frame(0xc9, b"x"), 1002),
        (
            [client_frame(0x41, &compressed), client_frame(0xc0, b"")].concat(),
            1002,
        ),
        // Not DEFLATE at all.
        (client_frame(0xc1, &[0xff, 0xff, 0xff, 0x13]), 1007),
        // Inflates to invalid UTF-8 in a text message.
        (
            {
                let mut w = Vec::new();
                crate::deflate::Deflater::new(15, true).compress(&[0xc3, 0x28], true, &mut w);
                client_frame(0xc1, &w)
            },
            1007,
        ),
    ];
    for (wire, code) in cases {
        let mut server = Connection::new(Role::Server, Config::default());
        server.set_deflate(&agreed(true, 15), &Default::default());
        let mut buf = BytesMut::from(&wire[..]);
        let r = loop {
            match server.receive(&mut buf) {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        assert!(r.is_err(), "{wire:02x?}: {r:?}");
        assert_eq!(queued_close(&mut server).map(|f| f.code.0), Some(code));
    }
    // Without deflate agreed, RSV1 is refused as any reserved bit.
    let (r, _) = server_gets(&client_frame(0xc1, &compressed));
    assert!(
        matches!(r, Err(ProtocolError::NonZeroReservedBits(_))),
        "{r:?}"
    );
}

#[test]
fn a_deflate_bomb_closes_with_1009_having_held_no_more_than_the_limit() {
    let mut bomb = Vec::new();
    crate::deflate::Deflater::new(15, true).compress(&vec![b'a'; 4 << 20], true, &mut bomb);
    assert!(bomb.len() < 64 * 1024);
    let mut server = Connection::new(Role::Server, Config::default().max_message_size(1 << 20));
    server.set_deflate(&agreed(true, 15), &Default::default());
    let mut buf = BytesMut::from(&client_frame(0xc1, &bomb)[..]);
    let r = server.receive(&mut buf);
    assert!(
        matches!(r, Err(ProtocolError::MessageTooLarge { .. })),
        "{r:?}"
    );
    assert_eq!(queued_close(&mut server).map(|f| f.code.0), Some(1009));
    // The same in fragments: the limit counts what the fragments inflate to together.
    let mut server = Connection::new(Role::Server, Config::default().max_message_size(1 << 20));
    server.set_deflate(&agreed(false, 15), &Default::default());
    let mut d = crate::deflate::Deflater::new(15, false);
    let mut wire = Vec::new();
    for i in 0..8 {
        let mut part = Vec::new();
        d.compress(&vec![b'a'; 256 * 1024], i == 7, &mut part);
        let b0 = match i {
            0 => 0x41,
            7 => 0x80,
            _ => 0x00,
        };
        wire.extend(client_frame(b0, &part));
    }
    let mut buf = BytesMut::from(&wire[..]);
    let r = match server.receive(&mut buf) {
        Ok(Some(m)) => panic!("a message past the limit arrived: {m:?}"),
        other => other,
    };
    assert!(
        matches!(r, Err(ProtocolError::MessageTooLarge { .. })),
        "{r:?}"
    );
}

/// A compressed message near the limit is judged by what it inflates to: a last fragment
/// whose compressed length would pass the limit added to what came before, but whose
/// inflated bytes do not, is taken.
#[test]
fn a_compressed_fragment_is_judged_by_its_inflated_size() {
    let limit = 64 * 1024;
    let mut server = Connection::new(Role::Server, Config::default().max_message_size(limit));
    server.set_deflate(&agreed(false, 15), &Default::default());
    let mut d = crate::deflate::Deflater::new(15, false);
    let first: Vec<u8> = vec![b'x'; limit - 500];
    // Noise does not compress: its 498 bytes take more than the 500 left once compressed.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..498)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u8
        })
        .collect();
    let mut a = Vec::new();
    d.compress(&first, false, &mut a);
    let mut b = Vec::new();
    d.compress(&noise, true, &mut b);
    assert!(b.len() > 500, "{} bytes compressed", b.len());
    let wire = [client_frame(0x42, &a), client_frame(0x80, &b)].concat();
    let mut buf = BytesMut::from(&wire[..]);
    let got = server.receive(&mut buf).unwrap().expect("the message");
    assert_eq!(got.payload().len(), limit - 2);
}
