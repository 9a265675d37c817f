//! The HTTP side: health, routing, and every refused handshake with its status and reason.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{raw_exchange, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(method: &str, version: &str, extra: &str, drop: &str) -> String {
    let mut fields = vec![
        "Host: localhost".to_owned(),
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".to_owned(),
    ];
    fields.retain(|f| drop.is_empty() || !f.starts_with(drop));
    let mut req = format!("{method} /echo {version}\r\n");
    for f in fields {
        req.push_str(&f);
        req.push_str("\r\n");
    }
    req.push_str(extra);
    req.push_str("\r\n");
    req
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"))
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let s = start(|_| {}).await;
    let resp = raw_exchange(
        s.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(resp.ends_with("ok\n"));
    let resp = raw_exchange(
        s.addr,
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 404, "{resp}");
    let resp = raw_exchange(
        s.addr,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 405, "{resp}");
}

/// RFC 9112 section 3.2: an HTTP/1.1 request without `Host`, or with two, is 400; an
/// HTTP/1.0 one may go without.
#[tokio::test]
async fn plain_http_needs_exactly_one_host() {
    let s = start(|_| {}).await;
    for (request, want) in [
        (
            &b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            400,
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
        (b"GET /api/rooms HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.0\r\n\r\n", 200),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            200,
        ),
    ] {
        let resp = raw_exchange(s.addr, request).await;
        assert_eq!(
            status(&resp),
            want,
            "{}: {resp}",
            String::from_utf8_lossy(request)
        );
        if want == 400 {
            assert!(resp.contains("Host header"), "{resp}");
        }
    }
}

#[tokio::test]
async fn echo_is_off_unless_asked() {
    let s = start(|c| c.server.echo = false).await;
    let resp = raw_exchange(
        s.addr,
        upgrade_request("GET", "HTTP/1.1", "", "").as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 404, "{resp}");
}

/// Checks what docs/protocol.md promises of every refusal: the status, `connection:
/// close`, and a one-line plain-text reason as the body (its exact words are not promised).
fn check_refusal(req: &str, resp: &str, want: u16) {
    let shown = &req[..req.len().min(80)];
    assert_eq!(status(resp), want, "request {shown:?} got {resp}");
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {resp:?}"));
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\nconnection: close"), "{resp}");
    assert!(head.contains("\r\ncontent-type: text/plain"), "{resp}");
    assert!(
        body.ends_with('\n') && !body.trim().is_empty() && body.trim_end().lines().count() == 1,
        "the body is one line of reason: {body:?}"
    );
}

#[tokio::test]
async fn refused_handshakes_say_why() {
    let s = start(|_| {}).await;
    // The request, the status, and the headers the status requires.
    let cases: Vec<(String, u16, &[&str])> = vec![
        (
            upgrade_request("POST", "HTTP/1.1", "", ""),
            405,
            &["allow: GET"],
        ),
        (upgrade_request("GET", "HTTP/1.0", "", ""), 400, &[]),
        (
            upgrade_request("GET", "HTTP/1.1", "", "Upgrade"),
            426,
            &["upgrade: websocket", "sec-websocket-version: 13"],
        ),
        (
            upgrade_request("GET", "HTTP/1.1", "", "Sec-WebSocket-Version"),
            426,
            &["upgrade: websocket", "sec-websocket-version: 13"],
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                "Sec-WebSocket-Version: 8\r\n",
                "Sec-WebSocket-Version",
            ),
            426,
            &["upgrade: websocket", "sec-websocket-version: 13"],
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                "Connection: keep-alive\r\n",
                "Connection",
            ),
            400,
            &[],
        ),
        (
            upgrade_request("GET", "HTTP/1.1", "", "Sec-WebSocket-Key"),
            400,
            &[],
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                "Sec-WebSocket-Key: c2hvcnQ=\r\n",
                "Sec-WebSocket-Key",
            ),
            400,
            &[],
        ),
        (upgrade_request("GET", "HTTP/1.1", "", "Host"), 400, &[]),
        // A repeated Host, a repeated key (even the same value twice).
        (
            upgrade_request("GET", "HTTP/1.1", "Host: other\r\n", ""),
            400,
            &[],
        ),
        (
            upgrade_request("GET", "HTTP/1.1", "Host: localhost\r\n", ""),
            400,
            &[],
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n",
                "",
            ),
            400,
            &[],
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                &format!("Sec-WebSocket-Key: {KEY}\r\n"),
                "",
            ),
            400,
            &[],
        ),
        (
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n".to_owned(),
            400,
            &[],
        ),
        (
            format!(
                "GET /echo HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20_000)
            ),
            431,
            &[],
        ),
        // A malformed subprotocol or extension list.
        (
            upgrade_request("GET", "HTTP/1.1", "Sec-WebSocket-Protocol: a b\r\n", ""),
            400,
            &[],
        ),
        (
            upgrade_request("GET", "HTTP/1.1", "Sec-WebSocket-Extensions: ;\r\n", ""),
            400,
            &[],
        ),
        // More than 64 header fields (5 of the handshake + 60), each small.
        (
            upgrade_request("GET", "HTTP/1.1", &extra_fields(60), ""),
            431,
            &[],
        ),
    ];
    for (req, want, headers) in cases {
        let resp = raw_exchange(s.addr, req.as_bytes()).await;
        check_refusal(&req, &resp, want);
        let head = resp.to_ascii_lowercase();
        for h in headers {
            assert!(
                head.contains(&format!("\r\n{}\r\n", h.to_ascii_lowercase())),
                "{h:?} missing from {resp}"
            );
        }
    }
}

