//! `GET /poll`: long-polling.
//!
//! The first poll (`/poll?room=a&room=b&client=alice`) opens a session; every poll answers
//! `{"session":...,"cursor":...,"events":[...]}` as soon as there are events, or after the
//! timeout with none. The next poll sends the cursor back (`/poll?cursor=...`): events up to
//! it are then dropped, the rest (and new ones) returned. An answer lost on the way is
//! therefore sent again, and nothing is returned twice once acknowledged. A cursor whose
//! session has expired (or lives on another node) opens a new session that rejoins each
//! room from the cursor's positions, with `since`.

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::value::RawValue;

use super::{Body, error, json_response, open_session, param, query};
use crate::member::{Cursor, HttpKind, HttpMember};
use crate::protocol::ErrorCode;
use crate::worker::Worker;

pub(super) async fn poll(req: Request<Incoming>, worker: Rc<Worker>) -> Response<Body> {
    let q = query(&req);
    let config = &worker.shared.config.http;
    let cursor = match param(&q, "cursor") {
        Some(text) => match Cursor::decode(text) {
            Some(c) => Some(c),
            None => {
                return error(
                    ErrorCode::BadRequest,
                    "this cursor is not one a poll returned",
                );
            }
        },
        None => None,
    };
    let timeout = param(&q, "timeout_ms")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(config.poll_timeout_ms)
        .min(config.poll_timeout_ms);
    let limit = param(&q, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(config.poll_max_events)
        .clamp(1, config.poll_max_events);

    let existing = cursor
        .as_ref()
        .and_then(|c| worker.shared.session(&c.session))
        .filter(|m| m.kind == HttpKind::Poll && !m.is_closed());
    let member = match existing {
        Some(m) => m,
        // The rooms of a cursor whose session is gone are joined from its positions.
        None => match open_session(
            &worker,
            HttpKind::Poll,
            &q,
            cursor.as_ref().map(|c| &c.positions),
            true,
        ) {
            Ok(m) => m,
            Err(e) => return e.into_response(),
        },
    };
    member.touch();
    // Everything up to the cursor arrived: drop it.
    if let Some(c) = cursor.as_ref().filter(|c| *c.session == *member.session) {
        let mut st = member.state();
        while st.events.front().is_some_and(|e| e.seq <= c.seq) {
            if let Some(e) = st.pop_front() {
                st.positions.apply(&e);
            }
        }
    }
    // Wait for something to return (or the timeout: then the answer has no events).
    let _ = tokio::time::timeout(
        Duration::from_millis(timeout),
        std::future::poll_fn(|cx| {
            let mut st = member.state();
            if !st.events.is_empty() || st.closed || worker.shared.is_draining() {
                return Poll::Ready(());
            }
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        }),
    )
    .await;
    member.touch();
    answer(&member, limit)
}

/// The answer: up to `limit` queued events (kept until the next cursor acknowledges them)
/// and the cursor after the last one.
fn answer(member: &HttpMember, limit: usize) -> Response<Body> {
    let st = member.state();
    let mut positions = st.positions.clone();
    let mut seq = st
        .events
        .front()
        .map_or(st.next_seq, |e| e.seq.saturating_sub(1));
    let mut out = String::with_capacity(256);
    out.push_str("{\"session\":");
    push_json_str(&mut out, &member.session);
    out.push_str(",\"events\":[");
    for (i, e) in st.events.iter().take(limit).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(std::str::from_utf8(&e.json).unwrap_or("null"));
        positions.apply(e);
        seq = e.seq;
    }
    let cursor = Cursor {
        session: member.session.to_string(),
        seq,
        positions,
    };
    out.push_str("],\"cursor\":");
    push_json_str(&mut out, &cursor.encode());
    if st.closed {
        out.push_str(",\"closed\":true");
    }
    out.push('}');
    drop(st);
    debug_assert!(serde_json::from_str::<&RawValue>(&out).is_ok(), "{out}");
    json_response(StatusCode::OK, out)
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}
