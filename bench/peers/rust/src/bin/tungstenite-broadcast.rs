//! A tokio-tungstenite broadcast server, written the common way: one
//! `tokio::sync::broadcast` channel, a task per connection that forwards every text or
//! binary message it reads into the channel, and one that sends every message from the
//! channel to its client (the sender included, which a publisher can use as its ack).
//!
//! usage: tungstenite-broadcast 127.0.0.1:PORT

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9011".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("tungstenite-broadcast: listening on {}", listener.local_addr()?);
    // Deep enough that a subscriber keeping up is never lagged out.
    let (tx, _) = broadcast::channel(65_536);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
            let (mut sink, mut stream) = ws.split();
            let mut rx = tx.subscribe();
            let forward = tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(msg) => {
                            if sink.send(msg).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
            while let Some(Ok(msg)) = stream.next().await {
                if msg.is_text() || msg.is_binary() {
                    let _ = tx.send(msg);
                }
            }
            forward.abort();
        });
    }
}
