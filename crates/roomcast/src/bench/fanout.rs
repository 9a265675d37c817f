//! `bench fanout`: one publisher, N subscribers, every delivery checked.
//!
//! With the roomcast protocol (default) the subscribers join a room on `/ws` and the
//! publisher publishes with acks; the window counts unacknowledged publishes. With `--raw`
//! the target is any broadcast endpoint (roomcast's `/rooms/{room}`, a peer's broadcast
//! server): subscribers just read, and the publisher counts its own copy of each message
//! as the ack (for roomcast give it `--publisher-url .../rooms/bench?echo=1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use roomcast_ws::Message;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

use super::open::{dial_with, field_u64, join, source, sources_for};
use super::proc::Watch;
use super::report::{Report, histogram, progress};
use super::{BenchError, Common, Target};

/// Options of `bench fanout`.
#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    /// The roomcast protocol URL, or with `--raw` a broadcast endpoint. Several URLs,
    /// comma-separated (the nodes of a cluster), spread the subscribers over them in turn.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Where the publisher connects (default: the first URL).
    #[arg(long)]
    pub publisher_url: Option<String>,
    /// A raw broadcast endpoint: no protocol, every message goes to every client.
    #[arg(long)]
    pub raw: bool,
    /// Subscribers (the publisher receives every message too).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages to publish.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub messages: u64,
    /// Bytes of payload per message (the JSON `data`, or the raw message).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Chat-like text as the payload (words of a small vocabulary in an order that
    /// changes with every message) instead of one repeated letter: what compression
    /// meets in a chat or a feed.
    #[arg(long)]
    pub chat: bool,
    /// Subscribers and the publisher offer permessage-deflate (RFC 7692).
    #[arg(long)]
    pub deflate: bool,
    /// The room (roomcast protocol).
    #[arg(long, default_value = "bench-fanout")]
    pub room: String,
    /// Closed loop: at most this many messages published and not yet acknowledged.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Open loop instead: publish at this many messages per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How the subscribers receive (the roomcast protocol only): WebSocket, Server-Sent
    /// Events (`/sse`) or long-polling (`/poll`) on the same host.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// More server processes whose CPU counts with `--server-pid`'s: the other nodes of
    /// a cluster (repeatable).
    #[arg(long, value_name = "PID")]
    pub node_pid: Vec<u32>,
    /// The broker's PID (e.g. redis-server): its CPU per message is reported apart.
    /// Repeatable, summed: every process of a Redis Cluster.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Vec<u32>,
    #[command(flatten)]
    pub common: Common,
}

/// How subscribers receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Long-polling.
    Poll,
}

/// What one subscriber counts.
struct Tally {
    key: &'static [u8],
    base: Instant,
    expected: u64,
    got: u64,
    lost: u64,
    reordered: u64,
    hist: hdrhistogram::Histogram<u64>,
}

impl Tally {
    fn new(key: &'static [u8], base: Instant) -> Self {
        Self {
            key,
            base,
            expected: 1,
            got: 0,
            lost: 0,
            reordered: 0,
            hist: histogram(),
        }
    }

    /// Counts one message's JSON text (ignored without a sequence number).
    fn message(&mut self, t: &[u8]) {
        if let Some(seq) = field_u64(t, self.key) {
            self.record(seq, field_u64(t, b"\"t\":"));
        }
    }

    /// Counts message `seq`, sent at `sent` ns after `base` when it says.
    fn record(&mut self, seq: u64, sent: Option<u64>) {
        if seq > self.expected {
            self.lost += seq - self.expected;
        } else if seq < self.expected {
            self.reordered += 1;
        }
        self.expected = seq + 1;
        self.got += 1;
        if let Some(sent) = sent {
            let _ = self.hist.record(
                (self.base.elapsed().as_nanos() as u64)
                    .saturating_sub(sent)
                    .max(1),
            );
        }
    }
}

/// A chat-like text of `len` bytes for message `i`: words of a small vocabulary, in an
/// order that changes with every message, as chat and feed messages repeat themselves
/// without being one string over and over. JSON-safe as it is.
fn chat_text(i: u64, len: usize) -> String {
    const WORDS: [&str; 32] = [
        "the", "match", "tonight", "was", "great", "and", "we", "should", "meet", "after", "work",
        "for", "coffee", "or", "lunch", "near", "station", "did", "you", "see", "that", "goal",
        "weather", "looks", "good", "tomorrow", "morning", "see", "you", "soon", "thanks", "again",
    ];
    let mut text = String::with_capacity(len + 12);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while text.len() < len {
        // xorshift64: a cheap, repeatable order of words per message.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(WORDS[(x >> 59) as usize]);
        text.push(' ');
    }
    text.truncate(len);
    text
}

