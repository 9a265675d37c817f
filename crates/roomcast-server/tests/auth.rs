//! Tokens on every transport: `hello` on `/ws`, `?token=` and `Authorization: Bearer` on
//! SSE, poll and raw rooms; the `rooms` claim per request; expiry during a connection,
//! with and without `refresh`; algorithm confusion. Tokens are signed here with
//! `jsonwebtoken` and the test keys in `tests/keys/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, RawClient, exchange, get_json_status, http, raw_exchange, start, within};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use roomcast_ws::Message;
use serde_json::{Value, json};

const SECRET: &str = "test-secret-of-a-decent-length-0123456789";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn for_alice(rooms: Option<Value>, ttl: u64) -> String {
    let mut c = json!({"sub": "alice", "exp": now() + ttl});
    if let Some(r) = rooms {
        c["rooms"] = r;
    }
    token(c)
}

/// The close code the server ends the connection with (replies before it skipped).
async fn close_code(c: &mut Client) -> (u16, String) {
    loop {
        match within("a close frame", Duration::from_secs(10), c.ws.recv()).await {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.0, f.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("a close without a code"),
            Some(Ok(_)) => {}
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    }
}

/// A hello with `token` (and maybe a client id): the reply.
async fn hello(addr: SocketAddr, client: Option<&str>, token: Option<&str>) -> (Client, Value) {
    let mut c = Client::connect(addr).await;
    let mut h = json!({"type": "hello"});
    if let Some(client) = client {
        h["client"] = client.into();
    }
    if let Some(t) = token {
        h["token"] = t.into();
    }
    let reply = c.request(h).await;
    (c, reply)
}

#[tokio::test]
async fn a_hello_without_a_valid_token_is_refused_with_4001() {
    let s = start(|c| c.auth.jwt_secret = SECRET.into()).await;
    let expired = token(json!({"sub": "alice", "exp": now() - 3600}));
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": now() + 60}),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    let good = for_alice(None, 60);
    for (client, tok, why) in [
        (Some("alice"), None, "a token is required"),
        (Some("alice"), Some(expired.as_str()), "expired"),
        (Some("alice"), Some(forged.as_str()), "signature"),
        (Some("alice"), Some("not-a-jwt"), "malformed"),
        (Some("mallory"), Some(good.as_str()), "subject"),
    ] {
        let (mut c, reply) = hello(s.addr, client, tok).await;
        assert_eq!(reply["type"], "error", "{why}: {reply}");
        assert_eq!(reply["code"], "unauthorized", "{why}");
        assert!(reply["ref"].is_u64(), "the refusal carries the hello's ref");
        let (code, reason) = close_code(&mut c).await;
        assert_eq!(code, 4001, "{why}");
        assert!(reason.contains(why), "{why}: {reason}");
    }
    // A valid token: the client id is its `sub`, given or not.
    for client in [Some("alice"), None] {
        let (_c, w) = hello(s.addr, client, Some(&good)).await;
        assert_eq!(
            (w["type"].as_str(), w["client"].as_str()),
            (Some("welcome"), Some("alice"))
        );
    }
    assert!(roomcast_server::Stats::get(&s.stats.auth_refusals) >= 5);
}

#[tokio::test]
async fn a_public_key_never_verifies_an_hmac_token_made_with_it() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let s = start(|c| c.auth.jwt_public_key_file = format!("{keys}/rsa.pub")).await;
    let claims = json!({"sub": "alice", "exp": now() + 60});
    let pem = std::fs::read(format!("{keys}/rsa.pub")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    let (mut c, reply) = hello(s.addr, None, Some(&confused)).await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert_eq!(close_code(&mut c).await.0, 4001);
    let rsa = std::fs::read(format!("{keys}/rsa.key")).unwrap();
    let signed = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    let (_c, w) = hello(s.addr, None, Some(&signed)).await;
    assert_eq!(w["type"], "welcome", "{w}");
}

#[tokio::test]
async fn the_rooms_claim_decides_each_request() {
    let s = start(|c| c.auth.jwt_secret = SECRET.into()).await;
    let rooms = json!({
        "join": ["lobby", "team:*"],
        "publish": ["team:42"],
        "presence": ["lobby"],
        "history": ["team:42"],
    });
    let (mut c, w) = hello(s.addr, None, Some(&for_alice(Some(rooms), 60))).await;
    assert_eq!(w["type"], "welcome");
    let forbidden = |r: &Value, what: &str| {
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{what}: {r}"
        );
    };
    let r = c.request(json!({"type":"join","room":"secret"})).await;
    forbidden(&r, "join a room not listed");
    let r = c
        .request(json!({"type":"join","room":"team:7","presence":{}}))
        .await;
    forbidden(&r, "visible where presence is not granted");
    assert_eq!(
        c.request(json!({"type":"join","room":"team:7"})).await["type"],
        "joined"
    );
    let r = c
        .request(json!({"type":"publish","room":"team:7","data":1}))
        .await;
    forbidden(&r, "publish where only join is granted");
    assert_eq!(
        c.request(json!({"type":"join","room":"team:42"})).await["type"],
        "joined"
    );
    assert_eq!(
        c.request(json!({"type":"publish","room":"team:42","data":1}))
            .await["type"],
        "ack"
    );
    forbidden(
        &c.request(json!({"type":"presence","room":"team:42"})).await,
        "presence",
    );
    assert_eq!(
        c.request(json!({"type":"history","room":"team:42"})).await["type"],
        "history"
    );
    forbidden(
        &c.request(json!({"type":"history","room":"team:7"})).await,
        "history",
    );
    let r = c
        .request(json!({"type":"join","room":"lobby","presence":{"n":1}}))
        .await;
    assert_eq!(r["type"], "joined", "{r}");
    assert_eq!(
        c.request(json!({"type":"presence","room":"lobby"})).await["type"],
        "presence"
    );
    // Refusals leave the connection open.
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
}

