//! Drives the Autobahn TestSuite's fuzzingserver with our client role.
//!
//! ```text
//! cargo run --release -p roomcast-ws --example autobahn-client -- ws://127.0.0.1:9001
//! ```
//!
//! Asks for the case count, runs every case (echoing each text and binary message back
//! unchanged until the server closes, compressed when the case agreed to
//! permessage-deflate), then asks the server to write its report. The URL
//! may also come from `AUTOBAHN_URL`; the agent name from `AUTOBAHN_AGENT`.

use roomcast_ws::Message;
use roomcast_ws::deflate::DeflateConfig;
use roomcast_ws::handshake::ClientOptions;
use roomcast_ws::tokio::{Error, WebSocketConfig, connect, connect_with};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("AUTOBAHN_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let agent = std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "roomcast-ws".to_owned());

    let count = case_count(&base).await?;
    eprintln!("autobahn-client: {count} cases against {base} as {agent}");
    for case in 1..=count {
        if let Err(e) = run_case(&format!("{base}/runCase?case={case}&agent={agent}")).await {
            // Failing the connection is what many cases test for; the report judges it.
            eprintln!("case {case}: {e}");
        }
    }
    let (mut ws, _) = connect(&format!("{base}/updateReports?agent={agent}")).await?;
    ws.close(None).await?;
    Ok(())
}

async fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let (mut ws, _) = connect(&format!("{base}/getCaseCount")).await?;
    let mut count = None;
    while let Some(msg) = ws.recv().await {
        if let Message::Text(t) = msg? {
            count = Some(t.as_str().trim().parse()?);
        }
    }
    count.ok_or_else(|| "the server sent no case count".into())
}

/// Each case offers permessage-deflate (cases 12.* and 13.* take it, with the
/// parameters each one asks for).
async fn run_case(url: &str) -> Result<(), Error> {
    let config = WebSocketConfig::default().deflate(DeflateConfig::default());
    let (mut ws, _) = connect_with(url, &ClientOptions::default(), config).await?;
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            ws.feed(msg).await?;
        }
    }
    Ok(())
}
