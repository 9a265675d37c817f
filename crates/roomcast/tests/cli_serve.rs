//! The `roomcast` binary: configuration, draining on SIGTERM and SIGINT, the bench.
//!
//! Every wait is bounded and fails with a message saying what did not come: a child's
//! output line (`Lines::next_within`), a process exit (`wait_exit`, `output_within`), an
//! HTTP answer (`http_head`, `http_response`), an async client call (`within`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, LISTENING, Lines, listening_addr, within};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use roomcast_ws::tokio::{WebSocket, connect};
use roomcast_ws::{CloseCode, Message};

/// How long any single answer may take: generous, for a busy 2-core machine.
const ANSWER: Duration = Duration::from_secs(10);

const UPGRADE_WS: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Waits for `child` to exit, at most `bound` (polling its status: the exit is the event).
fn wait_exit(child: &mut Child, bound: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} was still running after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end with its output captured, at most `bound`.
fn output_within(cmd: &mut Command, bound: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::spawn(child.stdout.take().unwrap());
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    let status = wait_exit(&mut child, bound, &what);
    Output {
        status,
        stdout: stdout.rest_within(ANSWER, "its stdout").into_bytes(),
        stderr: stderr.rest_within(ANSWER, "its stderr").into_bytes(),
    }
}

/// Sends `request` on a new connection and reads the answer, bounded: the head only
/// (`whole` false), or everything until the server closes (`whole` true).
fn http_exchange(addr: SocketAddr, request: &str, whole: bool) -> (TcpStream, String) {
    let what = request.lines().next().unwrap_or_default().to_owned();
    let mut s = TcpStream::connect_timeout(&addr, ANSWER)
        .unwrap_or_else(|e| panic!("{what}: cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(ANSWER)).unwrap();
    s.set_write_timeout(Some(ANSWER)).unwrap();
    s.write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: cannot send to {addr}: {e}"));
    let deadline = Instant::now() + ANSWER;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Byte by byte for the head, so that nothing after it is consumed.
    let step = if whole { buf.len() } else { 1 };
    loop {
        if !whole && out.ends_with(b"\r\n\r\n") {
            break;
        }
        match s.read(&mut buf[..step]) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "{what}: no complete answer from {addr} within {ANSWER:?} ({e}); got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the answer from {addr} took over {ANSWER:?}"
        );
    }
    (s, String::from_utf8_lossy(&out).into_owned())
}

/// The head of the answer to `request`, and the connection (kept open by the caller
/// when it is a WebSocket).
fn http_head(addr: SocketAddr, request: &str) -> (TcpStream, String) {
    let (s, head) = http_exchange(addr, request, false);
    assert!(head.ends_with("\r\n\r\n"), "an incomplete head: {head:?}");
    (s, head)
}

/// The whole answer to `request` (the server closes the connection after it).
fn http_response(addr: SocketAddr, request: &str) -> String {
    http_exchange(addr, request, true).1
}

/// The status code of an answer's head.
fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"))
}

fn http_status(addr: SocketAddr, request: &str) -> u16 {
    status_of(&http_head(addr, request).1)
}

fn healthz(addr: SocketAddr) -> u16 {
    http_status(addr, HEALTHZ)
}

/// `roomcast serve` on a port the kernel picks, which it reports on stdout; killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    _stdout: Lines,
}

