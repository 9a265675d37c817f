//! `roomcast connect` and `roomcast publish`: a WebSocket client for terminals and
//! scripts, on roomcast-ws's client role.
//!
//! Exit codes (for scripts): 0 the connection ended normally (close 1000, or the message
//! limit was reached, or the publish was acknowledged); 1 the connection or handshake
//! failed; 2 bad arguments; 3 the connection was lost without a close frame; 4 the peer
//! closed with another code, or refused a request.

pub mod publish;
mod raw;
mod room;
mod style;

use std::process::ExitCode;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use roomcast_ws::handshake::ClientOptions;
use roomcast_ws::tokio::WebSocketConfig;

pub use publish::PublishArgs;

/// How a client run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Normal end.
    Done = 0,
    /// Could not connect.
    ConnectFailed = 1,
    /// Bad arguments.
    Usage = 2,
    /// Lost without a close frame.
    Lost = 3,
    /// Closed with an error code, or a request refused.
    Refused = 4,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        ExitCode::from(o as u8)
    }
}

/// Options of `roomcast connect`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit codes: 0 normal end (close 1000, --max-messages reached), 1 connection or handshake \
failed, 2 bad arguments, 3 connection lost without a close frame, 4 closed with another code."
)]
pub struct ConnectArgs {
    /// The URL, e.g. ws://127.0.0.1:8080/rooms/lobby (wss:// comes with TLS).
    pub url: String,
    /// Send each line of stdin as a binary message instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Lines of stdin are base64, sent as binary; binary messages are printed as base64.
    #[arg(long)]
    pub base64: bool,
    /// An extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The Origin header.
    #[arg(long)]
    pub origin: Option<String>,
    /// A subprotocol to offer (repeatable).
    #[arg(long = "protocol")]
    pub protocols: Vec<String>,
    /// Offer permessage-deflate (RFC 7692): messages compressed both ways when the
    /// server takes it (the status line says so).
    #[arg(long)]
    pub deflate: bool,
    /// Open the WebSocket on an HTTP/2 stream (RFC 8441 extended CONNECT): over TLS
    /// with ALPN h2 for wss://, with prior knowledge for ws://.
    #[arg(long)]
    pub http2: bool,
    /// Ping every SECONDS and print the round-trip time.
    #[arg(long, value_name = "SECONDS")]
    pub ping_interval: Option<f64>,
    /// Exit after receiving this many messages.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Keep the connection open when stdin ends (to only listen, e.g. `< /dev/null`).
    #[arg(long)]
    pub no_close: bool,
    /// Speak the roomcast protocol (the URL is a /ws endpoint): join this room, publish
    /// each line, print messages and presence changes, reconnect with `since` after a drop.
    #[arg(long)]
    pub room: Option<String>,
    /// Room mode: the client id to say hello with.
    #[arg(long)]
    pub client: Option<String>,
    /// Room mode: join visibly with this presence info (a JSON object).
    #[arg(long, value_name = "JSON")]
    pub presence: Option<String>,
    /// wss:// trust.
    #[command(flatten)]
    pub tls: crate::net::TlsArgs,
    /// Room mode: the token sent in `hello` (the client id is then its `sub` unless
    /// --client says otherwise).
    #[arg(long, env = "ROOMCAST_TOKEN")]
    pub token: Option<String>,
    /// Room mode: each line is JSON data (by default a line is sent as a string).
    #[arg(long)]
    pub json_data: bool,
    /// Room mode: do not reconnect after a drop.
    #[arg(long)]
    pub no_reconnect: bool,
    /// Print what is received as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// No status lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `roomcast connect`.
pub async fn connect(args: ConnectArgs) -> Outcome {
    let options = match client_options(&args.headers, args.origin.as_deref(), &args.protocols) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("roomcast connect: {e}");
            return Outcome::Usage;
        }
    };
    match &args.room {
        Some(_) => room::run(&args, &options).await,
        None => raw::run(&args, &options).await,
    }
}

/// The handshake options from the flags.
pub fn client_options(
    headers: &[String],
    origin: Option<&str>,
    protocols: &[String],
) -> Result<ClientOptions, String> {
    let mut options = ClientOptions {
        protocols: protocols.to_vec(),
        ..ClientOptions::default()
    };
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not \"Name: value\""))?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| format!("invalid header name in {h:?}"))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|_| format!("invalid header value in {h:?}"))?;
        options.headers.append(name, value);
    }
    if let Some(origin) = origin {
        let value =
            HeaderValue::try_from(origin).map_err(|_| format!("invalid origin {origin:?}"))?;
        options.headers.insert(http::header::ORIGIN, value);
    }
    Ok(options)
}

/// Opens `roomcast connect`'s WebSocket as its flags say: `--deflate`, `--http2`,
/// `--cacert` / `--insecure`.
async fn dial(
    args: &ConnectArgs,
    options: &ClientOptions,
) -> Result<
    (
        roomcast_ws::tokio::WebSocket<crate::net::Stream>,
        roomcast_ws::handshake::ServerAnswer,
    ),
    roomcast_ws::tokio::Error,
> {
    let mut config = ws_config();
    if args.deflate {
        config = config.deflate(roomcast_ws::deflate::DeflateConfig::default());
    }
    crate::net::connect(&args.url, options, config, &args.tls, args.http2).await
}

/// The driver settings for the CLI: messages up to 64 MiB.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .protocol(
            roomcast_ws::Config::default()
                .max_message_size(64 << 20)
                .max_frame_size(64 << 20),
        )
        .close_timeout(Duration::from_secs(3))
}
