//! `/ws`: the roomcast protocol's requests. A text frame is parsed here and, after
//! `hello`, handed to the worker's one dispatcher ([`Worker::dispatch`]), which `POST
//! /cmd` shares.

use std::rc::Rc;
use std::sync::Arc;

use roomcast_ws::{CloseCode, Message};

use crate::protocol::{ErrorCode, Request, parse, reply};
use crate::stats::Stats;
use crate::worker::{Conn, SocketCaller, Worker};

pub(super) fn handle(worker: &Rc<Worker>, conn: &Rc<Conn>, msg: Message) {
    let text = match msg {
        Message::Text(t) => t,
        _ => {
            let reason = "binary frames are not part of the protocol: send JSON text";
            worker.shared.stats.error(ErrorCode::BadRequest);
            return conn.push(worker, reply::error(None, ErrorCode::BadRequest, reason));
        }
    };
    let (reference, request) = parse(text.as_bytes());
    let error = |code: ErrorCode, message: &str| {
        worker.shared.stats.error(code);
        conn.push(worker, reply::error(reference, code, message));
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return error(e.code, &e.message),
    };
    let client = conn.session.borrow().client.clone();
    let Some(client) = client else {
        return match request {
            Request::Hello { client, token } => hello(worker, conn, client, token, reference),
            _ => error(ErrorCode::Unauthorized, "send hello first"),
        };
    };
    worker.dispatch(&SocketCaller { conn, client }, reference, request);
}

/// `hello`: the client id checked, and the token when auth is on. A refused token is
/// answered with `unauthorized` and the connection closed with 4001: without a valid
/// hello nothing else can be done on it.
fn hello(
    worker: &Rc<Worker>,
    conn: &Rc<Conn>,
    client: Option<String>,
    token: Option<String>,
    reference: Option<u64>,
) {
    let identity = match worker
        .shared
        .auth
        .admit(token.as_deref(), client.as_deref())
    {
        Ok(identity) => identity,
        Err(e) => {
            let reason = e.to_string();
            worker.shared.stats.error(ErrorCode::Unauthorized);
            conn.push(
                worker,
                reply::error(reference, ErrorCode::Unauthorized, &reason),
            );
            Stats::add(&worker.shared.stats.auth_refusals, 1);
            return conn.close(worker, CloseCode(4001), &reason, false);
        }
    };
    // With tokens on, a client without one (auth.required = false) is anonymous: it may
    // not take the id of a client that has a token.
    let given = match &identity {
        Some(id) => Some(id.client.clone()),
        None if worker.shared.auth.is_on() => None,
        None => client,
    };
    let client = match crate::protocol::client_id(given.as_deref()) {
        Ok(c) => c,
        Err(e) => return conn.push(worker, reply::error(reference, e.code, &e.message)),
    };
    let session = crate::random_id(8);
    let heartbeat = worker.shared.config.websocket.heartbeat_interval_ms;
    let frame = reply::welcome(
        reference,
        &client,
        &session,
        &worker.shared.node_id,
        heartbeat,
    );
    let mut session = conn.session.borrow_mut();
    session.client = Some(Arc::from(client));
    session.auth = identity.map(Box::new);
    conn.push(worker, frame);
}
