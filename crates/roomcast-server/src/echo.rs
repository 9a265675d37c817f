//! `GET /echo`: every message comes back unchanged (for conformance testing).

use roomcast_ws::Message;
use roomcast_ws::tokio::{Error, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

/// Echoes text and binary messages until the connection ends. Replies are fed and
/// written together before the next read, so a burst costs one vectored write.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
) -> Result<(), Error> {
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            ws.feed(msg).await?;
        }
    }
    Ok(())
}
