//! HTTP served by hyper: everything that is not a WebSocket handshake on the first request
//! of a connection.
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | 200 while accepting, 503 while draining |
//! | `GET /sse` | Server-Sent Events (`sse`) |
//! | `GET /poll` | long-polling (`poll`) |
//! | `POST /cmd` | the commands of an SSE or poll session (`cmd`) |
//! | `/api/...` | the server HTTP API (`api`) |
//! | `GET /echo` | a WebSocket upgrade on a keep-alive connection (with `--echo`) |

mod api;
mod cmd;
mod pages;
mod poll;
mod sse;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use roomcast_ws::Role;
use roomcast_ws::handshake::{Accept, validate_request};
use roomcast_ws::tokio::WebSocket;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::auth::Action;
use crate::echo;
use crate::member::{self, Cursor, EventKind, HttpKind, HttpMember, Positions};
use crate::protocol::RoomName;
use crate::protocol::{ErrorCode, reply};
use crate::worker::Worker;

/// Every response body: whole, or streamed (SSE). Not `Send`: an SSE body holds its
/// worker, and HTTP/1 connections run on their worker's thread.
pub(crate) type Body = Pin<Box<dyn HttpBody<Data = Bytes, Error = Infallible>>>;

/// Serves HTTP/1.1 on `io` until the client closes it.
pub(crate) async fn serve<S>(io: S, worker: Rc<Worker>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = worker.shared.config.handshake_timeout();
    let service = service_fn(move |req| {
        let worker = worker.clone();
        async move { Ok::<_, Infallible>(route(req, worker, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(error = %e, "http connection ended");
    }
}

/// Answers one request (HTTP/1.1, or a stream of an HTTP/2 connection).
pub(crate) async fn route(
    req: Request<Incoming>,
    worker: Rc<Worker>,
    peer: SocketAddr,
) -> Response<Body> {
    // "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
    // message that lacks a Host header field and to any request message that contains
    // more than one Host header field line or a Host header field with an invalid
    // field value" (RFC 9112 section 3.2).
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == http::Version::HTTP_11) {
        return error(ErrorCode::BadRequest, "missing or repeated Host header");
    }
    if let Some(refused) = refused_origin(&req, &worker).filter(|_| req.uri().path() != "/echo") {
        // Refused before anything runs: a browser sends some cross-origin requests (a
        // POST with a text body) without asking first, and only hides the answer.
        crate::stats::Stats::add(&worker.shared.stats.origin_refusals, 1);
        return error(ErrorCode::Forbidden, &refused);
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    // A CORS preflight (an OPTIONS from a page, asking about a method); any other
    // OPTIONS is routed like every request (and is mostly a 405).
    if req.method() == Method::OPTIONS
        && origin.is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(origin);
    }
    let mut resp = route_allowed(req, worker, peer).await;
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after, www-authenticate"),
        );
    }
    resp
}

/// Why a request's `Origin` is refused, if it is: neither the server's own origin nor
/// one of `server.allowed_origins` (see `auth::origin`). The server's own is the
/// request's authority: `:authority` over HTTP/2 (RFC 9113 section 8.3.1), else `Host`.
pub(crate) fn refused_origin<B>(req: &Request<B>, worker: &Worker) -> Option<String> {
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN)?;
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    let allowed = &worker.shared.config.server.allowed_origins;
    match origin.to_str() {
        Ok(o) if crate::auth::origin::allowed(o, host, allowed) => None,
        Ok(o) => Some(format!(
            "origin {o} is not allowed (server.allowed_origins)"
        )),
        Err(_) => Some("the Origin header is not text".into()),
    }
}

