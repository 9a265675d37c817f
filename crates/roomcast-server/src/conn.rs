//! One connection from accept to the endpoint that serves it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use http::Request;
use roomcast_ws::Role;
use roomcast_ws::handshake::{Accept, RequestError, parse_request, validate_request};
use roomcast_ws::tokio::WebSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::prefixed::Prefixed;
use crate::server::Shared;
use crate::{echo, routes};

/// Sent, best effort, to a client that did not finish its request head in time.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

enum HeadError {
    Closed,
    Request(RequestError),
}

/// Reads the first request head and routes the connection: WebSocket endpoints are
/// answered here, everything else goes to hyper with the bytes already read.
pub(crate) async fn handle(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    let head = tokio::time::timeout(
        shared.config.handshake_timeout,
        read_head(&mut stream, &mut buf, shared.config.max_head),
    );
    let (req, head_len) = match head.await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Request(e))) => {
            debug!(%peer, error = %e, "bad request head");
            return refuse(stream, &e, &shared).await;
        }
        Err(_) => {
            debug!(%peer, "request head timed out");
            let _ = stream.try_write(REQUEST_TIMEOUT);
            return;
        }
    };
    if is_websocket_endpoint(&req, &shared) {
        websocket(stream, req, buf, head_len, peer, shared).await;
    } else {
        routes::serve(Prefixed::new(buf.freeze(), stream), shared).await;
    }
}

fn is_websocket_endpoint(req: &Request<()>, shared: &Shared) -> bool {
    shared.config.echo && req.uri().path() == "/echo"
}

/// Reads until a request head parses. Parsing is retried only when a line has ended, so
/// a client sending its head a byte at a time costs one parse per line, not per byte.
async fn read_head(
    stream: &mut TcpStream,
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

/// Answers a bad handshake with its status and reason, then closes.
async fn refuse(mut stream: TcpStream, e: &RequestError, shared: &Shared) {
    let _ = tokio::time::timeout(shared.config.handshake_timeout, async {
        stream.write_all(&e.to_http1()).await?;
        stream.shutdown().await
    })
    .await;
}

async fn websocket(
    mut stream: TcpStream,
    req: Request<()>,
    mut buf: BytesMut,
    head_len: usize,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let offer = match validate_request(req.method(), req.version(), req.headers()) {
        Ok(offer) => offer,
        Err(e) => {
            debug!(%peer, path = req.uri().path(), error = %e, "handshake refused");
            return refuse(stream, &e, &shared).await;
        }
    };
    let reply = offer.accept(&Accept::default());
    let written =
        tokio::time::timeout(shared.config.handshake_timeout, stream.write_all(&reply)).await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let rest = buf.split_off(head_len);
    drop(buf);
    let ws = WebSocket::from_raw(stream, Role::Server, shared.websocket, rest);
    if let Err(e) = echo::serve(ws).await {
        debug!(%peer, error = %e, "echo connection ended");
    }
}
