//! HTTP routes served by hyper: everything that is not a WebSocket handshake on the
//! first request of a connection.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use roomcast_ws::Role;
use roomcast_ws::handshake::{Accept, validate_request};
use roomcast_ws::tokio::WebSocket;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::echo;
use crate::server::Shared;

type Body = Full<Bytes>;

/// Serves HTTP/1.1 on `io` until the client closes it.
pub(crate) async fn serve<S>(io: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.config.handshake_timeout();
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, &shared)) }
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

fn route(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    match req.uri().path() {
        "/healthz" => healthz(req.method(), shared),
        "/echo" if shared.config.server.echo => upgrade(req, shared),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn healthz(method: &Method, shared: &Shared) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if shared.is_draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(StatusCode::OK, "ok\n")
    }
}

/// A WebSocket handshake that arrived as a later request on a keep-alive connection:
/// validated by the same rules, answered through hyper, then run on the upgraded stream.
fn upgrade(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let offer = match validate_request(req.method(), req.version(), req.headers()) {
        Ok(offer) => offer,
        Err(e) => return e.to_response().map(|body| Full::new(Bytes::from(body))),
    };
    let config = shared.config.driver();
    tokio::spawn(async move {
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
        .map(|()| Body::default())
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
