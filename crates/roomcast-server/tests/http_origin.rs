//! Browsers from other origins: WebSocket handshakes checked against the server's own
//! origin and `server.allowed_origins`, CORS for SSE, poll, `/cmd` and `/api` (preflight
//! included), and a cross-origin `/cmd` a browser would send without asking never run.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, exchange, http, raw_exchange, start, upgrade_head};
use serde_json::json;

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn websocket_handshakes_from_other_origins_are_refused() {
    let s = start(|c| {
        c.server.allowed_origins =
            vec!["https://*.example.com".into(), "http://localhost:*".into()];
    })
    .await;
    let host = s.addr.to_string();
    let own = format!("http://{host}");
    for (path, origin, want) in [
        ("/ws", None, 101),
        ("/ws", Some(own.as_str()), 101),
        ("/ws", Some("https://app.example.com"), 101),
        ("/rooms/a", Some("http://localhost:5173"), 101),
        ("/ws", Some("https://evil.example"), 403),
        ("/rooms/a", Some("https://example.com.evil.net"), 403),
        ("/ws", Some("null"), 403),
    ] {
        let origin_line = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        let (status, resp, _) = upgrade_head(s.addr, path, &origin_line).await;
        assert_eq!(status, want, "{path} from {origin:?}: {resp}");
        if want == 403 {
            assert!(resp.contains("not allowed"), "{resp}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_for_allowed_origins_and_nothing_runs_for_the_others() {
    let s = start(|c| c.server.allowed_origins = vec!["https://app.example.com".into()]).await;
    let base = format!("http://{}", s.addr);
    // A preflight from an allowed origin: 204 with what it may send.
    let (st, headers, _) = exchange(
        http()
            .request(reqwest::Method::OPTIONS, format!("{base}/cmd?session=x"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type"),
    )
    .await;
    assert_eq!(st, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    // The same preflight for SSE and the API (a bearer token is a non-simple header).
    for path in ["/sse?room=cors", "/api/publish"] {
        let (st, headers, _) = exchange(
            http()
                .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
                .header("origin", "https://app.example.com")
                .header(
                    "access-control-request-method",
                    if path.starts_with("/api") {
                        "POST"
                    } else {
                        "GET"
                    },
                )
                .header("access-control-request-headers", "authorization"),
        )
        .await;
        assert_eq!(st, 204, "{path}");
        assert_eq!(
            headers["access-control-allow-origin"], "https://app.example.com",
            "{path}"
        );
        assert!(
            headers["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("authorization"),
            "{path}"
        );
    }
    // ...and from another: 403, no CORS headers.
    let (st, headers, _) = exchange(
        http()
            .request(reqwest::Method::OPTIONS, format!("{base}/poll"))
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(st, 403);
    assert!(headers.get("access-control-allow-origin").is_none());
    // A poll from the allowed origin carries the header.
    let (st, headers, body) = exchange(
        http()
            .get(format!("{base}/poll?room=cors&timeout_ms=0"))
            .header("origin", "https://app.example.com"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let session = serde_json::from_str::<serde_json::Value>(&body).unwrap()["session"]
        .as_str()
        .unwrap()
        .to_owned();
    // A "simple" cross-origin POST (text/plain: no preflight) from another origin must
    // not run: nothing is published.
    let mut watcher = Client::hello(s.addr, "watcher").await;
    watcher.join("cors").await;
    let cmd = json!([{"type":"publish","room":"cors","data":"from evil","ref":1}]).to_string();
    let (st, _, body) = exchange(
        http()
            .post(format!("{base}/cmd?session={session}"))
            .header("origin", "https://evil.example")
            .header("content-type", "text/plain")
            .body(cmd.clone()),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    // The same from the allowed origin runs, and is the first message the watcher gets.
    let (st, _, body) = exchange(
        http()
            .post(format!("{base}/cmd?session={session}"))
            .header("origin", "https://app.example.com")
            .header("content-type", "text/plain")
            .body(cmd.replace("from evil", "from app")),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let m = watcher.next_of("message").await;
    assert_eq!(m["data"], "from app", "the refused command ran: {m}");
    // The API too.
    let resp = raw_exchange(
        s.addr,
        format!(
            "GET /api/rooms HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n",
            s.addr
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 403, "{resp}");
}
