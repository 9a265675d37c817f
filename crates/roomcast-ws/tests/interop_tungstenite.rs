//! Interop with `tokio-tungstenite`, in both roles.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_with_tungstenite_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config()))
                    .await
                    .unwrap();
                let mut ping_wanted: Option<Bytes> = None;
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) if t.as_str().starts_with("cmd:") => {
                            let mut parts = t.as_str().splitn(4, ':').skip(1);
                            match (parts.next(), parts.next(), parts.next()) {
                                (Some("close"), Some(code), Some(reason)) => {
                                    let frame = CloseFrame {
                                        code: CloseCode::from(code.parse::<u16>().unwrap()),
                                        reason: reason.into(),
                                    };
                                    ws.close(Some(frame)).await.unwrap();
                                }
                                (Some("fragments"), Some(n), Some(text)) => {
                                    let n: usize = n.parse().unwrap();
                                    let bytes = text.as_bytes();
                                    let step = bytes.len().div_ceil(n);
                                    for i in 0..n {
                                        let piece = bytes[(i * step).min(bytes.len())
                                            ..((i + 1) * step).min(bytes.len())]
                                            .to_vec();
                                        let op = if i == 0 { Data::Text } else { Data::Continue };
                                        ws.send(Message::Frame(Frame::message(
                                            piece,
                                            OpCode::Data(op),
                                            i == n - 1,
                                        )))
                                        .await
                                        .unwrap();
                                    }
                                }
                                (Some("ping"), Some(payload), None) => {
                                    let payload = Bytes::copy_from_slice(payload.as_bytes());
                                    ping_wanted = Some(payload.clone());
                                    ws.send(Message::Ping(payload)).await.unwrap();
                                }
                                other => panic!("unknown command {other:?}"),
                            }
                        }
                        Message::Pong(p) if ping_wanted.as_ref() == Some(&p) => {
                            ping_wanted = None;
                            let text = format!("pong:{}", String::from_utf8_lossy(&p));
                            ws.send(Message::text(text)).await.unwrap();
                        }
                        m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await.unwrap(),
                        _ => {}
                    }
                }
            });
        }
    });
    common::client_scenarios(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_with_tungstenite_client() {
    let url = common::scripted_server().await;
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config()), true)
        .await
        .unwrap();

    async fn next_data(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Message {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                return msg;
            }
        }
    }

    for msg in [
        Message::text("hello"),
        Message::text("κόσμε €𝄞"),
        Message::binary((0u8..=255).collect::<Vec<u8>>()),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::binary(common::pattern(common::BIG)),
        Message::text("a€".repeat(common::BIG / 4)),
    ] {
        ws.send(msg.clone()).await.unwrap();
        assert!(
            next_data(&mut ws).await == msg,
            "echo differs ({} bytes)",
            msg.len()
        );
    }

    // Fragments from the client, cut inside a code point.
    let bytes = "fragmented κόσμε".as_bytes();
    ws.send(Message::Frame(Frame::message(
        bytes[..12].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        bytes[12..].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("fragmented κόσμε"));

    // Fragments from the server.
    ws.send(Message::text("cmd:fragments:5:sent in fragments: κόσμε"))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("sent in fragments: κόσμε")
    );

    // Our server answers a ping with the same payload.
    ws.send(Message::Ping(Bytes::from_static(b"tungstenite-ping")))
        .await
        .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"tungstenite-ping"),
        other => panic!("expected a pong, got {other:?}"),
    }

    // Our server pings; tungstenite answers.
    ws.send(Message::text("cmd:ping:from-server"))
        .await
        .unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("pong:from-server"));

    // Close with a code: echoed.
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let mut echoed = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(frame) = msg {
            echoed = frame.map(|f| u16::from(f.code));
        }
    }
    assert_eq!(echoed, Some(4000));

    // The server closes with a code and reason.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text("cmd:close:4001:server says bye"))
        .await
        .unwrap();
    let mut got = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(frame) = msg {
            got = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
        }
    }
    assert_eq!(got, Some((4001, "server says bye".to_owned())));
}
