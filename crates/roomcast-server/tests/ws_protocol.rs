//! The WebSocket side of `/echo`: messages come back; every broken rule gets its close code.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{RawClient, start};
use roomcast_ws::tokio::{WebSocket, connect};
use roomcast_ws::{CloseCode, CloseFrame, Message, OpCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long one wait may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut` for at most [`WAIT`]; past that the test fails, saying what it waited for.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    common::within(what, WAIT, fut).await
}

/// The next message (pings, pongs and closes included), within [`WAIT`].
async fn next_message(ws: &mut WebSocket<TcpStream>) -> Message {
    match within("receiving a message", ws.recv()).await {
        Some(Ok(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Sends a message (written out completely) within [`WAIT`].
async fn send(ws: &mut WebSocket<TcpStream>, msg: Message) {
    within("sending a message", ws.send(msg)).await.unwrap();
}

/// Writes raw bytes within [`WAIT`].
async fn write(c: &mut RawClient, bytes: &[u8]) {
    within("writing", c.stream.write_all(bytes)).await.unwrap();
}

#[tokio::test]
async fn echo_with_our_client() {
    let s = start(|_| {}).await;
    let (mut ws, _) = connect(&format!("ws://{}/echo", s.addr)).await.unwrap();
    send(&mut ws, Message::text("hello")).await;
    assert_eq!(next_message(&mut ws).await, Message::text("hello"));
    send(&mut ws, Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(
        next_message(&mut ws).await,
        Message::binary(vec![1u8, 2, 3])
    );
    // Bounded by the driver's close timeout.
    ws.close(Some(CloseFrame::new(CloseCode::NORMAL, "done")))
        .await
        .unwrap();
}

#[tokio::test]
async fn ping_gets_its_pong_and_close_is_echoed_then_tcp_closed() {
    let s = start(|_| {}).await;
    let mut c = RawClient::connect(s.addr, "/echo").await;
    c.send_frame(0x89, b"are you there").await;
    assert_eq!(
        c.next_frame().await,
        Some((OpCode::Pong, b"are you there".to_vec()))
    );
    c.send_frame(0x88, &[0x0f, 0xa0, b'b', b'y', b'e']).await; // 4000 "bye"
    c.expect_close(4000).await;
}

#[tokio::test]
async fn broken_rules_close_with_the_right_code() {
    let s = start(|c| {
        c.websocket.max_message_size = 1024;
        c.websocket.max_frame_size = 1024;
    })
    .await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        (
            "RSV1 without an extension",
            common::masked_frame(0xc1, b"x"),
            1002,
        ),
        (
            "RSV3 without an extension",
            common::masked_frame(0x91, b"x"),
            1002,
        ),
        ("reserved opcode", vec![0x83, 0x80, 0, 0, 0, 0], 1002),
        ("fragmented ping", vec![0x09, 0x80, 0, 0, 0, 0], 1002),
        (
            "continuation of nothing",
            common::masked_frame(0x80, b"x"),
            1002,
        ),
        (
            "close code 1005 on the wire",
            common::masked_frame(0x88, &[0x03, 0xed]),
            1002,
        ),
        (
            "invalid UTF-8 text",
            common::masked_frame(0x81, b"\xce\xba\xff"),
            1007,
        ),
        (
            "invalid UTF-8 close reason",
            common::masked_frame(0x88, &[0x03, 0xe8, 0xc0, 0xaf]),
            1007,
        ),
        (
            "frame over the limit",
            common::masked_frame(0x82, &[0; 1025]),
            1009,
        ),
        (
            "message over the limit",
            [
                common::masked_frame(0x02, &[0; 600]),
                common::masked_frame(0x80, &[0; 600]),
            ]
            .concat(),
            1009,
        ),
    ];
    for (what, wire, code) in cases {
        let mut c = RawClient::connect(s.addr, "/echo").await;
        write(&mut c, &wire).await;
        let reason = c.expect_close(code).await;
        assert!(!reason.is_empty(), "{what}: the close frame should say why");
    }
}

#[tokio::test]
async fn a_fragmented_message_with_a_ping_inside_is_reassembled() {
    let s = start(|_| {}).await;
    let mut c = RawClient::connect(s.addr, "/echo").await;
    c.send_frame(0x01, "κό".as_bytes()).await;
    c.send_frame(0x89, b"mid").await;
    c.send_frame(0x80, "σμε".as_bytes()).await;
    assert_eq!(c.next_frame().await, Some((OpCode::Pong, b"mid".to_vec())));
    assert_eq!(
        c.next_frame().await,
        Some((OpCode::Text, "κόσμε".as_bytes().to_vec()))
    );
}

#[tokio::test]
async fn a_message_larger_than_the_queue_bound_is_still_delivered() {
    // The bound is on a backlog: one accepted message must always be deliverable.
    let s = start(|c| {
        c.websocket.max_queued_bytes = 64 * 1024;
        c.websocket.max_message_size = 1 << 20;
        c.websocket.max_frame_size = 1 << 20;
    })
    .await;
    let (mut ws, _) = connect(&format!("ws://{}/echo", s.addr)).await.unwrap();
    let big = Message::binary(vec![7u8; 512 * 1024]);
    for _ in 0..3 {
        send(&mut ws, big.clone()).await;
        assert_eq!(next_message(&mut ws).await, big);
    }
}

/// Reads of 8 KiB or more that start a frame are handed to the connection without a copy;
/// a frame cut after such a read, small reads and several frames in one read must all
/// come back intact, in order.
///
/// A frame is cut by writing a small marker frame and the frame's first bytes in one
/// write, and the rest only once the marker's echo is back: the server has then read the
/// first part (one loopback segment) and handled what it could, so the rest is a later read.
#[tokio::test]
async fn large_reads_cut_anywhere_are_echoed_intact() {
    let s = start(|_| {}).await;
    let mut c = RawClient::connect(s.addr, "/echo").await;
    let payload = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    };
    // A 40 KiB frame, its first 12 KiB in one read with a marker (a read of more than
    // 8 KiB starting a frame: handed over, then left unfinished).
    let big = payload(40 * 1024, 1);
    let wire = common::masked_frame(0x82, &big);
    cut_after(&mut c, b"cut-1", &wire, 12 * 1024).await;
    assert_eq!(c.next_frame().await, Some((OpCode::Binary, big)));
    // Three frames in one write: 9 KiB, 100 B and 20 KiB.
    let (a, b, d) = (payload(9 * 1024, 2), payload(100, 3), payload(20 * 1024, 4));
    let mut wire = common::masked_frame(0x82, &a);
    wire.extend(common::masked_frame(0x82, &b));
    wire.extend(common::masked_frame(0x82, &d));
    write(&mut c, &wire).await;
    for expected in [a, b, d] {
        assert_eq!(c.next_frame().await, Some((OpCode::Binary, expected)));
    }
    // A small piece first (copied), then the rest of a large frame.
    let e = payload(30 * 1024, 5);
    let wire = common::masked_frame(0x82, &e);
    cut_after(&mut c, b"cut-2", &wire, 100).await;
    assert_eq!(c.next_frame().await, Some((OpCode::Binary, e)));
    // 200 frames of 10 KiB back to back: reads land in and across scratch allocations.
    let frames: Vec<Vec<u8>> = (0..200).map(|i| payload(10 * 1024, i as u8)).collect();
    let wire: Vec<u8> = frames
        .iter()
        .flat_map(|f| common::masked_frame(0x82, f))
        .collect();
    write(&mut c, &wire).await;
    for expected in frames {
        assert_eq!(c.next_frame().await, Some((OpCode::Binary, expected)));
    }
}

/// Writes a text frame `marker` and `wire[..at]` together, waits for the marker's echo,
/// then writes `wire[at..]`.
async fn cut_after(c: &mut RawClient, marker: &[u8], wire: &[u8], at: usize) {
    let mut first = common::masked_frame(0x81, marker);
    first.extend_from_slice(&wire[..at]);
    write(c, &first).await;
    assert_eq!(c.next_frame().await, Some((OpCode::Text, marker.to_vec())));
    write(c, &wire[at..]).await;
}

/// `websocket.compression`: a client that offers permessage-deflate gets it, and what it
/// is answered at or above `compression_threshold` comes compressed (RSV1), below it as
/// it is; a node with compression off answers without the extension.
#[tokio::test]
async fn permessage_deflate_is_taken_when_compression_is_on() {
    let on = start(|c| {
        c.websocket.compression = true;
        c.websocket.compression_threshold = 64;
    })
    .await;
    let off = start(|_| {}).await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (status, head, mut stream) = common::upgrade_head(on.addr, "/echo", offer).await;
    assert_eq!(status, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    // An uncompressed message of 1,000 bytes comes back compressed; one of 10 does not.
    let long = "roomcast ".repeat(111);
    for (text, compressed) in [(long.as_str(), true), ("ten bytes!", false)] {
        stream
            .write_all(&common::masked_frame(0x81, text.as_bytes()))
            .await
            .unwrap();
        let mut head = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut head)
            .await
            .unwrap();
        assert_eq!(head[0] & 0x40 != 0, compressed, "{text:.20}: {head:02x?}");
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                tokio::io::AsyncReadExt::read_exact(&mut stream, &mut l)
                    .await
                    .unwrap();
                u16::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        assert!(
            if compressed {
                len < text.len() / 4
            } else {
                len == text.len()
            },
            "{len}"
        );
        let mut body = vec![0u8; len];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut body)
            .await
            .unwrap();
    }
    let (status, head, _) = common::upgrade_head(off.addr, "/echo", offer).await;
    assert_eq!(status, 101, "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    // Our own client, compressing both ways, through /ws and /echo.
    let config = roomcast_ws::tokio::WebSocketConfig::default()
        .deflate(roomcast_ws::deflate::DeflateConfig::default());
    let (mut ws, answer) = roomcast_ws::tokio::connect_with(
        &format!("ws://{}/echo", on.addr),
        &Default::default(),
        config,
    )
    .await
    .unwrap();
    assert_eq!(answer.extensions.len(), 1);
    let big = Message::text("κόσμε ".repeat(50_000));
    ws.send(big.clone()).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(back == big, "the echo differs");
}
