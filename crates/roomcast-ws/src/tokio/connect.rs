//! The client's opening handshake over a tokio stream.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::Error;
use super::{WebSocket, WebSocketConfig};
use crate::Role;
use crate::handshake::{ClientHandshake, ClientOptions, ServerAnswer};

/// Where a `ws://` URL points.
struct Target {
    host: String,
    port: u16,
    /// The `Host` header: host and port as written in the URL, without user info.
    authority: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, Error> {
        let uri: http::Uri = url.parse().map_err(|_| Error::Url("not a URL"))?;
        let default_port = match uri.scheme_str() {
            Some("ws") => 80,
            Some("wss") => {
                return Err(Error::Url(
                    "wss:// needs TLS, which this driver does not provide yet",
                ));
            }
            Some(_) => return Err(Error::Url("the scheme must be ws://")),
            None => return Err(Error::Url("missing ws:// scheme")),
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
    let (handshake, request) = ClientHandshake::new(authority, target, options);
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
    let mut ws = WebSocket::from_raw(io, Role::Client, config, rest);
    ws.protocol = answer.protocol.clone();
    Ok((ws, answer))
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
        assert!(matches!(Target::parse("http://x/"), Err(Error::Url(_))));
        assert!(matches!(Target::parse("example.com"), Err(Error::Url(_))));
    }
}
