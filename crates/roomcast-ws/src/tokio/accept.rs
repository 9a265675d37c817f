//! The server's opening handshake over a tokio stream.

use bytes::BytesMut;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::Error;
use super::{WebSocket, WebSocketConfig};
use crate::Role;
use crate::handshake::{Accept, ClientOffer, encode_response, parse_request, validate_request};

/// Reads an HTTP/1.x request head from `io`; returns it with the bytes read past it.
/// A malformed or oversized head is an [`Error::Request`] whose
/// [`RequestError::to_http1`](crate::handshake::RequestError::to_http1) is the answer to
/// send.
pub async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    max_head: usize,
) -> Result<(Request<()>, BytesMut), Error> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some((req, n)) = parse_request(&buf, max_head)? {
            let rest = buf.split_off(n);
            return Ok((req, rest));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// Accepts a WebSocket on `io` with the default settings, any subprotocol refused and no
/// extension.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> Result<WebSocket<S>, Error> {
    accept_with(io, WebSocketConfig::default(), |_, _| Ok(Accept::default())).await
}

/// Accepts a WebSocket on `io`. `decide` sees the request and what it offers and returns
/// the [`Accept`] (subprotocol, extensions, extra headers) or a refusal to send instead
/// (boxed: a response is large, and refusals are rare).
///
/// An invalid request is answered with its HTTP status and reason (400, 405, 426...) and
/// returned as [`Error::Request`]. The whole handshake must finish within
/// [`WebSocketConfig::handshake_timeout`], or the connection is dropped
/// ([`Error::Timeout`]): a client that sends its head a byte a minute holds nothing for
/// long.
pub async fn accept_with<S, F>(
    mut io: S,
    config: WebSocketConfig,
    decide: F,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request<()>, &ClientOffer) -> Result<Accept, Box<Response<String>>>,
{
    let handshake = async {
        let (req, rest) = read_request(&mut io, config.max_head).await?;
        let offer = validate_request(req.method(), req.version(), req.headers())?;
        match decide(&req, &offer) {
            Ok(mut accept) => {
                // permessage-deflate, when configured and offered (and `decide` did not
                // answer for it itself).
                let decided = accept
                    .extensions
                    .iter()
                    .any(|e| e.name.eq_ignore_ascii_case(crate::deflate::NAME));
                let deflate = match (config.deflate, decided) {
                    (Some(ours), false) => crate::deflate::negotiate(&offer.extensions, &ours).map(
                        |(agreed, answer)| {
                            accept.extensions.push(answer);
                            (agreed, ours)
                        },
                    ),
                    _ => None,
                };
                io.write_all(&offer.accept(&accept)).await?;
                Ok((accept.protocol, rest, deflate))
            }
            Err(refusal) => {
                io.write_all(&encode_response(&refusal)).await?;
                Err(Error::Rejected(refusal.status()))
            }
        }
    };
    let outcome = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::Timeout("opening handshake")),
    };
    match outcome {
        Ok((protocol, rest, deflate)) => {
            let mut ws = WebSocket::from_raw(io, Role::Server, config, rest);
            ws.protocol = protocol;
            if let Some((agreed, ours)) = deflate {
                ws.conn.set_deflate(&agreed, &ours);
            }
            Ok(ws)
        }
        Err(Error::Request(e)) => {
            let _ = tokio::time::timeout(config.handshake_timeout, async {
                io.write_all(&e.to_http1()).await?;
                io.shutdown().await
            })
            .await;
            Err(Error::Request(e))
        }
        Err(e) => Err(e),
    }
}
