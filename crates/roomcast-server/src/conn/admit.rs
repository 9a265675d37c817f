//! What every WebSocket handshake passes before it is answered, whichever HTTP carries it
//! (an HTTP/1.1 upgrade or an HTTP/2 extended CONNECT): the endpoint, the origin, the
//! drain, a raw room's token, the limits per address, compression; then the connection
//! registered with its worker and its task started.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use ::http::header::{self, HeaderValue};
use ::http::{Request, StatusCode, Uri};
use bytes::Bytes;
use roomcast_ws::deflate::{DeflateConfig, Params};
use roomcast_ws::handshake::{Accept, ClientOffer, RequestError};
use tracing::debug;

use super::run::{self, Endpoint};
use crate::auth::{Action, Identity};
use crate::http;
use crate::protocol::RoomName;
use crate::stats::Stats;
use crate::worker::{Conn, Worker};

/// Where a request goes.
pub(super) enum Route {
    Echo,
    Ws,
    Raw(Result<RoomName, String>, bool),
    Http,
}

/// The route of a request target: one of the WebSocket endpoints, or HTTP.
pub(super) fn route(uri: &Uri, worker: &Worker) -> Route {
    let path = uri.path();
    if path == "/ws" {
        return Route::Ws;
    }
    if path == "/echo" && worker.shared.config.server.echo {
        return Route::Echo;
    }
    if let Some(name) = path.strip_prefix("/rooms/") {
        let echo = uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "echo=1" || kv == "echo=true"));
        let room = RoomName::new(name).map_err(|e| format!("invalid room name: {e}"));
        return Route::Raw(room, echo);
    }
    Route::Http
}

/// Why a handshake is refused: the handshake itself, or a decision of ours.
#[derive(Debug)]
pub(super) enum Refused {
    Request(RequestError),
    Status(StatusCode, String),
}

impl Refused {
    /// The whole refusal, the reason as a plain-text body: its status, the header fields
    /// the handshake's error needs, and `retry-after: 1` for a 429 or 503. `h2`: as
    /// HTTP/2 allows it (no 426, no `Upgrade`: `RequestError::status_h2`).
    pub(super) fn response(&self, h2: bool) -> ::http::Response<String> {
        let (status, fields) = match self {
            Self::Request(e) if h2 => (e.status_h2(), e.headers_h2()),
            Self::Request(e) => (e.status(), e.headers()),
            Self::Status(s, _) => (*s, Vec::new()),
        };
        let mut resp = ::http::Response::new(format!("{self}\n"));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        for (name, value) in fields {
            h.append(name, value);
        }
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request(e) => e.fmt(f),
            Self::Status(_, reason) => f.write_str(reason),
        }
    }
}

/// A handshake admitted: the answer's fields, and what the connection starts with.
pub(super) struct Admitted {
    endpoint: Endpoint,
    identity: Option<Identity>,
    counted: Option<IpAddr>,
    limited: bool,
    deflate: Option<(Params, DeflateConfig)>,
    /// What the client offered, and the subprotocol and extensions chosen: the 101 or
    /// the 200 is made of both.
    pub offer: ClientOffer,
    pub accept: Accept,
}

