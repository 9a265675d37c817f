//! An echo server on the tokio driver: every text and binary message comes back unchanged.
//!
//! ```text
//! cargo run --release -p roomcast-ws --example echo-server -- 127.0.0.1:9002
//! ```
//!
//! The same loop serves `roomcast serve --echo`; this example shows it without the rest
//! of the server.

use roomcast_ws::Message;
use roomcast_ws::tokio::{WebSocket, accept};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo-server: listening on ws://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

async fn serve(stream: TcpStream) -> Result<(), roomcast_ws::tokio::Error> {
    stream.set_nodelay(true)?;
    let ws = accept(stream).await?;
    echo(ws).await
}

async fn echo(mut ws: WebSocket<TcpStream>) -> Result<(), roomcast_ws::tokio::Error> {
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            // `feed` queues; `recv` writes what is queued before it waits for input, so a
            // burst of messages is answered with one vectored write.
            ws.feed(msg).await?;
        }
    }
    Ok(())
}
