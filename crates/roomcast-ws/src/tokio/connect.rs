//! The client's opening handshake over a tokio stream.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::Error;
use super::{WebSocket, WebSocketConfig};
use crate::Role;
use crate::handshake::{ClientHandshake, ClientOptions, ServerAnswer};

/// Where a `ws://` or `wss://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `wss://`: the stream must be TLS, which this driver leaves to the caller (see
    /// [`client_handshake`]).
    pub secure: bool,
    /// The host to connect to (and, over TLS, the server name).
    pub host: String,
    /// The port, the scheme's default when the URL names none.
    pub port: u16,
    /// The `Host` header: host and port as written in the URL, without user info.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

impl Target {
    /// Parses a `ws://` or `wss://` URL.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let uri: http::Uri = url.parse().map_err(|_| Error::Url("not a URL"))?;
        let (secure, default_port) = match uri.scheme_str() {
            Some("ws") => (false, 80),
            Some("wss") => (true, 443),
            Some(_) => return Err(Error::Url("the scheme must be ws:// or wss://")),
            None => return Err(Error::Url("missing ws:// or wss:// scheme")),
        };
        let authority = uri.authority().ok_or(Error::Url("missing host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(Error::Url("missing host"));
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let authority = authority
            .as_str()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Self {
            secure,
            host,
            port,
            authority,
            path,
        })
    }
}

/// Connects to a `ws://` URL with the default settings.
pub async fn connect(url: &str) -> Result<(WebSocket<TcpStream>, ServerAnswer), Error> {
    connect_with(url, &ClientOptions::default(), WebSocketConfig::default()).await
}

/// Connects to a `ws://` URL, offering `options` (subprotocols, extensions, headers).
/// TCP connect and handshake together must finish within the handshake timeout.
pub async fn connect_with(
    url: &str,
    options: &ClientOptions,
    config: WebSocketConfig,
) -> Result<(WebSocket<TcpStream>, ServerAnswer), Error> {
    let target = Target::parse(url)?;
    if target.secure {
        return Err(Error::Url(
            "wss:// needs TLS: connect it yourself and run client_handshake over it",
        ));
    }
    let connect = TcpStream::connect((target.host.as_str(), target.port));
    let stream = tokio::time::timeout(config.handshake_timeout, connect)
        .await
        .map_err(|_| Error::Timeout("TCP connect"))??;
    stream.set_nodelay(true)?;
    client_handshake(stream, &target.authority, &target.path, options, config).await
}

/// Runs the client's opening handshake over an established stream.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    authority: &str,
    target: &str,
    options: &ClientOptions,
    config: WebSocketConfig,
) -> Result<(WebSocket<S>, ServerAnswer), Error> {
    let options = offer_options(options, &config);
    let (handshake, request) = ClientHandshake::new(authority, target, &options);
    let exchange = async {
        io.write_all(&request).await?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            if let Some((answer, n)) = handshake.parse_response(&buf)? {
                let rest = buf.split_off(n);
                return Ok::<_, Error>((answer, rest));
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    };
    let (answer, rest) = tokio::time::timeout(config.handshake_timeout, exchange)
        .await
        .map_err(|_| Error::Timeout("opening handshake"))??;
    let ws = open_client(io, &answer, config, rest)?;
    Ok((ws, answer))
}

/// `options` with our permessage-deflate offer added when `config` has compression on:
/// what a client offers, over HTTP/1.1 or in an extended CONNECT (RFC 8441).
pub fn offer_options(options: &ClientOptions, config: &WebSocketConfig) -> ClientOptions {
    let mut offered = options.clone();
    if let Some(ours) = &config.deflate {
        offered.extensions.push(crate::deflate::offer(ours));
    }
    offered
}

/// A client WebSocket over `io`, whose handshake the server accepted with `answer`
/// (checked already: over HTTP/1.1 by [`client_handshake`], over HTTP/2 by
/// [`ClientHandshake::check_connect_response`]): with the subprotocol and the compression
/// it agreed to. `rest` holds bytes read past the handshake.
pub fn open_client<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    answer: &ServerAnswer,
    config: WebSocketConfig,
    rest: BytesMut,
) -> Result<WebSocket<S>, Error> {
    let mut ws = WebSocket::from_raw(io, Role::Client, config, rest);
    ws.protocol = answer.protocol.clone();
    if let (Some(ours), Some(agreed)) = (
        config.deflate,
        answer
            .extensions
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(crate::deflate::NAME)),
    ) {
        // "If the response ... is not acceptable, the client MUST _Fail the WebSocket
        // Connection_": it never opens.
        let agreed = crate::deflate::accepted(agreed, &ours).map_err(Error::Deflate)?;
        ws.conn.set_deflate(&agreed, &ours);
    }
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://user@example.com:8080/chat?room=a").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            ("example.com", 8080, "example.com:8080", "/chat?room=a")
        );
        let t = Target::parse("ws://[::1]/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 80, "[::1]")
        );
        let t = Target::parse("wss://example.com/ws").unwrap();
        assert_eq!((t.secure, t.port, t.path.as_str()), (true, 443, "/ws"));
        assert!(matches!(Target::parse("http://x/"), Err(Error::Url(_))));
        assert!(matches!(Target::parse("example.com"), Err(Error::Url(_))));
    }
}
