//! `GET /poll`: long-polling.
//!
//! The first poll (`/poll?room=a&room=b&client=alice`) opens a session; every poll answers
//! `{"session":...,"cursor":...,"events":[...]}` as soon as there are events, or after the
//! timeout with none. The next poll sends the cursor back (`/poll?cursor=...`): events up to
//! it are then dropped, the rest (and new ones) returned. An answer lost on the way is
//! therefore sent again, and nothing is returned twice once acknowledged. A cursor of
//! another node's session is forwarded to that node through the broker, so the session
//! goes on there. A cursor whose session is gone (expired, or its node with it) opens a
//! new session here that rejoins each room from the cursor's positions, with `since`, as
//! the same client with the same presence.

use std::rc::Rc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Body, error, json_response, open_session, param, query};
use crate::engine::{CommandAnswer, SessionCall};
use crate::member::{Cursor, HttpKind};
use crate::protocol::ErrorCode;
use crate::worker::{Forwarded, Worker};

/// How much longer than its own timeout a poll forwarded to another node may wait.
const FORWARD_MARGIN: Duration = Duration::from_secs(2);

pub(super) async fn poll(
    req: Request<Incoming>,
    worker: Rc<Worker>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
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
    // A value that is not a whole number is refused; one past the maximum is capped.
    let number = |name: &str, default: u64| match param(&q, name) {
        None => Some(default),
        Some(t) => t.parse::<u64>().ok(),
    };
    let whole = |name: &str| {
        error(
            ErrorCode::BadRequest,
            &format!("`{name}` must be a whole number"),
        )
    };
    let Some(timeout) = number("timeout_ms", config.poll_timeout_ms) else {
        return whole("timeout_ms");
    };
    let timeout = timeout.min(config.poll_timeout_ms);
    let limit = match number("limit", config.poll_max_events as u64) {
        None => return whole("limit"),
        Some(0) => return error(ErrorCode::BadRequest, "`limit` must be at least 1"),
        Some(l) => l.min(config.poll_max_events as u64) as usize,
    };

    let existing = cursor
        .as_ref()
        .and_then(|c| worker.shared.session(&c.session))
        .filter(|m| m.kind == HttpKind::Poll && !m.is_closed());
    // A session this node ended: said again, as its last answer said (while draining,
    // the 503 below sends the client elsewhere instead).
    if let Some(c) = cursor
        .as_ref()
        .filter(|_| existing.is_none() && !worker.shared.is_draining())
        && let Some((code, reason)) = worker.shared.ended_session(&c.session)
    {
        let answer = serde_json::json!({
            "session": c.session,
            "events": [],
            "cursor": param(&q, "cursor"),
            "closed": true,
            "code": code,
            "reason": &*reason,
        });
        return json_response(StatusCode::OK, answer.to_string());
    }
    // Another node's session goes on there while that node holds it.
    if let Some(c) = cursor.as_ref().filter(|_| existing.is_none()) {
        let call = SessionCall::Poll {
            seq: c.seq,
            timeout_ms: timeout,
            limit,
        };
        let wait = Duration::from_millis(timeout) + FORWARD_MARGIN;
        match worker.forward(&c.session, call, wait).await {
            Forwarded::Answer(CommandAnswer::Replies { body, .. }) => {
                return json_response(StatusCode::OK, body);
            }
            Forwarded::Silent => {
                return error(
                    ErrorCode::Unavailable,
                    "the node of this session did not answer: poll again with the cursor",
                );
            }
            Forwarded::Answer(CommandAnswer::Refused { code, message })
                if code != ErrorCode::NotFound =>
            {
                return error(code, &message);
            }
            // Gone (no node holds it, or its node no longer does): a new session here,
            // from the cursor.
            Forwarded::No | Forwarded::Gone | Forwarded::Answer(CommandAnswer::Refused { .. }) => {}
        }
    }
    let member = match existing {
        Some(m) => m,
        // The rooms of a cursor whose session is gone are joined from its positions.
        None => match open_session(
            &worker,
            HttpKind::Poll,
            &q,
            super::client_ip(&req, &worker, peer),
            super::token(&req, &q),
            cursor.as_ref().map(|c| &c.positions),
            cursor.as_ref(),
        ) {
            Ok(m) => m,
            Err(e) => return e.into_response(),
        },
    };
    let seq = cursor
        .as_ref()
        .filter(|c| *c.session == *member.session)
        .map(|c| c.seq);
    let timeout = Duration::from_millis(timeout);
    json_response(
        StatusCode::OK,
        worker
            .session_poll(&member, seq, timeout, limit, usize::MAX)
            .await,
    )
}
