//! Opening benchmark connections: from a chosen source address, optionally speaking the
//! roomcast protocol.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use roomcast_ws::Message;
use roomcast_ws::handshake::ClientOptions;
use roomcast_ws::tokio::{Error, WebSocket, WebSocketConfig, client_handshake};
use tokio::net::{TcpSocket, TcpStream};

use tokio_util::either::Either;

use crate::net::{Socket, Stream};

use super::Target;

/// How many loopback source addresses `n` connections are spread over: one per 10,000,
/// well within the ~28,000 ephemeral ports each has.
pub fn sources_for(n: usize) -> usize {
    n.div_ceil(10_000).max(1)
}

/// The source address for connection `i` of a run spread over `sources` loopback
/// addresses (127.0.0.1, 127.0.0.2, ...): each has its own ephemeral ports, so runs of
/// tens of thousands of connections do not run out.
pub fn source(i: usize, sources: usize) -> Option<IpAddr> {
    (sources > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % sources.min(254)) as u8)))
}

/// Connects to `target` (from `source` when given) and runs the handshake.
pub async fn dial(target: &Target, source: Option<IpAddr>) -> Result<WebSocket<Stream>, Error> {
    dial_with(target, source, false).await
}

/// [`dial`], offering permessage-deflate when `deflate`.
pub async fn dial_with(
    target: &Target,
    source: Option<IpAddr>,
    deflate: bool,
) -> Result<WebSocket<Stream>, Error> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind((ip, 0).into())?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(target.addr))
        .await
        .map_err(|_| Error::Timeout("TCP connect"))??;
    stream.set_nodelay(true)?;
    let stream = secure(target, stream, false).await?;
    let (ws, _) = client_handshake(
        Either::Left(stream),
        &target.authority,
        &target.path,
        &ClientOptions::default(),
        config(deflate),
    )
    .await?;
    Ok(ws)
}

/// The driver settings of a benchmark client: room for large messages, and
/// permessage-deflate offered when `deflate`.
fn config(deflate: bool) -> WebSocketConfig {
    let config = WebSocketConfig::default().protocol(
        roomcast_ws::Config::default()
            .max_message_size(64 << 20)
            .max_frame_size(64 << 20),
    );
    if deflate {
        config.deflate(roomcast_ws::deflate::DeflateConfig::default())
    } else {
        config
    }
}

/// TLS over `stream` for a `wss://` target (ALPN `h2` when `h2`), else the stream as is.
async fn secure(target: &Target, stream: TcpStream, h2: bool) -> Result<Socket, Error> {
    let Some((config, name)) = &target.tls else {
        return Ok(Either::Left(stream));
    };
    let handshake = crate::net::secure(stream, config.clone(), name.clone(), h2);
    tokio::time::timeout(Duration::from_secs(30), handshake)
        .await
        .map_err(|_| Error::Timeout("TLS handshake"))?
}

/// `n` WebSockets to `target`, each a stream of an HTTP/2 connection (RFC 8441), at most
/// `per_connection` streams to a connection (under the server's `http2_max_streams`).
pub async fn dial_h2(
    target: &Target,
    n: usize,
    per_connection: usize,
) -> Result<Vec<WebSocket<Stream>>, Error> {
    let mut out = Vec::with_capacity(n);
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    while out.len() < n {
        let tcp = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(target.addr))
            .await
            .map_err(|_| Error::Timeout("TCP connect"))??;
        tcp.set_nodelay(true)?;
        let mut sender = crate::net::h2_handshake(secure(target, tcp, true).await?).await?;
        for _ in 0..per_connection.max(1).min(n - out.len()) {
            let (ws, _) = crate::net::h2_websocket(
                &mut sender,
                scheme,
                &target.authority,
                &target.path,
                &ClientOptions::default(),
                config(false),
            )
            .await?;
            out.push(ws);
        }
    }
    Ok(out)
}

/// Says hello as `client` and joins `room`; returns the room's offset.
pub async fn join(ws: &mut WebSocket<Stream>, room: &str, client: &str) -> Result<u64, Error> {
    join_since(ws, room, client, None).await.map(|j| j.offset)
}

/// What a `joined` reply said.
#[derive(Debug)]
pub struct Joined {
    pub epoch: String,
    pub offset: u64,
    pub recovered: bool,
}

/// Says hello as `client` and joins `room`, from `since` (an epoch and offset) when
/// given, so that what came after it is replayed; an error reply is an error.
pub async fn join_since(
    ws: &mut WebSocket<Stream>,
    room: &str,
    client: &str,
    since: Option<(&str, u64)>,
) -> Result<Joined, Error> {
    let hello = serde_json::json!({"type": "hello", "client": client, "ref": 1});
    let mut join = serde_json::json!({"type": "join", "room": room, "ref": 2});
    if let Some((epoch, offset)) = since {
        join["since"] = serde_json::json!({"epoch": epoch, "offset": offset});
    }
    ws.feed(Message::text(hello.to_string())).await?;
    ws.send(Message::text(join.to_string())).await?;
    let refused = |what: String| Error::Io(std::io::Error::other(what));
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = ws.recv().await {
            if let Message::Text(t) = msg? {
                let t = t.as_bytes();
                if t.starts_with(br#"{"type":"joined""#) || t.starts_with(br#"{"type":"error""#) {
                    return serde_json::from_slice::<serde_json::Value>(t)
                        .map_err(|e| refused(e.to_string()));
                }
            }
        }
        Err(Error::AbnormalClosure)
    })
    .await
    .map_err(|_| Error::Timeout("join"))??;
    match (answer["epoch"].as_str(), answer["offset"].as_u64()) {
        (Some(epoch), Some(offset)) if answer["type"] == "joined" => Ok(Joined {
            epoch: epoch.to_owned(),
            offset,
            recovered: answer["recovered"].as_bool().unwrap_or(false),
        }),
        _ => Err(refused(format!("join refused: {answer}"))),
    }
}

/// The number after `key` in a JSON text (a cheap scan: the bench must not be slower
/// than the server it measures).
pub fn field_u64(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_sources() {
        let t = br#"{"type":"message","room":"r","offset":46,"data":{"t":123},"ts":9}"#;
        assert_eq!(field_u64(t, b"\"offset\":"), Some(46));
        assert_eq!(field_u64(t, b"\"t\":"), Some(123));
        assert_eq!(field_u64(t, b"\"nope\":"), None);
        assert_eq!(source(5, 1), None);
        assert_eq!(source(0, 3), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source(4, 3), Some("127.0.0.2".parse().unwrap()));
    }
}
