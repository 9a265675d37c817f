//! The server HTTP API, for the application's backend.
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/publish` `{"room"\|"rooms", "data", "id"?, "from"?}` | `{"results":[{"room","offset"}]}` |
//! | `GET /api/rooms` | `{"rooms":[{"room","epoch","last_offset","members","visible"}]}` |
//! | `GET /api/stats` | this node's counters (`crate::metrics::Snapshot`), the admin scope |
//! | `GET /api/nodes` | `{"nodes":[{"id","address","connections","rooms","since_ms"}]}` |
//! | `GET /api/rooms/{room}/presence` | the `presence` reply of `/ws` |
//! | `GET /api/rooms/{room}/history?since=EPOCH:OFFSET&limit=N` | the `history` reply of `/ws` |
//! | `POST /api/disconnect` `{"client", "code"?, "reason"?}` | `{"disconnected": N}` |
//! | `GET /api/openapi.json` | the OpenAPI 3.1 description of all this |
//!
//! Authentication: `Authorization: Bearer <key>`, `api.key` (every scope) or one of
//! `api.keys` with its scopes (`publish`, `read`, `disconnect`, `admin`); a key without
//! the scope an endpoint needs gets 403. With no key configured, only requests from
//! loopback addresses are answered. Errors are
//! `{"error":{"code":"...","message":"..."}}` with their HTTP status; a client's mistake is
//! never a 500.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Body, HttpError, error, json_response, method_not_allowed, param, query, read_json};
use subtle::ConstantTimeEq;

use crate::config::{ApiKey, ApiScope};
use crate::engine::{ConnKey, Engine, HomeMsg, LocalMsg, Publish, Reply};
use crate::member::frame_json;
use crate::protocol::RoomName;
use crate::protocol::{self, ErrorCode, SincePos};
use crate::worker::Worker;

/// The OpenAPI description served at `/api/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn handle(
    req: Request<Incoming>,
    worker: Rc<Worker>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    if path == "/api/openapi.json" {
        return if method == Method::GET {
            json_response(StatusCode::OK, Bytes::from_static(OPENAPI.as_bytes()))
        } else {
            method_not_allowed("GET")
        };
    }
    let segments: Vec<&str> = path
        .trim_start_matches("/api")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let scope = match segments.first() {
        Some(&"publish") => ApiScope::Publish,
        Some(&"disconnect") => ApiScope::Disconnect,
        Some(&"stats") => ApiScope::Admin,
        _ => ApiScope::Read,
    };
    let key = match authorize(&req, &worker, peer, scope) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["publish"]) => publish(req, worker, key).await,
        ("GET", ["rooms"]) => rooms(worker).await,
        ("GET", ["nodes"]) => nodes(worker).await,
        ("GET", ["stats"]) => json_response(
            StatusCode::OK,
            serde_json::to_string(&super::pages::snapshot(&worker)).unwrap_or_default(),
        ),
        ("GET", ["rooms", room, "presence"]) => {
            let room = (*room).to_owned();
            read_room(&worker, &room, |room, conn| HomeMsg::Presence {
                room,
                conn,
                reference: None,
            })
            .await
        }
        ("GET", ["rooms", room, "history"]) => {
            let q = query(&req);
            let since = match param(&q, "since").map(parse_since) {
                Some(Some(s)) => Some(s),
                Some(None) => {
                    return error(ErrorCode::BadRequest, "`since` must be EPOCH:OFFSET");
                }
                None => None,
            };
            // Not a number is out of range too: the one `limit` rule of every transport.
            let given = param(&q, "limit").map(|v| v.parse::<u64>().unwrap_or(0));
            let limit = match protocol::history_limit(given) {
                Ok(n) => n,
                Err(e) => return error(e.code, &e.message),
            };
            let room = (*room).to_owned();
            read_room(&worker, &room, |room, conn| HomeMsg::History {
                room,
                conn,
                reference: None,
                since,
                limit,
            })
            .await
        }
        ("POST", ["disconnect"]) => disconnect(req, worker).await,
        (
            _,
            ["publish"]
            | ["rooms"]
            | ["nodes"]
            | ["stats"]
            | ["rooms", _, "presence" | "history"]
            | ["disconnect"],
        ) => method_not_allowed(if matches!(segments[0], "rooms" | "nodes" | "stats") {
            "GET"
        } else {
            "POST"
        }),
        _ => error(
            ErrorCode::NotFound,
            &format!("no API endpoint {method} {path}"),
        ),
    }
}

