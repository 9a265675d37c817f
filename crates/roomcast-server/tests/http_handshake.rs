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

#[tokio::test]
async fn refused_handshakes_say_why() {
    let s = start(|_| {}).await;
    let cases = [
        (
            upgrade_request("POST", "HTTP/1.1", "", ""),
            405,
            "allow: GET",
        ),
        (
            upgrade_request("GET", "HTTP/1.0", "", ""),
            400,
            "HTTP/1.1 or later",
        ),
        (
            upgrade_request("GET", "HTTP/1.1", "", "Upgrade"),
            426,
            "upgrade: websocket",
        ),
        (
            upgrade_request("GET", "HTTP/1.1", "", "Sec-WebSocket-Version"),
            426,
            "sec-websocket-version: 13",
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                "Sec-WebSocket-Version: 8\r\n",
                "Sec-WebSocket-Version",
            ),
            426,
            "sec-websocket-version: 13",
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                "Connection: keep-alive\r\n",
                "Connection",
            ),
            400,
            "Connection header",
        ),
        (
            upgrade_request("GET", "HTTP/1.1", "", "Sec-WebSocket-Key"),
            400,
            "missing Sec-WebSocket-Key",
        ),
        (
            upgrade_request(
                "GET",
                "HTTP/1.1",
                "Sec-WebSocket-Key: c2hvcnQ=\r\n",
                "Sec-WebSocket-Key",
            ),
            400,
            "16 bytes",
        ),
        (upgrade_request("GET", "HTTP/1.1", "", "Host"), 400, "Host"),
        (
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n".to_owned(),
            400,
            "malformed HTTP",
        ),
        (
            format!(
                "GET /echo HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20_000)
            ),
            431,
            "exceeds",
        ),
    ];
    for (req, want, reason) in cases {
        let resp = raw_exchange(s.addr, req.as_bytes()).await;
        assert_eq!(
            status(&resp),
            want,
            "request {:?} got {resp}",
            &req[..req.len().min(80)]
        );
        assert!(resp.contains(reason), "{reason:?} missing from {resp}");
        assert!(resp.contains("connection: close"), "{resp}");
    }
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_dropped() {
    let s = start(|c| c.server.handshake_timeout_ms = 300).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the server must drop a stalled handshake")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "dropped too early: {waited:?}"
    );
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_slow_trickle_is_dropped_too() {
    // One byte every 50 ms never finishes within the 300 ms budget.
    let s = start(|c| c.server.handshake_timeout_ms = 300).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    for b in upgrade_request("GET", "HTTP/1.1", "", "").bytes() {
        if stream.write_all(&[b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > Duration::from_secs(3) {
            panic!("still connected after 3 s");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3));
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
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stream
        .write_all(upgrade_request("GET", "HTTP/1.1", "", "").as_bytes())
        .await
        .unwrap();
    let n = stream.read(&mut buf).await.unwrap();
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
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"\x81\x0aover hyper");
}
