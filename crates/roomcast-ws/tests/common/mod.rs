//! Shared by the interop tests: a scripted server and the client scenarios, both on our
//! driver, and helpers to run a peer written in another language.
//!
//! The script, which every peer server in `tests/peers` follows too:
//! - a text or binary message that is not a command comes back unchanged;
//! - `cmd:close:CODE:REASON`: the server closes with that code and reason;
//! - `cmd:fragments:N:TEXT`: the server sends TEXT as one text message in N fragments
//!   (ours cuts by bytes, inside code points too);
//! - `cmd:ping:PAYLOAD`: the server pings; when the pong arrives it sends `pong:PAYLOAD`.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use roomcast_ws::deflate::DeflateConfig;
use roomcast_ws::handshake::{Accept, ClientOptions};
use roomcast_ws::tokio::{Error, WebSocket, WebSocketConfig, accept_with, connect_with};
use roomcast_ws::{CloseCode, CloseFrame, Message, OpCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The 16 MiB message size the scenarios exchange.
pub const BIG: usize = 16 << 20;

/// `n` bytes of a pattern that a shifted or truncated copy would not match.
pub fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

/// Starts our scripted server on a free port; returns its `ws://` base URL.
pub async fn scripted_server() -> String {
    scripted_server_with(None).await
}

/// [`scripted_server`], taking permessage-deflate with `deflate` when a client offers it.
pub async fn scripted_server_with(deflate: Option<DeflateConfig>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut config = WebSocketConfig::default();
                config.deflate = deflate;
                let accepted = accept_with(stream, config, |_, _| Ok(Accept::default())).await;
                if let Ok(ws) = accepted {
                    let _ = script(ws).await;
                }
            });
        }
    });
    format!("ws://{addr}")
}

async fn script(mut ws: WebSocket<TcpStream>) -> Result<(), Error> {
    let mut ping_wanted: Option<Bytes> = None;
    while let Some(msg) = ws.recv().await {
        match msg? {
            Message::Text(t) if t.as_str().starts_with("cmd:") => {
                let mut parts = t.as_str().splitn(4, ':').skip(1);
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("close"), Some(code), Some(reason)) => {
                        let code = CloseCode(code.parse().unwrap());
                        ws.send(Message::Close(Some(CloseFrame::new(code, reason))))
                            .await?;
                    }
                    (Some("fragments"), Some(n), Some(text)) => {
                        let n: usize = n.parse().unwrap();
                        let bytes = Bytes::copy_from_slice(text.as_bytes());
                        let step = bytes.len().div_ceil(n).max(1);
                        for i in 0..n {
                            let piece = bytes.slice(
                                (i * step).min(bytes.len())..((i + 1) * step).min(bytes.len()),
                            );
                            let opcode = if i == 0 {
                                OpCode::Text
                            } else {
                                OpCode::Continuation
                            };
                            ws.send_frame(opcode, piece, i == n - 1).await?;
                        }
                    }
                    (Some("ping"), Some(payload), None) => {
                        let payload = Bytes::copy_from_slice(payload.as_bytes());
                        ping_wanted = Some(payload.clone());
                        ws.send(Message::Ping(payload)).await?;
                    }
                    other => panic!("unknown command {other:?}"),
                }
            }
            Message::Pong(p) if ping_wanted.as_ref() == Some(&p) => {
                ping_wanted = None;
                let text = format!("pong:{}", String::from_utf8_lossy(&p));
                ws.send(Message::text(text)).await?;
            }
            msg @ (Message::Text(_) | Message::Binary(_)) => ws.send(msg).await?,
            _ => {}
        }
    }
    Ok(())
}

/// How long any single wait of a scenario may take (16 MiB echoes in a debug build on a
/// busy machine included) before the test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `fut` for at most [`WAIT`]; past that the test fails, saying what it waited for.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {WAIT:?}"))
}

/// Sends a message (written out completely) within [`WAIT`].
pub async fn send(ws: &mut WebSocket<TcpStream>, msg: Message) {
    within("sending a message", ws.send(msg)).await.unwrap();
}

