//! WebSockets over HTTP/2 (RFC 8441) and the rest of HTTP on the same HTTP/2
//! connections, with clients nobody here wrote: Python's `h2` (hyper-h2) opening several
//! WebSockets, an SSE stream and a request on one connection, over TLS (ALPN `h2`) and in
//! cleartext (prior knowledge); curl for HTTP/2 requests. The server's counters show how
//! many connections and streams it took.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Serve, curl, peer_script, python, run_python};

fn h2_client() -> PathBuf {
    peer_script("h2_client.py")
}

/// Runs the h2 peer to its end: it must succeed and print "all scenarios passed".
fn run_h2_client(args: &[&str]) -> String {
    run_python(h2_client(), args)
}

/// `/api/stats`, read over HTTP/1.1 (which the HTTP/2 counters do not see).
fn stats(s: &Serve) -> serde_json::Value {
    let (ok, body) = curl(&["--http1.1", &format!("http://{}/api/stats", s.addr)]);
    assert!(ok, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A counter of `/api/stats`.
fn stat(s: &Serve, name: &str) -> u64 {
    let v = stats(s);
    v[name].as_u64().unwrap_or_else(|| panic!("{name} in {v}"))
}

/// The HTTP version curl spoke for a GET of `url` with `args` (`2`, `1.1`).
fn version(args: &[&str], url: &str) -> String {
    let mut all = args.to_vec();
    all.extend(["-o", "/dev/null", "-w", "%{http_version}", url]);
    let (ok, version) = curl(&all);
    assert!(ok, "curl {all:?}");
    version
}

/// A self-signed certificate for 127.0.0.1 (`h2.crt`, `h2.key` in a directory of the
/// test's own), made with openssl.
fn certificate(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("roomcast-h2-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, key) = (dir.join("h2.crt"), dir.join("h2.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("openssl (scripts/test installs it): {e}"));
    assert!(status.success());
    (dir, crt, key)
}

#[test]
fn websockets_sse_and_requests_share_one_cleartext_http2_connection() {
    let s = Serve::start(&[]);
    let url = format!("http://{}", s.addr);
    let out = run_h2_client(&[&url]);
    assert!(out.contains("three websockets on one connection"), "{out}");
    // One connection for all of it: three /ws and two raw-room WebSockets, an SSE stream
    // and a request, each a stream of it.
    assert_eq!(stat(&s, "http2_connections"), 1);
    assert_eq!(stat(&s, "http2_websockets"), 5);
    assert_eq!(stat(&s, "handshakes"), 5);
    // curl with prior knowledge, and HTTP/1.1 on the same port as before.
    let (ok, body) = curl(&["--http2-prior-knowledge", &format!("{url}/healthz")]);
    assert!(ok && body == "ok\n", "{body:?}");
    assert_eq!(
        version(&["--http2-prior-knowledge"], &format!("{url}/healthz")),
        "2"
    );
    let (ok, body) = curl(&["--http1.1", &format!("{url}/healthz")]);
    assert!(ok && body == "ok\n", "{body:?}");
}

#[test]
fn over_tls_alpn_chooses_http2_for_websockets_and_polls() {
    let (dir, crt, key) = certificate("alpn");
    let s = Serve::start(&[
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let ca = crt.to_str().unwrap();
    run_h2_client(&[&base, ca]);
    // curl negotiates h2 by ALPN; a long-poll answers over it.
    let (ok, out) = curl(&[
        "--cacert",
        ca,
        "--http2",
        "-w",
        "\n%{http_version}",
        &format!("{base}/poll?room=h2poll&timeout_ms=0"),
    ]);
    assert!(
        ok && out.contains("\"welcome\"") && out.ends_with("\n2"),
        "{out}"
    );
    // Our CLI: `connect --http2` over TLS, ALPN h2.
    let mut cli = Command::new(common::BIN)
        .args(["connect", "--http2", "--cacert", ca, "--max-messages", "1"])
        .arg(format!("wss://127.0.0.1:{}/ws", s.addr.port()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let hello = b"{\"type\":\"hello\",\"client\":\"cli-h2\",\"ref\":1}\n";
    cli.stdin.take().unwrap().write_all(hello).unwrap();
    let out = cli.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("\"welcome\""),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("(HTTP/2)"), "{stderr}");
    // The counters, over HTTP/1.1 and TLS.
    let (ok, body) = curl(&["--cacert", ca, "--http1.1", &format!("{base}/api/stats")]);
    assert!(ok, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["http2_connections"], 3, "{body}");
    assert_eq!(v["http2_websockets"], 6, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_extended_connects_are_refused_on_their_stream() {
    let s = Serve::start(&[]);
    let out = run_h2_client(&["--refusals", &format!("http://{}", s.addr)]);
    assert!(out.contains(":protocol=None: 405"), "{out}");
    // Only the last one was a WebSocket.
    assert_eq!(stat(&s, "http2_websockets"), 1);
    assert_eq!(stat(&s, "http2_connections"), 1);
}

#[test]
fn each_websocket_stream_counts_against_the_limits_per_address() {
    let s = Serve::start(&[
        "--set",
        "limits.max_connections_per_ip=2",
        "--set",
        "limits.exempt_loopback=false",
    ]);
    run_h2_client(&["--limits", &format!("http://{}", s.addr)]);
    assert_eq!(stat(&s, "http2_websockets"), 2);
    assert_eq!(stats(&s)["refusals"]["limit"], 1);
}

#[test]
fn with_http2_off_only_http1_is_spoken() {
    let (dir, crt, key) = certificate("off");
    let s = Serve::start(&[
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--set",
        "server.http2=false",
    ]);
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let ca = crt.to_str().unwrap();
    // ALPN does not offer h2: curl falls back to HTTP/1.1.
    let got = version(&["--cacert", ca, "--http2"], &format!("{base}/healthz"));
    assert_eq!(got, "1.1");
    // The preface in cleartext is a bad HTTP/1.1 request.
    let plain = Serve::start(&["--set", "server.http2=false"]);
    let (ok, _) = curl(&[
        "--http2-prior-knowledge",
        &format!("http://{}/healthz", plain.addr),
    ]);
    assert!(!ok, "HTTP/2 was spoken with server.http2 = false");
    assert_eq!(stat(&plain, "http2_connections"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_draining_node_closes_its_http2_websockets_with_1001_and_sends_goaway() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let mut s = Serve::start(&[]);
    // Python h2 sees the GOAWAY; our CLI (hyper's client) the WebSocket's close.
    let mut py = Command::new(python())
        .arg(h2_client())
        .args(["--drain", &format!("http://{}", s.addr)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut py_lines = BufReader::new(py.stdout.take().unwrap()).lines();
    assert_eq!(
        py_lines.next().and_then(Result::ok).unwrap_or_default(),
        "ready"
    );
    let mut cli = Command::new(common::BIN)
        .args(["connect", "--http2", &format!("ws://{}/ws", s.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    stdin
        .write_all(b"{\"type\":\"hello\",\"client\":\"cli-drain\",\"ref\":1}\n")
        .unwrap();
    let mut cli_lines = BufReader::new(cli.stdout.take().unwrap()).lines();
    let welcome = cli_lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(welcome.contains("\"welcome\""), "{welcome}");
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = py_lines.map_while(Result::ok).collect();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success() && rest.iter().any(|l| l == "all scenarios passed"),
        "{rest:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its status lines: the close comes while its stdin is still open.
    let mut status = Vec::new();
    for line in BufReader::new(cli.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let closed = line.starts_with("closed:");
        status.push(line);
        if closed {
            break;
        }
    }
    assert!(status[0].contains("(HTTP/2)"), "{status:?}");
    assert!(
        status.last().is_some_and(|l| l.starts_with("closed: 1001")),
        "{status:?}"
    );
    drop(stdin);
    let _ = cli.wait();
    // The node exits once its connections are gone, well within the drain timeout.
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn a_stream_that_stops_reading_is_dropped_and_its_neighbours_go_on() {
    // A small outbox bound, so the stalled stream overflows it quickly.
    let s = Serve::start(&["--set", "websocket.max_queued_bytes=262144"]);
    let out = run_h2_client(&["--slow", &format!("http://{}", s.addr)]);
    assert!(
        out.contains("the connection and its reading stream go on"),
        "{out}"
    );
    assert_eq!(stat(&s, "slow_consumer_closes"), 1);
    assert_eq!(stat(&s, "http2_connections"), 1);
}

#[test]
fn a_connection_that_leaves_many_streams_stuck_is_closed() {
    let s = Serve::start(&["--set", "websocket.max_queued_bytes=262144"]);
    let out = run_h2_client(&["--slow-many", &format!("http://{}", s.addr)]);
    assert!(out.contains("the connection was closed"), "{out}");
    assert_eq!(stat(&s, "slow_consumer_closes"), 5);
    // The five slow-consumer warnings, then the connection's.
    let line = loop {
        let line = s.stderr.next_within(
            std::time::Duration::from_secs(10),
            "the warning that names the stuck connection",
        );
        if !line.contains("slow consumer") {
            break line;
        }
    };
    assert!(line.contains("stopped reading its streams"), "{line}");
    assert!(line.contains("stuck") && line.contains('5'), "{line}");
}

#[test]
fn an_http2_connection_that_opens_no_stream_is_cut_after_the_handshake_timeout() {
    use std::io::{Read, Write};
    let s = Serve::start(&["--set", "server.handshake_timeout_ms=500"]);
    let mut tcp = std::net::TcpStream::connect(s.addr).unwrap();
    // The preface and an empty SETTINGS frame, then nothing.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match tcp.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "the connection was still open after {:?}: {e}",
                started.elapsed()
            ),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(400),
        "cut after {took:?}"
    );
    assert_eq!(stat(&s, "http2_connections"), 1);
}

/// The `connections` gauges of `/api/stats`: (websocket, raw).
fn connections(s: &Serve) -> (u64, u64) {
    let v = stats(s);
    let c = &v["connections"];
    (c["websocket"].as_u64().unwrap(), c["raw"].as_u64().unwrap())
}

#[test]
fn streams_reset_before_their_answer_leave_nothing_behind() {
    let s = Serve::start(&[]);
    run_h2_client(&["--resets", &format!("http://{}", s.addr)]);
    // Every stream's connection ends and is unregistered (its per-address slot given
    // back): none is left, whatever moment its reset came in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while connections(&s) != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "left registered: {:?}",
            connections(&s)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn an_idle_http2_connection_is_closed() {
    let s = Serve::start(&["--set", "server.http2_idle_timeout_ms=800"]);
    let out = run_h2_client(&["--idle", &format!("http://{}", s.addr)]);
    assert!(out.contains("GOAWAY after"), "{out}");
}