/// The answer to a CORS preflight from an allowed origin.
fn preflight(origin: Option<HeaderValue>) -> Response<Body> {
    let mut resp = Response::new(whole(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}

async fn route_allowed(
    req: Request<Incoming>,
    worker: Rc<Worker>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path();
    match (req.method().clone(), path) {
        (m, "/healthz") => healthz(&m, &worker),
        (_, "/echo") if worker.shared.config.server.echo => upgrade(req, &worker),
        (Method::GET, "/sse") => sse::open(req, worker, peer),
        (m, "/" | "/roomcast.js" | "/admin") => pages::page(&m, path),
        (m, "/metrics") => pages::metrics(&m, &req, &worker, peer),
        (Method::GET, "/poll") => poll::poll(req, worker, peer).await,
        (Method::POST, "/cmd") => cmd::handle(req, worker).await,
        (_, p) if p == "/api" || p.starts_with("/api/") => api::handle(req, worker, peer).await,
        (_, "/sse" | "/poll" | "/cmd") => {
            method_not_allowed(if path == "/cmd" { "POST" } else { "GET" })
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn healthz(method: &Method, worker: &Worker) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    // A node whose broker is unreachable stays in its load balancer's pool: every node
    // shares that broker, and the connections it holds still work (their room requests
    // answer `unavailable` until the broker is back).
    if worker.shared.is_draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !worker.engine.is_up() {
        text(StatusCode::OK, "ok, broker unreachable\n")
    } else {
        text(StatusCode::OK, "ok\n")
    }
}

/// A WebSocket handshake that arrived as a later request on a keep-alive connection:
/// validated by the same rules, answered through hyper, then run on the upgraded stream.
fn upgrade(req: Request<Incoming>, worker: &Worker) -> Response<Body> {
    let offer = match validate_request(req.method(), req.version(), req.headers()) {
        Ok(offer) => offer,
        Err(e) => return e.to_response().map(|b| whole(Bytes::from(b))),
    };
    let config = worker.shared.config.driver();
    tokio::task::spawn_local(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws = WebSocket::from_raw(
                    TokioIo::new(upgraded),
                    Role::Server,
                    config,
                    BytesMut::new(),
                );
                if let Err(e) = echo::serve(ws).await {
                    debug!(error = %e, "echo connection ended");
                }
            }
            Err(e) => debug!(error = %e, "upgrade failed"),
        }
    });
    offer
        .accept_response(&Accept::default())
        .map(|()| whole(Bytes::new()))
}

/// A whole body.
pub(crate) fn whole(bytes: Bytes) -> Body {
    Box::pin(Full::new(bytes))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(whole(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(whole(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A refused request: its status and the `{"error":{"code","message"}}` body.
#[derive(Debug)]
pub(crate) struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    /// A refusal with a protocol error code, answered with that code's HTTP status.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: status(code),
            code: code.as_str(),
            message: message.into(),
        }
    }

    /// A 400 `bad_request`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = json_response(self.status, body.to_string());
        match self.status {
            StatusCode::UNAUTHORIZED => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

/// The HTTP error response: `{"error":{"code":"...","message":"..."}}`.
pub(crate) fn error(code: ErrorCode, message: &str) -> Response<Body> {
    HttpError::new(code, message).into_response()
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let refused = HttpError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("use {allow}"),
    };
    let mut resp = refused.into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// The HTTP status of a protocol error code.
pub(crate) fn status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Reads a request body of at most `http.max_body_size` bytes.
pub(crate) async fn read_body(req: Request<Incoming>, worker: &Worker) -> Result<Bytes, HttpError> {
    let max = worker.shared.config.http.max_body_size;
    match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(HttpError::new(
                ErrorCode::TooLarge,
                format!("the body is larger than {max} bytes"),
            ))
        }
        Err(e) => Err(HttpError::bad_request(format!("cannot read the body: {e}"))),
    }
}

/// Reads a request body and parses it as JSON into `T`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    worker: &Worker,
) -> Result<T, HttpError> {
    let body = read_body(req, worker).await?;
    serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(format!("invalid body: {e}")))
}

/// The decoded query parameters, in order (a name may repeat).
pub(crate) fn query<B>(req: &Request<B>) -> Vec<(String, String)> {
    let q = req.uri().query().unwrap_or_default();
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// The first value of a query parameter.
pub(crate) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The client's address: the peer's, or what a trusted proxy says it is.
pub(crate) fn client_ip<B>(
    req: &Request<B>,
    worker: &Worker,
    peer: SocketAddr,
) -> std::net::IpAddr {
    crate::limits::client_ip(peer.ip(), req.headers(), &worker.shared.proxies)
}

/// The token of a request: `Authorization: Bearer TOKEN`, or the `token` parameter (for
/// clients that cannot set headers, such as `EventSource` and WebSocket in browsers).
pub(crate) fn token<'a, B>(req: &'a Request<B>, q: &'a [(String, String)]) -> Option<&'a str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| param(q, "token"))
}

/// A client id given in a query string, checked like `hello`'s.
pub(crate) fn client_id(q: &[(String, String)]) -> Result<String, HttpError> {
    crate::protocol::client_id(param(q, "client")).map_err(|e| HttpError::bad_request(&e.message))
}

/// Presence info given in a query string: a JSON object.
pub(crate) fn presence_info(q: &[(String, String)]) -> Result<Option<Bytes>, HttpError> {
    match param(q, "presence") {
        None => Ok(None),
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(Some(Bytes::from(v.to_string()))),
            _ => Err(HttpError::bad_request("`presence` must be a JSON object")),
        },
    }
}

