//! The `roomcast` binary: configuration, and draining on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roomcast_ws::tokio::connect;
use roomcast_ws::{CloseCode, Message};

const BIN: &str = env!("CARGO_BIN_EXE_roomcast");

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A plain HTTP/1.1 request; returns the status code (0 when refused).
fn http_status(addr: SocketAddr, request: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The whole response to `request` (the server closes the connection after it).
fn http_response(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn healthz(addr: SocketAddr) -> u16 {
    http_status(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
}

struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start(extra: &[&str]) -> Self {
        let addr = free_addr();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &addr.to_string(), "--log", "warn"])
            .args(extra)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let serve = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while healthz(addr) != 200 {
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn config_prints_commented_defaults_that_serve_accepts() {
    let out = Command::new(BIN).arg("config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "[server]",
        "[websocket]",
        "[rooms]",
        "listen = ",
        "history_max_messages = ",
        "# ",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    let file = std::env::temp_dir().join(format!("roomcast-cli-{}.toml", std::process::id()));
    std::fs::write(&file, text.replace("echo = false", "echo = true")).unwrap();
    let serve = Serve::start(&["--config", file.to_str().unwrap()]);
    // echo came from the file
    let upgrade = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(http_status(serve.addr, upgrade), 101);
    drop(serve);
    std::fs::remove_file(file).unwrap();
}

#[test]
fn configuration_mistakes_are_clear_errors() {
    for (args, env, needle) in [
        (
            vec!["--set", "server.lisen=x"],
            None,
            "unknown setting `server.lisen`",
        ),
        (
            vec!["--set", "rooms.history_max_messages=lots"],
            None,
            "is not a whole number",
        ),
        (
            vec![],
            Some(("ROOMCAST_SERVER_ECHO", "maybe")),
            "is not true or false",
        ),
        (
            vec!["--config", "/nonexistent/roomcast.toml"],
            None,
            "cannot read /nonexistent/roomcast.toml",
        ),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(&args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_with_1001_and_exits_within_the_timeout() {
    let serve = Serve::start(&["--set", "server.drain_timeout_ms=2000"]);
    let addr = serve.addr;
    let mut clients = Vec::new();
    for i in 0..3 {
        let (mut ws, _) = connect(&format!("ws://{addr}/ws")).await.unwrap();
        ws.send(Message::text(format!(
            r#"{{"type":"hello","client":"c{i}"}}"#
        )))
        .await
        .unwrap();
        ws.send(Message::text(r#"{"type":"join","room":"drain"}"#))
            .await
            .unwrap();
        clients.push(ws);
    }
    // A client that never answers the close keeps the drain going until its timeout.
    let mut mute = TcpStream::connect(addr).unwrap();
    mute.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    // Its 101 first: a handshake still unread when the drain starts would be refused.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            mute.read(&mut byte).unwrap(),
            1,
            "the mute client's handshake"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let started = Instant::now();
    serve.signal("-TERM");
    for ws in &mut clients {
        let mut code = None;
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(5), ws.recv())
            .await
            .unwrap()
        {
            if let Message::Close(frame) = msg.unwrap() {
                code = frame.map(|f| f.code);
            }
        }
        assert_eq!(
            code,
            Some(CloseCode::GOING_AWAY),
            "clients are told to reconnect elsewhere"
        );
    }
    // While the mute client holds the drain open: health is 503, new clients are refused.
    assert_eq!(healthz(addr), 503);
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(http_status(addr, upgrade), 503);
    let refusal = http_response(addr, upgrade);
    let (head, body) = refusal.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
        "the length matches the body: {refusal:?}"
    );
    let mut serve = serve;
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "exited before the drain timeout with a client left: {took:?}"
    );
    drop(mute);
}

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn bench_connect_echo_and_fanout_against_a_real_server() {
    let serve = Serve::start(&["--echo"]);
    let pid = serve.child.id().to_string();
    let url = format!("ws://{}/ws", serve.addr);
    let r = bench(&[
        "connect",
        "--url",
        &url,
        "-n",
        "200",
        "--room",
        "bench-test",
        "--hold",
        "0.2",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(
        (r["connections"].as_u64(), r["failed"].as_u64()),
        (Some(200), Some(0)),
        "{r}"
    );
    assert!(r["handshakes_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["server_bytes_per_connection"].as_f64().is_some(), "{r}");
    let r = bench(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "50",
        "-m",
        "200",
        "--size",
        "100",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(
        (
            r["deliveries"].as_u64(),
            r["lost"].as_u64(),
            r["out_of_order"].as_u64()
        ),
        (Some(50 * 200), Some(0), Some(0)),
        "{r}"
    );
    assert!(r["server_cpu_us_per_delivery"].as_f64().is_some(), "{r}");
    assert!(r["latency_us"]["p99"].as_f64().unwrap() > 0.0);
    let r = bench(&[
        "echo",
        "--url",
        &format!("ws://{}/echo", serve.addr),
        "-c",
        "10",
        "-s",
        "1000",
        "-m",
        "500",
        "--window",
        "4",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(
        (r["echoes"].as_u64(), r["wrong"].as_u64()),
        (Some(500), Some(0)),
        "{r}"
    );
    let r = bench(&[
        "fanout",
        "--raw",
        "--url",
        &format!("ws://{}/rooms/raw-bench", serve.addr),
        "--publisher-url",
        &format!("ws://{}/rooms/raw-bench?echo=1", serve.addr),
        "-n",
        "20",
        "-m",
        "100",
    ]);
    assert_eq!(
        (r["deliveries"].as_u64(), r["lost"].as_u64()),
        (Some(20 * 100), Some(0)),
        "{r}"
    );
}

#[test]
fn bench_fanout_over_sse_and_long_polling() {
    let serve = Serve::start(&[]);
    let url = format!("ws://{}/ws", serve.addr);
    for transport in ["sse", "poll"] {
        let r = bench(&[
            "fanout",
            "--url",
            &url,
            "--transport",
            transport,
            "-n",
            "20",
            "-m",
            "30",
            "--rate",
            "100",
            "--room",
            transport,
        ]);
        assert_eq!(
            (
                r["deliveries"].as_u64(),
                r["lost"].as_u64(),
                r["out_of_order"].as_u64()
            ),
            (Some(20 * 30), Some(0), Some(0)),
            "{transport}: {r}"
        );
        assert!(r["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_refuses_targets_outside_loopback() {
    let out = Command::new(BIN)
        .args([
            "bench",
            "connect",
            "--url",
            "ws://192.0.2.1:80/ws",
            "-n",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}
