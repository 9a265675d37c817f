//! `bench connect`: open many connections, hold them, measure what they cost the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::open::open;
use super::proc::Watch;
use super::{BenchError, check_target, human_bytes};

/// Options of `bench connect`.
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// The WebSocket URL to connect to.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// How many connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// Speak the roomcast protocol: say hello, then join this room (a room member, not
    /// only a socket).
    #[arg(long)]
    pub room: Option<String>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Seconds to hold the connections once open; memory is read at the end.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// The server's PID: report its memory per connection and CPU per handshake.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Allow a target outside loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(args: ConnectArgs) -> Result<(), BenchError> {
    check_target(&args.url, args.allow_remote)?;
    let server = args.server_pid.and_then(Watch::start);
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (stop, stopped) = watch::channel(false);
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (url, room, opened, failed, mut stopped) = (
            args.url.clone(),
            args.room.clone(),
            opened.clone(),
            failed.clone(),
            stopped.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let result = open(&url, room.as_deref(), &format!("bench-{i}")).await;
            drop(permit);
            let mut ws = match result {
                Ok((ws, _)) => ws,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("bench connect: first failure: {e}");
                    }
                    return;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            // Hold: keep reading (answers pings) until told to stop.
            loop {
                tokio::select! {
                    msg = ws.recv() => if msg.is_none() { return },
                    _ = stopped.changed() => break,
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        }));
        if Instant::now() > deadline {
            break;
        }
    }
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < tasks.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_time = start.elapsed();
    let handshake_cpu = server.and_then(|w| w.cpu_used());
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let rss_after = server.and_then(|w| w.rss_now());
    let n = opened.load(Ordering::Relaxed);
    let fail = failed.load(Ordering::Relaxed);
    let _ = stop.send(true);
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
    let cpu_per_handshake = handshake_cpu.map(|c| c.as_secs_f64() * 1e6 / n as f64);
    if args.json {
        let report = serde_json::json!({
            "scenario": "connect", "url": args.url, "room": args.room, "connections": n, "failed": fail,
            "seconds": connect_time.as_secs_f64(), "handshakes_per_second": rate,
            "server_rss_before": server.map(|w| w.rss_start()), "server_rss_after": rss_after,
            "server_bytes_per_connection": per_conn, "server_cpu_us_per_handshake": cpu_per_handshake,
        });
        println!("{report}");
    } else {
        println!(
            "bench connect  {}{}",
            args.url,
            args.room
                .as_ref()
                .map(|r| format!("  room {r}"))
                .unwrap_or_default()
        );
        println!(
            "  connections        {n} open, {fail} failed, in {:.2} s",
            connect_time.as_secs_f64()
        );
        println!("  handshakes/s       {rate:.0}");
        if let (Some(w), Some(after)) = (server, rss_after) {
            println!(
                "  server memory      {} before, {} after",
                human_bytes(w.rss_start() as f64),
                human_bytes(after as f64)
            );
        }
        if let Some(p) = per_conn {
            println!("  per connection     {}", human_bytes(p));
        }
        if let Some(c) = cpu_per_handshake {
            println!(
                "  server CPU         {c:.1} µs per connection (handshake{})",
                if args.room.is_some() {
                    " + hello + join"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