/// The key a request comes with, if it has `scope`: `None` when no key is configured and
/// the request comes from this machine (which may do everything). Keys are compared in
/// constant time (`subtle`), every configured one each time, so the time taken says
/// nothing about which key or how much of a guess was right.
pub(super) fn authorize<B>(
    req: &Request<B>,
    worker: &Worker,
    peer: SocketAddr,
    scope: ApiScope,
) -> Result<Option<ApiKey>, HttpError> {
    let keys = &worker.shared.api_keys;
    let refuse = |message: &str| Err(HttpError::new(ErrorCode::Unauthorized, message));
    if keys.is_empty() {
        return if peer.ip().is_loopback() {
            Ok(None)
        } else {
            refuse(
                "the API has no key configured (api.key, api.keys), so it answers only this machine",
            )
        };
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return refuse("missing API key: send Authorization: Bearer <key>");
    };
    let given = given.trim().as_bytes();
    let mut found = None;
    for k in keys {
        if bool::from(k.secret.as_bytes().ct_eq(given)) {
            found = Some(k.clone());
        }
    }
    match found {
        None => refuse("wrong API key"),
        Some(k) if !k.allows(scope) => Err(HttpError::new(
            ErrorCode::Forbidden,
            format!("the key {} lacks the `{}` scope", k.name, scope.as_str()),
        )),
        Some(k) => Ok(Some(k)),
    }
}

fn parse_since(text: &str) -> Option<SincePos> {
    let (epoch, offset) = text.split_once(':')?;
    Some(SincePos {
        epoch: epoch.to_owned(),
        offset: offset.parse().ok()?,
    })
}

/// Sends a request to `room`'s engine and waits for its one reply.
async fn ask(
    worker: &Rc<Worker>,
    room: &RoomName,
    make: impl FnOnce(ConnKey) -> HomeMsg,
) -> Option<Reply> {
    let (key, reply) = worker.pending();
    worker.to_home(room, make(key));
    match tokio::time::timeout(REPLY_TIMEOUT, reply).await {
        Ok(Ok(reply)) => Some(reply),
        _ => {
            worker.cancel_pending(key);
            None
        }
    }
}

fn unavailable() -> Response<Body> {
    error(ErrorCode::Unavailable, "no reply from the room in time")
}

/// A reply as an API answer: its JSON, or an error's code as the status, in the API's
/// error shape.
fn answer(reply: &Reply) -> Response<Body> {
    match reply {
        Reply::Error { code, message, .. } => error(*code, message),
        other => json_response(StatusCode::OK, frame_json(&other.frame())),
    }
}

