//! `bench connect`: open many connections, hold them, measure what they cost the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::open::{dial, join, source, sources_for};
use super::proc::Watch;
use super::report::{Report, human_bytes, progress};
use super::{BenchError, Common, Target};

/// Options of `bench connect`.
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// The WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// Speak the roomcast protocol: say hello, then join this room (a room member, not
    /// only a socket).
    #[arg(long)]
    pub room: Option<String>,
    /// Loopback source addresses to spread the connections over (127.0.0.1, .2, ...);
    /// by default one per 10,000 connections, so ephemeral ports never run out.
    #[arg(long)]
    pub sources: Option<usize>,
    /// Seconds to hold the connections once all are open; memory is read at the end.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    #[command(flatten)]
    pub common: Common,
}

pub(super) async fn run(args: ConnectArgs) -> Result<(), BenchError> {
    let target = Arc::new(Target::parse(&args.url, args.common.allow_remote)?);
    let sources = args.sources.unwrap_or(sources_for(args.connections)).max(1);
    let server = args.common.server_pid.and_then(Watch::start);
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(args.common.concurrency.max(1)));
    let (stop, stopped) = watch::channel(false);
    let deadline = Instant::now() + args.common.timeout();
    let bar = progress(args.connections as u64, "connections", args.common.json);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        if Instant::now() > deadline {
            break;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (target, room, opened, failed, dropped, mut stopped, bar) = (
            target.clone(),
            args.room.clone(),
            opened.clone(),
            failed.clone(),
            dropped.clone(),
            stopped.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let result = async {
                let mut ws = dial(&target, source(i, sources)).await?;
                if let Some(room) = &room {
                    join(&mut ws, room, &format!("bench-{i}")).await?;
                }
                Ok::<_, roomcast_ws::tokio::Error>(ws)
            }
            .await;
            drop(permit);
            let mut ws = match result {
                Ok(ws) => ws,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        bar.println(format!("bench connect: first failure: {e}"));
                    }
                    return;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            bar.inc(1);
            // Hold: keep reading (answering pings) until told to stop.
            loop {
                tokio::select! {
                    msg = ws.recv() => match msg {
                        Some(Ok(roomcast_ws::Message::Close(_)) | Err(_)) | None => {
                            // The server let go of a connection it was meant to hold.
                            if dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                                bar.println("bench connect: the server closed a held connection");
                            }
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                    _ = stopped.changed() => break,
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        }));
    }
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < tasks.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_time = start.elapsed();
    let handshake_cpu = server.and_then(|w| w.cpu_used());
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
    let rss_after = server.and_then(|w| w.rss_now());
    let n = opened.load(Ordering::Relaxed);
    let fail = failed.load(Ordering::Relaxed);
    let _ = stop.send(true);
    let attempted = tasks.len();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    if n == 0 {
        return Err(BenchError::Failed(format!(
            "no connection could be opened to {}",
            args.url
        )));
    }
    let rate = n as f64 / connect_time.as_secs_f64();
    let per_conn = match (server, rss_after) {
        (Some(w), Some(after)) => Some((after as f64 - w.rss_start() as f64) / n as f64),
        _ => None,
    };
    let cpu_per_conn = handshake_cpu.map(|c| c.as_secs_f64() * 1e6 / n as f64);
    let room = args
        .room
        .as_ref()
        .map(|r| format!("  room {r}"))
        .unwrap_or_default();
    let mut r = Report::new("connect", format!("bench connect  {}{room}", args.url));
    r.field("url", json!(args.url))
        .field("room", json!(args.room))
        .field("sources", json!(sources));
    r.line(
        "connections",
        format!(
            "{n} open, {fail} failed, in {:.2} s from {sources} source address(es)",
            connect_time.as_secs_f64()
        ),
    );
    r.field("connections", json!(n))
        .field("failed", json!(fail))
        .field("dropped", json!(dropped.load(Ordering::Relaxed)))
        .field("seconds", json!(connect_time.as_secs_f64()));
    r.line("handshakes/s", format!("{rate:.0}"))
        .field("handshakes_per_second", json!(rate));
    if let (Some(w), Some(after)) = (server, rss_after) {
        r.line(
            "server memory",
            format!(
                "{} before, {} after",
                human_bytes(w.rss_start() as f64),
                human_bytes(after as f64)
            ),
        );
        r.field("server_rss_before", json!(w.rss_start()))
            .field("server_rss_after", json!(after));
    }
    if let Some(p) = per_conn {
        r.line("per connection", human_bytes(p))
            .field("server_bytes_per_connection", json!(p));
    }
    if let Some(c) = cpu_per_conn {
        let what = if args.room.is_some() {
            "handshake + hello + join"
        } else {
            "handshake"
        };
        r.line("server CPU", format!("{c:.1} µs per connection ({what})"))
            .field("server_cpu_us_per_connection", json!(c));
    }
    let mut problems = Vec::new();
    if fail > 0 {
        problems.push(format!("{fail} connections failed"));
    }
    let dropped = dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        problems.push(format!(
            "{dropped} held connections were closed by the server"
        ));
    }
    if n + fail < args.connections {
        problems.push(format!(
            "{} of {} connections neither opened nor failed within the timeout ({attempted} attempted)",
            args.connections - n - fail,
            args.connections
        ));
    }
    r.finish(args.common.json, &problems)
}