/// The value of an SSE field line (`name` includes the colon and space) in one event.
fn sse_field<'a>(event: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let at = event.windows(name.len()).position(|w| w == name)? + name.len();
    let rest = &event[at..];
    Some(&rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())])
}

type Ready = tokio::sync::mpsc::UnboundedSender<Result<(), String>>;

/// A WebSocket subscriber (the roomcast protocol with a room, else raw).
#[allow(clippy::too_many_arguments)]
async fn subscribe_ws(
    target: &Target,
    source: Option<std::net::IpAddr>,
    room: Option<&str>,
    (i, deflate): (usize, bool),
    permit: tokio::sync::OwnedSemaphorePermit,
    ready: &Ready,
    total: u64,
    tally: &mut Tally,
) -> Result<(), String> {
    let opened = async {
        let mut ws = dial_with(target, source, deflate).await?;
        let at = match room {
            Some(room) => join(&mut ws, room, &format!("sub-{i}")).await?,
            None => 0,
        };
        Ok::<_, roomcast_ws::tokio::Error>((ws, at))
    }
    .await;
    drop(permit);
    let (mut ws, joined_at) = opened.map_err(|e| e.to_string())?;
    tally.expected = joined_at + 1;
    let _ = ready.send(Ok(()));
    while tally.got < total {
        let Some(Ok(msg)) = ws.recv().await else {
            break;
        };
        let t = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => &b[..],
            _ => continue,
        };
        if room.is_some() && !t.starts_with(br#"{"type":"message""#) {
            continue;
        }
        tally.message(t);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    Ok(())
}

