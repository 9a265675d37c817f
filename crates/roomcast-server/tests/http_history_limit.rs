//! One rule for a history `limit`, on every transport: 1 to 1000, 100 when absent; a value
//! out of range (or not a number) is `bad_request`, never clamped.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Sse, api, api_publish, exchange, http, start};
use serde_json::{Value, json};

/// A server with 150 messages in room `hl`; returns it and the room's epoch.
async fn with_150_messages() -> (common::TestServer, String) {
    let s = start(|_| {}).await;
    for i in 1..=150 {
        api_publish(s.addr, "hl", json!(i)).await;
    }
    let (_, v) = api(s.addr, "GET", "/api/rooms/hl/history?limit=1", None).await;
    let epoch = v["epoch"].as_str().unwrap().to_owned();
    (s, epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_history_limit_is_1_to_1000_and_100_by_default() {
    let (s, epoch) = with_150_messages().await;
    let get = |query: String| async move {
        api(
            s.addr,
            "GET",
            &format!("/api/rooms/hl/history?{query}"),
            None,
        )
        .await
    };
    for bad in ["0", "1001", "x", "-1", ""] {
        let (status, v) = get(format!("limit={bad}")).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "limit={bad}: {v}"
        );
    }
    let (status, v) = get("limit=1".into()).await;
    assert_eq!((status, common::message_offsets(&v)), (200, vec![1]), "{v}");
    let (status, v) = get("limit=1000".into()).await;
    assert_eq!(
        (status, common::message_offsets(&v)),
        (200, (1..=150).collect()),
        "limit=1000"
    );
    // Absent: the oldest 100, or the first 100 after `since`.
    let (status, v) = get(String::new()).await;
    assert_eq!(
        (status, common::message_offsets(&v)),
        (200, (1..=100).collect()),
        "no limit"
    );
    let (status, v) = get(format!("since={epoch}:10")).await;
    assert_eq!(
        (status, common::message_offsets(&v)),
        (200, (11..=110).collect()),
        "no limit, since 10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmd_history_limit_follows_the_same_rule() {
    let (s, epoch) = with_150_messages().await;
    let mut sse = Sse::open(s.addr, "client=historian", None).await;
    let session = sse.next_of("welcome").await["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = |extra: Value| {
        let url = format!("http://{}/cmd?session={session}", s.addr);
        let mut cmd = json!({"type": "history", "room": "hl", "ref": 1});
        for (k, v) in extra.as_object().unwrap() {
            cmd[k] = v.clone();
        }
        async move {
            let (status, _, text) = exchange(http().post(url).json(&cmd)).await;
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            (status, v)
        }
    };
    for bad in [json!(0), json!(1001), json!("x"), json!(-1), json!(1.5)] {
        let (status, v) = history(json!({ "limit": bad })).await;
        assert_eq!(
            (status, v["type"].as_str(), v["code"].as_str()),
            (400, Some("error"), Some("bad_request")),
            "limit {bad}: {v}"
        );
    }
    let (status, v) = history(json!({"limit": 1})).await;
    assert_eq!((status, common::message_offsets(&v)), (200, vec![1]), "{v}");
    let (status, v) = history(json!({"limit": 1000})).await;
    assert_eq!(
        (status, common::message_offsets(&v)),
        (200, (1..=150).collect()),
        "limit 1000"
    );
    let (status, v) = history(json!({})).await;
    assert_eq!(
        (status, common::message_offsets(&v)),
        (200, (1..=100).collect()),
        "no limit"
    );
    let (status, v) = history(json!({"since": {"epoch": epoch, "offset": 10}})).await;
    assert_eq!(
        (status, common::message_offsets(&v)),
        (200, (11..=110).collect()),
        "no limit, since 10"
    );
}
