//! Interop with `tokio-tungstenite`, in both roles.

#![allow(clippy::unwrap_used)]

mod common;

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

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message, ping, pong or close, within `common::WAIT`.
async fn next_any(ws: &mut Client) -> Message {
    match common::within("receiving a frame", ws.next()).await {
        Some(Ok(m)) => m,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The next data message, skipping control frames.
async fn next_data(ws: &mut Client) -> Message {
    loop {
        let msg = next_any(ws).await;
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            return msg;
        }
    }
}

/// Sends (and flushes) a message within `common::WAIT`.
async fn send(ws: &mut Client, msg: Message) {
    common::within("sending a message", ws.send(msg))
        .await
        .unwrap();
}

/// Reads until the connection is over, within `common::WAIT`; returns the close's code
/// and reason.
async fn close_at_end(ws: &mut Client) -> Option<(u16, String)> {
    let mut got = None;
    common::within("the connection's end", async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(frame) = msg {
                got = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
        }
    })
    .await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_with_tungstenite_client() {
    let url = common::scripted_server().await;
    let connect = tokio_tungstenite::connect_async_with_config(&url, Some(config()), true);
    let (mut ws, _) = common::within("connecting", connect).await.unwrap();

    for msg in [
        Message::text("hello"),
        Message::text("κόσμε €𝄞"),
        Message::binary((0u8..=255).collect::<Vec<u8>>()),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::binary(common::pattern(common::BIG)),
        Message::text("a€".repeat(common::BIG / 4)),
    ] {
        send(&mut ws, msg.clone()).await;
        assert!(
            next_data(&mut ws).await == msg,
            "echo differs ({} bytes)",
            msg.len()
        );
    }

    // Fragments from the client, cut inside a code point.
    let bytes = "fragmented κόσμε".as_bytes();
    let first = Frame::message(bytes[..12].to_vec(), OpCode::Data(Data::Text), false);
    send(&mut ws, Message::Frame(first)).await;
    let rest = Frame::message(bytes[12..].to_vec(), OpCode::Data(Data::Continue), true);
    send(&mut ws, Message::Frame(rest)).await;
    assert_eq!(next_data(&mut ws).await, Message::text("fragmented κόσμε"));

    // Fragments from the server.
    send(
        &mut ws,
        Message::text("cmd:fragments:5:sent in fragments: κόσμε"),
    )
    .await;
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("sent in fragments: κόσμε")
    );

    // Our server answers a ping with the same payload.
    send(
        &mut ws,
        Message::Ping(Bytes::from_static(b"tungstenite-ping")),
    )
    .await;
    match next_any(&mut ws).await {
        Message::Pong(p) => assert_eq!(&p[..], b"tungstenite-ping"),
        other => panic!("expected a pong, got {other:?}"),
    }

    // Our server pings; tungstenite answers.
    send(&mut ws, Message::text("cmd:ping:from-server")).await;
    assert_eq!(next_data(&mut ws).await, Message::text("pong:from-server"));

    // Close with a code: echoed.
    let bye = CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    };
    common::within("closing", ws.close(Some(bye)))
        .await
        .unwrap();
    assert_eq!(
        close_at_end(&mut ws).await.map(|(code, _)| code),
        Some(4000)
    );

    // The server closes with a code and reason.
    let (mut ws, _) = common::within("connecting", tokio_tungstenite::connect_async(&url))
        .await
        .unwrap();
    send(&mut ws, Message::text("cmd:close:4001:server says bye")).await;
    assert_eq!(
        close_at_end(&mut ws).await,
        Some((4001, "server says bye".to_owned()))
    );
}