impl Serve {
    fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// [`Serve::start`] with environment variables set for the child.
    fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let line = stdout.next_within(ANSWER, LISTENING);
        let addr = listening_addr(&line);
        let serve = Self {
            child,
            addr,
            _stdout: stdout,
        };
        assert_eq!(healthz(addr), 200, "a node that is up is healthy");
        serve
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `bound`.
    fn exit_within(&mut self, bound: Duration) -> ExitStatus {
        wait_exit(&mut self.child, bound, "roomcast serve")
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
    let out = output_within(Command::new(BIN).arg("config"), ANSWER);
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
    let upgrade = UPGRADE_WS.replace("GET /ws ", "GET /echo ");
    assert_eq!(http_status(serve.addr, &upgrade), 101);
    drop(serve);
    std::fs::remove_file(file).unwrap();
}

/// The status of a WebSocket handshake to `/echo`: 101 with echo on, 404 with it off.
fn echo_status(serve: &Serve) -> u16 {
    http_status(serve.addr, &UPGRADE_WS.replace("GET /ws ", "GET /echo "))
}

#[test]
fn roomcast_config_names_the_file_and_env_then_flags_override_it() {
    let file = std::env::temp_dir().join(format!("roomcast-env-{}.toml", std::process::id()));
    std::fs::write(&file, "[server]\necho = true\n").unwrap();
    let path = file.to_str().unwrap();
    // ROOMCAST_CONFIG names the file (echo comes from it).
    let serve = Serve::start_with_env(&[], &[("ROOMCAST_CONFIG", path)]);
    assert_eq!(echo_status(&serve), 101, "ROOMCAST_CONFIG was not read");
    drop(serve);
    // ROOMCAST_<SECTION>_<KEY> overrides the file.
    let env = [("ROOMCAST_CONFIG", path), ("ROOMCAST_SERVER_ECHO", "false")];
    let serve = Serve::start_with_env(&[], &env);
    assert_eq!(
        echo_status(&serve),
        404,
        "the environment did not override the file"
    );
    drop(serve);
    // Flags override the environment: --echo, and --set for any setting.
    for flags in [&["--echo"][..], &["--set", "server.echo=true"][..]] {
        let serve = Serve::start_with_env(flags, &env);
        assert_eq!(
            echo_status(&serve),
            101,
            "{flags:?} did not override the environment"
        );
        drop(serve);
    }
    // And without any of them, the default: off.
    let serve = Serve::start(&[]);
    assert_eq!(echo_status(&serve), 404);
    drop(serve);
    std::fs::remove_file(file).unwrap();
}

/// Runs `roomcast serve` with `args` and `env` until it has answered a request, kills it,
/// and returns what it wrote on stderr. The server logs `listening` (at info) before its
/// workers run, so once `/healthz` is answered that line is written, if the filter lets it.
fn serve_logs(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("ROOMCAST_LOG")
        .env_remove("ROOMCAST_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::spawn(child.stdout.take().unwrap());
    let stderr = Lines::spawn(child.stderr.take().unwrap());
    let addr = listening_addr(&stdout.next_within(ANSWER, LISTENING));
    assert_eq!(healthz(addr), 200);
    child.kill().unwrap();
    wait_exit(&mut child, ANSWER, "roomcast serve, killed");
    stderr.rest_within(ANSWER, "its stderr")
}

/// The log lines that say the node listens.
fn listening_lines(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.contains("listening")).collect()
}

#[test]
fn log_format_json_writes_json_lines_and_the_log_filter_applies() {
    let logs = serve_logs(
        &["--log", "info", "--log-format", "json", "--workers", "3"],
        &[],
    );
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !listening_lines(&logs).is_empty(),
        "no `listening` at info: {logs}"
    );
    let mut workers_seen = false;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
        assert_eq!(v["level"], "INFO", "{line}");
        if v["fields"]["message"] == "listening" {
            assert_eq!(v["fields"]["workers"], 3, "--workers 3: {line}");
            workers_seen = true;
        }
    }
    assert!(
        workers_seen,
        "no JSON `listening` line with its fields: {logs}"
    );
    // The text format is not JSON.
    let logs = serve_logs(&["--log", "info"], &[]);
    let listening = listening_lines(&logs);
    assert!(!listening.is_empty(), "{logs}");
    assert!(
        listening
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{logs}"
    );
    // The filter, from --log or ROOMCAST_LOG: at warn, the info line is gone.
    for (args, env) in [
        (&["--log", "warn"][..], &[][..]),
        (&[][..], &[("ROOMCAST_LOG", "warn")][..]),
    ] {
        let logs = serve_logs(args, env);
        assert!(
            listening_lines(&logs).is_empty(),
            "{args:?} {env:?}: {logs}"
        );
    }
    let logs = serve_logs(&[], &[("ROOMCAST_LOG", "info")]);
    assert!(
        !listening_lines(&logs).is_empty(),
        "ROOMCAST_LOG=info: {logs}"
    );
}

