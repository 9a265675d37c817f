//! The server HTTP API: auth, answers, refusals, and the OpenAPI document checked against
//! the real responses.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, api, exchange, http, start};
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
    let url = format!("http://{addr}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http().request(method, url);
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let (status, headers, text) = exchange(req).await;
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

/// The schema the document gives the JSON answer of `method path` with `status`
/// (`$ref`s to shared responses followed), as a validator.
fn response_schema(doc: &Value, path: &str, method: &str, status: u16) -> jsonschema::Validator {
    let mut response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path}: {status} is not a documented answer"
    );
    if let Some(r) = response["$ref"].as_str() {
        let name = r.strip_prefix("#/components/responses/").unwrap();
        response = &doc["components"]["responses"][name];
    }
    let mut root = response["content"]["application/json"]["schema"].clone();
    assert!(root.is_object(), "{method} {path} {status}: no JSON schema");
    root["components"] = doc["components"].clone();
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

/// Whether a member list (a presence reply's `members`, a diff's `joined` or `left`)
/// names `client`.
fn names(list: &Value, client: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|m| m["client"] == client))
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

    // Each documented operation is served: a 200 whose body matches that operation's
    // documented answer. (A new operation without a line here fails the test.)
    let concrete: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        (
            "publish",
            "/api/publish",
            Some(r#"{"room":"doc","data":[2]}"#),
            Some(KEY),
        ),
        ("listRooms", "/api/rooms", None, Some(KEY)),
        ("listNodes", "/api/nodes", None, Some(KEY)),
        ("presence", "/api/rooms/doc/presence", None, Some(KEY)),
        (
            "history",
            "/api/rooms/doc/history?limit=10",
            None,
            Some(KEY),
        ),
        (
            "disconnect",
            "/api/disconnect",
            Some(r#"{"client":"nobody"}"#),
            Some(KEY),
        ),
        ("nodeStats", "/api/stats", None, Some(KEY)),
        // Documented without security: served without the key.
        ("openapi", "/api/openapi.json", None, None),
    ];
    let mut served = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            let (_, path, body, key) = concrete
                .iter()
                .find(|c| c.0 == id)
                .unwrap_or_else(|| panic!("no request for the documented {method} {template}"));
            let want_path = template.replace("{room}", "doc");
            assert!(
                path.starts_with(&want_path),
                "{id}: {path} is not {template}"
            );
            let (status, _, v) = call(s.addr, &method.to_uppercase(), path, *body, *key).await;
            assert_eq!(status, 200, "{method} {path}: {v}");
            let validator = response_schema(&doc, template, method, 200);
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{method} {path}: {v} does not match: {errors:?}"
            );
            served.push(id);
        }
    }
    served.sort_unstable();
    let mut all: Vec<&str> = concrete.iter().map(|c| c.0).collect();
    all.sort_unstable();
    assert_eq!(served, all, "every operation documented, every one served");
    // The answers are what they say: the publish above is in the history.
    let (_, _, h) = call(s.addr, "GET", "/api/rooms/doc/history", None, Some(KEY)).await;
    let data: Vec<&Value> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"])
        .collect();
    assert_eq!(data, vec![&json!({"x": 1}), &json!([2])], "{h}");

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

/// An IPv4 address of this machine that is not loopback (eth0's): from `ip`, else the
/// source address the kernel would pick for a remote destination. Fails, rather than
/// letting a test pass without it.
fn non_loopback_address() -> std::net::IpAddr {
    let from_ip = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|a| a.split('/').next()?.parse::<std::net::IpAddr>().ok())
        });
    let from_route = || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect("192.0.2.254:9").ok()?; // no packet is sent
        Some(socket.local_addr().ok()?.ip())
    };
    let ip = from_ip
        .or_else(from_route)
        .expect("this test needs a non-loopback IPv4 address (none in `ip -4 addr`)");
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