/// The next message, ping, pong or close, within [`WAIT`]; fails if the connection ended.
pub async fn next_any(ws: &mut WebSocket<TcpStream>) -> Message {
    match within("receiving a frame", ws.recv()).await {
        Some(Ok(m)) => m,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The next data message, skipping control frames, within [`WAIT`] each.
pub async fn next_data(ws: &mut WebSocket<TcpStream>) -> Message {
    loop {
        if let m @ (Message::Text(_) | Message::Binary(_)) = next_any(ws).await {
            return m;
        }
    }
}

/// Reads until the connection is over (within [`WAIT`]); returns the peer's close frame.
/// Data received meanwhile fails the test: the scenarios close only when nothing is due.
pub async fn close_frame_at_end(ws: &mut WebSocket<TcpStream>) -> Option<CloseFrame> {
    let mut close = None;
    let drain = async {
        while let Some(msg) = ws.recv().await {
            match msg.unwrap() {
                Message::Close(frame) => close = frame,
                m @ (Message::Text(_) | Message::Binary(_)) => {
                    panic!("unexpected data while closing: {m:?}")
                }
                _ => {}
            }
        }
    };
    within("the connection's end", drain).await;
    close
}

/// Runs every client scenario against a server following the script.
pub async fn client_scenarios(base: &str) {
    client_scenarios_with(base, None).await;
}

/// [`client_scenarios`], offering permessage-deflate with `deflate`; the server must then
/// take it.
pub async fn client_scenarios_with(base: &str, deflate: Option<DeflateConfig>) {
    let connect = |url: String| async move {
        let mut config = WebSocketConfig::default();
        config.deflate = deflate;
        // Bounded by the driver's handshake timeout.
        let (ws, answer) = connect_with(&url, &ClientOptions::default(), config)
            .await
            .unwrap();
        if deflate.is_some() {
            let names: Vec<_> = answer.extensions.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(
                names,
                ["permessage-deflate"],
                "permessage-deflate not agreed"
            );
        }
        Ok::<_, Error>((ws, answer))
    };
    let (mut ws, _) = connect(base.to_owned()).await.unwrap();
    for msg in [
        Message::text("hello"),
        Message::text("κόσμε €𝄞"),
        Message::binary((0u8..=255).collect::<Vec<u8>>()),
        Message::text(""),
        Message::binary(Vec::new()),
    ] {
        send(&mut ws, msg.clone()).await;
        assert_eq!(next_data(&mut ws).await, msg);
    }

    let big = Message::Binary(pattern(BIG));
    send(&mut ws, big.clone()).await;
    assert!(
        next_data(&mut ws).await == big,
        "16 MiB binary echo differs"
    );
    let big_text = Message::text("a€".repeat(BIG / 4));
    send(&mut ws, big_text.clone()).await;
    assert!(
        next_data(&mut ws).await == big_text,
        "16 MiB text echo differs"
    );

    // A fragmented message from us, cut inside a code point, with a ping in between.
    let text = "fragmented κόσμε";
    let bytes = text.as_bytes();
    let first = Bytes::copy_from_slice(&bytes[..12]);
    within(
        "sending a fragment",
        ws.send_frame(OpCode::Text, first, false),
    )
    .await
    .unwrap();
    send(&mut ws, Message::Ping(Bytes::from_static(b"between"))).await;
    let rest = Bytes::copy_from_slice(&bytes[12..]);
    within(
        "sending a fragment",
        ws.send_frame(OpCode::Continuation, rest, true),
    )
    .await
    .unwrap();
    let mut pong = None;
    let reply = loop {
        match next_any(&mut ws).await {
            Message::Pong(p) => pong = Some(p),
            m @ Message::Text(_) => break m,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reply, Message::text(text));
    if pong.is_none() {
        // The pong may trail the echo.
        match next_any(&mut ws).await {
            Message::Pong(p) => pong = Some(p),
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    assert_eq!(pong.as_deref(), Some(&b"between"[..]));

    // A fragmented message from the server.
    send(
        &mut ws,
        Message::text("cmd:fragments:5:sent in fragments: κόσμε"),
    )
    .await;
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("sent in fragments: κόσμε")
    );

    // The server pings; our driver answers by itself.
    send(&mut ws, Message::text("cmd:ping:from-server")).await;
    assert_eq!(next_data(&mut ws).await, Message::text("pong:from-server"));

    // We close with a code; the server echoes it.
    let bye = CloseFrame::new(CloseCode(4000), "bye");
    send(&mut ws, Message::Close(Some(bye))).await;
    let echoed = close_frame_at_end(&mut ws).await;
    assert_eq!(echoed.map(|f| f.code), Some(CloseCode(4000)));

    // The server closes with a code and a reason.
    let (mut ws, _) = connect(base.to_owned()).await.unwrap();
    send(&mut ws, Message::text("cmd:close:4001:server says bye")).await;
    let got = close_frame_at_end(&mut ws)
        .await
        .expect("a close frame with a body");
    assert_eq!(
        (got.code, got.reason.as_str()),
        (CloseCode(4001), "server says bye")
    );
}

/// The repository's `tests/peers` directory.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers")
}

/// The Python interpreter that has the `websockets` package.
pub fn python() -> String {
    std::env::var("ROOMCAST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs a peer in client mode against `url` and checks it reports success.
pub async fn run_peer_client(program: &str, script: PathBuf, url: &str) {
    run_peer_client_with(program, script, url, &[]).await;
}

/// [`run_peer_client`] with more arguments (`deflate`).
pub async fn run_peer_client_with(program: &str, script: PathBuf, url: &str, args: &[&str]) {
    let out = Command::new(program)
        .arg(&script)
        .arg("client")
        .arg(url)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("peer client did not finish within 120 s")
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (run scripts/test, which installs the test peers)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} {} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    assert!(
        stdout.contains("all scenarios passed"),
        "{stdout}\n{stderr}"
    );
}

/// Starts a peer in server mode; returns the process and its `ws://` URL.
pub async fn start_peer_server(program: &str, script: PathBuf) -> (Child, String) {
    start_peer_server_with(program, script, &[]).await
}

/// [`start_peer_server`] with more arguments (`deflate`).
pub async fn start_peer_server_with(
    program: &str,
    script: PathBuf,
    args: &[&str],
) -> (Child, String) {
    let mut child = Command::new(program)
        .arg(&script)
        .arg("server")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (run scripts/test, which installs the test peers)")
        });
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("peer server did not report its port")
        .unwrap()
        .expect("peer server exited before reporting its port");
    let port = line
        .strip_prefix("PORT ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, format!("ws://127.0.0.1:{}", port.trim()))
}