/// README: "On SIGTERM or SIGINT the node drains" once it has printed `listening on`.
#[test]
fn sigterm_right_after_the_listening_line_drains() {
    for round in 0..20 {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        listening_addr(&stdout.next_within(ANSWER, LISTENING));
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = wait_exit(&mut child, Duration::from_secs(30), "roomcast serve");
        assert!(
            exit.success(),
            "round {round}: a SIGTERM right after `listening on` ended it with {exit}, not a drain"
        );
    }
}

/// A reload sent to a node without TLS files (`systemctl reload` to every node) is taken
/// and does nothing: the node goes on serving, and still drains on SIGTERM.
#[test]
fn sighup_without_tls_files_leaves_the_node_serving() {
    let mut s = Serve::start(&[]);
    s.signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "SIGHUP ended a node without TLS files"
    );
    assert_eq!(healthz(s.addr), 200);
    s.signal("-TERM");
    assert!(s.exit_within(Duration::from_secs(30)).success());
}

#[test]
fn configuration_mistakes_are_clear_errors() {
    // The promise: serve refuses to start, and says which setting, value or file is wrong
    // (the wording is not promised, so only the culprit is checked).
    for (args, env, culprits) in [
        (vec!["--set", "server.lisen=x"], None, &["server.lisen"][..]),
        (
            vec!["--set", "rooms.history_max_messages=lots"],
            None,
            &["rooms.history_max_messages", "lots"][..],
        ),
        (
            vec![],
            Some(("ROOMCAST_SERVER_ECHO", "maybe")),
            &["maybe"][..],
        ),
        (
            vec!["--config", "/nonexistent/roomcast.toml"],
            None,
            &["/nonexistent/roomcast.toml"][..],
        ),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(&args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        // A mistake that went unnoticed would leave the server running: bounded.
        let out = output_within(&mut cmd, ANSWER);
        assert!(!out.status.success(), "{args:?} {env:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for culprit in culprits {
            assert!(stderr.contains(culprit), "{args:?} {env:?}: {stderr}");
        }
    }
}

type Ws = WebSocket<tokio::net::TcpStream>;

/// A `/ws` client that said hello as `client` and has been answered `joined` in `room`.
async fn member(addr: SocketAddr, client: &str, room: &str) -> Ws {
    let (mut ws, _) = within(
        "the /ws handshake",
        ANSWER,
        connect(&format!("ws://{addr}/ws")),
    )
    .await
    .unwrap();
    let hello = format!(r#"{{"type":"hello","client":"{client}","ref":1}}"#);
    let join = format!(r#"{{"type":"join","room":"{room}","ref":2}}"#);
    within("sending hello and join", ANSWER, async {
        ws.send(Message::text(hello)).await.unwrap();
        ws.send(Message::text(join)).await.unwrap();
    })
    .await;
    within("the `joined` reply", ANSWER, async {
        loop {
            match ws.recv().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains(r#""type":"joined""#) => break,
                Some(Ok(_)) => {}
                other => panic!("the connection ended before `joined`: {other:?}"),
            }
        }
    })
    .await;
    ws
}

/// Reads until the connection is over; the code of the close frame received, if any.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    within(
        "the close frame and the end of the connection",
        ANSWER,
        async {
            let mut code = None;
            while let Some(msg) = ws.recv().await {
                if let Message::Close(frame) = msg.unwrap() {
                    code = frame.map(|f| f.code);
                }
            }
            code
        },
    )
    .await
}

/// A WebSocket client that completed its handshake and will never answer a close frame.
fn mute_client(addr: SocketAddr) -> TcpStream {
    // Its 101 first: a handshake still unread when the drain starts would be refused.
    let (mute, head) = http_head(addr, UPGRADE_WS);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    mute
}

/// The code of the close frame the server sends `mute` (read within its socket's read
/// timeout): the sign that the drain has begun.
fn close_frame_code(mute: &mut TcpStream) -> u16 {
    let mut head = [0u8; 2];
    mute.read_exact(&mut head)
        .unwrap_or_else(|e| panic!("no close frame for the mute client within {ANSWER:?}: {e}"));
    assert_eq!(head[0], 0x88, "a final close frame, unmasked: {head:?}");
    let mut payload = vec![0u8; usize::from(head[1])];
    mute.read_exact(&mut payload).unwrap();
    assert!(payload.len() >= 2, "a close frame with a code: {payload:?}");
    u16::from_be_bytes([payload[0], payload[1]])
}

/// While a drain is under way: health is 503, and new WebSocket clients are refused with
/// 503, `retry-after: 1`, and a body as long as its `content-length` says.
fn assert_draining(addr: SocketAddr, sig: &str) {
    assert_eq!(healthz(addr), 503, "{sig}: /healthz while draining");
    let refusal = http_response(addr, UPGRADE_WS);
    assert_eq!(status_of(&refusal), 503, "{sig}: {refusal:?}");
    let (head, body) = refusal.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{sig}: {head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
        "{sig}: the length matches the body: {refusal:?}"
    );
}

/// `sig` drains: members and the mute client are closed with 1001; while the mute client
/// is still connected, health is 503 and new clients are refused; the process exits (0)
/// within the drain timeout (10 s by default), bounded generously.
async fn drains_on(sig: &str) {
    let serve = Serve::start(&[]);
    let addr = serve.addr;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(member(addr, &format!("c{i}"), "drain").await);
    }
    let mut mute = mute_client(addr);
    serve.signal(sig);
    // The mute client is sent its close: the drain has begun, and the mute client, which
    // never answers, keeps the node draining (up to the drain timeout) while it is checked.
    assert_eq!(close_frame_code(&mut mute), 1001, "{sig}");
    assert_draining(addr, sig);
    for ws in &mut clients {
        assert_eq!(
            close_code(ws).await,
            Some(CloseCode::GOING_AWAY),
            "{sig}: clients are told to reconnect elsewhere"
        );
    }
    let mut serve = serve;
    let status = serve.exit_within(Duration::from_secs(10 + 20));
    assert!(status.success(), "{sig}: {status}");
    drop(mute);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_with_1001_and_exits() {
    drains_on("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_like_sigterm() {
    drains_on("-INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_as_soon_as_the_last_client_is_gone() {
    // A drain timeout far longer than the bound below: an exit within it is the early one.
    let serve = Serve::start(&["--set", "server.drain_timeout_ms=120000"]);
    let addr = serve.addr;
    let mut clients = Vec::new();
    for i in 0..2 {
        clients.push(member(addr, &format!("e{i}"), "early").await);
    }
    let mut mute = mute_client(addr);
    serve.signal("-TERM");
    assert_eq!(close_frame_code(&mut mute), 1001);
    assert_draining(addr, "-TERM");
    let mut serve = serve;
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "exited while a client was left"
    );
    for ws in &mut clients {
        assert_eq!(close_code(ws).await, Some(CloseCode::GOING_AWAY));
    }
    drop(mute);
    let status = serve.exit_within(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

#[test]
fn drain_without_clients_exits_at_once() {
    let mut serve = Serve::start(&["--set", "server.drain_timeout_ms=120000"]);
    serve.signal("-INT");
    let status = serve.exit_within(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

/// Drains a node holding one client that never answers its close; returns how long the
/// process took to exit after that close was sent.
fn drain_with_a_mute_client(drain_timeout_ms: u64) -> Duration {
    let mut serve = Serve::start(&[
        "--set",
        &format!("server.drain_timeout_ms={drain_timeout_ms}"),
    ]);
    let mut mute = mute_client(serve.addr);
    serve.signal("-TERM");
    assert_eq!(close_frame_code(&mut mute), 1001);
    let closed = Instant::now();
    let status = serve.exit_within(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    closed.elapsed()
}

#[test]
fn the_drain_timeout_cuts_a_drain_short() {
    // 200 ms: the exit comes well before the 2 s any other close the server starts gets.
    let took = drain_with_a_mute_client(200);
    assert!(
        took < Duration::from_millis(1800),
        "exited {took:?} after the drain began, not at its 200 ms timeout"
    );
}

#[test]
fn a_client_that_never_answers_holds_the_drain_until_the_drain_timeout() {
    let took = drain_with_a_mute_client(6000);
    assert!(
        took >= Duration::from_millis(5900),
        "exited {took:?} after the drain began, before its 6 s timeout, with a client left"
    );
}

/// Runs `roomcast bench ARGS --json` (bounded); its exit status and its JSON report.
fn bench_run(args: &[&str]) -> (ExitStatus, Option<serde_json::Value>, String) {
    let out = output_within(
        Command::new(BIN)
            .arg("bench")
            .args(args)
            .arg("--json")
            .args(if args.contains(&"--timeout") {
                &[][..]
            } else {
                &["--timeout", "60"][..]
            }),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).ok();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status, report, format!("{stdout}\n{stderr}"))
}

/// A bench run that must pass: its report.
fn bench(args: &[&str]) -> serde_json::Value {
    let (status, report, out) = bench_run(args);
    assert!(status.success(), "bench {args:?} failed: {out}");
    let r = report.unwrap_or_else(|| panic!("bench {args:?}: no JSON report: {out}"));
    assert_eq!(r["ok"], true, "{r}");
    r
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
        (
            r["connections"].as_u64(),
            r["failed"].as_u64(),
            r["dropped"].as_u64()
        ),
        (Some(200), Some(0), Some(0)),
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
            r["out_of_order"].as_u64(),
            r["failed_subscribers"].as_u64()
        ),
        (Some(50 * 200), Some(0), Some(0), Some(0)),
        "{r}"
    );
    assert!(r["server_cpu_us_per_delivery"].as_f64().is_some(), "{r}");
    assert!(r["latency_us"]["p99"].as_f64().unwrap() > 0.0);
    for text in [false, true] {
        let mut args = vec![
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
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        if text {
            args.push("--text".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = bench(&args);
        assert_eq!(
            (
                r["echoes"].as_u64(),
                r["wrong"].as_u64(),
                r["out_of_order"].as_u64()
            ),
            (Some(500), Some(0), Some(0)),
            "text {text}: {r}"
        );
    }
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
fn bench_fails_on_lost_messages_and_failed_connections() {
    let serve = Serve::start(&["--echo"]);
    let addr = serve.addr;
    // Subscribers on the echo socket never receive the raw room's messages: all lost.
    let (status, r, out) = bench_run(&[
        "fanout",
        "--raw",
        "--url",
        &format!("ws://{addr}/echo"),
        "--publisher-url",
        &format!("ws://{addr}/rooms/lossy?echo=1"),
        "-n",
        "3",
        "-m",
        "20",
        "--timeout",
        "3",
    ]);
    assert!(!status.success(), "lost deliveries pass: {out}");
    let r = r.unwrap_or_else(|| panic!("no JSON report: {out}"));
    assert_eq!(
        (r["ok"].as_bool(), r["lost"].as_u64()),
        (Some(false), Some(60)),
        "{r}"
    );
    assert!(r["failure"].as_str().unwrap().contains("lost"), "{r}");
    // A raw room echoes nothing back to its only member: every echo is missing.
    let (status, r, out) = bench_run(&[
        "echo",
        "--url",
        &format!("ws://{addr}/rooms/no-echo"),
        "-c",
        "1",
        "-m",
        "10",
        "--timeout",
        "3",
    ]);
    assert!(!status.success(), "missing echoes pass: {out}");
    let r = r.unwrap_or_else(|| panic!("no JSON report: {out}"));
    assert_eq!(
        (r["ok"].as_bool(), r["echoes"].as_u64()),
        (Some(false), Some(0)),
        "{r}"
    );
    // Every join refused (an invalid room name): the run fails.
    let (status, _, out) = bench_run(&[
        "connect",
        "--url",
        &format!("ws://{addr}/ws"),
        "-n",
        "3",
        "--room",
        "no spaces",
        "--hold",
        "0",
    ]);
    assert!(!status.success(), "refused joins pass: {out}");
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
    // Bounded: a bench that did not refuse would try to reach the address.
    let out = output_within(
        Command::new(BIN).args([
            "bench",
            "connect",
            "--url",
            "ws://192.0.2.1:80/ws",
            "-n",
            "1",
        ]),
        ANSWER,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
