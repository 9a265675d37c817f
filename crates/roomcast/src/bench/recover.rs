//! `bench recover`: how long every client of a node takes to be whole again after the
//! node is killed (`kill -9`), on a cluster of nodes sharing a broker.
//!
//! N subscribers join one room, spread over the nodes' URLs in turn; a publisher on the
//! first node publishes at a fixed rate, each message with an idempotency id. Once the
//! room is flowing, the victim node's process gets SIGKILL. Its subscribers see their
//! socket end, connect to the next node at once, say hello as the same client and join
//! with `since` (the epoch and the last offset they hold). The time from the kill to their
//! `joined` with `recovered:true` is their recovery time; the replay follows in the same
//! write. The publisher goes on for a while after the last one is back, then stops, and
//! every subscriber must hold every offset from where it joined to the last acked one,
//! once each, in order: anything missing, repeated or reset fails the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use roomcast_ws::Message;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore, watch};

use super::open::{dial, field_u64};
use super::report::{Report, histogram, progress};
use super::{BenchError, Common, Target};

/// Options of `bench recover`.
#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// The nodes' roomcast protocol URLs, comma-separated; subscribers are spread over
    /// them in turn, the publisher is on the first.
    #[arg(long)]
    pub url: String,
    /// The PID of the node to kill.
    #[arg(long, value_name = "PID")]
    pub victim_pid: u32,
    /// Which URL (from 0) is the node killed; not the first, the publisher's.
    #[arg(long, default_value_t = 2)]
    pub victim: usize,
    /// Subscribers.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages per second published.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Bytes of payload per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds of publishing before the kill.
    #[arg(long, default_value_t = 2.0)]
    pub before: f64,
    /// Seconds of publishing after the last subscriber recovered.
    #[arg(long, default_value_t = 2.0)]
    pub after: f64,
    /// The room.
    #[arg(long, default_value = "bench-recover")]
    pub room: String,
    #[command(flatten)]
    pub common: Common,
}

