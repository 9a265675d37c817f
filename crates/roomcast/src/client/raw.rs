//! `roomcast connect URL`: lines in, messages out.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use roomcast_ws::handshake::ClientOptions;
use roomcast_ws::tokio::Error;
use roomcast_ws::{CloseCode, CloseFrame, Message};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::style::Palette;
use super::{ConnectArgs, Outcome};

pub(super) async fn run(args: &ConnectArgs, options: &ClientOptions) -> Outcome {
    let err = Palette::stderr();
    let status = |line: String| {
        if !args.quiet {
            eprintln!("{}", err.dim(&line));
        }
    };
    let (ws, answer) = match super::dial(args, options).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roomcast connect: {}", err.red(&e.to_string()));
            return Outcome::ConnectFailed;
        }
    };
    let deflate = answer
        .extensions
        .iter()
        .any(|e| e.name == roomcast_ws::deflate::NAME);
    status(format!(
        "connected to {}{}{}{}",
        args.url,
        if args.http2 { " (HTTP/2)" } else { "" },
        answer
            .protocol
            .as_ref()
            .map(|p| format!(" (protocol {p})"))
            .unwrap_or_default(),
        if deflate { " (permessage-deflate)" } else { "" }
    ));
    let (mut reader, writer) = ws.split();

    // stdin: each line a message; at EOF, close normally.
    let input = {
        let (writer, binary, b64, no_close) =
            (writer.clone(), args.binary, args.base64, args.no_close);
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let msg = if b64 {
                    match STANDARD.decode(line.trim()) {
                        Ok(bytes) => Message::binary(bytes),
                        Err(e) => {
                            eprintln!("roomcast connect: not base64 ({e}): {line}");
                            continue;
                        }
                    }
                } else if binary {
                    Message::binary(line.into_bytes())
                } else {
                    Message::text(line)
                };
                if writer.send(msg).await.is_err() {
                    return;
                }
            }
            if !no_close {
                let _ = writer
                    .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
                    .await;
            }
        })
    };
    // Pings carry the time they were sent, so the pong tells the round trip.
    let base = Instant::now();
    let pinger = args.ping_interval.filter(|s| *s > 0.0).map(|secs| {
        let writer = writer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(secs));
            tick.tick().await;
            loop {
                tick.tick().await;
                let sent = base.elapsed().as_nanos() as u64;
                if writer
                    .send(Message::Ping(Bytes::copy_from_slice(&sent.to_be_bytes())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    });

    let mut out = std::io::stdout().lock();
    let mut received = 0u64;
    let mut outcome = Outcome::Lost;
    while let Some(msg) = reader.recv().await {
        match msg {
            Ok(Message::Text(t)) => {
                let _ = if args.json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"type": "text", "data": t.as_str()})
                    )
                } else {
                    writeln!(out, "{t}")
                };
            }
            Ok(Message::Binary(b)) => {
                let _ = if args.json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"type": "binary", "base64": STANDARD.encode(&b)})
                    )
                } else if args.base64 {
                    writeln!(out, "{}", STANDARD.encode(&b))
                } else {
                    out.write_all(&b).and_then(|()| writeln!(out))
                };
            }
            Ok(Message::Pong(p)) if p.len() == 8 => {
                let sent = u64::from_be_bytes(p[..].try_into().unwrap_or_default());
                let rtt = (base.elapsed().as_nanos() as u64).saturating_sub(sent) as f64 / 1e6;
                status(format!("pong: {rtt:.3} ms"));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame.map_or((CloseCode::NO_STATUS, String::new()), |f| {
                    (f.code, f.reason.to_string())
                });
                status(format!(
                    "closed: {code}{}",
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" {reason}")
                    }
                ));
                outcome = if code == CloseCode::NORMAL || code == CloseCode::NO_STATUS {
                    Outcome::Done
                } else {
                    Outcome::Refused
                };
                continue;
            }
            Err(Error::AbnormalClosure) => {
                status("connection lost without a close frame (1006)".into());
                outcome = Outcome::Lost;
                break;
            }
            Err(e) => {
                eprintln!("roomcast connect: {}", err.red(&e.to_string()));
                outcome = Outcome::Lost;
                break;
            }
        }
        let _ = out.flush();
        received += 1;
        if args.max_messages.is_some_and(|max| received >= max) {
            let _ = writer
                .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
                .await;
            outcome = Outcome::Done;
            // Let the closing handshake finish (bounded by the close timeout).
            let _ = tokio::time::timeout(Duration::from_secs(3), async {
                while reader.recv().await.is_some() {}
            })
            .await;
            break;
        }
    }
    let _ = out.flush();
    input.abort();
    if let Some(p) = pinger {
        p.abort();
    }
    outcome
}