/// An SSE or long-poll subscriber of `room`.
#[allow(clippy::too_many_arguments)]
async fn subscribe_http(
    target: &Target,
    transport: Transport,
    room: &str,
    i: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
    ready: &Ready,
    total: u64,
    tally: &mut Tally,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    let base = format!("http://{}", target.authority);
    let joined = |tally: &mut Tally, offset: u64| {
        tally.expected = offset + 1;
        let _ = ready.send(Ok(()));
    };
    if transport == Transport::Sse {
        use futures_util::StreamExt;
        let resp = http
            .get(format!("{base}/sse?room={room}&client=sub-{i}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        drop(permit);
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while tally.got < total {
            let Some(Ok(chunk)) = body.next().await else {
                break;
            };
            buf.extend_from_slice(&chunk);
            // Events end with a blank line; the JSON is on the `data:` line. Whole events
            // are read in place and dropped from the buffer together.
            let mut start = 0;
            while let Some(end) = buf[start..].windows(2).position(|w| w == b"\n\n") {
                let event = &buf[start..start + end];
                start += end + 2;
                let (Some(kind), Some(data)) =
                    (sse_field(event, b"event: "), sse_field(event, b"data: "))
                else {
                    continue;
                };
                match kind {
                    b"joined" => joined(tally, field_u64(data, b"\"offset\":").unwrap_or(0)),
                    b"message" => tally.message(data),
                    _ => {}
                }
            }
            buf.drain(..start);
        }
        return Ok(());
    }
    let mut url = format!("{base}/poll?room={room}&client=sub-{i}&timeout_ms=20000");
    let mut permit = Some(permit);
    while tally.got < total {
        let answer: serde_json::Value = http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        permit.take();
        for e in answer["events"].as_array().into_iter().flatten() {
            let offset = e["offset"].as_u64();
            match (e["type"].as_str(), offset) {
                (Some("joined"), _) => joined(tally, offset.unwrap_or(0)),
                (Some("message"), Some(seq)) => tally.record(seq, e["data"]["t"].as_u64()),
                _ => {}
            }
        }
        let cursor = answer["cursor"].as_str().unwrap_or_default();
        url = format!("{base}/poll?cursor={cursor}&timeout_ms=20000");
    }
    Ok(())
}

/// What the subscribers saw, all together.
#[derive(Default)]
struct Seen {
    received: AtomicU64,
    lost: AtomicU64,
    reordered: AtomicU64,
}

pub(super) async fn run(args: FanoutArgs) -> Result<(), BenchError> {
    let mut targets = Vec::new();
    for url in args.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        targets.push(Arc::new(Target::parse(url, args.common.allow_remote)?));
    }
    let Some(first) = targets.first().cloned() else {
        return Err(BenchError::Failed("--url names no URL".into()));
    };
    let publisher_target = match &args.publisher_url {
        Some(u) => Target::parse(u, args.common.allow_remote)?,
        None => (*first).clone(),
    };
    let base = Instant::now();
    let deadline = base + args.common.timeout();
    let seen = Arc::new(Seen::default());
    let latency = Arc::new(Mutex::new(histogram()));
    let permits = Arc::new(Semaphore::new(args.common.concurrency.max(1)));
    let sources = sources_for(args.subscribers + 1);
    let room = (!args.raw).then(|| args.room.clone());
    // The key of the sequence number: the room's offset, or our own counter in raw mode.
    let seq_key: &'static [u8] = if args.raw {
        b"\"seq\":"
    } else {
        b"\"offset\":"
    };

    // Subscribers.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let mut subscribers = Vec::new();
    let joining = progress(args.subscribers as u64, "subscribers", args.common.json);
    for i in 0..args.subscribers {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (target, room, seen, latency, ready, total) = (
            targets[i % targets.len()].clone(),
            room.clone(),
            seen.clone(),
            latency.clone(),
            ready_tx.clone(),
            args.messages,
        );
        let (transport, deflate) = (args.transport, args.deflate);
        subscribers.push(tokio::spawn(async move {
            let mut tally = Tally::new(seq_key, base);
            let result = match transport {
                Transport::Ws => {
                    subscribe_ws(
                        &target,
                        source(i, sources),
                        room.as_deref(),
                        (i, deflate),
                        permit,
                        &ready,
                        total,
                        &mut tally,
                    )
                    .await
                }
                Transport::Sse | Transport::Poll => {
                    let room = room.unwrap_or_default();
                    subscribe_http(
                        &target, transport, &room, i, permit, &ready, total, &mut tally,
                    )
                    .await
                }
            };
            if let Err(e) = result {
                let _ = ready.send(Err(e));
            }
            seen.received.fetch_add(tally.got, Ordering::Relaxed);
            seen.lost.fetch_add(tally.lost, Ordering::Relaxed);
            seen.reordered.fetch_add(tally.reordered, Ordering::Relaxed);
            let _ = latency.lock().await.add(&tally.hist);
        }));
    }
    drop(ready_tx);
    let subscribers_started = subscribers.len();
    let (mut ready, mut failures) = (0usize, 0usize);
    while ready + failures < subscribers.len() {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {
                ready += 1;
                joining.inc(1);
            }
            Ok(Some(Err(e))) => {
                if failures == 0 {
                    joining.println(format!("bench fanout: a subscriber failed: {e}"));
                }
                failures += 1;
            }
            _ => break,
        }
    }
    joining.finish_and_clear();
    if ready == 0 {
        return Err(BenchError::Failed(format!(
            "no subscriber could connect to {}",
            args.url
        )));
    }

    // The publisher, which also receives every message: its reader releases the window on
    // each ack (protocol) or each own copy (raw).
    let mut pws = dial_with(&publisher_target, None, args.deflate)
        .await
        .map_err(|e| BenchError::Failed(format!("publisher: {e}")))?;
    if let Some(room) = &room {
        join(&mut pws, room, "publisher")
            .await
            .map_err(|e| BenchError::Failed(format!("publisher: {e}")))?;
    }
    let (mut reader, writer) = pws.split();
    let window = Arc::new(Semaphore::new(args.window.max(1)));
    let (w2, total, raw) = (window.clone(), args.messages, args.raw);
    let drain = tokio::spawn(async move {
        let mut acks = 0;
        while let Some(Ok(msg)) = reader.recv().await {
            let t = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => &b[..],
                _ => continue,
            };
            if (raw && t.starts_with(br#"{"seq":"#)) || (!raw && t.starts_with(br#"{"type":"ack""#))
            {
                w2.add_permits(1);
                acks += 1;
                if acks == total {
                    break;
                }
            }
        }
    });
    let server = args.common.server_pid.and_then(Watch::start);
    let nodes: Vec<Watch> = args
        .node_pid
        .iter()
        .filter_map(|&p| Watch::start(p))
        .collect();
    let brokers: Vec<Watch> = args
        .broker_pid
        .iter()
        .filter_map(|&p| Watch::start(p))
        .collect();
    let pad_len = args.size.saturating_sub(if args.raw { 40 } else { 30 });
    let pad = "x".repeat(pad_len);
    let publishing = progress(args.messages, "messages", args.common.json);
    let start = Instant::now();
    for i in 0..args.messages {
        if Instant::now() > deadline {
            break;
        }
        if let Some(rate) = args.rate {
            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into())
                .await;
        } else if let Ok(Ok(p)) = tokio::time::timeout_at(deadline.into(), window.acquire()).await {
            p.forget();
        } else {
            break;
        }
        let sent = base.elapsed().as_nanos() as u64;
        let chat;
        let pad = if args.chat {
            chat = chat_text(i, pad_len);
            &chat
        } else {
            &pad
        };
        let text = if args.raw {
            format!(r#"{{"seq":{},"t":{sent},"p":"{pad}"}}"#, i + 1)
        } else {
            format!(
                r#"{{"type":"publish","room":"{}","data":{{"t":{sent},"p":"{pad}"}},"ref":{i}}}"#,
                args.room
            )
        };
        if writer.feed(Message::text(text)).await.is_err() {
            break;
        }
        if args.rate.is_some() || window.available_permits() == 0 {
            let _ = writer.flush().await;
        }
        publishing.inc(1);
    }
    let _ = writer.flush().await;
    publishing.finish_and_clear();
    let _ = tokio::time::timeout_at(deadline.into(), drain).await;
    for s in subscribers {
        let _ = tokio::time::timeout_at(deadline.into(), s).await;
    }
    let elapsed = start.elapsed();
    let cpu = server.and_then(|w| w.cpu_used()).map(|c| {
        // Every node of a cluster (a node that died counts what it used until then).
        nodes
            .iter()
            .filter_map(Watch::cpu_used)
            .fold(c, |a, b| a + b)
    });
    let broker_cpu = brokers
        .iter()
        .filter_map(Watch::cpu_used)
        .reduce(|a, b| a + b);
    let received = seen.received.load(Ordering::Relaxed);
    let expected = args.messages * ready as u64;
    let lost = seen.lost.load(Ordering::Relaxed) + expected.saturating_sub(received);
    let reordered = seen.reordered.load(Ordering::Relaxed);
    // The server delivers each message to every subscriber and to the publisher.
    let server_deliveries = args.messages * (ready as u64 + 1);

    let mode = if args.raw {
        "raw broadcast".to_owned()
    } else {
        format!("room {}", args.room)
    };
    let mut r = Report::new("fanout", format!("bench fanout  {}  {mode}", args.url));
    r.field("url", json!(args.url))
        .field("raw", json!(args.raw))
        .field("subscribers", json!(ready))
        .field("failed_subscribers", json!(failures));
    r.field("messages", json!(args.messages))
        .field("size", json!(args.size))
        .field("chat", json!(args.chat))
        .field("deflate", json!(args.deflate))
        .field("window", json!(args.window))
        .field("rate", json!(args.rate));
    r.line(
        "subscribers",
        format!("{ready} (+ the publisher), {failures} failed"),
    );
    let load = match args.rate {
        Some(rate) => format!("open loop at {rate} msg/s"),
        None => format!("closed loop, window {}", args.window),
    };
    r.line(
        "messages",
        format!("{} of {} B, {load}", args.messages, args.size),
    );
    let per_second = received as f64 / elapsed.as_secs_f64();
    r.line(
        "deliveries",
        format!(
            "{received} checked in {:.2} s: {per_second:.0}/s",
            elapsed.as_secs_f64()
        ),
    );
    r.field("deliveries", json!(received))
        .field("seconds", json!(elapsed.as_secs_f64()))
        .field("deliveries_per_second", json!(per_second));
    r.line("lost / reordered", format!("{lost} / {reordered}"))
        .field("lost", json!(lost))
        .field("out_of_order", json!(reordered));
    r.latency(&*latency.lock().await);
    if let Some(c) = cpu {
        let per = c.as_secs_f64() * 1e6 / server_deliveries as f64;
        r.line(
            "server CPU",
            format!(
                "{per:.3} µs per delivery ({server_deliveries} deliveries, {:.2} s)",
                c.as_secs_f64()
            ),
        );
        r.field("server_cpu_seconds", json!(c.as_secs_f64()))
            .field("server_cpu_us_per_delivery", json!(per))
            .field("server_processes", json!(1 + nodes.len()));
    }
    if let Some(c) = broker_cpu {
        let per = c.as_secs_f64() * 1e6 / args.messages as f64;
        r.line("broker CPU", format!("{per:.1} µs per message"));
        r.field("broker_cpu_us_per_message", json!(per));
    }
    let mut problems = Vec::new();
    if lost > 0 || reordered > 0 {
        problems.push(format!(
            "{lost} deliveries lost, {reordered} out of order or repeated"
        ));
    }
    if failures > 0 {
        problems.push(format!("{failures} subscribers failed to connect or join"));
    }
    let unanswered = subscribers_started - ready - failures;
    if unanswered > 0 {
        problems.push(format!(
            "{unanswered} subscribers neither joined nor failed within the timeout"
        ));
    }
    if subscribers_started < args.subscribers {
        problems.push(format!(
            "only {subscribers_started} of {} subscribers were started",
            args.subscribers
        ));
    }
    r.finish(args.common.json, &problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_text_is_as_long_as_asked_and_differs_per_message() {
        let (a, b) = (chat_text(1, 500), chat_text(2, 500));
        assert_eq!((a.len(), b.len()), (500, 500));
        assert_ne!(a, b);
        assert_eq!(a, chat_text(1, 500), "repeatable");
        assert!(a.bytes().all(|c| c.is_ascii_lowercase() || c == b' '));
        assert_eq!(chat_text(3, 0), "");
    }
}
