//! `roomcast publish URL --room NAME DATA`: one message from a script.

use std::time::Duration;

use roomcast_ws::handshake::ClientOptions;
use roomcast_ws::{CloseCode, CloseFrame, Message};
use serde_json::{Value, json};

use super::{Outcome, ws_config};

/// Options of `roomcast publish`. With an `http://` URL (the server's base URL) the
/// message goes through the HTTP API (`POST /api/publish`) instead of a WebSocket.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit codes: 0 acknowledged (the message is in the room's history), 1 connection failed, \
2 bad arguments, 3 connection lost before the ack, 4 refused (the error is printed)."
)]
pub struct PublishArgs {
    /// ws://HOST:PORT/ws (the roomcast protocol), or http://HOST:PORT (the HTTP API).
    pub url: String,
    /// The room.
    #[arg(long)]
    pub room: String,
    /// The data: a string, or JSON with --json-data.
    pub data: String,
    /// DATA is JSON.
    #[arg(long)]
    pub json_data: bool,
    /// An idempotency key: publishing again with it does not deliver twice.
    #[arg(long)]
    pub id: Option<String>,
    /// The client id to publish as (default: the token's `sub`, or `roomcast-cli`).
    #[arg(long)]
    pub client: Option<String>,
    /// wss:// and https:// trust.
    #[command(flatten)]
    pub tls: crate::net::TlsArgs,
    /// For a ws:// URL, the token sent in `hello`.
    #[arg(long, env = "ROOMCAST_TOKEN")]
    pub token: Option<String>,
    /// Print the ack as JSON.
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// The API key, for an http:// URL (api.key of the server).
    #[arg(long, env = "ROOMCAST_API_KEY")]
    pub api_key: Option<String>,
}

/// Runs `roomcast publish`.
pub async fn publish(args: PublishArgs) -> Outcome {
    let data: Value = if args.json_data {
        match serde_json::from_str(&args.data) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("roomcast publish: DATA is not JSON: {e}");
                return Outcome::Usage;
            }
        }
    } else {
        Value::String(args.data.clone())
    };
    if args.url.starts_with("http://") || args.url.starts_with("https://") {
        return over_api(&args, data).await;
    }
    let client = args
        .client
        .clone()
        .or_else(|| args.token.as_deref().and_then(crate::token::subject))
        .unwrap_or_else(|| "roomcast-cli".into());
    let run = async {
        let (mut ws, _) = match crate::net::connect(
            &args.url,
            &ClientOptions::default(),
            ws_config(),
            &args.tls,
            false,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("roomcast publish: {e}");
                return Outcome::ConnectFailed;
            }
        };
        let mut publish = json!({"type": "publish", "room": args.room, "data": data, "ref": 3});
        if let Some(id) = &args.id {
            publish["id"] = json!(id);
        }
        for req in [
            json!({"type": "hello", "client": client, "token": args.token, "ref": 1}),
            json!({"type": "join", "room": args.room, "ref": 2}),
            publish,
        ] {
            if ws.feed(Message::text(req.to_string())).await.is_err() {
                return Outcome::Lost;
            }
        }
        if ws.flush().await.is_err() {
            return Outcome::Lost;
        }
        while let Some(msg) = ws.recv().await {
            let Ok(Message::Text(t)) = msg else { continue };
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            match (v["type"].as_str(), v["ref"].as_u64()) {
                (Some("ack"), Some(3)) => {
                    if args.json {
                        println!("{v}");
                    } else {
                        println!("published to {} at offset {}", args.room, v["offset"]);
                    }
                    let _ = ws.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))).await;
                    return Outcome::Done;
                }
                (Some("error"), _) => {
                    eprintln!(
                        "roomcast publish: {}: {}",
                        v["code"].as_str().unwrap_or("error"),
                        v["message"].as_str().unwrap_or("")
                    );
                    let _ = ws.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))).await;
                    return Outcome::Refused;
                }
                _ => {}
            }
        }
        eprintln!("roomcast publish: the connection ended before the ack");
        Outcome::Lost
    };
    match tokio::time::timeout(Duration::from_secs_f64(args.timeout.max(0.1)), run).await {
        Ok(outcome) => outcome,
        Err(_) => {
            eprintln!("roomcast publish: no ack within {} s", args.timeout);
            Outcome::Lost
        }
    }
}

/// Publishes through `POST /api/publish`.
async fn over_api(args: &PublishArgs, data: Value) -> Outcome {
    let mut body = json!({"room": args.room, "data": data, "from": args.client.as_deref().unwrap_or("roomcast-cli")});
    if let Some(id) = &args.id {
        body["id"] = json!(id);
    }
    let url = format!("{}/api/publish", args.url.trim_end_matches('/'));
    let mut client = reqwest::Client::builder();
    if args.url.starts_with("https://") {
        match args.tls.client_config() {
            Ok(config) => client = client.tls_backend_preconfigured((*config).clone()),
            Err(e) => {
                eprintln!("roomcast publish: {e}");
                return Outcome::Usage;
            }
        }
    }
    let client = match client.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roomcast publish: {e}");
            return Outcome::ConnectFailed;
        }
    };
    let mut req = client
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs_f64(args.timeout.max(0.1)));
    if let Some(key) = &args.api_key {
        req = req.bearer_auth(key);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roomcast publish: {e}");
            return Outcome::ConnectFailed;
        }
    };
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        eprintln!(
            "roomcast publish: {status}: {}: {}",
            v["error"]["code"].as_str().unwrap_or("error"),
            v["error"]["message"].as_str().unwrap_or("")
        );
        return Outcome::Refused;
    }
    let offset = &v["results"][0]["offset"];
    if args.json {
        println!(
            "{}",
            json!({"type": "ack", "room": args.room, "offset": offset})
        );
    } else {
        println!("published to {} at offset {offset}", args.room);
    }
    Outcome::Done
}
