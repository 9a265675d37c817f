//! Opening benchmark connections, optionally speaking the roomcast protocol.

use std::time::Duration;

use roomcast_ws::Message;
use roomcast_ws::tokio::{Error, WebSocket, connect};
use tokio::net::TcpStream;

/// A connection, and the room offset it joined at (roomcast protocol only).
pub type Opened = (WebSocket<TcpStream>, u64);

/// Connects; with `room`, says hello as `client` and joins the room, returning the offset
/// from `joined`.
pub async fn open(url: &str, room: Option<&str>, client: &str) -> Result<Opened, Error> {
    let (mut ws, _) = connect(url).await?;
    let Some(room) = room else { return Ok((ws, 0)) };
    ws.feed(Message::text(format!(
        r#"{{"type":"hello","client":"{client}","ref":1}}"#
    )))
    .await?;
    ws.send(Message::text(format!(
        r#"{{"type":"join","room":"{room}","ref":2}}"#
    )))
    .await?;
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = ws.recv().await {
            if let Message::Text(t) = msg? {
                let t = t.as_bytes();
                if t.starts_with(br#"{"type":"joined""#) {
                    return Ok(field_u64(t, b"\"offset\":").unwrap_or(0));
                }
                if t.starts_with(br#"{"type":"error""#) {
                    return Err(Error::Io(std::io::Error::other(
                        String::from_utf8_lossy(t).into_owned(),
                    )));
                }
            }
        }
        Err(Error::AbnormalClosure)
    })
    .await
    .map_err(|_| Error::Timeout("join"))??;
    Ok((ws, joined))
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
    fn fields() {
        let t = br#"{"type":"message","room":"r","offset":46,"data":{"t":123},"ts":9}"#;
        assert_eq!(field_u64(t, b"\"offset\":"), Some(46));
        assert_eq!(field_u64(t, b"\"t\":"), Some(123));
        assert_eq!(field_u64(t, b"\"nope\":"), None);
    }
}
