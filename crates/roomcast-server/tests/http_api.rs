//! The server HTTP API: auth, answers, refusals, and the OpenAPI document checked against
//! the real responses.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, api, start};
use serde_json::{Value, json};

const KEY: &str = "s3cret-key";

/// A request with the key; returns status, headers and JSON.
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}{path}");
    let mut req = match method {
        "POST" => client.post(url).body(body.unwrap_or("").to_owned()),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    };
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}")),
    )
}

/// A validator for a schema of the OpenAPI document, refs resolved within it.
fn schema(doc: &Value, name: &str) -> jsonschema::Validator {
    let root =
        json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"]});
    jsonschema::validator_for(&root).unwrap()
}

fn check(doc: &Value, name: &str, value: &Value) {
    let v = schema(doc, name);
    let errors: Vec<String> = v.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{name} does not match {value}: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let s = start(|c| c.api.key = KEY.into()).await;
    let (status, _, doc) = call(s.addr, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    // The schemas are strict: a missing or an unknown field fails them.
    assert!(!schema(&doc, "RoomList").is_valid(&json!({"rooms": [{"room": "x"}]})));
    assert!(!schema(&doc, "DisconnectResult").is_valid(&json!({"disconnected": 1, "extra": 2})));
    // Each documented path is served.
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(path.starts_with("/api/"), "{path}");
    }
    let mut member = Client::hello(s.addr, "alice").await;
    member
        .request(json!({"type": "join", "room": "doc", "presence": {"name": "Alice"}}))
        .await;

    let (status, _, v) = call(
        s.addr,
        "POST",
        "/api/publish",
        Some(r#"{"rooms":["doc","doc2"],"data":{"x":1},"id":"d1","from":"backend"}"#),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200);
    check(&doc, "PublishResult", &v);
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    let m = member.next_of("message").await;
    assert_eq!(
        (m["from"].as_str(), m["data"].clone()),
        (Some("backend"), json!({"x": 1}))
    );

    let (status, _, v) = call(s.addr, "GET", "/api/rooms", None, Some(KEY)).await;
    assert_eq!(status, 200);
    check(&doc, "RoomList", &v);
    let doc_room = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "doc")
        .unwrap()
        .clone();
    assert_eq!(
        (
            doc_room["members"].as_u64(),
            doc_room["visible"].as_u64(),
            doc_room["last_offset"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );

    let (status, _, v) = call(s.addr, "GET", "/api/rooms/doc/presence", None, Some(KEY)).await;
    assert_eq!(status, 200);
    check(&doc, "PresenceReply", &v);
    assert_eq!(v["members"][0]["info"], json!({"name": "Alice"}));

    let epoch = doc_room["epoch"].as_str().unwrap();
    let (status, _, v) = call(
        s.addr,
        "GET",
        &format!("/api/rooms/doc/history?since={epoch}:0&limit=10"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200);
    check(&doc, "HistoryReply", &v);
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    check(&doc, "Message", &v["messages"][0]);

    let (status, _, v) = call(
        s.addr,
        "POST",
        "/api/disconnect",
        Some(r#"{"client":"nobody"}"#),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200);
    check(&doc, "DisconnectResult", &v);

    // And every refusal has the error shape.
    for (method, path, body, key, want) in [
        ("GET", "/api/rooms", None, None, 401),
        ("GET", "/api/rooms", None, Some("wrong"), 401),
        ("POST", "/api/publish", Some("{not json"), Some(KEY), 400),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"a"}"#),
            Some(KEY),
            400,
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"a b","data":1}"#),
            Some(KEY),
            400,
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"a","rooms":["b"],"data":1}"#),
            Some(KEY),
            400,
        ),
        (
            "POST",
            "/api/publish",
            Some(r#"{"room":"a","data":1,"extra":true}"#),
            Some(KEY),
            400,
        ),
        ("GET", "/api/rooms/never/presence", None, Some(KEY), 404),
        ("GET", "/api/rooms/never/history", None, Some(KEY), 404),
        (
            "GET",
            "/api/rooms/doc/history?since=nocolon",
            None,
            Some(KEY),
            400,
        ),
        (
            "GET",
            "/api/rooms/doc/history?limit=5000",
            None,
            Some(KEY),
            400,
        ),
        ("GET", "/api/publish", None, Some(KEY), 405),
        ("GET", "/api/nothing", None, Some(KEY), 404),
        (
            "POST",
            "/api/disconnect",
            Some(r#"{"client":"x","code":1006}"#),
            Some(KEY),
            400,
        ),
    ] {
        let (status, headers, v) = call(s.addr, method, path, body, key).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        check(&doc, "Error", &v);
        if status == 401 {
            assert_eq!(headers["www-authenticate"], "Bearer");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_413() {
    let s = start(|c| {
        c.http.max_body_size = 1000;
        c.rooms.max_data_size = 100;
    })
    .await;
    let big = format!(r#"{{"room":"a","data":"{}"}}"#, "x".repeat(2000));
    let (status, _, v) = call(s.addr, "POST", "/api/publish", Some(&big), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    let data_too_big = format!(r#"{{"room":"a","data":"{}"}}"#, "x".repeat(200));
    let (status, _, v) = call(s.addr, "POST", "/api/publish", Some(&data_too_big), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_only_loopback_is_served() {
    // The test client is on loopback: served. (A remote peer is refused with 401, which
    // needs a non-loopback address to show; see `authorize`.)
    let s = start(|_| {}).await;
    let (status, _) = api(s.addr, "GET", "/api/rooms", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_api_publish_and_disconnect() {
    let s = start(|_| {}).await;
    let mut watcher = Client::hello(s.addr, "watcher").await;
    watcher.join("idem").await;
    let body = json!({"room": "idem", "data": "once", "id": "k-7"});
    let (sa, a) = api(s.addr, "POST", "/api/publish", Some(body.clone())).await;
    let (sb, b) = api(s.addr, "POST", "/api/publish", Some(body)).await;
    assert_eq!((sa, sb), (200, 200), "{a} {b}");
    let offset = a["results"][0]["offset"].as_u64();
    assert!(offset.is_some(), "{a}");
    assert_eq!(offset, b["results"][0]["offset"].as_u64());
    api(
        s.addr,
        "POST",
        "/api/publish",
        Some(json!({"room": "idem", "data": "next"})),
    )
    .await;
    assert_eq!(watcher.next_of("message").await["data"], "once");
    assert_eq!(
        watcher.next_of("message").await["data"],
        "next",
        "k-7 was delivered once"
    );

    let mut victim = Client::hello(s.addr, "victim").await;
    victim.join("idem").await;
    let mut sse = common::Sse::open(s.addr, "room=idem&client=victim", None).await;
    let (status, v) = api(
        s.addr,
        "POST",
        "/api/disconnect",
        Some(json!({"client": "victim", "reason": "banned"})),
    )
    .await;
    assert_eq!(
        (status, v["disconnected"].as_u64()),
        (200, Some(2)),
        "the socket and the SSE stream"
    );
    let mut code = None;
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(msg) = victim.ws.recv().await {
            if let Ok(roomcast_ws::Message::Close(f)) = msg {
                code = f.map(|f| (f.code.0, f.reason.to_string()));
            }
        }
    })
    .await
    .expect("the disconnected socket closes");
    assert_eq!(code, Some((4003, "banned".to_owned())));
    assert!(sse.ended().await, "the disconnected SSE stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_mistake_is_a_500() {
    let s = start(|c| c.api.key = KEY.into()).await;
    let client = reqwest::Client::new();
    let bodies = [
        "",
        "null",
        "[]",
        "{}",
        "[1,2]",
        "\"x\"",
        "{\"room\":1,\"data\":1}",
        "{\"rooms\":[],\"data\":1}",
        "{\"client\":5}",
        "\u{0}\u{1}",
    ];
    for path in [
        "/api/publish",
        "/api/disconnect",
        "/cmd?session=x",
        "/api/rooms/x/history?since=a:b",
        "/api/rooms/%20/presence",
        "/poll?cursor=@@",
        "/sse?room=%00",
    ] {
        for body in bodies {
            for method in [
                reqwest::Method::GET,
                reqwest::Method::POST,
                reqwest::Method::PUT,
            ] {
                let resp = client
                    .request(method.clone(), format!("http://{}{path}", s.addr))
                    .bearer_auth(KEY)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    resp.status().as_u16() < 500,
                    "{method} {path} {body:?}: {}",
                    resp.status()
                );
            }
        }
    }
}
