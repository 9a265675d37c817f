//! A new connection: read its first request head, then route it. WebSocket endpoints are
//! answered here (no HTTP library in the way of the handshake); everything else goes to
//! hyper with the bytes already read.

use std::net::SocketAddr;
use std::rc::Rc;

use ::http::header::{self, HeaderValue};
use ::http::{Request, StatusCode};
use bytes::{Bytes, BytesMut};
use roomcast_ws::handshake::{
    Accept, RequestError, encode_response, parse_request, validate_request,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::run::{self, Endpoint};
use crate::auth::Action;
use crate::http;
use crate::prefixed::Prefixed;
use crate::protocol::RoomName;
use crate::worker::Worker;

/// Sent, best effort, to a client that did not finish its request head in time.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A plain-text refusal with its reason as the body (`content-length` and
/// `connection: close` are added by `encode_response`).
fn refusal(status: StatusCode, reason: &str) -> Bytes {
    let mut resp = ::http::Response::new(format!("{reason}\n"));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    encode_response(&resp)
}

enum HeadError {
    Closed,
    Request(RequestError),
}

/// Where a request goes.
enum Route {
    Echo,
    Ws,
    Raw(Result<RoomName, String>, bool),
    Http,
}

/// Accepts on a worker's listener until the worker stops, each connection on a task of its
/// own.
pub(crate) fn serve(
    worker: Rc<Worker>,
    listener: TcpListener,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::task::spawn_local(handle(worker.clone(), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors or memory: back off instead of spinning.
                    tracing::warn!(worker = worker.index, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    })
}

/// A connection's stream before its route is known: plain TCP, or TLS once the handshake
/// is done. A WebSocket takes it apart again ([`Transport::into_parts`]): the socket, and
/// rustls's state for the worker to drive.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_parts(self) -> (TcpStream, Option<Box<rustls::ServerConnection>>);
}

impl Transport for TcpStream {
    fn into_parts(self) -> (TcpStream, Option<Box<rustls::ServerConnection>>) {
        (self, None)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_parts(self) -> (TcpStream, Option<Box<rustls::ServerConnection>>) {
        let (io, tls) = self.into_inner();
        (io, Some(Box::new(tls)))
    }
}

async fn handle(worker: Rc<Worker>, mut stream: TcpStream, mut peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // Behind a load balancer that passes TCP through, its PROXY header says whose
    // connection this is; it is read before TLS, and believed only from a trusted proxy.
    let config = &worker.shared.config;
    if config.server.proxy_protocol && worker.shared.proxies.contains(&peer.ip()) {
        match super::proxy::read_header(&mut stream, config.handshake_timeout()).await {
            Ok(Some(client)) => peer = client,
            Ok(None) => {}
            Err(e) => {
                crate::stats::Stats::add(&worker.shared.stats.proxy_refusals, 1);
                debug!(%peer, error = %e, "dropped: no valid PROXY header");
                return;
            }
        }
    }
    let Some(tls) = worker.shared.tls.as_ref() else {
        return route_stream(worker, stream, peer).await;
    };
    // TLS first (bounded by the handshake timeout too), then the request head inside it.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    match tokio::time::timeout(
        worker.shared.config.handshake_timeout(),
        acceptor.accept(stream),
    )
    .await
    {
        Ok(Ok(stream)) => route_stream(worker, stream, peer).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

async fn route_stream<S: Transport>(worker: Rc<Worker>, mut stream: S, peer: SocketAddr) {
    let config = &worker.shared.config;
    let mut buf = BytesMut::with_capacity(1024);
    let head = tokio::time::timeout(
        config.handshake_timeout(),
        read_head(&mut stream, &mut buf, config.server.max_head()),
    );
    let (req, head_len) = match head.await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Request(e))) => {
            debug!(%peer, error = %e, "bad request head");
            return refuse(stream, &e.to_http1(), &worker).await;
        }
        Err(_) => {
            debug!(%peer, "request head timed out");
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(100),
                stream.write_all(REQUEST_TIMEOUT),
            )
            .await;
            return;
        }
    };
    let route = route(&req, &worker);
    if matches!(route, Route::Http) {
        return http::serve(Prefixed::new(buf.freeze(), stream), worker.clone(), peer).await;
    }
    if let Route::Raw(Err(reason), _) = &route {
        return refuse(stream, &refusal(StatusCode::BAD_REQUEST, reason), &worker).await;
    }
    let offer = match validate_request(req.method(), req.version(), req.headers()) {
        Ok(offer) => offer,
        Err(e) => {
            debug!(%peer, path = req.uri().path(), error = %e, "handshake refused");
            return refuse(stream, &e.to_http1(), &worker).await;
        }
    };
    // The echo socket (conformance testing, only with --echo) takes any origin.
    if let Some(refused) =
        http::refused_origin(req.headers(), &worker).filter(|_| !matches!(route, Route::Echo))
    {
        debug!(%peer, %refused, "handshake from an origin not allowed");
        crate::stats::Stats::add(&worker.shared.stats.origin_refusals, 1);
        return refuse(stream, &refusal(StatusCode::FORBIDDEN, &refused), &worker).await;
    }
    if worker.shared.is_draining() && !matches!(route, Route::Echo) {
        let draining = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is draining: reconnect to another one",
        );
        crate::stats::Stats::add(&worker.shared.stats.draining_refusals, 1);
        return refuse(stream, &draining, &worker).await;
    }
    // A raw room obeys the same tokens as `/ws`: given as `?token=` or `Authorization:
    // Bearer`, checked before the 101. `/ws` checks its own in `hello`.
    let mut identity = None;
    if let Route::Raw(Ok(room), _) = &route {
        let q = http::query(&req);
        match worker.shared.auth.admit(http::token(&req, &q), None) {
            Err(e) => {
                crate::stats::Stats::add(&worker.shared.stats.auth_refusals, 1);
                let refused = refusal(StatusCode::UNAUTHORIZED, &e.to_string());
                return refuse(stream, &refused, &worker).await;
            }
            Ok(Some(id)) if !id.grants.allows(Action::Join, room) => {
                let reason = format!("the token does not allow join in room {room}");
                return refuse(stream, &refusal(StatusCode::FORBIDDEN, &reason), &worker).await;
            }
            Ok(id) => identity = id,
        }
    }
    // Limits per address, last: only a handshake about to succeed is counted.
    let ip = crate::limits::client_ip(peer.ip(), req.headers(), &worker.shared.proxies);
    let counted = if matches!(route, Route::Echo) {
        None
    } else {
        match worker.shared.limits.connect(ip, std::time::Instant::now()) {
            Ok(counted) => counted,
            Err(r) => {
                crate::stats::Stats::add(&worker.shared.stats.limit_refusals, 1);
                debug!(%peer, %ip, "refused: {r}");
                let refused = refusal(StatusCode::TOO_MANY_REQUESTS, &r.to_string());
                return refuse(stream, &refused, &worker).await;
            }
        }
    };
    let limited = worker.shared.limits.applies(ip) && !matches!(route, Route::Echo);
    let mut accept = Accept::default();
    let deflate = worker.shared.config.websocket.deflate().and_then(|ours| {
        let (agreed, answer) = roomcast_ws::deflate::negotiate(&offer.extensions, &ours)?;
        accept.extensions.push(answer);
        Some((agreed, ours))
    });
    let reply = offer.accept(&accept);
    // Bytes after the head are the first frames; an empty remainder must not keep the
    // head's buffer alive for the life of the connection.
    let rest = if buf.len() > head_len {
        buf.split_off(head_len)
    } else {
        BytesMut::new()
    };
    drop(buf);
    let (stream, tls) = stream.into_parts();
    let conn = worker.register(stream, rest);
    if let Some((agreed, ours)) = &deflate {
        conn.ws.borrow_mut().set_deflate(agreed, ours);
    }
    crate::stats::Stats::add(&worker.shared.stats.handshakes, 1);
    if let Some(tls) = tls {
        // A session that broke or closed meanwhile marks the connection dead: its task
        // (spawned below like any other) unregisters it and gives its slot back.
        conn.set_tls(tls);
    }
    match route {
        Route::Echo => {
            conn.ws.borrow_mut().outbox().push(reply);
            let _ = conn.flush();
            tokio::task::spawn_local(run::run(worker, conn, Endpoint::Echo));
        }
        Route::Ws => {
            conn.limit(&worker, counted, limited);
            conn.awaits_hello.set(true);
            // The 101 goes first in the connection's send queue.
            conn.ws.borrow_mut().outbox().push(reply);
            let _ = conn.flush();
            // A task of its own: this one, with the request head, ends here.
            tokio::task::spawn_local(run::run(worker, conn, Endpoint::Ws));
        }
        Route::Raw(Ok(room), echo) => {
            conn.limit(&worker, counted, limited);
            conn.session.borrow_mut().auth = identity.map(Box::new);
            conn.ws.borrow_mut().outbox().push(reply);
            // Membership begins before the 101 is written: whatever is published from
            // now on is queued behind it.
            worker.raw_join(&conn, room.clone()).await;
            let _ = conn.flush();
            let raw = &worker.shared.stats.raw_connections;
            raw.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::task::spawn_local(async move {
                let stats = worker.shared.stats.clone();
                run::run(worker, conn, Endpoint::Raw { room, echo }).await;
                stats
                    .raw_connections
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        Route::Raw(Err(_), _) | Route::Http => {}
    }
}

fn route(req: &Request<()>, worker: &Worker) -> Route {
    let path = req.uri().path();
    if path == "/ws" {
        return Route::Ws;
    }
    if path == "/echo" && worker.shared.config.server.echo {
        return Route::Echo;
    }
    if let Some(name) = path.strip_prefix("/rooms/") {
        let echo = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "echo=1" || kv == "echo=true"));
        let room = RoomName::new(name).map_err(|e| format!("invalid room name: {e}"));
        return Route::Raw(room, echo);
    }
    Route::Http
}

/// Reads until a request head parses. Parsing is retried only when a line has ended, so
/// a client sending its head a byte at a time costs one parse per line, not per byte.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
) -> Result<(Request<()>, usize), HeadError> {
    loop {
        let before = buf.len();
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
        let first_read = before == 0;
        if first_read || buf[before..].contains(&b'\n') || buf.len() >= max_head {
            match parse_request(buf, max_head) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(HeadError::Request(e)),
            }
        }
    }
}

/// Answers a refused request, then closes.
async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, answer: &[u8], worker: &Worker) {
    let _ = tokio::time::timeout(worker.shared.config.handshake_timeout(), async {
        stream.write_all(answer).await?;
        stream.shutdown().await
    })
    .await;
}
