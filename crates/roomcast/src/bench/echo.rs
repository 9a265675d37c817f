//! `bench echo`: C connections send S-byte messages and wait for them back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use roomcast_ws::Message;
use serde_json::json;
use tokio::sync::Mutex;

use super::open::{dial, dial_h2, source, sources_for};
use super::proc::Watch;
use super::report::{Report, histogram, progress};
use super::{BenchError, Common, Target};

/// Options of `bench echo`.
#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// An echo socket (`roomcast serve --echo`: ws://127.0.0.1:8080/echo).
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,
    /// Message size in bytes (at least 8: the send time travels in the message).
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// Messages in all (spread over the connections).
    #[arg(long, short = 'm', default_value_t = 100_000)]
    pub messages: u64,
    /// Messages in flight per connection (1: closed loop).
    #[arg(long, short = 'w', default_value_t = 1)]
    pub window: usize,
    /// Send text messages instead of binary ones.
    #[arg(long)]
    pub text: bool,
    /// Open the connections as streams of HTTP/2 connections (RFC 8441; wss:// with
    /// ALPN h2, ws:// with prior knowledge), `--streams` to each.
    #[arg(long)]
    pub http2: bool,
    /// With --http2: WebSockets per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    #[command(flatten)]
    pub common: Common,
}

pub(super) async fn run(args: EchoArgs) -> Result<(), BenchError> {
    let target = Arc::new(Target::parse(&args.url, args.common.allow_remote)?);
    let size = args.size.max(8);
    let per_conn = args.messages.div_ceil(args.connections.max(1) as u64);
    let total = per_conn * args.connections as u64;
    let sources = sources_for(args.connections);
    let mut conns = Vec::with_capacity(args.connections);
    if args.http2 {
        conns = dial_h2(&target, args.connections, args.streams)
            .await
            .map_err(|e| BenchError::Failed(format!("HTTP/2: {e}")))?;
    }
    for i in conns.len()..args.connections {
        let ws = dial(&target, source(i, sources))
            .await
            .map_err(|e| BenchError::Failed(format!("connection {i}: {e}")))?;
        conns.push(ws);
    }
    let base = Instant::now();
    let echoed = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let reordered = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(histogram()));
    let bar = progress(total, "echoes", args.common.json);
    let server = args.common.server_pid.and_then(Watch::start);
    let start = Instant::now();
    let deadline = start + args.common.timeout();
    let mut tasks = Vec::new();
    for mut ws in conns {
        let (echoed, wrong, reordered, latency, bar, window, text) = (
            echoed.clone(),
            wrong.clone(),
            reordered.clone(),
            latency.clone(),
            bar.clone(),
            args.window.max(1) as u64,
            args.text,
        );
        tasks.push(tokio::spawn(async move {
            let message = |i: u64| {
                let stamp = base.elapsed().as_nanos() as u64;
                if text {
                    let mut t = format!("{stamp:016x}");
                    t.extend(std::iter::repeat_n('x', size.saturating_sub(16)));
                    Message::text(t)
                } else {
                    let mut b = BytesMut::with_capacity(size);
                    b.put_u64(stamp);
                    b.resize(size, (i % 251) as u8);
                    Message::Binary(b.freeze())
                }
            };
            let mut hist = histogram();
            let (mut sent, mut got) = (0u64, 0u64);
            // Each message carries the time it was made, strictly later than the one before
            // on this connection: an echo whose stamp is not later than the last one seen
            // came back out of order, or twice.
            let mut last_stamp = None;
            while sent < per_conn.min(window) {
                if ws.feed(message(sent)).await.is_err() {
                    return;
                }
                sent += 1;
            }
            if ws.flush().await.is_err() {
                return;
            }
            while got < per_conn {
                let Some(Ok(msg)) = ws.recv().await else {
                    break;
                };
                let stamp = match &msg {
                    Message::Binary(b) if b.len() == size => {
                        u64::from_be_bytes(b[..8].try_into().unwrap_or_default())
                    }
                    Message::Text(t) if t.len() == size.max(16) => {
                        u64::from_str_radix(&t.as_str()[..16], 16).unwrap_or(0)
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                    _ => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        0
                    }
                };
                if stamp != 0 {
                    if last_stamp.is_some_and(|last| stamp <= last) {
                        reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    last_stamp = Some(stamp);
                }
                got += 1;
                let _ = hist.record(
                    (base.elapsed().as_nanos() as u64)
                        .saturating_sub(stamp)
                        .max(1),
                );
                if sent < per_conn {
                    if ws.send(message(sent)).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                if got % 64 == 0 {
                    bar.inc(64);
                    echoed.fetch_add(64, Ordering::Relaxed);
                }
            }
            bar.inc(got % 64);
            echoed.fetch_add(got % 64, Ordering::Relaxed);
            let _ = latency.lock().await.add(&hist);
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        }));
    }
    for t in tasks {
        let _ = tokio::time::timeout_at(deadline.into(), t).await;
    }
    let elapsed = start.elapsed();
    let cpu = server.and_then(|w| w.cpu_used());
    bar.finish_and_clear();
    let n = echoed.load(Ordering::Relaxed);
    let bad = wrong.load(Ordering::Relaxed);
    let out_of_order = reordered.load(Ordering::Relaxed);
    let mut r = Report::new("echo", format!("bench echo  {}", args.url));
    r.field("url", json!(args.url))
        .field("connections", json!(args.connections))
        .field("size", json!(size))
        .field("window", json!(args.window));
    r.line(
        "load",
        format!(
            "{} connections, {size} B {} messages, window {}",
            args.connections,
            if args.text { "text" } else { "binary" },
            args.window
        ),
    );
    r.line(
        "echoes",
        format!(
            "{n} of {total} in {:.2} s: {:.0}/s",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64()
        ),
    );
    r.field("echoes", json!(n))
        .field("expected", json!(total))
        .field("wrong", json!(bad))
        .field("out_of_order", json!(out_of_order))
        .field("seconds", json!(elapsed.as_secs_f64()));
    r.field(
        "messages_per_second",
        json!(n as f64 / elapsed.as_secs_f64()),
    );
    r.latency(&*latency.lock().await);
    if let Some(c) = cpu {
        let per = c.as_secs_f64() * 1e6 / n.max(1) as f64;
        r.line("server CPU", format!("{per:.2} µs per message echoed"))
            .field("server_cpu_us_per_message", json!(per));
    }
    let mut problems = Vec::new();
    if n < total || bad > 0 || out_of_order > 0 {
        problems.push(format!(
            "{} echoes missing, {bad} wrong, {out_of_order} out of order or repeated",
            total.saturating_sub(n)
        ));
    }
    r.finish(args.common.json, &problems)
}
