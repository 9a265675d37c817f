//! `GET /sse?room=a&room=b&client=alice&presence={...}`: Server-Sent Events.
//!
//! The stream starts with a `welcome` event (whose `session` lets the client send commands
//! with `POST /cmd?session=...`), then a `joined` per room and the room's `message` and
//! `presence_diff` events, all carrying the same JSON as on `/ws`. Each `message` event's
//! `id:` is the stream's position in every room (`room!epoch!offset,...`): a browser's
//! `EventSource` sends it back as `Last-Event-ID` when it reconnects, and the new stream
//! rejoins each room with `since`, so exactly the missed messages come first (or the
//! `joined` event says `"recovered":false`). A comment line every `http.sse_heartbeat_ms`
//! keeps proxies from closing an idle stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Request, Response, header};
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use tokio::time::Interval;

use super::{Body, HttpError, open_session, param, query};
use crate::member::{Event, EventKind, HttpKind, HttpMember, Positions};
use crate::worker::Worker;

/// Events put in one chunk of the response, at most.
const BATCH_BYTES: usize = 64 * 1024;

pub(super) fn open(
    req: Request<Incoming>,
    worker: Rc<Worker>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    match start(&req, worker, peer) {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn start(
    req: &Request<Incoming>,
    worker: Rc<Worker>,
    peer: std::net::SocketAddr,
) -> Result<Response<Body>, HttpError> {
    let q = query(req);
    // EventSource sends the last id as a header; polyfills may only manage a parameter.
    let last_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| param(&q, "last_event_id").map(str::to_owned));
    let resume = last_id
        .as_deref()
        .map(Positions::decode)
        .unwrap_or_default();
    let member = open_session(
        &worker,
        HttpKind::Sse,
        &q,
        super::client_ip(req, &worker, peer),
        super::token(req, &q),
        Some(&resume),
        None,
    )?;
    let period = Duration::from_millis(worker.shared.config.http.sse_heartbeat_ms);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = SseBody {
        worker,
        member,
        positions: resume,
        heartbeat,
        started: false,
    };
    let mut resp: Response<Body> = Response::new(Box::pin(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Proxies must neither cache nor buffer a stream.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// The response body: the member's events as they come.
struct SseBody {
    worker: Rc<Worker>,
    member: Arc<HttpMember>,
    positions: Positions,
    heartbeat: Interval,
    started: bool,
}

impl SseBody {
    fn write_event(&mut self, out: &mut BytesMut, event: &Event) {
        if matches!(
            event.kind,
            EventKind::Message { .. } | EventKind::Joined { .. }
        ) {
            self.positions.apply(event);
            out.put_slice(b"id: ");
            out.put_slice(self.positions.encode().as_bytes());
            out.put_slice(b"\n");
        }
        out.put_slice(b"event: ");
        out.put_slice(event.name().as_bytes());
        out.put_slice(b"\ndata: ");
        // JSON has line breaks only as whitespace, which a space replaces; an SSE data
        // line cannot hold one. Most events have none and are copied whole.
        let breaks = |b: &u8| *b == b'\n' || *b == b'\r';
        if event.json.iter().any(breaks) {
            out.extend(event.json.iter().map(|b| if breaks(b) { b' ' } else { *b }));
        } else {
            out.put_slice(&event.json);
        }
        out.put_slice(b"\n\n");
    }
}

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut out = BytesMut::new();
        if !self.started {
            self.started = true;
            // Reconnect after 1 s rather than the browser's default 3 s.
            out.put_slice(b"retry: 1000\n\n");
        }
        let mut closed = false;
        let mut ended = None;
        let mut taken = Vec::new();
        {
            let mut st = self.member.state();
            let mut size = 0;
            while size < BATCH_BYTES {
                let Some(event) = st.pop_front() else {
                    break;
                };
                size += event.json.len();
                taken.push(event);
            }
            if taken.is_empty() {
                closed = st.closed;
                if closed {
                    ended = st.ended.take();
                } else {
                    st.waker = Some(cx.waker().clone());
                }
            }
        }
        for event in &taken {
            self.write_event(&mut out, event);
        }
        if let Some((code, reason)) = ended {
            // Why the server ended the stream, once, as its last event.
            out.put_slice(b"event: closed\ndata: ");
            out.put_slice(HttpMember::closed_json(code, &reason).as_bytes());
            out.put_slice(b"\n\n");
        }
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
        }
        if closed || self.worker.shared.is_draining() {
            return Poll::Ready(None);
        }
        if self.heartbeat.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keepalive\n\n",
            )))));
        }
        Poll::Pending
    }
}

impl Drop for SseBody {
    /// The stream ended (the client went away, or we closed it): the member leaves its
    /// rooms now, so its presence ends with the stream.
    fn drop(&mut self) {
        self.worker.remove_http(&self.member);
    }
}
