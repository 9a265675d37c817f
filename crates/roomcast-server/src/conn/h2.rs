//! HTTP/2 connections, served by hyper: over TLS when ALPN chose `h2`, in cleartext when
//! the client began with the HTTP/2 preface (prior knowledge). Every stream is a request:
//! an extended CONNECT to a WebSocket endpoint (RFC 8441) becomes a room connection like
//! an HTTP/1.1 upgrade, on the same worker with the same limits; anything else (SSE,
//! polls, `/cmd`, the API, the pages) goes to the same routes as HTTP/1.1. So one
//! connection carries every tab's sockets and streams.
//!
//! The server says it takes extended CONNECT in its SETTINGS
//! (`SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC 8441 section 3); a browser opens a WebSocket
//! on an HTTP/2 connection it already has to the origin only when it sees that.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use ::http::{Request, Response};
use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use roomcast_ws::handshake::validate_connect;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::admit::{self, Route};
use crate::http::{self, Body};
use crate::stats::Stats;
use crate::worker::{Active, Io, StreamIo, Streams, Worker};

/// WebSocket streams a connection may have stuck at once (ended, with data its peer does
/// not take: see `worker::io`) before the connection is closed. A browser's streams are
/// read by its network stack whatever the page does, so this is a client that stopped
/// reading.
const STUCK_MAX: u32 = 4;

/// Runs hyper's tasks for a connection (a stream's response body, an upgraded stream's
/// writes) on the connection's worker thread: they hold the worker, which is not `Send`.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Serves HTTP/2 on `io` until the client closes it or it fails.
pub(super) async fn serve<S>(io: S, worker: Rc<Worker>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    Stats::add(&worker.shared.stats.http2_connections, 1);
    let server = &worker.shared.config.server;
    let mut builder = http2::Builder::new(LocalExec);
    // Pings find a peer that went away without a word (its WebSockets have their own
    // heartbeats; an SSE stream or an idle connection has only these).
    let ping = std::time::Duration::from_secs(20);
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping)
        .enable_connect_protocol()
        .max_concurrent_streams(server.http2_max_streams)
        .max_header_list_size(u32::try_from(server.max_head()).unwrap_or(u32::MAX));
    let streams = Rc::new(Streams::default());
    let service = {
        let (worker, streams) = (worker.clone(), streams.clone());
        service_fn(move |req| {
            let (worker, streams) = (worker.clone(), streams.clone());
            async move { Ok::<_, Infallible>(respond(req, worker, streams, peer).await) }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Why the connection is closed from our side, if it is.
    let why = tokio::select! {
        ended = connection.as_mut() => {
            if let Err(e) = ended {
                debug!(%peer, error = %e, "http/2 connection ended");
            }
            return;
        }
        // While the node drains, a GOAWAY tells the client to open no more streams here;
        // the streams it has end as the drain ends them (WebSockets with 1001).
        () = worker.shared.draining() => "the node drains",
        // As an HTTP/1.1 connection must send its first request head in time, an HTTP/2
        // one must open its first stream in time.
        () = first_request(&worker, &streams) => "no request within the handshake timeout",
        () = idle(&streams, server.http2_idle_timeout_ms) => "no stream open for http2_idle_timeout_ms",
        // hyper cannot reset a stream alone: past a few stuck ones, the connection goes.
        () = stuck(&streams) => {
            tracing::warn!(%peer, stuck = streams.stuck(), "closing an HTTP/2 connection whose client stopped reading its streams");
            "streams stuck"
        }
    };
    debug!(%peer, why, "closing an http/2 connection (GOAWAY)");
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(worker.close_timeout(), connection).await;
}

/// Resolves if no stream was opened within the handshake timeout.
async fn first_request(worker: &Worker, streams: &Streams) {
    tokio::time::sleep(worker.shared.config.handshake_timeout()).await;
    if streams.requests.get() > 0 {
        std::future::pending::<()>().await;
    }
}

/// Resolves once no stream has been open for `ms` (`server.http2_idle_timeout_ms`).
async fn idle(streams: &Streams, ms: u64) {
    let idle = std::time::Duration::from_millis(ms);
    loop {
        tokio::time::sleep(idle / 4).await;
        if streams.active() == 0 && streams.since.get().elapsed() >= idle {
            return;
        }
    }
}

/// Resolves once more than [`STUCK_MAX`] streams are stuck.
async fn stuck(streams: &Streams) {
    while streams.stuck() <= STUCK_MAX {
        streams.more_stuck.notified().await;
    }
}

/// A response body that counts its stream open until it is dropped (sent whole, or the
/// stream reset).
struct Counted {
    body: Body,
    _active: Active,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

async fn respond(
    mut req: Request<Incoming>,
    worker: Rc<Worker>,
    streams: Rc<Streams>,
    peer: SocketAddr,
) -> Response<Body> {
    streams.requests.set(streams.requests.get() + 1);
    let route = admit::route(req.uri(), &worker);
    if matches!(route, Route::Http) {
        let active = streams.open();
        let resp = http::route(req, worker, peer).await;
        return resp.map(|body| -> Body {
            Box::pin(Counted {
                body,
                _active: active,
            })
        });
    }
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let offer = validate_connect(
        req.method(),
        protocol.as_deref(),
        authority.as_deref(),
        req.headers(),
    );
    let admitted = match admit::admit(&worker, &req, route, offer, peer) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.response(true).map(|b| http::whole(Bytes::from(b))),
    };
    let answer = admitted.offer.accept_connect(&admitted.accept);
    // The stream is the connection's once the 200 is sent; it is registered now, so a
    // raw room's membership begins before the answer, and what is queued meanwhile waits
    // for the stream (`StreamIo`).
    let stream = StreamIo::new(hyper::upgrade::on(&mut req), streams);
    let conn = worker.register(Io::Stream(Box::new(stream)), BytesMut::new());
    Stats::add(&worker.shared.stats.http2_websockets, 1);
    // hyper drops this future if the stream is reset meanwhile: the start (a raw room's
    // join waits for its home) runs on a task of its own, so the connection always gets
    // its task, which unregisters it when the stream turns out gone.
    let (started, up) = tokio::sync::oneshot::channel();
    tokio::task::spawn_local(async move {
        admit::start(worker, conn, admitted, None).await;
        let _ = started.send(());
    });
    let _ = up.await;
    answer.map(|()| http::whole(Bytes::new()))
}
