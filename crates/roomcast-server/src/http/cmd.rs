//! `POST /cmd?session=...`: the commands of an SSE or poll session.
//!
//! The body is one JSON command, or an array of them, exactly as a `/ws` client would send
//! them (`join`, `leave`, `publish`, `presence`, `history`, `ping`); the answer is the reply
//! (or the array of replies) a `/ws` client would get, with the HTTP status of an error
//! reply's code. Any worker may take the request: the command runs on the worker that owns
//! the session, in order, so a join, then a publish, reach the room in that order.

use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Body, error, json_response, param, query, read_body, status};
use crate::engine::LocalMsg;
use crate::member::frame_json;
use crate::protocol::{ErrorCode, reply};
use crate::worker::Worker;

/// How long a command may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn handle(req: Request<Incoming>, worker: Rc<Worker>) -> Response<Body> {
    let q = query(&req);
    let Some(member) = param(&q, "session").and_then(|s| worker.shared.session(s)) else {
        return error(
            ErrorCode::NotFound,
            "no such session: open one with GET /sse or GET /poll",
        );
    };
    let body = match read_body(req, &worker).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // One command or an array of them; each kept as its raw JSON text.
    let commands: Vec<Box<RawValue>> = match serde_json::from_slice::<Box<RawValue>>(&body) {
        Ok(raw) if raw.get().trim_start().starts_with('[') => match serde_json::from_str(raw.get())
        {
            Ok(list) => list,
            Err(e) => {
                return error(ErrorCode::BadRequest, &format!("invalid command list: {e}"));
            }
        },
        Ok(raw) => vec![raw],
        Err(e) => {
            return error(ErrorCode::BadRequest, &format!("invalid JSON: {e}"));
        }
    };
    let single = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|&b| b != b'[');
    member.touch();
    // The replies exactly as a /ws client would get them.
    let mut replies: Vec<Bytes> = Vec::with_capacity(commands.len());
    for command in commands {
        let (notify, reply) = worker.pending();
        let msg = LocalMsg::HttpCommand {
            member: member.key,
            text: Bytes::copy_from_slice(command.get().as_bytes()),
            notify,
        };
        worker.send_local(usize::from(member.key.worker), msg);
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, reply).await {
            Ok(Ok(frame)) => frame_json(&frame),
            _ => {
                worker.cancel_pending(notify);
                frame_json(&reply::error(
                    None,
                    ErrorCode::Unavailable,
                    "no reply in time",
                ))
            }
        };
        replies.push(reply);
    }
    if single && let Some(reply) = replies.pop() {
        let code = reply::is_error(&reply)
            .then(|| serde_json::from_slice::<Value>(&reply).ok())
            .flatten()
            .and_then(|v| v["code"].as_str().and_then(ErrorCode::parse));
        return json_response(code.map_or(StatusCode::OK, status), reply);
    }
    let mut out = BytesMut::with_capacity(replies.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    out.put_u8(b'[');
    for (i, r) in replies.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(r);
    }
    out.put_u8(b']');
    json_response(StatusCode::OK, out.freeze())
}
