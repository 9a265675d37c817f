//! `roomcast connect` and `roomcast publish` against real servers.
//!
//! Every wait is bounded (`within`) and says what did not come; the tests wait for what
//! the CLI prints (`connected to ...`, pong lines, `joined`), never for a fixed time.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, LISTENING, listening_addr, within};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use roomcast_ws::handshake::Accept;
use roomcast_ws::tokio::{accept_with, connect};
use roomcast_ws::{CloseCode, CloseFrame, Message};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStderr, Command};

/// How long any single answer may take: generous, for a busy 2-core machine.
const ANSWER: Duration = Duration::from_secs(15);

/// `roomcast serve --echo` on a port the kernel picks, which it reports on stdout;
/// killed on drop.
struct Serve(#[allow(dead_code)] Child, SocketAddr);

impl Serve {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--echo",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = within(LISTENING, ANSWER, stdout.next_line())
            .await
            .unwrap()
            .expect("roomcast serve ended before saying where it listens");
        let addr = listening_addr(&line);
        Self(child, addr)
    }
}

/// The CLI's status lines (stderr) until one satisfies `until`, which is returned.
async fn status_line(
    lines: &mut tokio::io::Lines<BufReader<ChildStderr>>,
    what: &str,
    until: impl Fn(&str) -> bool,
) -> String {
    within(what, ANSWER, async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(line) if until(&line) => return line,
                Some(_) => {}
                None => panic!("stderr ended before {what}"),
            }
        }
    })
    .await
}

/// The offset a `published to ROOM at offset N` line names (its last word).
fn published_offset(out: &str) -> Option<u64> {
    out.split_whitespace().last()?.parse().ok()
}

/// Runs `roomcast ARGS` with `input` on stdin; returns exit code, stdout, stderr.
async fn run(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = within(
        &format!("the end of roomcast {args:?}"),
        Duration::from_secs(30),
        child.wait_with_output(),
    )
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn connect_sends_lines_prints_messages_and_exits_0() {
    let s = Serve::start().await;
    let url = format!("ws://{}/echo", s.1);
    let (code, out, err) = run(&["connect", &url], "hello\nκόσμε\n").await;
    assert_eq!((code, out.as_str()), (0, "hello\nκόσμε\n"), "{err}");
    assert!(err.contains("1000"), "the close code is reported: {err}");
    let (code, out, _) = run(&["connect", "--base64", &url], "AAEC/w==\n").await;
    assert_eq!((code, out.as_str()), (0, "AAEC/w==\n"));
    let (code, out, _) = run(&["connect", "--binary", "--json", &url], "hi\n").await;
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (code, v["type"].as_str(), v["base64"].as_str()),
        (0, Some("binary"), Some("aGk="))
    );
}

#[tokio::test]
async fn headers_origin_protocol_and_close_codes() {
    // A server that reports what it was sent, then closes with 4001.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut seen = String::new();
        let mut ws = accept_with(stream, Default::default(), |req, offer| {
            let h = req.headers();
            seen = format!(
                "x-test={} origin={}",
                h["x-test"].to_str().unwrap(),
                h["origin"].to_str().unwrap()
            );
            Ok(Accept {
                protocol: offer.select_protocol(&["chat"]),
                ..Accept::default()
            })
        })
        .await
        .unwrap();
        ws.send(Message::text(seen)).await.unwrap();
        ws.close(Some(CloseFrame::new(CloseCode(4001), "go away")))
            .await
            .unwrap();
    });
    let url = format!("ws://{addr}/");
    let (code, out, err) = run(
        &[
            "connect",
            "-H",
            "X-Test: 42",
            "--origin",
            "https://app.example",
            "--protocol",
            "other",
            "--protocol",
            "chat",
            "--no-close",
            &url,
        ],
        "",
    )
    .await;
    assert_eq!(out.trim(), "x-test=42 origin=https://app.example");
    assert!(
        err.contains("chat"),
        "the chosen subprotocol is reported: {err}"
    );
    assert!(
        err.contains("4001") && err.contains("go away"),
        "the close code and reason are reported: {err}"
    );
    assert_eq!(code, 4, "closed with an error code");
}

#[tokio::test]
async fn exit_codes_for_refused_and_lost_connections() {
    // A port that is bound but not listening refuses connections, and stays ours.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let refused = closed.local_addr().unwrap();
    let (code, _, err) = run(&["connect", &format!("ws://{refused}/")], "").await;
    assert_eq!(code, 1, "{err}");
    drop(closed);
    // A server that completes the handshake, then drops the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let ws = accept_with(stream, Default::default(), |_, _| Ok(Accept::default()))
            .await
            .unwrap();
        drop(ws);
    });
    let (code, _, err) = run(&["connect", "--no-close", &format!("ws://{addr}/")], "").await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("1006"), "{err}");
    let (code, _, err) = run(&["connect", "wss://127.0.0.1:1/"], "").await;
    assert_eq!(code, 1, "nothing listens there: {err}");
}

