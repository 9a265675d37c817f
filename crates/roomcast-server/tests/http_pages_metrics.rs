//! What a browser and a scraper get: the demo at `/`, the client bundle at
//! `/roomcast.js` (the committed build, byte for byte), `/admin`; and the node's counters
//! at `/metrics` (Prometheus text) and `/api/stats` (JSON), which follow a known scenario
//! and are guarded like the admin API.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, Sse, api, exchange, http, start};
use serde_json::json;

#[tokio::test]
async fn the_pages_and_the_bundle_are_served() {
    let s = start(|_| {}).await;
    let base = format!("http://{}", s.addr);
    let (st, h, body) = exchange(http().get(format!("{base}/"))).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert!(body.contains("<script src=\"/roomcast.js\">"), "{body}");
    let (st, h, body) = exchange(http().get(format!("{base}/roomcast.js"))).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    let built = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../clients/js/dist/roomcast.js"
    ))
    .unwrap();
    assert_eq!(body, built, "the served bundle is the committed one");
    let (st, _, body) = exchange(http().get(format!("{base}/admin"))).await;
    assert_eq!(st, 200);
    assert!(body.contains("/api/stats"));
    let (st, h, _) = exchange(http().post(format!("{base}/"))).await;
    assert_eq!(st, 405);
    assert_eq!(h["allow"], "GET, HEAD");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_stats_count_a_known_scenario() {
    let s = start(|_| {}).await;
    let base = format!("http://{}", s.addr);
    let mut a = Client::hello(s.addr, "alice").await;
    let mut b = Client::hello(s.addr, "bob").await;
    a.join("m").await;
    b.join("m").await;
    let _sse = Sse::open(s.addr, "room=m&client=carol", None).await;
    for i in 0..5 {
        a.publish("m", json!(i)).await;
    }
    // Two errors the server answers: a publish outside the room, an unknown type.
    let e = a
        .request(json!({"type":"publish","room":"x","data":1}))
        .await;
    assert_eq!(e["code"], "not_joined");
    let e = a.request(json!({"type":"nonsense"})).await;
    assert_eq!(e["code"], "unknown_type");
    for _ in 0..5 {
        b.next_of("message").await;
    }
    let (st, stats) = api(s.addr, "GET", "/api/stats", None).await;
    assert_eq!(st, 200, "{stats}");
    assert_eq!(stats["connections"]["websocket"], 2);
    assert_eq!(stats["connections"]["sse"], 1);
    assert_eq!(stats["connections"]["poll"], 0);
    assert_eq!(stats["published"], 5);
    // alice, bob and carol each get each message once.
    assert_eq!(stats["deliveries"], 15);
    assert_eq!(stats["handshakes"], 2);
    assert_eq!(stats["errors"]["not_joined"], 1);
    assert_eq!(stats["errors"]["unknown_type"], 1);
    assert_eq!(stats["broker"], "memory");

    // Bytes are folded in by each worker's sweeper, about once a second.
    let mut stats = stats;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // At least the five messages' frames go out to each of the two sockets: wait for
    // the count to pass that (a sweep may fold in part of it first).
    let floor = 5 * 2 * 40;
    while stats["bytes_out"].as_u64().unwrap() <= floor || stats["bytes_in"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no bytes counted: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stats = api(s.addr, "GET", "/api/stats", None).await.1;
    }
    assert_eq!(stats["outbox_bytes"], 0, "everything was read: {stats}");

    let (st, h, text) = exchange(http().get(format!("{base}/metrics"))).await;
    assert_eq!(st, 200);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        metric(&text, "roomcast_connections{transport=\"websocket\"}"),
        2.0
    );
    assert_eq!(metric(&text, "roomcast_messages_published_total"), 5.0);
    assert_eq!(metric(&text, "roomcast_deliveries_total"), 15.0);
    assert_eq!(
        metric(&text, "roomcast_errors_total{code=\"not_joined\"}"),
        1.0
    );
    // However the members spread over the workers, the batches add up to the deliveries.
    assert_eq!(metric(&text, "roomcast_fan_out_batch_members_sum"), 15.0);
    assert!(text.contains("# HELP roomcast_rooms "));
    assert!(metric(&text, "roomcast_bytes_total{direction=\"out\"}") > 400.0);
    assert_eq!(metric(&text, "roomcast_publish_seconds_count"), 5.0);
}

#[tokio::test]
async fn metrics_need_the_admin_scope_once_keys_exist_and_can_be_off() {
    let s = start(|c| {
        c.api.keys = vec![
            "ops:admin:0123456789abcdef0123".into(),
            "app:publish:fedcba9876543210fedc".into(),
        ];
    })
    .await;
    let base = format!("http://{}", s.addr);
    for path in ["/metrics", "/api/stats"] {
        let (st, _, _) = exchange(http().get(format!("{base}{path}"))).await;
        assert_eq!(st, 401, "{path} without a key");
        let (st, _, _) = exchange(
            http()
                .get(format!("{base}{path}"))
                .bearer_auth("fedcba9876543210fedc"),
        )
        .await;
        assert_eq!(st, 403, "{path} with a publish key");
        let (st, _, _) = exchange(
            http()
                .get(format!("{base}{path}"))
                .bearer_auth("0123456789abcdef0123"),
        )
        .await;
        assert_eq!(st, 200, "{path} with the admin key");
    }
    let off = start(|c| c.metrics.enabled = false).await;
    let (st, _, _) = exchange(http().get(format!("http://{}/metrics", off.addr))).await;
    assert_eq!(st, 404);
}

/// Every metric `/metrics` exports has its row in docs/protocol.md's table (under the
/// name a query uses: counters with `_total`), and every row names a metric that exists.
#[tokio::test]
async fn every_metric_is_documented_and_every_documented_one_exported() {
    let s = start(|_| {}).await;
    let (status, _, text) =
        common::exchange(common::http().get(format!("http://{}/metrics", s.addr))).await;
    assert_eq!(status, 200, "{text}");
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .unwrap();
    // `# TYPE name kind`: the name a query uses is name_total for a counter.
    let exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next()?, parts.next()?);
            Some(if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            })
        })
        .collect();
    assert!(exported.len() >= 10, "{text}");
    let documented: std::collections::BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("| `roomcast_"))
        .filter_map(|l| {
            let end = l.find(['`', '{'])?;
            Some(format!("roomcast_{}", &l[..end]))
        })
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "exported, not in docs/protocol.md: {undocumented:?}; documented, not exported: {missing:?}"
    );
}