/// `GET path` on `ip:port` from that same address: status, headers, JSON.
async fn get_from(
    ip: std::net::IpAddr,
    port: u16,
    path: &str,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let addr = std::net::SocketAddr::new(ip, port);
    call(addr, "GET", path, None, key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_only_loopback_is_served() {
    let ip = non_loopback_address();
    let s = start(|c| c.server.listen = "0.0.0.0:0".parse().unwrap()).await;
    let port = s.addr.port();
    // From loopback: served.
    let (status, _, v) = get_from("127.0.0.1".parse().unwrap(), port, "/api/rooms", None).await;
    assert_eq!(status, 200, "{v}");
    // From eth0's address (the peer the server sees is that address): refused.
    let (status, headers, v) = get_from(ip, port, "/api/rooms", None).await;
    assert_eq!(status, 401, "from {ip}: {v}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    // Every API request, not only this one; a publish leaves no trace.
    let (status, _, _) = call(
        std::net::SocketAddr::new(ip, port),
        "POST",
        "/api/publish",
        Some(r#"{"room":"remote","data":1}"#),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (_, _, v) = get_from("127.0.0.1".parse().unwrap(), port, "/api/rooms", None).await;
    assert_eq!(v["rooms"], json!([]), "the refused publish created nothing");
    // The address itself is reachable: it is the API that refuses it.
    let (status, _, body) = exchange(http().get(format!("http://{ip}:{port}/healthz"))).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_any_address_is_served_with_it() {
    let ip = non_loopback_address();
    let s = start(|c| {
        c.server.listen = "0.0.0.0:0".parse().unwrap();
        c.api.key = KEY.into();
    })
    .await;
    let port = s.addr.port();
    let (status, _, v) = get_from(ip, port, "/api/rooms", Some(KEY)).await;
    assert_eq!(status, 200, "from {ip} with the key: {v}");
    for (from, key) in [
        (ip, None),
        (ip, Some("wrong")),
        ("127.0.0.1".parse().unwrap(), None),
    ] {
        let (status, headers, v) = get_from(from, port, "/api/rooms", key).await;
        assert_eq!(status, 401, "from {from} with {key:?}: {v}");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_defaults_to_api() {
    let s = start(|_| {}).await;
    let mut member = Client::hello(s.addr, "reader").await;
    member.join("fromless").await;
    let (status, v) = api(
        s.addr,
        "POST",
        "/api/publish",
        Some(json!({"room": "fromless", "data": "hi"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let m = member.next_of("message").await;
    assert_eq!(
        (m["from"].clone(), m["data"].clone()),
        (json!("api"), json!("hi"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_names_1_to_100_rooms() {
    let s = start(|_| {}).await;
    let names = |n: usize| (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>();
    for rooms in [names(0), names(101)] {
        let (status, v) = api(
            s.addr,
            "POST",
            "/api/publish",
            Some(json!({"rooms": rooms, "data": 1})),
        )
        .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{} rooms: {v}",
            rooms.len()
        );
    }
    let (_, v) = api(s.addr, "GET", "/api/rooms", None).await;
    assert_eq!(v["rooms"], json!([]), "a refused publish creates no room");
    let (status, v) = api(
        s.addr,
        "POST",
        "/api/publish",
        Some(json!({"rooms": names(100), "data": 1})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    let mut got: Vec<(String, u64)> = results
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_owned(),
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, u64)> = names(100).into_iter().map(|r| (r, 1)).collect();
    want.sort();
    assert_eq!(got, want, "each of the 100 rooms has it, at offset 1");
}

/// The methods `/api/openapi.json` documents for a path, uppercased and sorted.
fn documented_methods(doc: &Value, path: &str) -> Vec<String> {
    let mut m: Vec<String> = doc["paths"][path]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.to_uppercase())
        .collect();
    m.sort();
    m
}

/// The methods an `allow` header names, sorted.
fn allowed(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    let mut m: Vec<String> = headers
        .get("allow")
        .expect("a 405 names the allowed methods")
        .to_str()
        .unwrap()
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect();
    m.sort();
    m
}

/// Every other method on `template` (with `{room}` filled in) is a 405 naming the
/// documented methods in `allow`.
async fn check_wrong_methods(s: &common::TestServer, doc: &Value, template: &str) {
    let want = documented_methods(doc, template);
    let path = template.replace("{room}", "doc");
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        if want.iter().any(|m| m == method) {
            continue;
        }
        let (status, headers, v) = call(s.addr, method, &path, Some("{}"), Some(KEY)).await;
        assert_eq!(status, 405, "{method} {path}: {v}");
        assert_eq!(allowed(&headers), want, "{method} {path}");
        check(doc, "Error", &v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_405_with_the_allowed_ones() {
    let s = start(|c| c.api.key = KEY.into()).await;
    let (_, _, doc) = call(s.addr, "GET", "/api/openapi.json", None, None).await;
    for template in doc["paths"].as_object().unwrap().keys() {
        if template != "/api/openapi.json" {
            check_wrong_methods(&s, &doc, template).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_on_the_openapi_document_is_405() {
    let s = start(|c| c.api.key = KEY.into()).await;
    let (_, _, doc) = call(s.addr, "GET", "/api/openapi.json", None, None).await;
    check_wrong_methods(&s, &doc, "/api/openapi.json").await;
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
                let (status, _, text) = exchange(
                    http()
                        .request(method.clone(), format!("http://{}{path}", s.addr))
                        .bearer_auth(KEY)
                        .body(body),
                )
                .await;
                assert!(status < 500, "{method} {path} {body:?}: {status} {text}");
            }
        }
    }
}

/// The close code and reason `c` gets, reading until the connection ends (bounded).
async fn close_of(c: &mut Client, who: &str) -> Option<(u16, String)> {
    let mut code = None;
    common::within(
        &format!("{who}'s connection to close"),
        common::EVENT_TIMEOUT,
        async {
            while let Some(msg) = c.ws.recv().await {
                if let Ok(roomcast_ws::Message::Close(f)) = msg {
                    code = f.map(|f| (f.code.0, f.reason.to_string()));
                }
            }
        },
    )
    .await;
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_with_the_given_code_and_ends_every_session() {
    let s = start(|_| {}).await;
    let mut watcher = Client::hello(s.addr, "watcher").await;
    watcher
        .request(json!({"type": "join", "room": "dc", "presence": {}}))
        .await;
    // Client v: two sockets (the server has two workers), an SSE stream, a poll session,
    // all visible in the room.
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut c = Client::hello(s.addr, "v").await;
        let j = c
            .request(json!({"type": "join", "room": "dc", "presence": {}}))
            .await;
        assert_eq!(j["type"], "joined", "{j}");
        sockets.push(c);
    }
    let mut sse = common::Sse::open(s.addr, "room=dc&client=v&presence=%7B%7D", None).await;
    sse.next_of("joined").await;
    let (status, poll) = common::get_json_status(format!(
        "http://{}/poll?room=dc&client=v&presence=%7B%7D&timeout_ms=100",
        s.addr
    ))
    .await;
    assert_eq!(status, 200, "{poll}");
    // v is seen (a diff in a batch of its own: a disconnect within the batch of the
    // joins would cancel them out, and no `left` would come).
    while !names(&watcher.next_of("presence_diff").await["joined"], "v") {}
    let (_, p) = api(s.addr, "GET", "/api/rooms/dc/presence", None).await;
    assert!(names(&p["members"], "v"), "{p}");

    // Codes outside 1000 and 4000-4999 are refused, and disconnect nobody.
    for code in [0, 999, 1001, 1006, 1011, 2999, 3000, 3999, 5000] {
        let (status, v) = api(
            s.addr,
            "POST",
            "/api/disconnect",
            Some(json!({"client": "v", "code": code})),
        )
        .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{code}: {v}"
        );
    }
    for c in &mut sockets {
        assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
    }

    let (status, v) = api(
        s.addr,
        "POST",
        "/api/disconnect",
        Some(json!({"client": "v", "code": 4100, "reason": "moved"})),
    )
    .await;
    assert_eq!((status, v["disconnected"].as_u64()), (200, Some(4)), "{v}");
    for (i, c) in sockets.iter_mut().enumerate() {
        assert_eq!(
            close_of(c, &format!("socket {i}")).await,
            Some((4100, "moved".to_owned()))
        );
    }
    assert!(sse.ended().await, "the SSE stream ends");
    // Every session of v is gone: its presence ends, the poll session's too.
    while !names(&watcher.next_of("presence_diff").await["left"], "v") {}
    let (_, p) = api(s.addr, "GET", "/api/rooms/dc/presence", None).await;
    assert_eq!(
        p["members"],
        json!([{"client": "watcher", "info": {}}]),
        "{p}"
    );
    // Nobody left to disconnect.
    let (_, v) = api(
        s.addr,
        "POST",
        "/api/disconnect",
        Some(json!({"client": "v"})),
    )
    .await;
    assert_eq!(v["disconnected"], 0, "{v}");

    // 1000 is allowed too; another client is not touched.
    let mut normal = Client::hello(s.addr, "normal").await;
    let (status, v) = api(
        s.addr,
        "POST",
        "/api/disconnect",
        Some(json!({"client": "normal", "code": 1000})),
    )
    .await;
    assert_eq!((status, v["disconnected"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(
        close_of(&mut normal, "normal").await.map(|c| c.0),
        Some(1000)
    );
    assert_eq!(
        watcher.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_lists_every_room_with_members_or_history_sorted_by_name() {
    let s = start(|_| {}).await;
    // Created in an order that is not the names' order.
    let mut m1 = Client::hello(s.addr, "m1").await;
    let both = m1
        .request(json!({"type": "join", "room": "c-both", "presence": {}}))
        .await;
    m1.publish("c-both", json!(1)).await;
    m1.publish("c-both", json!(2)).await;
    let mut m2 = Client::hello(s.addr, "m2").await;
    m2.join("c-both").await;
    for n in 0..3 {
        common::api_publish(s.addr, "a-history", json!(n)).await;
    }
    let mut m3 = Client::hello(s.addr, "m3").await;
    let members_only = m3.join("b-members").await;
    let (status, v) = api(s.addr, "GET", "/api/rooms", None).await;
    assert_eq!(status, 200, "{v}");
    let (_, h) = api(s.addr, "GET", "/api/rooms/a-history/history", None).await;
    let row = |room: &str, epoch: &Value, last: u64, members: u64, visible: u64| json!({"room": room, "epoch": epoch, "last_offset": last, "members": members, "visible": visible});
    assert_eq!(
        v,
        json!({"rooms": [
            row("a-history", &h["epoch"], 3, 0, 0),
            row("b-members", &members_only["epoch"], 0, 1, 0),
            row("c-both", &both["epoch"], 2, 2, 1),
        ]}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_scopes_allow_only_their_endpoints_and_publish_as_themselves() {
    const BACKEND: &str = "backend-secret-0123456789";
    const READER: &str = "reader-secret-0123456789";
    const OPS: &str = "ops-secret-0123456789abc";
    let s = start(|c| {
        c.api.key = KEY.into();
        c.api.keys = vec![
            format!("backend:publish:{BACKEND}"),
            format!("reader:read:{READER}"),
            format!("ops:disconnect+read:{OPS}"),
        ];
    })
    .await;
    let base = format!("http://{}", s.addr);
    let call = |key: &'static str, method: &'static str, path: &'static str, body: Value| {
        let url = format!("{base}{path}");
        async move {
            let req = match method {
                "GET" => http().get(url),
                _ => http().post(url).json(&body),
            };
            let (status, _, body) = exchange(req.bearer_auth(key)).await;
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    let mut member = Client::hello(s.addr, "watcher").await;
    member.join("scoped").await;
    let publish = json!({"room": "scoped", "data": 1, "from": "someone-else"});
    let disconnect = json!({"client": "nobody"});
    for (key, method, path, body, want) in [
        (BACKEND, "POST", "/api/publish", publish.clone(), 200),
        (BACKEND, "GET", "/api/rooms", Value::Null, 403),
        (BACKEND, "POST", "/api/disconnect", disconnect.clone(), 403),
        (READER, "GET", "/api/rooms", Value::Null, 200),
        (READER, "GET", "/api/rooms/scoped/history", Value::Null, 200),
        (READER, "POST", "/api/publish", publish.clone(), 403),
        (OPS, "POST", "/api/disconnect", disconnect.clone(), 200),
        (OPS, "GET", "/api/nodes", Value::Null, 200),
        (OPS, "POST", "/api/publish", publish.clone(), 403),
        (
            "not-a-key-at-all-000000",
            "GET",
            "/api/rooms",
            Value::Null,
            401,
        ),
    ] {
        let (status, v) = call(key, method, path, body).await;
        assert_eq!(status, want, "{key} {method} {path}: {v}");
        if want == 403 {
            assert_eq!(v["error"]["code"], "forbidden");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("scope"),
                "{v}"
            );
        }
    }
    // A key without `admin` publishes as itself; api.key (admin) as `from` says.
    let m = member.next_of("message").await;
    assert_eq!(m["from"], "backend", "{m}");
    let (status, _) = call(KEY, "POST", "/api/publish", publish).await;
    assert_eq!(status, 200);
    assert_eq!(member.next_of("message").await["from"], "someone-else");
}

#[test]
fn malformed_api_keys_are_configuration_errors() {
    for keys in [
        "nocolons",
        "name:publish",
        "name:write:0123456789abcdef",
        "bad name:read:0123456789abcdef",
        "short:read:tooshort",
        "a:read:0123456789abcdef,a:publish:0123456789abcdef",
    ] {
        let err = roomcast_server::Config::load(None, [], &[format!("api.keys={keys}")])
            .expect_err(keys)
            .to_string();
        assert!(err.contains("api.keys"), "{keys}: {err}");
    }
    let ok = roomcast_server::Config::load(
        None,
        [(
            "ROOMCAST_API_KEYS".to_owned(),
            "a:read+publish:0123456789abcdef, b:admin:fedcba9876543210".to_owned(),
        )],
        &[],
    )
    .unwrap();
    assert_eq!(ok.api.keys.len(), 2);
}