#[tokio::test]
async fn an_expiring_token_is_warned_then_closed_with_4009_unless_refreshed() {
    let s = start(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.auth.leeway_ms = 0;
        c.auth.expiry_warning_ms = 2500;
    })
    .await;
    let short = for_alice(None, 3);
    let (mut lapses, _) = hello(s.addr, None, Some(&short)).await;
    let (mut renews, _) = hello(s.addr, None, Some(&short)).await;
    // Both are told, shortly before `exp`.
    for c in [&mut lapses, &mut renews] {
        let push = within(
            "token_expiring",
            Duration::from_secs(5),
            c.next_of("token_expiring"),
        )
        .await;
        let at = push["expires_at"].as_u64().unwrap() / 1000;
        assert!(
            (now()..=now() + 3).contains(&at),
            "expires_at {at}, now {}",
            now()
        );
    }
    // A refresh with a token of another client, or a bad one, is refused; the connection stays.
    let bob = token(json!({"sub": "bob", "exp": now() + 60}));
    assert_eq!(
        renews.request(json!({"type":"refresh","token":bob})).await["code"],
        "unauthorized"
    );
    assert_eq!(
        renews
            .request(json!({"type":"refresh","token":"x.y.z"}))
            .await["code"],
        "unauthorized"
    );
    let longer = for_alice(None, 60);
    let r = renews
        .request(json!({"type":"refresh","token":longer}))
        .await;
    assert_eq!(r["type"], "refreshed", "{r}");
    assert_eq!(r["expires_at"].as_u64().unwrap() / 1000, now() + 60);
    // At `exp` the other one is closed with 4009; the refreshed one goes on.
    let (code, reason) = close_code(&mut lapses).await;
    assert_eq!((code, reason.as_str()), (4009, "token expired"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(renews.request(json!({"type":"ping"})).await["type"], "pong");
    assert!(roomcast_server::Stats::get(&s.stats.token_expiries) >= 1);
}

#[tokio::test]
async fn a_refresh_applies_the_new_rooms_and_may_not_shorten_the_token() {
    let s = start(|c| c.auth.jwt_secret = SECRET.into()).await;
    let wide = json!({"join": ["a", "b"], "presence": ["a", "b"]});
    let (mut c, _) = hello(s.addr, None, Some(&for_alice(Some(wide.clone()), 600))).await;
    for room in ["a", "b"] {
        let r = c
            .request(json!({"type":"join","room":room,"presence":{}}))
            .await;
        assert_eq!(r["type"], "joined", "{r}");
    }
    let sooner = for_alice(Some(wide), 60);
    let r = c.request(json!({"type":"refresh","token":sooner})).await;
    assert_eq!(
        r["code"], "unauthorized",
        "a token that expires sooner: {r}"
    );
    // A narrower token: `b` is left, with a push, before the reply.
    let narrow = for_alice(Some(json!({"join": ["a"], "presence": ["a"]})), 900);
    let r = c.request(json!({"type":"refresh","token":narrow})).await;
    assert_eq!(r["type"], "refreshed", "{r}");
    let left = c.next_of("left").await;
    assert_eq!(left["room"], "b");
    let r = c.request(json!({"type":"leave","room":"b"})).await;
    assert_eq!(r["code"], "not_joined", "no longer in b: {r}");
    assert_eq!(
        c.request(json!({"type":"leave","room":"a"})).await["type"],
        "left"
    );
}

#[tokio::test]
async fn without_a_token_a_client_is_anonymous_and_must_hello_in_time() {
    let s = start(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.auth.required = "false".into();
    })
    .await;
    let (_c, w) = hello(s.addr, Some("alice"), None).await;
    let id = w["client"].as_str().unwrap();
    assert!(
        id.starts_with("anon-"),
        "a tokenless client took the id {id}"
    );
    let required = start(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.server.handshake_timeout_ms = 300;
    })
    .await;
    let mut silent = Client::connect(required.addr).await;
    // The conformance echo has no hello to wait for: it outlives the deadline.
    let mut echo = common::RawClient::connect(required.addr, "/echo").await;
    let (code, reason) = close_code(&mut silent).await;
    assert_eq!(code, 4001, "{reason}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo.send_frame(0x81, b"still here").await;
    let (op, payload) = echo.next_frame().await.expect("the echo still open");
    assert_eq!(
        (op, payload.as_slice()),
        (roomcast_ws::OpCode::Text, &b"still here"[..])
    );
    // Without auth, a silent connection stays (heartbeats deal with it).
    let open = start(|c| c.server.handshake_timeout_ms = 300).await;
    let mut quiet = Client::connect(open.addr).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let w = quiet.request(json!({"type":"hello","client":"late"})).await;
    assert_eq!(w["type"], "welcome");
}