/// What the subscribers share with the run.
struct Shared {
    /// When the victim was killed.
    killed: std::sync::OnceLock<Instant>,
    /// Subscribers whose node was killed, and of them those back.
    displaced: AtomicUsize,
    recovered: AtomicUsize,
    /// kill → `joined` with `recovered:true`, in ns.
    times: Mutex<hdrhistogram::Histogram<u64>>,
    received: AtomicU64,
    lost: AtomicU64,
    repeated: AtomicU64,
    resets: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Where one subscriber stands: the room's epoch and the last offset it holds.
struct Held {
    epoch: String,
    last: u64,
}

/// Hello and join, from `since` when given: the room's epoch, offset, and whether it
/// recovered.
async fn join_from(
    ws: &mut roomcast_ws::tokio::WebSocket<crate::net::Stream>,
    room: &str,
    client: &str,
    since: Option<&Held>,
) -> Result<(String, u64, bool), String> {
    let since = since.map(|h| (h.epoch.as_str(), h.last));
    super::open::join_since(ws, room, client, since)
        .await
        .map(|j| (j.epoch, j.offset, j.recovered))
        .map_err(|e| e.to_string())
}

/// One subscriber: joins, reads, and when its node dies joins another from where it was,
/// until it holds the run's last offset.
#[allow(clippy::too_many_arguments)]
async fn subscribe(
    targets: Arc<Vec<Target>>,
    victim: usize,
    room: String,
    i: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    shared: Arc<Shared>,
    mut last: watch::Receiver<Option<u64>>,
) -> Result<(), String> {
    let client = format!("sub-{i}");
    let mut at = i % targets.len();
    let mut ws = dial(&targets[at], None).await.map_err(|e| e.to_string())?;
    let (epoch, offset, _) = join_from(&mut ws, &room, &client, None).await?;
    drop(permit);
    let mut held = Held {
        epoch,
        last: offset,
    };
    let _ = ready.send(Ok(()));
    loop {
        let end = *last.borrow();
        if end.is_some_and(|end| held.last >= end) {
            break;
        }
        let msg = tokio::select! {
            m = ws.recv() => m,
            _ = last.changed() => continue,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let t = t.as_bytes();
                if !t.starts_with(br#"{"type":"message""#) {
                    continue;
                }
                let Some(offset) = field_u64(t, b"\"offset\":") else {
                    continue;
                };
                shared.received.fetch_add(1, Ordering::Relaxed);
                if offset <= held.last {
                    shared.repeated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                shared
                    .lost
                    .fetch_add(offset - held.last - 1, Ordering::Relaxed);
                held.last = offset;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                // The node is gone: the next one that is not.
                if shared.killed.get().is_none() || at != victim {
                    return Err(format!("{client}: its node closed the socket unasked"));
                }
                shared.displaced.fetch_add(1, Ordering::Relaxed);
                at = (at + 1) % targets.len();
                if at == victim {
                    at = (at + 1) % targets.len();
                }
                ws = dial(&targets[at], None)
                    .await
                    .map_err(|e| format!("{client}: reconnecting: {e}"))?;
                let (epoch, offset, recovered) =
                    join_from(&mut ws, &room, &client, Some(&held)).await?;
                if let Some(&killed) = shared.killed.get() {
                    let ns = killed.elapsed().as_nanos() as u64;
                    let _ = shared.times.lock().await.record(ns.max(1));
                }
                if !recovered {
                    shared.resets.fetch_add(1, Ordering::Relaxed);
                    held = Held {
                        epoch,
                        last: offset,
                    };
                }
                shared.recovered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    Ok(())
}

pub(super) async fn run(args: RecoverArgs) -> Result<(), BenchError> {
    let mut targets = Vec::new();
    for url in args.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        targets.push(Target::parse(url, args.common.allow_remote)?);
    }
    if targets.len() < 2 || args.victim == 0 || args.victim >= targets.len() {
        return Err(BenchError::Failed(
            "--url needs two nodes at least, and --victim one of them other than the first".into(),
        ));
    }
    let targets = Arc::new(targets);
    let deadline = Instant::now() + args.common.timeout();
    let shared = Arc::new(Shared {
        killed: std::sync::OnceLock::new(),
        displaced: AtomicUsize::new(0),
        recovered: AtomicUsize::new(0),
        times: Mutex::new(histogram()),
        received: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        repeated: AtomicU64::new(0),
        resets: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let (last_tx, last_rx) = watch::channel(None::<u64>);
    let permits = Arc::new(Semaphore::new(args.common.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let joining = progress(args.subscribers as u64, "subscribers", args.common.json);
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (targets, room, ready, shared, last) = (
            targets.clone(),
            args.room.clone(),
            ready_tx.clone(),
            shared.clone(),
            last_rx.clone(),
        );
        let victim = args.victim;
        subscribers.push(tokio::spawn(async move {
            let r = subscribe(
                targets,
                victim,
                room,
                i,
                permit,
                ready.clone(),
                shared.clone(),
                last,
            );
            if let Err(e) = r.await {
                shared.failures.lock().await.push(e.clone());
                let _ = ready.send(Err(e));
            }
        }));
    }
    drop(ready_tx);
    let on_victim = (0..args.subscribers)
        .filter(|i| i % targets.len() == args.victim)
        .count();
    let mut ready = 0;
    while ready < subscribers.len() {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {
                ready += 1;
                joining.inc(1);
            }
            Ok(Some(Err(e))) => return Err(BenchError::Failed(format!("a subscriber: {e}"))),
            _ => return Err(BenchError::Failed("subscribers did not all join".into())),
        }
    }
    joining.finish_and_clear();

    // The publisher: at the rate, each message with an id; acks counted as they come.
    let mut pws = dial(&targets[0], None)
        .await
        .map_err(|e| BenchError::Failed(format!("publisher: {e}")))?;
    join_from(&mut pws, &args.room, "publisher", None)
        .await
        .map_err(|e| BenchError::Failed(format!("publisher: {e}")))?;
    let (mut reader, writer) = pws.split();
    let (acked_tx, acked_rx) = watch::channel((0u64, 0u64)); // (acks, highest offset)
    let acks = tokio::spawn(async move {
        let (mut n, mut top) = (0, 0);
        while let Some(Ok(msg)) = reader.recv().await {
            if let Message::Text(t) = &msg {
                let t = t.as_bytes();
                if t.starts_with(br#"{"type":"ack""#) {
                    n += 1;
                    top = top.max(field_u64(t, b"\"offset\":").unwrap_or(0));
                    let _ = acked_tx.send((n, top));
                } else if t.starts_with(br#"{"type":"error""#) {
                    return Err(String::from_utf8_lossy(t).into_owned());
                }
            }
        }
        Ok(())
    });
    let pad = "x".repeat(args.size.saturating_sub(30));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut stop_at: Option<Instant> = None;
    let mut problems = Vec::new();
    loop {
        let now = Instant::now();
        if now > deadline {
            problems.push("the run timed out".to_owned());
            break;
        }
        if shared.killed.get().is_none() && now >= start + Duration::from_secs_f64(args.before) {
            let status = std::process::Command::new("kill")
                .args(["-9", &args.victim_pid.to_string()])
                .status();
            let _ = shared.killed.set(Instant::now());
            if !status.is_ok_and(|s| s.success()) {
                return Err(BenchError::Failed(format!(
                    "could not kill {}",
                    args.victim_pid
                )));
            }
        }
        if stop_at.is_none()
            && shared.killed.get().is_some()
            && shared.recovered.load(Ordering::Relaxed) >= on_victim
        {
            stop_at = Some(now + Duration::from_secs_f64(args.after));
        }
        if stop_at.is_some_and(|s| now >= s) {
            break;
        }
        sent += 1;
        let text = format!(
            r#"{{"type":"publish","room":"{}","data":{{"p":"{pad}"}},"id":"m{sent}","ref":{sent}}}"#,
            args.room
        );
        if writer.feed(Message::text(text)).await.is_err() || writer.flush().await.is_err() {
            problems.push("the publisher's node closed its socket".to_owned());
            break;
        }
        tokio::time::sleep_until((start + Duration::from_secs_f64(sent as f64 / args.rate)).into())
            .await;
    }
    // Every publish answered, then every subscriber up to the last acked offset.
    let mut acked = acked_rx.clone();
    let answered =
        tokio::time::timeout(Duration::from_secs(10), acked.wait_for(|&(n, _)| n >= sent)).await;
    let (n_acked, top) = *acked_rx.borrow();
    if answered.is_err() {
        problems.push(format!("{} of {sent} publishes acked", n_acked));
    }
    acks.abort();
    let _ = last_tx.send(Some(top));
    let tail = Instant::now() + Duration::from_secs(15);
    for s in subscribers {
        if tokio::time::timeout_at(tail.into(), s).await.is_err() {
            problems.push("a subscriber did not reach the last offset".to_owned());
            break;
        }
    }
    let failures = shared.failures.lock().await.clone();
    let times = shared.times.lock().await.clone();
    let ms = |q: f64| times.value_at_quantile(q) as f64 / 1e6;
    let (lost, repeated, resets) = (
        shared.lost.load(Ordering::Relaxed),
        shared.repeated.load(Ordering::Relaxed),
        shared.resets.load(Ordering::Relaxed),
    );
    let displaced = shared.displaced.load(Ordering::Relaxed);
    let recovered = shared.recovered.load(Ordering::Relaxed);

    let mut r = Report::new("recover", format!("bench recover  {}", args.url));
    r.field("url", json!(args.url))
        .field("subscribers", json!(ready))
        .field("rate", json!(args.rate))
        .field("messages", json!(sent))
        .field("last_offset", json!(top));
    r.line(
        "subscribers",
        format!("{ready}, {on_victim} on the killed node"),
    );
    r.line(
        "messages",
        format!(
            "{sent} at {} msg/s, {} B, the last acked at offset {top}",
            args.rate, args.size
        ),
    );
    r.line(
        "recovered",
        format!("{recovered} of {displaced} displaced, {resets} reset (recovered:false)"),
    )
    .field("displaced", json!(displaced))
    .field("recovered", json!(recovered))
    .field("resets", json!(resets));
    if !times.is_empty() {
        r.line(
            "kill -9 to recovered",
            format!(
                "p50 {:.0} ms   p99 {:.0} ms   all {:.0} ms",
                ms(0.5),
                ms(0.99),
                times.max() as f64 / 1e6
            ),
        );
        r.field(
            "recover_ms",
            json!({"p50": ms(0.5), "p99": ms(0.99), "max": times.max() as f64 / 1e6}),
        );
    }
    r.line(
        "deliveries",
        format!(
            "{} checked: {lost} lost, {repeated} repeated",
            shared.received.load(Ordering::Relaxed)
        ),
    )
    .field("deliveries", json!(shared.received.load(Ordering::Relaxed)))
    .field("lost", json!(lost))
    .field("repeated", json!(repeated));
    if lost > 0 || repeated > 0 || resets > 0 {
        problems.push(format!(
            "{lost} deliveries lost, {repeated} repeated, {resets} recoveries reset"
        ));
    }
    if displaced != on_victim || recovered != on_victim {
        problems.push(format!(
            "{on_victim} subscribers on the killed node, {displaced} displaced, {recovered} recovered"
        ));
    }
    if let Some(first) = failures.first() {
        problems.push(format!(
            "{} subscribers failed, first: {first}",
            failures.len()
        ));
    }
    r.finish(args.common.json, &problems)
}