/// `n` small header fields `X-Field-i: i`.
fn extra_fields(n: usize) -> String {
    (0..n).map(|i| format!("X-Field-{i}: {i}\r\n")).collect()
}

#[tokio::test]
async fn sixty_four_header_fields_are_accepted() {
    // The limit is on more than 64: exactly 64 (5 + 59) is a valid handshake.
    let s = start(|_| {}).await;
    let req = upgrade_request("GET", "HTTP/1.1", &extra_fields(59), "");
    assert_eq!(req.matches("\r\n").count(), 1 + 64 + 1, "64 fields");
    let resp = raw_exchange(s.addr, req.as_bytes()).await;
    assert_eq!(status(&resp), 101, "{resp}");
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_dropped() {
    let s = start(|c| c.server.handshake_timeout_ms = 300).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the server must drop a stalled handshake")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "dropped before the handshake timeout: {waited:?}"
    );
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_slow_trickle_is_dropped_too() {
    // One byte every 50 ms cannot finish the head within the 300 ms budget: the server
    // answers 408 once the budget is spent (not before), and drops the connection.
    let s = start(|c| c.server.handshake_timeout_ms = 300).await;
    let started = Instant::now();
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let trickle = tokio::spawn(async move {
        for b in upgrade_request("GET", "HTTP/1.1", "", "").bytes() {
            if *done.borrow() || writer.write_all(&[b]).await.is_err() {
                return false;
            }
            // Pacing, not synchronisation: the trickle stops when the reader is done.
            let _ = tokio::time::timeout(Duration::from_millis(50), done.changed()).await;
        }
        true
    });
    let mut out = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let waited = started.elapsed();
    let _ = done_tx.send(true);
    assert!(ended.is_ok(), "still connected after 5 s: {out:?}");
    assert!(
        !trickle.await.unwrap(),
        "the whole head went through before the server dropped it"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        waited >= Duration::from_millis(300),
        "dropped before the handshake timeout: {waited:?}"
    );
}

#[tokio::test]
async fn websocket_on_a_keep_alive_connection_after_plain_http() {
    // The second request on a connection goes through hyper's upgrade path.
    let s = start(|_| {}).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = read_some(&mut stream, &mut buf).await;
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stream
        .write_all(upgrade_request("GET", "HTTP/1.1", "", "").as_bytes())
        .await
        .unwrap();
    let n = read_some(&mut stream, &mut buf).await;
    let resp = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(resp.starts_with("http/1.1 101"), "{resp}");
    assert!(
        resp.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{resp}"
    );
    stream
        .write_all(&common::masked_frame(0x81, b"over hyper"))
        .await
        .unwrap();
    let n = read_some(&mut stream, &mut buf).await;
    assert_eq!(&buf[..n], b"\x81\x0aover hyper");
}

/// One read, bounded: fails when nothing arrives within 10 s.
async fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> usize {
    tokio::time::timeout(common::EVENT_TIMEOUT, stream.read(buf))
        .await
        .expect("nothing to read within 10 s")
        .unwrap()
}

/// Reads everything the server sends until it closes, bounded by [`common::EVENT_TIMEOUT`].
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(common::EVENT_TIMEOUT, stream.read_to_end(&mut out))
        .await
        .expect("the server did not close within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn healthz_answers_head_and_refuses_other_methods() {
    let s = start(|_| {}).await;
    // HEAD: the status and headers of GET, and no body.
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = read_to_close(&mut stream).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let (_, body) = resp.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "", "HEAD has no body: {resp:?}");
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let req = format!(
            "{method} /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let resp = raw_exchange(s.addr, req.as_bytes()).await;
        assert_eq!(status(&resp), 405, "{method}: {resp}");
        let head = resp.to_ascii_lowercase();
        assert!(
            head.contains("\r\nallow: get, head\r\n"),
            "{method}: {resp}"
        );
    }
}

#[tokio::test]
async fn the_101_carries_no_subprotocol_and_no_extension_even_when_offered() {
    let s = start(|_| {}).await;
    let offer = "Sec-WebSocket-Protocol: chat, superchat\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame\r\n";
    for path in ["/echo", "/ws", "/rooms/offered"] {
        let req = upgrade_request("GET", "HTTP/1.1", offer, "").replacen("/echo", path, 1);
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = read_some(&mut stream, &mut buf).await;
            assert!(n > 0, "{path}: closed before the 101: {head:?}");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{path}: {head}");
        assert!(
            !head.contains("sec-websocket-protocol"),
            "{path}: a subprotocol was chosen: {head}"
        );
        assert!(
            !head.contains("sec-websocket-extensions"),
            "{path}: an extension was chosen: {head}"
        );
    }
    // And the echo socket then speaks plain frames: RSV bits zero both ways.
    let req = upgrade_request("GET", "HTTP/1.1", offer, "");
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = read_some(&mut stream, &mut buf).await;
        assert!(n > 0, "closed before the 101");
        got.extend_from_slice(&buf[..n]);
    }
    let start_of_frames = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut frames = got.split_off(start_of_frames);
    stream
        .write_all(&common::masked_frame(0x81, b"plain"))
        .await
        .unwrap();
    while frames.len() < 7 {
        let n = read_some(&mut stream, &mut buf).await;
        assert!(n > 0, "closed before the echo");
        frames.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&frames[..7], b"\x81\x05plain");
}