#[tokio::test]
async fn sse_poll_cmd_and_raw_rooms_obey_the_same_tokens() {
    let s = start(|c| c.auth.jwt_secret = SECRET.into()).await;
    let base = format!("http://{}", s.addr);
    let listener = for_alice(Some(json!({"join": ["a"]})), 60);
    // No token: 401 on every transport.
    for path in ["/poll?room=a", "/sse?room=a"] {
        let (status, v) = get_json_status(format!("{base}{path}")).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
    }
    // A room the token does not list: 403.
    let (status, v) = get_json_status(format!("{base}/poll?room=b&token={listener}")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // With the token as a parameter, or as a bearer header: the session is alice's.
    let (status, v) =
        get_json_status(format!("{base}/poll?room=a&token={listener}&timeout_ms=0")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["events"][0]["client"], "alice");
    let session = v["session"].as_str().unwrap().to_owned();
    let (status, _, body) = exchange(
        http()
            .get(format!("{base}/poll?room=a&timeout_ms=0"))
            .bearer_auth(&listener),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Its commands obey the claim: join-only may not publish.
    let (status, _, body) = exchange(
        http()
            .post(format!("{base}/cmd?session={session}"))
            .body(json!({"type":"publish","room":"a","data":1,"ref":1}).to_string()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    // Raw rooms: 401 without a token, 403 for a room not listed, and a listener that
    // sends is closed with 4003.
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let resp = raw_exchange(s.addr, upgrade("/rooms/a").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let resp = raw_exchange(
        s.addr,
        upgrade(&format!("/rooms/b?token={listener}")).as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let mut raw = RawClient::connect(s.addr, &format!("/rooms/a?token={listener}")).await;
    raw.send_frame(0x81, b"hello").await;
    let reason = raw.expect_close(4003).await;
    assert!(reason.contains("publish"), "{reason}");
    let talker = for_alice(Some(json!({"join": ["a"], "publish": ["a"]})), 60);
    let mut ears = RawClient::connect(s.addr, &format!("/rooms/a?token={listener}")).await;
    let mut mouth = RawClient::connect(s.addr, &format!("/rooms/a?token={talker}")).await;
    mouth.send_frame(0x81, b"hi").await;
    let (_, payload) = ears.next_frame().await.expect("the message");
    assert_eq!(payload, b"hi");
}

/// Expiry on the HTTP transports: an SSE stream is warned, then ends with `closed` 4009;
/// of two poll sessions with the same short token, the one that sent `refresh` over
/// `POST /cmd` goes on past `exp`, and the other's next poll answers `"closed":true` with
/// 4009.
#[tokio::test]
async fn sse_and_poll_sessions_end_at_exp_unless_refreshed_over_cmd() {
    let s = start(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.auth.leeway_ms = 0;
        c.auth.expiry_warning_ms = 2000;
    })
    .await;
    let base = format!("http://{}", s.addr);
    let short = for_alice(None, 3);
    let mut sse = common::Sse::open(s.addr, &format!("room=a&token={short}"), None).await;
    let poll = |query: String| {
        let url = format!("{base}/poll?{query}");
        async move { get_json_status(url).await }
    };
    let (_, lapses) = poll(format!("room=a&token={short}&timeout_ms=0")).await;
    let (_, renews) = poll(format!("room=a&token={short}&timeout_ms=0")).await;
    let session = |v: &Value| v["session"].as_str().unwrap().to_owned();
    let cursor = |v: &Value| v["cursor"].as_str().unwrap().to_owned();
    // The SSE stream is warned before `exp`.
    let warned = within(
        "token_expiring",
        Duration::from_secs(5),
        sse.next_of("token_expiring"),
    )
    .await;
    let at = warned["expires_at"].as_u64().unwrap() / 1000;
    assert!((now()..=now() + 3).contains(&at), "{warned}, now {}", now());
    // A refresh over /cmd: another client's token is refused, a longer one of alice's taken.
    let refresh = |token: String| {
        exchange(
            http()
                .post(format!("{base}/cmd?session={}", session(&renews)))
                .body(json!({"type":"refresh","token":token,"ref":7}).to_string()),
        )
    };
    let (status, _, body) = refresh(token(json!({"sub": "bob", "exp": now() + 60}))).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = refresh(for_alice(None, 60)).await;
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (r["type"].as_str(), r["ref"].as_u64()),
        (Some("refreshed"), Some(7)),
        "{r}"
    );
    // At `exp`: the stream ends with 4009.
    let closed = within("closed", Duration::from_secs(5), sse.next_of("closed")).await;
    assert_eq!(closed["code"], 4009, "{closed}");
    assert!(sse.ended().await, "the stream went on after closed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = poll(format!("cursor={}&timeout_ms=0", cursor(&lapses))).await;
    assert_eq!(
        (v["closed"].as_bool(), v["code"].as_u64()),
        (Some(true), Some(4009)),
        "{v}"
    );
    let (status, v) = poll(format!("cursor={}&timeout_ms=0", cursor(&renews))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["session"], renews["session"],
        "the refreshed session ended: {v}"
    );
    assert!(v["closed"].as_bool() != Some(true), "{v}");
    assert!(roomcast_server::Stats::get(&s.stats.token_expiries) >= 2);
}

/// The same refusals seen by a client nobody here wrote: Python `websockets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_sees_the_refusals() {
    let s = start(|c| c.auth.jwt_secret = SECRET.into()).await;
    let good = for_alice(Some(json!({"join": ["lobby"], "publish": ["lobby"]})), 600);
    let expired = token(json!({"sub": "alice", "exp": now() - 3600}));
    let url = format!("ws://{}/ws", s.addr);
    common::run_peer(
        &common::python(),
        "python/auth_client.py",
        &[&url, &good, &expired],
    )
    .await;
}

/// And by Node's `ws`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ws_sees_the_refusals() {
    let s = start(|c| c.auth.jwt_secret = SECRET.into()).await;
    let token = for_alice(Some(json!({"join": ["lobby"]})), 600);
    let url = format!("ws://{}/ws", s.addr);
    common::run_peer(&common::node(), "node/guard_client.js", &[&url, &token]).await;
}