#[tokio::test]
async fn ping_interval_prints_round_trip_times() {
    let s = Serve::start().await;
    let mut child = Command::new(BIN)
        .args([
            "connect",
            "--ping-interval",
            "0.2",
            &format!("ws://{}/echo", s.1),
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let is_rtt = |l: &str| l.contains("pong") && l.ends_with(" ms");
    for n in 1..=2 {
        let line = status_line(&mut err, &format!("round-trip line {n}"), is_rtt).await;
        let ms: f64 = line
            .trim_end_matches(" ms")
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no time in {line:?}"));
        assert!(ms >= 0.0, "{line}");
    }
    drop(stdin);
    let status = within("the end of connect after stdin ended", ANSWER, child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn max_messages_in_a_raw_room() {
    let s = Serve::start().await;
    let url = format!("ws://{}/rooms/cli", s.1);
    let mut listener = Command::new(BIN)
        .args(["connect", "--no-close", "--max-messages", "2", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // A raw-room member is in the room before its 101 is sent: once the CLI says it is
    // connected, whatever is published reaches it.
    let mut err = BufReader::new(listener.stderr.take().unwrap()).lines();
    status_line(&mut err, "`connected to` from the listening CLI", |l| {
        l.starts_with("connected to")
    })
    .await;
    let (mut ws, _) = within("the publisher's handshake", ANSWER, connect(&url))
        .await
        .unwrap();
    for m in ["one", "two", "three"] {
        within("a publish", ANSWER, ws.send(Message::text(m)))
            .await
            .unwrap();
    }
    let out = within(
        "the listener's end after 2 messages",
        ANSWER,
        listener.wait_with_output(),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn publish_reports_the_offset_and_refusals() {
    let s = Serve::start().await;
    let url = format!("ws://{}/ws", s.1);
    let (code, out, err) = run(&["publish", &url, "--room", "p", "first"], "").await;
    assert_eq!((code, published_offset(&out)), (0, Some(1)), "{out} {err}");
    let (code, out, _) = run(
        &[
            "publish",
            &url,
            "--room",
            "p",
            "--json-data",
            r#"{"n":2}"#,
            "--id",
            "k",
            "--json",
        ],
        "",
    )
    .await;
    let ack: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((code, ack["offset"].as_u64()), (0, Some(2)), "{out}");
    let (_, out, _) = run(
        &[
            "publish",
            &url,
            "--room",
            "p",
            "--json-data",
            r#"{"n":2}"#,
            "--id",
            "k",
            "--json",
        ],
        "",
    )
    .await;
    let retry: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(retry["offset"], 2, "the same key is not published twice");
    // And nothing was stored twice: the next publish comes right after it.
    let (code, out, err) = run(&["publish", &url, "--room", "p", "third"], "").await;
    assert_eq!((code, published_offset(&out)), (0, Some(3)), "{out} {err}");
    let (code, _, err) = run(&["publish", &url, "--room", "no spaces", "x"], "").await;
    assert_eq!(code, 4);
    assert!(err.contains("bad_request"), "{err}");
    let (code, _, _) = run(
        &["publish", &url, "--room", "p", "--json-data", "{nope"],
        "",
    )
    .await;
    assert_eq!(code, 2);
}

/// Publishes `data` to `room` over /ws.
async fn publish(addr: SocketAddr, room: &str, data: &str) {
    let (code, _, err) = run(
        &["publish", &format!("ws://{addr}/ws"), "--room", room, data],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_mode_reconnects_and_recovers_what_it_missed() {
    let s = Serve::start().await;
    // A proxy between the CLI and the server, whose connections the test can cut.
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(0u32);
    let server = s.1;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = proxy.accept().await {
            let mut cut = cut_rx.clone();
            cut.mark_unchanged();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(server).await.unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
            });
        }
    });
    let mut child = Command::new(BIN)
        .args([
            "connect",
            &format!("ws://{proxy_addr}/ws"),
            "--room",
            "rec",
            "--client",
            "alice",
            "--json",
            "--no-close",
            "--max-messages",
            "10",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while next_json(&mut lines).await["type"] != "joined" {}
    let mut offsets = Vec::new();
    for i in 1..=5 {
        publish(s.1, "rec", &format!("m{i}")).await;
    }
    while offsets.len() < 5 {
        let v = next_json(&mut lines).await;
        if v["type"] == "message" {
            offsets.push(v["offset"].as_u64().unwrap());
        }
    }
    // Cut the connection; publish while the client is away.
    cut_tx.send_replace(1);
    for i in 6..=10 {
        publish(s.1, "rec", &format!("m{i}")).await;
    }
    let mut recovered = None;
    while offsets.len() < 10 {
        let v = next_json(&mut lines).await;
        match v["type"].as_str() {
            Some("message") => offsets.push(v["offset"].as_u64().unwrap()),
            Some("joined") => recovered = v["recovered"].as_bool(),
            _ => {}
        }
    }
    assert_eq!(recovered, Some(true), "rejoined with since");
    assert_eq!(
        offsets,
        (1..=10).collect::<Vec<u64>>(),
        "every message once, in order"
    );
    let status = within("the end after 10 messages", ANSWER, child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The next line the child printed, as JSON.
async fn next_json(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = within("the next JSON line of the CLI", ANSWER, lines.next_line())
        .await
        .unwrap()
        .expect("stdout ended");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn publish_over_the_http_api() {
    let s = Serve::start().await;
    let base = format!("http://{}", s.1);
    let (code, out, err) = run(
        &[
            "publish",
            &base,
            "--room",
            "api-room",
            "--id",
            "k",
            "over http",
        ],
        "",
    )
    .await;
    assert_eq!((code, published_offset(&out)), (0, Some(1)), "{out} {err}");
    let (code, out, _) = run(
        &[
            "publish",
            &base,
            "--room",
            "api-room",
            "--id",
            "k",
            "over http",
        ],
        "",
    )
    .await;
    assert_eq!(
        (code, published_offset(&out)),
        (0, Some(1)),
        "the same key, the same offset: {out}"
    );
    let (code, _, err) = run(&["publish", &base, "--room", "bad room", "x"], "").await;
    assert_eq!(code, 4);
    assert!(err.contains("400"), "{err}");
}

/// `roomcast token` makes what the server takes, and `publish --token` and `connect
/// --token` use it; a token that does not allow the room is refused (exit 4).
#[tokio::test]
async fn tokens_made_by_the_cli_open_what_their_rooms_claim_allows() {
    const SECRET: &str = "cli-test-secret-0123456789abcdef0123";
    let set = format!("auth.jwt_secret={SECRET}");
    let s = Serve::start_with(&["--set", &set]).await;
    let url = format!("ws://{}/ws", s.1);
    let (code, token, err) = run(
        &[
            "token",
            "--secret",
            SECRET,
            "--sub",
            "alice",
            "--ttl",
            "600",
            "--rooms",
            r#"{"join":["lobby"],"publish":["lobby"]}"#,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let (code, out, err) = run(
        &["publish", &url, "--room", "lobby", "--token", token, "hi"],
        "",
    )
    .await;
    assert_eq!((code, published_offset(&out)), (0, Some(1)), "{out} {err}");
    let (code, _, err) = run(
        &["publish", &url, "--room", "secret", "--token", token, "hi"],
        "",
    )
    .await;
    assert_eq!(code, 4, "a room the token does not allow: {err}");
    assert!(err.contains("forbidden"), "{err}");
    // Without a token: refused at hello.
    let (code, _, err) = run(&["publish", &url, "--room", "lobby", "hi"], "").await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("unauthorized") || err.contains("4001"),
        "{err}"
    );
    let (code, _, err) = run(&["token", "--sub", "x"], "").await;
    assert_eq!(code, 2, "no key: {err}");
}

/// `connect --deflate`: with a node that has compression on, the status line says
/// permessage-deflate was agreed and a long line comes back whole from `/echo`; without
/// the flag (or with compression off) nothing is agreed.
#[tokio::test]
async fn connect_deflate_agrees_when_the_node_compresses() {
    let on = Serve::start_with(&["--set", "websocket.compression=true"]).await;
    let off = Serve::start().await;
    let line = format!("{}\n", "compress me ".repeat(500));
    let echo = |s: &Serve| format!("ws://{}/echo", s.1);
    let (code, out, err) = run(
        &["connect", "--deflate", "--max-messages", "1", &echo(&on)],
        &line,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(permessage-deflate)"), "{err}");
    assert_eq!(out, line);
    for (s, flag) in [(&on, None), (&off, Some("--deflate"))] {
        let mut args = vec!["connect", "--max-messages", "1"];
        args.extend(flag);
        let url = echo(s);
        args.push(&url);
        let (code, out, err) = run(&args, &line).await;
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains("permessage-deflate"), "{err}");
        assert_eq!(out, line);
    }
}

/// `connect --http2`: the WebSocket is a stream of an HTTP/2 connection (cleartext, prior
/// knowledge), compressed with `--deflate` too; the node counts it as such.
#[tokio::test]
async fn connect_http2_opens_the_websocket_on_a_stream() {
    let s = Serve::start_with(&["--set", "websocket.compression=true"]).await;
    let line = format!("{}\n", "over a stream ".repeat(400));
    let url = format!("ws://{}/echo", s.1);
    let (code, out, err) = run(
        &[
            "connect",
            "--http2",
            "--deflate",
            "--max-messages",
            "1",
            &url,
        ],
        &line,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("(HTTP/2)") && err.contains("(permessage-deflate)"),
        "{err}"
    );
    assert_eq!(out, line);
    let stats: Value = reqwest_free_get(s.1, "/api/stats").await;
    assert_eq!(stats["http2_websockets"], 1, "{stats}");
    assert_eq!(stats["http2_connections"], 1, "{stats}");
    // A node with HTTP/2 off: the CLI's preface is refused, and it says it failed (1).
    let off = Serve::start_with(&["--set", "server.http2=false"]).await;
    let url = format!("ws://{}/echo", off.1);
    let (code, _, err) = run(&["connect", "--http2", &url], "").await;
    assert_eq!(code, 1, "{err}");
}

/// A GET over a plain socket, its JSON body (HTTP/1.1, so the HTTP/2 counters stay as
/// they were).
async fn reqwest_free_get(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    let json = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {body}"))
}
