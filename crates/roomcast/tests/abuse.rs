//! Clients that attack the node, against `roomcast serve --workers 1`: one that floods
//! pings and never reads, and one that writes into a raw room as fast as loopback goes.
//! Each test reads the server's resident memory from `/proc` while the attack runs, and
//! times a bystander on the same worker (`ping` requests on `/ws`): the node must stay
//! small and keep answering others.
//!
//! The bounds are far from what the fixed code does (printed with `--nocapture`) and far
//! under what the code before the fixes did: +59 MiB for 300,000 unread pings, +590 MiB
//! and 770 ms stalls for the inbound flood.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Serve, within};
use roomcast_ws::Message;
use roomcast_ws::tokio::connect;
use serde_json::{Value, json};

const ANSWER: Duration = Duration::from_secs(10);

/// The attacks run one at a time: each measures the machine's cores as well.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `roomcast serve --workers 1`.
fn serve() -> Serve {
    Serve::start(&["--workers", "1"])
}

/// The server's resident memory, in KiB.
fn server_rss_kib(server: &Serve) -> u64 {
    rss_kib(server.child.id())
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// The largest resident memory seen while `attack` runs, sampled every 10 ms.
fn peak_rss_during(server: &Serve, attack: impl FnOnce()) -> u64 {
    let done = AtomicBool::new(false);
    let pid = server.child.id();
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(rss_kib(pid))
        });
        attack();
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    })
}

/// A `/ws` client on the same worker sending `ping` requests one after another until
/// `stop`; the slowest answer, in microseconds, goes to `worst`, the count to `answered`.
async fn bystander(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    worst: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
) {
    let (mut ws, _) = within("connect", ANSWER, connect(&format!("ws://{addr}/ws")))
        .await
        .unwrap();
    let request = async |ws: &mut roomcast_ws::tokio::WebSocket<_>, v: Value| -> Value {
        ws.send(Message::text(v.to_string())).await.unwrap();
        loop {
            match within("a reply", ANSWER, ws.recv()).await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(_)) => {}
                other => panic!("the bystander's connection ended: {other:?}"),
            }
        }
    };
    let welcome = request(
        &mut ws,
        json!({"type":"hello","client":"bystander","ref":0}),
    )
    .await;
    assert_eq!(welcome["type"], "welcome");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sent = Instant::now();
        let pong = request(&mut ws, json!({"type":"ping","ref":n})).await;
        assert_eq!(
            (pong["type"].as_str(), pong["ref"].as_u64()),
            (Some("pong"), Some(n))
        );
        worst.fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
        answered.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs `attack` (on a thread of its own) while a bystander pings; returns the server's
/// peak RSS growth in KiB and the bystander's slowest answer.
fn attack_beside_a_bystander(server: &Serve, attack: impl FnOnce() + Send) -> (u64, Duration, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pinger = {
        let (stop, worst, answered) = (stop.clone(), worst.clone(), answered.clone());
        let addr = server.addr;
        std::thread::spawn(move || runtime.block_on(bystander(addr, stop, worst, answered)))
    };
    // The bystander is connected and answered before the attack starts.
    let deadline = Instant::now() + ANSWER;
    while answered.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline, "the bystander got no answers");
        std::thread::sleep(Duration::from_millis(5));
    }
    worst.store(0, Ordering::Relaxed);
    let before = server_rss_kib(server);
    let peak = peak_rss_during(server, attack);
    let during = answered.swap(0, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    pinger.join().unwrap();
    (
        peak.saturating_sub(before),
        Duration::from_micros(worst.load(Ordering::Relaxed)),
        during,
    )
}

/// Sends a client handshake for `path` and reads the 101.
fn handshake(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(ANSWER)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A client frame, masked with the all-zero key (valid, and the payload stays as is).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(payload);
    f
}

#[test]
fn unread_pings_leave_the_server_small_and_the_latest_one_answered() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = serve();
    let mut flooder = handshake(server.addr, "/rooms/pings");
    const PINGS: usize = 300_000;
    let (growth, worst, answered) = attack_beside_a_bystander(&server, || {
        let mut batch = Vec::new();
        for i in 0..PINGS {
            batch.extend(frame(0x9, format!("{i:0>125}").as_bytes()));
            if batch.len() > 256 * 1024 || i + 1 == PINGS {
                flooder.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        // Until the server has read them all: a ping after them is answered last.
        std::thread::sleep(Duration::from_millis(300));
    });
    println!(
        "{PINGS} pings of 125 B never read: server RSS +{growth} KiB, bystander's slowest \
         answer {worst:?} ({answered} answered meanwhile)"
    );
    assert!(growth < 16 * 1024, "RSS grew by {growth} KiB");
    assert!(
        worst < Duration::from_millis(500),
        "a bystander waited {worst:?}"
    );
    // Read now: pongs come, the last one for the last ping.
    flooder
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match flooder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let last = format!("{:0>125}", PINGS - 1);
    assert!(
        got.ends_with(&frame_unmasked(0xa, last.as_bytes())),
        "the last frame the server sent is not the pong for the last ping"
    );
    let pongs = got.len() / (2 + 125);
    println!("pongs received: {pongs} for {PINGS} pings");
    assert!(pongs < PINGS, "every ping answered: nothing was coalesced");
}

/// A server frame (unmasked) with a payload under 126 bytes.
fn frame_unmasked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

#[test]
fn an_inbound_flood_neither_grows_the_server_nor_stalls_its_worker() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = serve();
    let mut flooder = handshake(server.addr, "/rooms/flood");
    // 1.5 GiB of 64 KiB binary messages into a room nobody else is in.
    let chunk: Vec<u8> = (0..16)
        .flat_map(|_| frame(0x2, &[7u8; 64 * 1024]))
        .collect();
    const CHUNKS: usize = 1536;
    let started = Instant::now();
    let (growth, worst, answered) = attack_beside_a_bystander(&server, || {
        for _ in 0..CHUNKS {
            flooder.write_all(&chunk).unwrap();
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "1.5 GiB written in {secs:.1} s: server RSS +{growth} KiB, bystander's slowest answer \
         {worst:?} ({answered} answered meanwhile)"
    );
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
    assert!(
        worst < Duration::from_millis(250),
        "a bystander waited {worst:?}"
    );
    assert!(answered > 0, "the bystander got no answer during the flood");
}