async fn read_room(
    worker: &Rc<Worker>,
    room: &str,
    make: impl FnOnce(RoomName, ConnKey) -> HomeMsg,
) -> Response<Body> {
    let room = match RoomName::new(room) {
        Ok(r) => r,
        Err(e) => return error(ErrorCode::BadRequest, &e.to_string()),
    };
    match ask(worker, &room, |key| make(room.clone(), key)).await {
        Some(reply) => answer(&reply),
        None => unavailable(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: Option<String>,
    rooms: Option<Vec<String>>,
    data: Option<Box<RawValue>>,
    id: Option<String>,
    from: Option<String>,
}

async fn publish(
    req: Request<Incoming>,
    worker: Rc<Worker>,
    key: Option<ApiKey>,
) -> Response<Body> {
    let parsed: PublishBody = match read_json(req, &worker).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Some(data) = parsed.data else {
        return error(ErrorCode::BadRequest, "missing field `data`");
    };
    let names: Vec<String> = match (parsed.room, parsed.rooms) {
        (Some(r), None) => vec![r],
        (None, Some(rs)) if !rs.is_empty() && rs.len() <= 100 => rs,
        (None, Some(_)) => {
            return error(ErrorCode::BadRequest, "`rooms` must list 1 to 100 rooms");
        }
        _ => {
            return error(ErrorCode::BadRequest, "give either `room` or `rooms`");
        }
    };
    let mut rooms = Vec::with_capacity(names.len());
    for n in &names {
        match RoomName::new(n) {
            Ok(r) if !rooms.contains(&r) => rooms.push(r),
            Ok(_) => {
                return error(ErrorCode::BadRequest, &format!("room {n} is listed twice"));
            }
            Err(e) => return error(ErrorCode::BadRequest, &format!("{n}: {e}")),
        }
    }
    // The same check as a publish on /ws or /cmd.
    if let Err(e) = worker.check_data(&data) {
        return error(e.code, &e.message);
    }
    if let Some(Err(e)) = parsed.id.as_deref().map(crate::protocol::check_id) {
        return error(ErrorCode::BadRequest, &e.message);
    }
    // A key without `admin` publishes as itself, whatever `from` says.
    let from: Arc<str> = Arc::from(match &key {
        Some(k) if !k.allows(ApiScope::Admin) => k.name.as_str(),
        _ => parsed
            .from
            .as_deref()
            .filter(|f| !f.is_empty() && f.len() <= 128)
            .unwrap_or("api"),
    });
    let data = Bytes::copy_from_slice(data.get().as_bytes());
    let mut results = Vec::with_capacity(rooms.len());
    for room in rooms {
        let (id, from, data) = (
            parsed.id.as_deref().map(Into::into),
            from.clone(),
            data.clone(),
        );
        let reply = ask(&worker, &room, |conn| {
            HomeMsg::Publish(Publish {
                room: room.clone(),
                conn,
                from,
                data,
                id,
                reference: None,
                create: true,
                asked: std::time::Instant::now(),
            })
        })
        .await;
        match reply {
            Some(Reply::Ack { offset, .. }) => {
                results.push(json!({"room": room.as_str(), "offset": offset}));
            }
            Some(other) => return answer(&other),
            None => return unavailable(),
        }
    }
    json_response(StatusCode::OK, json!({ "results": results }).to_string())
}

async fn rooms(worker: Rc<Worker>) -> Response<Body> {
    let Some(all) = worker.rooms().await else {
        return unavailable();
    };
    let rooms: Vec<Value> = all
        .iter()
        .map(|r| json!({"room": r.room.as_str(), "epoch": &*r.epoch, "last_offset": r.last_offset, "members": r.members, "visible": r.visible}))
        .collect();
    json_response(StatusCode::OK, json!({ "rooms": rooms }).to_string())
}

async fn nodes(worker: Rc<Worker>) -> Response<Body> {
    let Some(nodes) = worker.nodes().await else {
        return unavailable();
    };
    json_response(StatusCode::OK, json!({ "nodes": nodes }).to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    client: String,
    code: Option<u16>,
    reason: Option<String>,
}

async fn disconnect(req: Request<Incoming>, worker: Rc<Worker>) -> Response<Body> {
    let parsed: DisconnectBody = match read_json(req, &worker).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let code = parsed.code.unwrap_or(4003);
    if !(code == 1000 || (4000..=4999).contains(&code)) {
        return error(ErrorCode::BadRequest, "`code` must be 1000 or 4000-4999");
    }
    let reason: Arc<str> = Arc::from(
        parsed
            .reason
            .as_deref()
            .unwrap_or("disconnected by the server"),
    );
    let client: Arc<str> = Arc::from(parsed.client);
    // With a broker every node closes its own, this one included, and answers its count.
    // While the broker is unreachable this node closes its own, and says the others were
    // not asked.
    let cluster = matches!(&worker.engine, Engine::Redis(_));
    if let Engine::Redis(redis) = &worker.engine
        && redis.is_up()
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        worker.to_broker(HomeMsg::Disconnect {
            client,
            code,
            reason,
            reply,
        });
        let Ok(Ok(done)) = tokio::time::timeout(REPLY_TIMEOUT, rx).await else {
            return unavailable();
        };
        let mut answer = json!({ "disconnected": done.closed });
        if done.unanswered > 0 {
            answer["unanswered"] = json!(done.unanswered);
        }
        return json_response(StatusCode::OK, answer.to_string());
    }
    let mut total = 0;
    for w in 0..worker.workers() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        worker.send_local(
            w,
            LocalMsg::Disconnect {
                client: client.clone(),
                code,
                reason: reason.clone(),
                reply: tx,
            },
        );
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(n)) => total += n,
            _ => return unavailable(),
        }
    }
    let mut answer = json!({ "disconnected": total });
    if cluster {
        answer["unanswered"] = json!(1);
    }
    json_response(StatusCode::OK, answer.to_string())
}