/// Runs a valid handshake `offer` for `req` (its head; the body is not looked at)
/// through everything but its own syntax, in the order of the answers: 400 for a bad
/// room name, 403 for an origin not allowed, 503 while draining, 401 and 403 for a raw
/// room's token, 429 over the limits per address (last: only a handshake about to
/// succeed is counted).
pub(super) fn admit<B>(
    worker: &Worker,
    req: &Request<B>,
    route: Route,
    offer: Result<ClientOffer, RequestError>,
    peer: SocketAddr,
) -> Result<Admitted, Refused> {
    let endpoint = match route {
        Route::Echo => Endpoint::Echo,
        Route::Ws => Endpoint::Ws,
        Route::Raw(Ok(room), echo) => Endpoint::Raw { room, echo },
        Route::Raw(Err(reason), _) => return Err(Refused::Status(StatusCode::BAD_REQUEST, reason)),
        Route::Http => {
            return Err(Refused::Status(StatusCode::NOT_FOUND, "not found".into()));
        }
    };
    let offer = offer.map_err(|e| {
        debug!(%peer, path = req.uri().path(), error = %e, "handshake refused");
        Refused::Request(e)
    })?;
    let echo = matches!(endpoint, Endpoint::Echo);
    // The echo socket (conformance testing, only with --echo) takes any origin.
    if let Some(refused) = http::refused_origin(req, worker).filter(|_| !echo) {
        debug!(%peer, %refused, "handshake from an origin not allowed");
        Stats::add(&worker.shared.stats.origin_refusals, 1);
        return Err(Refused::Status(StatusCode::FORBIDDEN, refused));
    }
    if worker.shared.is_draining() && !echo {
        Stats::add(&worker.shared.stats.draining_refusals, 1);
        let reason = "this node is draining: reconnect to another one";
        return Err(Refused::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            reason.into(),
        ));
    }
    // A raw room obeys the same tokens as `/ws`: given as `?token=` or `Authorization:
    // Bearer`, checked before the answer. `/ws` checks its own in `hello`.
    let mut identity = None;
    if let Endpoint::Raw { room, .. } = &endpoint {
        let q = http::query(req);
        match worker.shared.auth.admit(http::token(req, &q), None) {
            Err(e) => {
                Stats::add(&worker.shared.stats.auth_refusals, 1);
                return Err(Refused::Status(StatusCode::UNAUTHORIZED, e.to_string()));
            }
            Ok(Some(id)) if !id.grants.allows(Action::Join, room) => {
                let reason = format!("the token does not allow join in room {room}");
                return Err(Refused::Status(StatusCode::FORBIDDEN, reason));
            }
            Ok(id) => identity = id,
        }
    }
    let ip = crate::limits::client_ip(peer.ip(), req.headers(), &worker.shared.proxies);
    let counted = if echo {
        None
    } else {
        match worker.shared.limits.connect(ip, std::time::Instant::now()) {
            Ok(counted) => counted,
            Err(r) => {
                Stats::add(&worker.shared.stats.limit_refusals, 1);
                debug!(%peer, %ip, "refused: {r}");
                return Err(Refused::Status(
                    StatusCode::TOO_MANY_REQUESTS,
                    r.to_string(),
                ));
            }
        }
    };
    let limited = worker.shared.limits.applies(ip) && !echo;
    let mut accept = Accept::default();
    let deflate = worker.shared.config.websocket.deflate().and_then(|ours| {
        let (agreed, answer) = roomcast_ws::deflate::negotiate(&offer.extensions, &ours)?;
        accept.extensions.push(answer);
        Some((agreed, ours))
    });
    Ok(Admitted {
        endpoint,
        identity,
        counted,
        limited,
        deflate,
        offer,
        accept,
    })
}

/// Starts an admitted connection registered as `conn`: `answer` (an HTTP/1.1 101) goes
/// first in its send queue, a raw room's membership begins before it is written
/// (whatever is published from then on is queued behind it), and the connection gets a
/// task of its own.
pub(super) async fn start(
    worker: Rc<Worker>,
    conn: Rc<Conn>,
    admitted: Admitted,
    answer: Option<Bytes>,
) {
    let Admitted {
        endpoint,
        identity,
        counted,
        limited,
        deflate,
        ..
    } = admitted;
    if let Some((agreed, ours)) = &deflate {
        conn.ws.borrow_mut().set_deflate(agreed, ours);
    }
    Stats::add(&worker.shared.stats.handshakes, 1);
    if !matches!(endpoint, Endpoint::Echo) {
        conn.limit(&worker, counted, limited);
    }
    if let Some(answer) = answer {
        conn.ws.borrow_mut().outbox().push(answer);
    }
    match &endpoint {
        Endpoint::Ws => conn.awaits_hello.set(true),
        Endpoint::Raw { room, .. } => {
            conn.session.borrow_mut().auth = identity.map(Box::new);
            worker.raw_join(&conn, room.clone()).await;
        }
        Endpoint::Echo => {}
    }
    let _ = conn.flush();
    let raw = matches!(endpoint, Endpoint::Raw { .. });
    let stats = worker.shared.stats.clone();
    if raw {
        stats
            .raw_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    // A task of its own: the one that read the request ends here.
    tokio::task::spawn_local(async move {
        run::run(worker, conn, endpoint).await;
        if raw {
            stats
                .raw_connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
}
