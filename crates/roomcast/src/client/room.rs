//! `roomcast connect URL --room NAME`: the roomcast protocol in a terminal.
//!
//! Lines typed are published; messages and presence changes are printed. The client keeps
//! the position it has reached (epoch and offset) and, after a drop, reconnects and joins
//! with `since`, so nothing is missed; publishes not yet acknowledged are sent again with
//! the same idempotency key, so nothing is published twice.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::time::Duration;

use roomcast_ws::handshake::ClientOptions;
use roomcast_ws::tokio::WebSocket;

use crate::net::Stream;
use roomcast_ws::{CloseCode, CloseFrame, Message};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::style::Palette;
use super::{ConnectArgs, Outcome};

/// What survives a reconnect.
struct State {
    room: String,
    client: String,
    presence: Option<Value>,
    /// The last position seen: epoch and offset.
    position: Option<(String, u64)>,
    /// Publishes not yet acknowledged: idempotency key and data.
    pending: VecDeque<(String, Value)>,
    received: u64,
    stdin_done: bool,
    next_ref: u64,
}

/// How one connection ended.
enum End {
    /// Stop, with this outcome.
    Finished(Outcome),
    /// Dropped: reconnect (whether the connection had been established).
    Dropped(bool),
}

pub(super) async fn run(args: &ConnectArgs, options: &ClientOptions) -> Outcome {
    let err = Palette::stderr();
    let presence = match args.presence.as_deref().map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(v @ Value::Object(_))) => Some(v),
        Some(_) => {
            eprintln!("roomcast connect: --presence must be a JSON object");
            return Outcome::Usage;
        }
    };
    let mut state = State {
        room: args.room.clone().unwrap_or_default(),
        client: args
            .client
            .clone()
            .or_else(|| args.token.as_deref().and_then(crate::token::subject))
            .unwrap_or_else(|| format!("cli-{:08x}", rand_u32())),
        presence,
        position: None,
        pending: VecDeque::new(),
        received: 0,
        stdin_done: false,
        next_ref: 0,
    };
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut input = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = input.next_line().await {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut backoff = Duration::from_millis(250);
    let mut ever_connected = false;
    loop {
        let ws = match super::dial(args, options).await {
            Ok((ws, _)) => ws,
            Err(e) if !ever_connected => {
                eprintln!("roomcast connect: {}", err.red(&e.to_string()));
                return Outcome::ConnectFailed;
            }
            Err(e) => {
                status(
                    args,
                    &format!(
                        "reconnect failed ({e}); retrying in {:.1} s",
                        backoff.as_secs_f64()
                    ),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        ever_connected = true;
        match session(args, ws, &mut state, &mut lines).await {
            End::Finished(outcome) => return outcome,
            End::Dropped(_) if args.no_reconnect => return Outcome::Lost,
            End::Dropped(established) => {
                if established {
                    backoff = Duration::from_millis(250);
                }
                status(
                    args,
                    &format!(
                        "disconnected; reconnecting in {:.1} s",
                        backoff.as_secs_f64()
                    ),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn status(args: &ConnectArgs, line: &str) {
    if !args.quiet {
        eprintln!("{}", Palette::stderr().dim(line));
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t ^ std::process::id().rotate_left(16)
}

async fn send(ws: &mut WebSocket<Stream>, v: Value) -> bool {
    ws.send(Message::text(v.to_string())).await.is_ok()
}

async fn session(
    args: &ConnectArgs,
    mut ws: WebSocket<Stream>,
    st: &mut State,
    lines: &mut mpsc::UnboundedReceiver<String>,
) -> End {
    let out = Palette::stdout();
    let err = Palette::stderr();
    let mut hello = json!({"type": "hello", "client": st.client});
    hello["ref"] = 1.into();
    if let Some(token) = &args.token {
        hello["token"] = token.as_str().into();
    }
    let mut join = json!({"type": "join", "room": st.room, "ref": 2});
    if let Some(p) = &st.presence {
        join["presence"] = p.clone();
    }
    if let Some((epoch, offset)) = &st.position {
        join["since"] = json!({"epoch": epoch, "offset": offset});
    }
    if !send(&mut ws, hello).await || !send(&mut ws, join).await {
        return End::Dropped(false);
    }
    // Publishes still waiting for an ack, by request ref.
    let mut in_flight: HashMap<u64, String> = HashMap::new();
    let mut joined = false;
    loop {
        tokio::select! {
            msg = ws.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map_or(CloseCode::NO_STATUS, |f| f.code);
                        status(args, &format!("closed: {code} {}", frame.map(|f| f.reason.to_string()).unwrap_or_default()));
                        // The close code says whether to come back (docs/protocol.md).
                        return match code.0 {
                            1000 | 1005 => End::Finished(Outcome::Done),
                            1002 | 1003 | 1007 | 1008 | 1009 | 4001 | 4003 => End::Finished(Outcome::Refused),
                            _ => End::Dropped(joined),
                        };
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        status(args, &format!("connection lost: {e}"));
                        return End::Dropped(joined);
                    }
                    None => return End::Dropped(joined),
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if args.json && v["type"] != "ack" && v["type"] != "welcome" {
                    println!("{v}");
                }
                match v["type"].as_str().unwrap_or_default() {
                    "joined" => {
                        joined = true;
                        let offset = v["offset"].as_u64().unwrap_or(0);
                        let epoch = v["epoch"].as_str().unwrap_or_default().to_owned();
                        match v["recovered"].as_bool() {
                            Some(false) => eprintln!("{}", err.yellow(&format!("joined {} at offset {offset}: could not recover what was missed", st.room))),
                            Some(true) => status(args, &format!("rejoined {} (recovering from offset {})", st.room, st.position.as_ref().map_or(0, |p| p.1))),
                            None => status(args, &format!("joined {} at offset {offset} as {}", st.room, st.client)),
                        }
                        if v["recovered"].as_bool() != Some(true) {
                            st.position = Some((epoch, offset));
                        }
                        // Resend what was not acknowledged: the same key, published once.
                        let resend: Vec<(String, Value)> = st.pending.iter().cloned().collect();
                        for (id, data) in resend {
                            st.next_ref += 1;
                            in_flight.insert(st.next_ref + 100, id.clone());
                            let req = json!({"type": "publish", "room": st.room, "data": data, "id": id, "ref": st.next_ref + 100});
                            if !send(&mut ws, req).await {
                                return End::Dropped(true);
                            }
                        }
                    }
                    "message" => {
                        st.position = Some((v["epoch"].as_str().unwrap_or_default().to_owned(), v["offset"].as_u64().unwrap_or(0)));
                        if !args.json {
                            let data = match &v["data"] {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            let from = v["from"].as_str().unwrap_or("?");
                            println!("{} {} {}", out.dim(&format!("[{} #{}]", st.room, v["offset"])), out.bold(&format!("{from}:")), data);
                        }
                        let _ = std::io::stdout().flush();
                        st.received += 1;
                        if args.max_messages.is_some_and(|m| st.received >= m) {
                            let _ = ws.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))).await;
                            return End::Finished(Outcome::Done);
                        }
                    }
                    "presence_diff" if !args.json => {
                        for m in v["joined"].as_array().into_iter().flatten() {
                            println!("{} {} {}", out.green("+"), m["client"].as_str().unwrap_or("?"), out.dim(&m["info"].to_string()));
                        }
                        for m in v["left"].as_array().into_iter().flatten() {
                            println!("{} {}", out.red("-"), m["client"].as_str().unwrap_or("?"));
                        }
                    }
                    "ack" => {
                        if let Some(id) = v["ref"].as_u64().and_then(|r| in_flight.remove(&r)) {
                            st.pending.retain(|(p, _)| *p != id);
                        }
                        if st.stdin_done && st.pending.is_empty() && !args.no_close {
                            let _ = ws.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))).await;
                            return End::Finished(Outcome::Done);
                        }
                    }
                    "error" => {
                        eprintln!("{}", err.red(&format!("error {}: {}", v["code"].as_str().unwrap_or("?"), v["message"].as_str().unwrap_or(""))));
                        if let Some(id) = v["ref"].as_u64().and_then(|r| in_flight.remove(&r)) {
                            st.pending.retain(|(p, _)| *p != id);
                        }
                        if v["ref"] == 2 {
                            return End::Finished(Outcome::Refused);
                        }
                    }
                    _ => {}
                }
            }
            line = lines.recv(), if !st.stdin_done => {
                let Some(line) = line else {
                    st.stdin_done = true;
                    if st.pending.is_empty() && !args.no_close {
                        let _ = ws.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))).await;
                        return End::Finished(Outcome::Done);
                    }
                    continue;
                };
                let data = if args.json_data {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!("{}", err.red(&format!("not JSON ({e}): {line}")));
                            continue;
                        }
                    }
                } else {
                    Value::String(line)
                };
                let id = format!("{}-{:x}-{}", st.client, rand_u32(), st.next_ref);
                st.pending.push_back((id.clone(), data.clone()));
                if joined {
                    st.next_ref += 1;
                    in_flight.insert(st.next_ref + 100, id.clone());
                    if !send(&mut ws, json!({"type": "publish", "room": st.room, "data": data, "id": id, "ref": st.next_ref + 100})).await {
                        return End::Dropped(true);
                    }
                }
            }
        }
    }
}
