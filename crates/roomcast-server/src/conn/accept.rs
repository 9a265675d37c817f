//! A new connection: read its first request head, then route it. WebSocket endpoints are
//! answered here (no HTTP library in the way of the handshake); everything else goes to
//! hyper with the bytes already read.

use std::net::SocketAddr;
use std::rc::Rc;

use ::http::Request;
use bytes::BytesMut;
use roomcast_ws::handshake::{RequestError, encode_response, parse_request, validate_request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::admit::{self, Route};
use crate::http;
use crate::prefixed::Prefixed;
use crate::worker::Worker;

/// Sent, best effort, to a client that did not finish its request head in time.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

enum HeadError {
    Closed,
    Request(RequestError),
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
        // ALPN chose HTTP/2: the connection is hyper's, its WebSockets are streams.
        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
            super::h2::serve(stream, worker, peer).await
        }
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
        read_head(
            &mut stream,
            &mut buf,
            config.server.max_head(),
            config.server.http2,
        ),
    );
    let (req, head_len) = match head.await {
        Ok(Ok(Head::Http1(req, len))) => (req, len),
        Ok(Ok(Head::Http2)) => {
            return super::h2::serve(Prefixed::new(buf.freeze(), stream), worker, peer).await;
        }
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
    let route = admit::route(req.uri(), &worker);
    if matches!(route, Route::Http) {
        return http::serve(Prefixed::new(buf.freeze(), stream), worker.clone(), peer).await;
    }
    let offer = validate_request(req.method(), req.version(), req.headers());
    let admitted = match admit::admit(&worker, &req, route, offer, peer) {
        Ok(admitted) => admitted,
        Err(refused) => {
            let answer = encode_response(&refused.response(false));
            return refuse(stream, &answer, &worker).await;
        }
    };
    let reply = admitted.offer.accept(&admitted.accept);
    // Bytes after the head are the first frames; an empty remainder must not keep the
    // head's buffer alive for the life of the connection.
    let rest = if buf.len() > head_len {
        buf.split_off(head_len)
    } else {
        BytesMut::new()
    };
    drop(buf);
    let (stream, tls) = stream.into_parts();
    let conn = worker.register(stream.into(), rest);
    if let Some(tls) = tls {
        // A session that broke or closed meanwhile marks the connection dead: its task
        // (started below like any other) unregisters it and gives its slot back.
        conn.set_tls(tls);
    }
    admit::start(worker, conn, admitted, Some(reply)).await;
}

/// "The client connection preface starts with a sequence of 24 octets" (RFC 9113
/// section 3.4): a client that knows the server speaks HTTP/2 begins with it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection began with.
// Made once per connection and taken apart at once: the size does not matter.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// An HTTP/1.1 request head, and its length.
    Http1(Request<()>, usize),
    /// The HTTP/2 preface (prior knowledge), still in the buffer.
    Http2,
}

/// Reads until a request head parses, or (with `h2`) the HTTP/2 preface has come.
/// Parsing is retried only when a line has ended, so a client sending its head a byte at
/// a time costs one parse per line, not per byte.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
    h2: bool,
) -> Result<Head, HeadError> {
    loop {
        let before = buf.len();
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
        if h2 {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] == H2_PREFACE[..n] {
                if n == H2_PREFACE.len() {
                    return Ok(Head::Http2);
                }
                continue;
            }
        }
        let first_read = before == 0;
        if first_read || buf[before..].contains(&b'\n') || buf.len() >= max_head {
            match parse_request(buf, max_head) {
                Ok(Some((req, len))) => return Ok(Head::Http1(req, len)),
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
