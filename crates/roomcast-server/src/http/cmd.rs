//! `POST /cmd?session=...`: the commands of an SSE or poll session.
//!
//! The body is one JSON command, or an array of them, exactly as a `/ws` client would send
//! them (`join`, `leave`, `publish`, `presence`, `history`, `ping`); the answer is the reply
//! (or the array of replies) a `/ws` client would get, with the HTTP status of an error
//! reply's code. The commands run where the session lives ([`Worker::session_commands`]):
//! on this node, or, with a broker, on the node whose session it is, which the request is
//! forwarded to. No load balancer needs to keep a session's requests on its node.

use std::rc::Rc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Body, error, json_response, param, query, read_body, status};
use crate::engine::{CommandAnswer, SessionCall};
use crate::protocol::ErrorCode;
use crate::worker::{Forwarded, Worker, no_session};

/// How long a request forwarded to another node may wait for its answer (each command
/// waits up to 10 s there).
const FORWARD_WAIT: Duration = Duration::from_secs(12);

pub(super) async fn handle(req: Request<Incoming>, worker: Rc<Worker>) -> Response<Body> {
    let q = query(&req);
    let Some(session) = param(&q, "session").map(str::to_owned) else {
        return answer(no_session());
    };
    let local = worker.shared.session(&session);
    if local.is_none() && worker.shared.is_mine(&session) {
        return answer(no_session());
    }
    let body = match read_body(req, &worker).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Some(member) = local {
        return answer(worker.session_commands(&member, &body).await);
    }
    // Another node's session, forwarded there through the broker.
    let call = SessionCall::Commands(body);
    match worker.forward(&session, call, FORWARD_WAIT).await {
        Forwarded::Answer(a) => answer(a),
        Forwarded::No | Forwarded::Gone => answer(no_session()),
        Forwarded::Silent => error(
            ErrorCode::Unavailable,
            "the node of this session did not answer in time: the commands may have run there; retry (a publish with its id is safe to retry)",
        ),
    }
}

fn answer(a: CommandAnswer) -> Response<Body> {
    match a {
        CommandAnswer::Replies { error, body } => {
            json_response(error.map_or(StatusCode::OK, status), body)
        }
        CommandAnswer::Refused { code, message } => error(code, &message),
    }
}
