//! `bench fanout`: one publisher, N subscribers in one room, every delivery checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use roomcast_ws::Message;
use tokio::sync::{Mutex, Semaphore};

use super::open::{field_u64, open};
use super::proc::Watch;
use super::{BenchError, check_target};

/// Options of `bench fanout`.
#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    /// The roomcast protocol URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Subscribers in the room (the publisher is a member too).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages to publish.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub messages: u64,
    /// Size of each message's `data`, in bytes of JSON.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The room.
    #[arg(long, default_value = "bench-fanout")]
    pub room: String,
    /// Closed loop: at most this many publishes waiting for their ack.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Open loop instead: publish at this many messages per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The server's PID: report its CPU time per delivery.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Handshakes in flight at once while subscribing.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
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

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    received: AtomicU64,
    lost: AtomicU64,
    out_of_order: AtomicU64,
}

pub(super) async fn run(args: FanoutArgs) -> Result<(), BenchError> {
    check_target(&args.url, args.allow_remote)?;
    let base = Instant::now();
    let seen = Arc::new(Seen::default());
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| BenchError::Failed(e.to_string()))?,
    ));
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let deadline = base + Duration::from_secs_f64(args.timeout);

    // Subscribers.
    let mut subscribers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    for i in 0..args.subscribers {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (url, room, seen, latency, ready, total) = (
            args.url.clone(),
            args.room.clone(),
            seen.clone(),
            latency.clone(),
            ready_tx.clone(),
            args.messages,
        );
        subscribers.push(tokio::spawn(async move {
            let opened = open(&url, Some(&room), &format!("sub-{i}")).await;
            drop(permit);
            let (mut ws, joined_at) = match opened {
                Ok(o) => o,
                Err(e) => return drop(ready.send(Err(e.to_string()))),
            };
            let _ = ready.send(Ok(()));
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).ok();
            let mut expected = joined_at + 1;
            let mut got = 0;
            while got < total {
                let Some(Ok(msg)) = ws.recv().await else {
                    break;
                };
                let Message::Text(t) = msg else { continue };
                let t = t.as_bytes();
                if !t.starts_with(br#"{"type":"message""#) {
                    continue;
                }
                let Some(offset) = field_u64(t, b"\"offset\":") else {
                    continue;
                };
                if offset > expected {
                    seen.lost.fetch_add(offset - expected, Ordering::Relaxed);
                } else if offset < expected {
                    seen.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                expected = offset + 1;
                got += 1;
                if let (Some(h), Some(sent)) = (hist.as_mut(), field_u64(t, b"\"t\":")) {
                    let _ = h.record(
                        (base.elapsed().as_nanos() as u64)
                            .saturating_sub(sent)
                            .max(1),
                    );
                }
            }
            seen.received.fetch_add(got, Ordering::Relaxed);
            if let Some(h) = hist {
                let _ = latency.lock().await.add(&h);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        }));
    }
    drop(ready_tx);
    let mut ready = 0;
    let mut failures = 0;
    while ready + failures < subscribers.len() {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => ready += 1,
            Ok(Some(Err(e))) => {
                if failures == 0 {
                    eprintln!("bench fanout: a subscriber failed: {e}");
                }
                failures += 1;
            }
            _ => break,
        }
    }
    if ready == 0 {
        return Err(BenchError::Failed(format!(
            "no subscriber could join {} at {}",
            args.room, args.url
        )));
    }

    // The publisher: a member too; its reader drains and counts acks.
    let (pws, _) = open(&args.url, Some(&args.room), "publisher")
        .await
        .map_err(|e| BenchError::Failed(format!("publisher: {e}")))?;
    let (mut reader, writer) = pws.split();
    let window = Arc::new(Semaphore::new(args.window.max(1)));
    let acks = Arc::new(AtomicU64::new(0));
    let (w2, a2, total) = (window.clone(), acks.clone(), args.messages);
    let drain = tokio::spawn(async move {
        while let Some(Ok(msg)) = reader.recv().await {
            if let Message::Text(t) = msg
                && t.as_bytes().starts_with(br#"{"type":"ack""#)
            {
                w2.add_permits(1);
                if a2.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    break;
                }
            }
        }
    });
    let server = args.server_pid.and_then(Watch::start);
    let pad = "x".repeat(args.size.saturating_sub(30));
    let start = Instant::now();
    for i in 0..args.messages {
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        } else if let Ok(p) = window.acquire().await {
            p.forget();
        }
        let sent = base.elapsed().as_nanos() as u64;
        let req = format!(
            r#"{{"type":"publish","room":"{}","data":{{"t":{sent},"p":"{pad}"}},"ref":{i}}}"#,
            args.room
        );
        if writer.feed(Message::text(req)).await.is_err() {
            break;
        }
        if args.rate.is_some() || window.available_permits() == 0 {
            let _ = writer.flush().await;
        }
    }
    let _ = writer.flush().await;
    let published_in = start.elapsed();
    let _ = tokio::time::timeout_at(deadline.into(), drain).await;
    for s in subscribers {
        let _ = tokio::time::timeout_at(deadline.into(), s).await;
    }
    let elapsed = start.elapsed();
    let cpu = server.and_then(|w| w.cpu_used());
    let received = seen.received.load(Ordering::Relaxed);
    let expected = args.messages * ready as u64;
    let lost = seen.lost.load(Ordering::Relaxed) + expected.saturating_sub(received);
    // The server delivers to every member: the subscribers and the publisher.
    let server_deliveries = args.messages * (ready as u64 + 1);
    let h = latency.lock().await;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let cpu_per_delivery = cpu.map(|c| c.as_secs_f64() * 1e6 / server_deliveries as f64);
    if args.json {
        let report = serde_json::json!({
            "scenario": "fanout", "url": args.url, "subscribers": ready, "failed_subscribers": failures,
            "messages": args.messages, "size": args.size, "window": args.window, "rate": args.rate,
            "seconds": elapsed.as_secs_f64(), "publish_seconds": published_in.as_secs_f64(),
            "deliveries": received, "lost": lost, "out_of_order": seen.out_of_order.load(Ordering::Relaxed),
            "deliveries_per_second": received as f64 / elapsed.as_secs_f64(),
            "latency_us": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": h.max() as f64 / 1000.0},
            "server_cpu_seconds": cpu.map(|c| c.as_secs_f64()), "server_cpu_us_per_delivery": cpu_per_delivery,
        });
        println!("{report}");
    } else {
        println!("bench fanout  {}  room {}", args.url, args.room);
        println!("  subscribers        {ready} (+ the publisher), {failures} failed to join");
        println!(
            "  messages           {} of {} B data, {}",
            args.messages,
            args.size,
            match args.rate {
                Some(r) => format!("open loop at {r} msg/s"),
                None => format!("closed loop, window {}", args.window),
            }
        );
        println!(
            "  deliveries         {received} checked in {:.2} s: {:.0}/s",
            elapsed.as_secs_f64(),
            received as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  lost / reordered   {lost} / {}",
            seen.out_of_order.load(Ordering::Relaxed)
        );
        println!(
            "  latency            p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs",
            q(0.5),
            q(0.99),
            q(0.999),
            h.max() as f64 / 1000.0
        );
        if let Some(c) = cpu_per_delivery {
            println!(
                "  server CPU         {c:.3} µs per delivery ({server_deliveries} deliveries)"
            );
        }
    }
    if lost > 0 {
        return Err(BenchError::Failed(format!("{lost} deliveries lost")));
    }
    Ok(())
}
