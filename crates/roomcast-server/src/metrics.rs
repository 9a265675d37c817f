//! What `/metrics` and `/api/stats` say about the node: a [`Snapshot`] of its counters
//! (read at the request, so counting costs the hot path nothing more than the relaxed
//! atomics of [`crate::Stats`]), and the histograms recorded as things happen.
//!
//! Prometheus's text format is written by `prometheus-client`. Every name is listed in
//! docs/protocol.md ("Metrics").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The histograms, recorded when `metrics.enabled`. Cloning shares them.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    enabled: bool,
    /// Members one message was queued to at once, per worker.
    fan_out: Histogram,
    /// From a publish's arrival to its ack, in seconds.
    publish: Histogram,
    /// One pipeline's round trip to the broker, in seconds.
    broker: Histogram,
}

impl Metrics {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            fan_out: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            // 20 µs to about 0.65 s.
            publish: Histogram::new(exponential_buckets(0.000_02, 2.0, 16)),
            broker: Histogram::new(exponential_buckets(0.000_02, 2.0, 16)),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// A message queued to `members` members of one worker.
    pub(crate) fn fan_out(&self, members: u64) {
        if self.enabled {
            self.fan_out.observe(members as f64);
        }
    }

    /// A publish acked `took` after it arrived.
    pub(crate) fn publish(&self, took: Duration) {
        if self.enabled {
            self.publish.observe(took.as_secs_f64());
        }
    }

    /// A broker pipeline answered `took` after it was sent.
    pub(crate) fn broker(&self, took: Duration) {
        if self.enabled {
            self.broker.observe(took.as_secs_f64());
        }
    }

    /// The Prometheus text of `snapshot` and the histograms.
    pub(crate) fn render(&self, snapshot: Snapshot) -> String {
        let mut registry = Registry::with_prefix("roomcast");
        registry.register(
            "fan_out_batch_members",
            "Members one message was queued to at once on one worker",
            self.fan_out.clone(),
        );
        registry.register(
            "publish_seconds",
            "From a publish's arrival to its ack, once stored",
            self.publish.clone(),
        );
        registry.register(
            "broker_round_trip_seconds",
            "One pipeline of requests to the broker, sent to answered",
            self.broker.clone(),
        );
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            // Writing to a String cannot fail; say so rather than answer half a page.
            out.clear();
            let _ = writeln!(out, "# metrics could not be encoded");
        }
        out
    }
}

/// Open connections and sessions, by transport.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Transports {
    pub websocket: i64,
    pub raw: i64,
    pub sse: i64,
    pub poll: i64,
}

/// Refusals, by reason.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Refusals {
    pub auth: u64,
    pub limit: u64,
    pub origin: u64,
    pub draining: u64,
    pub proxy: u64,
}

/// The node's counters at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Snapshot {
    pub node: String,
    pub uptime_ms: u64,
    /// `memory` or `redis`.
    pub broker: &'static str,
    pub broker_up: bool,
    pub draining: bool,
    pub connections: Transports,
    pub rooms: i64,
    pub handshakes: u64,
    pub published: u64,
    pub deliveries: u64,
    pub compressions: u64,
    pub compressed_frames: u64,
    pub http2_connections: u64,
    pub http2_websockets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub outbox_bytes: i64,
    pub slow_consumer_closes: u64,
    pub heartbeat_timeouts: u64,
    pub token_expiries: u64,
    pub refusals: Refusals,
    /// Error replies by code.
    pub errors: BTreeMap<&'static str, u64>,
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn labelled<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    for (value, n) in values {
        let labels = [(label, value)];
        let metric = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(n.max(0) as u64).encode(metric)?,
            _ => ConstGauge::new(n).encode(metric)?,
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let c = &self.connections;
        labelled(
            &mut e,
            "connections",
            "Open connections and sessions, by transport",
            MetricType::Gauge,
            "transport",
            [
                ("websocket", c.websocket),
                ("raw", c.raw),
                ("sse", c.sse),
                ("poll", c.poll),
            ],
        )?;
        gauge(&mut e, "rooms", "Rooms the node holds", self.rooms)?;
        gauge(
            &mut e,
            "broker_up",
            "1 while the broker answers (always 1 in memory)",
            i64::from(self.broker_up),
        )?;
        gauge(
            &mut e,
            "draining",
            "1 while the node drains",
            i64::from(self.draining),
        )?;
        counter(
            &mut e,
            "handshakes",
            "WebSocket handshakes accepted",
            self.handshakes,
        )?;
        let r = &self.refusals;
        labelled(
            &mut e,
            "refusals",
            "Handshakes, sessions and requests refused, by reason",
            MetricType::Counter,
            "reason",
            [
                ("auth", r.auth as i64),
                ("limit", r.limit as i64),
                ("origin", r.origin as i64),
                ("draining", r.draining as i64),
                ("proxy", r.proxy as i64),
            ],
        )?;
        counter(
            &mut e,
            "messages_published",
            "Messages appended to room histories",
            self.published,
        )?;
        counter(
            &mut e,
            "deliveries",
            "Messages queued to members by fan-out",
            self.deliveries,
        )?;
        counter(
            &mut e,
            "compressions",
            "Room messages compressed for permessage-deflate members (once per fan-out and window without context takeover)",
            self.compressions,
        )?;
        counter(
            &mut e,
            "compressed_frames",
            "Room messages queued compressed, one per message per member",
            self.compressed_frames,
        )?;
        counter(
            &mut e,
            "http2_connections",
            "Connections that spoke HTTP/2",
            self.http2_connections,
        )?;
        counter(
            &mut e,
            "http2_websockets",
            "WebSockets opened on HTTP/2 streams (RFC 8441)",
            self.http2_websockets,
        )?;
        labelled(
            &mut e,
            "bytes",
            "Bytes read from and written to WebSocket connections",
            MetricType::Counter,
            "direction",
            [("in", self.bytes_in as i64), ("out", self.bytes_out as i64)],
        )?;
        gauge(
            &mut e,
            "outbox_bytes",
            "Bytes waiting in WebSocket connections' outboxes",
            self.outbox_bytes,
        )?;
        counter(
            &mut e,
            "slow_consumer_closes",
            "Connections closed with 4008",
            self.slow_consumer_closes,
        )?;
        counter(
            &mut e,
            "heartbeat_timeouts",
            "Connections closed for not answering a ping",
            self.heartbeat_timeouts,
        )?;
        counter(
            &mut e,
            "token_expiries",
            "Connections and sessions ended at their token's exp",
            self.token_expiries,
        )?;
        labelled(
            &mut e,
            "errors",
            "Error replies sent, by code",
            MetricType::Counter,
            "code",
            self.errors.iter().map(|(k, v)| (*k, *v as i64)),
        )?;
        Ok(())
    }
}
