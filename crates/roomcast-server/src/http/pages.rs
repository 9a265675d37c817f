//! What a browser opens: the demo chat at `/`, the client bundle at `/roomcast.js`
//! (built from `clients/js`, embedded here), the live node page at `/admin`; and the
//! node's counters for Prometheus at `/metrics`.
//!
//! The pages are static and hold no data: `/admin` reads `GET /api/stats` (an API key
//! with the `admin` scope, or loopback without keys), like `/metrics` does.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use super::{Body, method_not_allowed, whole};
use crate::config::ApiScope;
use crate::metrics::{Refusals, Snapshot, Transports};
use crate::protocol::ErrorCode;
use crate::stats::Stats;
use crate::worker::Worker;

/// The client bundle; `node build.mjs --check` in `clients/js` keeps it what the sources
/// build.
const BUNDLE: &[u8] = include_bytes!("../../../../clients/js/dist/roomcast.js");
const DEMO: &str = include_str!("pages/demo.html");
const ADMIN: &str = include_str!("pages/admin.html");

pub(super) fn page(method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let (body, kind): (&'static [u8], _) = match path {
        "/roomcast.js" => (BUNDLE, "text/javascript; charset=utf-8"),
        "/admin" => (ADMIN.as_bytes(), "text/html; charset=utf-8"),
        _ => (DEMO.as_bytes(), "text/html; charset=utf-8"),
    };
    let mut resp = Response::new(whole(Bytes::from_static(body)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // A new build of the server serves a new bundle: revalidate rather than cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub(super) fn metrics<B>(
    method: &Method,
    req: &Request<B>,
    worker: &Worker,
    peer: SocketAddr,
) -> Response<Body> {
    if !worker.shared.metrics.enabled() {
        return super::text(
            StatusCode::NOT_FOUND,
            "not found (metrics.enabled is off)\n",
        );
    }
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    if let Err(e) = super::api::authorize(req, worker, peer, ApiScope::Admin) {
        return e.into_response();
    }
    let text = worker.shared.metrics.render(snapshot(worker));
    let mut resp = Response::new(whole(Bytes::from(text)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The node's counters now.
pub(super) fn snapshot(worker: &Worker) -> Snapshot {
    let shared = &worker.shared;
    let s = &shared.stats;
    let gauge = |g: &std::sync::atomic::AtomicI64| g.load(std::sync::atomic::Ordering::Relaxed);
    let raw = gauge(&s.raw_connections);
    let (sse, poll) = shared.session_counts();
    Snapshot {
        node: shared.node_id.clone(),
        uptime_ms: crate::now_ms().saturating_sub(shared.started_ms),
        broker: shared.config.broker.kind(),
        broker_up: worker.engine.is_up(),
        draining: shared.is_draining(),
        connections: Transports {
            websocket: gauge(&s.connections) - raw,
            raw,
            sse,
            poll,
        },
        rooms: gauge(&s.rooms),
        handshakes: Stats::get(&s.handshakes),
        published: Stats::get(&s.published),
        deliveries: Stats::get(&s.deliveries),
        compressions: Stats::get(&s.compressions),
        compressed_frames: Stats::get(&s.compressed_frames),
        http2_connections: Stats::get(&s.http2_connections),
        http2_websockets: Stats::get(&s.http2_websockets),
        bytes_in: Stats::get(&s.bytes_in),
        bytes_out: Stats::get(&s.bytes_out),
        outbox_bytes: gauge(&s.outbox_bytes).max(0),
        slow_consumer_closes: Stats::get(&s.slow_consumer_closes),
        heartbeat_timeouts: Stats::get(&s.heartbeat_timeouts),
        token_expiries: Stats::get(&s.token_expiries),
        refusals: Refusals {
            auth: Stats::get(&s.auth_refusals),
            limit: Stats::get(&s.limit_refusals),
            origin: Stats::get(&s.origin_refusals),
            draining: Stats::get(&s.draining_refusals),
            proxy: Stats::get(&s.proxy_refusals),
        },
        errors: ErrorCode::ALL
            .iter()
            .zip(&s.errors)
            .map(|(code, n)| (code.as_str(), Stats::get(n)))
            .collect(),
    }
}