/// The `room` parameters, checked, without repeats.
pub(crate) fn room_params(q: &[(String, String)]) -> Result<Vec<RoomName>, HttpError> {
    let mut rooms: Vec<RoomName> = Vec::new();
    for (_, v) in q.iter().filter(|(k, _)| k == "room") {
        let room = RoomName::new(v).map_err(|e| HttpError::bad_request(e.to_string()))?;
        if !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

/// Opens the session of an SSE stream or a poll from its query: refused while the node
/// drains; the rooms, client id and presence checked; the member registered, its
/// `welcome` queued, and each room joined from its position in `resume` when it has one.
/// A poll `cursor` whose session is gone (expired, or on another node) carries the rest:
/// its rooms are joined too, as its client, with the presence info each had.
pub(crate) fn open_session(
    worker: &Rc<Worker>,
    kind: HttpKind,
    q: &[(String, String)],
    ip: std::net::IpAddr,
    token: Option<&str>,
    resume: Option<&Positions>,
    cursor: Option<&Cursor>,
) -> Result<Arc<HttpMember>, HttpError> {
    if worker.shared.is_draining() {
        crate::stats::Stats::add(&worker.shared.stats.draining_refusals, 1);
        return Err(draining());
    }
    let asked = room_params(q)?;
    let mut rooms = asked.clone();
    if let Some(c) = cursor {
        for (room, _, _) in &c.positions.0 {
            if !rooms.contains(room) {
                rooms.push(room.clone());
            }
        }
        for room in c.rooms.iter().chain(c.presence.iter().map(|(r, _)| r)) {
            if !rooms.contains(room) {
                rooms.push(room.clone());
            }
        }
    }
    let max = worker.shared.config.rooms.max_rooms_per_connection;
    if rooms.len() > max {
        return Err(HttpError::bad_request(format!("at most {max} rooms")));
    }
    let named = param(q, "client").or_else(|| cursor.and_then(|c| c.client.as_deref()));
    let identity = worker.shared.auth.admit(token, named).map_err(|e| {
        crate::stats::Stats::add(&worker.shared.stats.auth_refusals, 1);
        HttpError::new(ErrorCode::Unauthorized, e.to_string())
    })?;
    let client = match (
        &identity,
        param(q, "client"),
        cursor.and_then(|c| c.client.as_deref()),
    ) {
        (Some(id), _, _) => id.client.clone(),
        // With tokens on, a client without one is anonymous (see `conn::ws::hello`).
        (None, _, _) if worker.shared.auth.is_on() => {
            crate::protocol::client_id(None).map_err(|e| HttpError::bad_request(&e.message))?
        }
        (None, None, Some(carried)) => crate::protocol::client_id(Some(carried))
            .map_err(|e| HttpError::bad_request(&e.message))?,
        _ => client_id(q)?,
    };
    let presence = presence_info(q)?;
    if let Some(info) = &presence {
        worker
            .check_presence(info)
            .map_err(|e| HttpError::new(e.code, e.message))?;
    }
    let may = |action: Action, room: &RoomName| {
        identity
            .as_ref()
            .is_none_or(|id| id.grants.allows(action, room))
    };
    for room in &rooms {
        let presence_asked = presence.is_some() && asked.contains(room);
        for action in [Action::Join]
            .into_iter()
            .chain(presence_asked.then_some(Action::Presence))
        {
            if !may(action, room) {
                return Err(HttpError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the token does not allow {} in room {room}",
                        action.as_str()
                    ),
                ));
            }
        }
    }
    let counted = worker.shared.limits.open_session(ip).map_err(|r| {
        crate::stats::Stats::add(&worker.shared.stats.limit_refusals, 1);
        HttpError::new(ErrorCode::RateLimited, r.to_string())
    })?;
    let member = worker.register_http(kind, Arc::from(client));
    {
        let mut st = member.state();
        st.auth = identity.clone();
        st.counted_ip = counted;
        st.limited = worker.shared.limits.applies(ip);
    }
    // The same object as `/ws`'s welcome, with the session to send commands with.
    let welcome = reply::welcome(
        None,
        &member.client,
        &member.session,
        &worker.shared.node_id,
        worker.shared.config.websocket.heartbeat_interval_ms,
    );
    member.push(None, EventKind::Welcome, member::frame_json(&welcome));
    for room in rooms {
        let since = resume.and_then(|r| r.since(&room));
        // The query's presence for the rooms it names (and for every room of a cursor of
        // the first format, which carried none); the cursor's for the others.
        let old_cursor = cursor.is_some_and(|c| c.client.is_none());
        let info = presence
            .clone()
            .filter(|_| asked.contains(&room) || old_cursor)
            .or_else(|| cursor.and_then(|c| c.presence_of(&room)))
            .filter(|_| may(Action::Presence, &room));
        worker.http_join(&member, room, info, since, None, None);
    }
    Ok(member)
}

/// The answer to a new stream or session while the node drains.
pub(crate) fn draining() -> HttpError {
    HttpError::new(
        ErrorCode::Unavailable,
        "this node is draining: reconnect to another one",
    )
}
