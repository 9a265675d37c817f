//! permessage-deflate on `/ws` rooms: who gets a room's messages compressed, how, and
//! that every member reads exactly what an uncompressed member reads.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{RawClient, api_publish, start};
use roomcast_server::Stats;
use roomcast_ws::OpCode;
use roomcast_ws::deflate::{DeflateConfig, Inflater, offer};
use roomcast_ws::handshake::{ClientOptions, ExtensionOffer};
use serde_json::{Value, json};

/// A member on a raw socket that may have offered permessage-deflate: it reads every
/// frame's header, so a test sees which came compressed and what their bytes were.
struct Member {
    raw: RawClient,
    inflater: Option<Inflater>,
}

/// One text frame as it came: compressed or not, its payload on the wire, its text.
struct Received {
    compressed: bool,
    wire: Vec<u8>,
    text: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap()
    }
}

impl Member {
    /// Connects to `/ws`, offering `deflate` when given, and says hello.
    async fn open(addr: SocketAddr, client: &str, deflate: Option<&DeflateConfig>) -> Self {
        let options = ClientOptions {
            extensions: deflate.map(offer).into_iter().collect(),
            ..ClientOptions::default()
        };
        let raw = RawClient::connect_with_options(addr, "/ws", None, &options).await;
        let inflater = raw.extensions.first().map(|answer| {
            let params = roomcast_ws::deflate::accepted(answer, deflate.unwrap()).unwrap();
            Inflater::new(
                params.server_max_window_bits,
                params.server_no_context_takeover,
            )
        });
        let mut m = Member { raw, inflater };
        m.send(json!({"type": "hello", "client": client})).await;
        assert_eq!(m.recv().await.json()["type"], "welcome");
        m
    }

    fn answer(&self) -> &ExtensionOffer {
        self.raw
            .extensions
            .first()
            .expect("permessage-deflate taken")
    }

    async fn send(&mut self, v: Value) {
        self.raw.send_frame(0x81, v.to_string().as_bytes()).await;
    }

    /// The next text frame, inflated when it came compressed.
    async fn recv(&mut self) -> Received {
        let (header, wire) = self.raw.next_frame_with_header().await.expect("a frame");
        assert_eq!(header.opcode, OpCode::Text, "{header:?}");
        assert!(header.fin, "the server sends messages whole");
        let compressed = header.rsv & 0b100 != 0;
        let text = if compressed {
            let inflater = self
                .inflater
                .as_mut()
                .expect("RSV1 only where permessage-deflate was agreed");
            let mut out = Vec::new();
            inflater.inflate(&wire, true, 1 << 24, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        } else {
            String::from_utf8(wire.clone()).unwrap()
        };
        Received {
            compressed,
            wire,
            text,
        }
    }

    /// Joins `room` (with `since` when given) and returns the `joined` reply.
    async fn join(&mut self, room: &str, since: Option<Value>) -> Value {
        let mut req = json!({"type": "join", "room": room, "ref": 1});
        if let Some(since) = since {
            req["since"] = since;
        }
        self.send(req).await;
        let joined = self.recv().await.json();
        assert_eq!(joined["type"], "joined", "{joined}");
        joined
    }
}

/// A chat-like message body of about `n` bytes: repetitive JSON, as chat and feeds are.
fn chat(n: usize, i: usize) -> Value {
    let line = format!("message {i} from the lobby, about the weather and the match; ");
    json!({"user": "alice", "i": i, "text": line.repeat(n / line.len() + 1)})
}

/// No context takeover (the default): members with the same window read the same
/// compressed bytes, a member with a smaller window gets its own, a member without the
/// extension gets the frame as it is, and all read the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_message_is_compressed_once_and_read_by_every_member_alike() {
    let s = start(|c| {
        // One worker: every member is in its one fan-out.
        c.server.workers = 1;
        c.websocket.compression = true;
        c.websocket.compression_threshold = 256;
    })
    .await;
    let deflate = DeflateConfig::default();
    let small_window = DeflateConfig::default().request_peer_max_window_bits(Some(10));
    let mut a = Member::open(s.addr, "a", Some(&deflate)).await;
    let mut b = Member::open(s.addr, "b", Some(&deflate)).await;
    let mut c = Member::open(s.addr, "c", Some(&small_window)).await;
    let mut plain = Member::open(s.addr, "plain", None).await;
    // The node answers that it resets its compressor after every message, and asks the
    // client to do the same.
    for m in [&a, &b, &c] {
        for param in ["server_no_context_takeover", "client_no_context_takeover"] {
            assert!(
                m.answer().param(param).is_some(),
                "{param}: {:?}",
                m.answer()
            );
        }
    }
    assert_eq!(c.answer().param("server_max_window_bits"), Some(Some("10")));
    for m in [&mut a, &mut b, &mut c, &mut plain] {
        m.join("lobby", None).await;
    }
    for i in 0..3 {
        api_publish(s.addr, "lobby", chat(2000, i)).await;
        let pa = a.recv().await;
        let pb = b.recv().await;
        let pc = c.recv().await;
        let pp = plain.recv().await;
        assert!(pa.compressed && pb.compressed && pc.compressed);
        assert!(!pp.compressed);
        assert_eq!(pp.json()["data"], chat(2000, i));
        for got in [&pa, &pb, &pc] {
            assert_eq!(got.text, pp.text, "every member reads the same frame");
        }
        assert_eq!(pa.wire, pb.wire, "one compression for the same window");
        assert!(
            pa.wire.len() * 4 < pp.wire.len(),
            "{} of {} bytes",
            pa.wire.len(),
            pp.wire.len()
        );
        assert!(pc.wire.len() * 4 < pp.wire.len());
    }
    // A message under the threshold goes as it is, even to members that compress.
    api_publish(s.addr, "lobby", json!("hi")).await;
    for m in [&mut a, &mut b, &mut c, &mut plain] {
        let got = m.recv().await;
        assert!(!got.compressed, "{}", got.text);
        assert_eq!(got.json()["data"], "hi");
    }
    // Each of the 3 was compressed twice (15 and 10 bits) for 3 members.
    assert_eq!(Stats::get(&s.stats.compressions), 6);
    assert_eq!(Stats::get(&s.stats.compressed_frames), 9);
}

/// With `compression_context_takeover` a member keeps its own window across messages
/// (a repeated message costs a few bytes), a member that asked for no context takeover
/// in the same room still gets each message compressed on its own, and a member whose
/// compressor was given back after a quiet spell reads on without a break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_takeover_is_per_member_and_survives_giving_the_window_back() {
    let s = start(|c| {
        c.websocket.compression = true;
        c.websocket.compression_threshold = 256;
        c.websocket.compression_context_takeover = true;
        c.websocket.compression_idle_release_ms = 200;
    })
    .await;
    let with_context = DeflateConfig::default();
    let without = DeflateConfig::default().request_peer_no_context_takeover(true);
    let mut keeps = Member::open(s.addr, "keeps", Some(&with_context)).await;
    let mut resets = Member::open(s.addr, "resets", Some(&without)).await;
    assert_eq!(
        keeps.answer().param("server_no_context_takeover"),
        None,
        "{:?}",
        keeps.answer()
    );
    assert!(
        resets
            .answer()
            .param("server_no_context_takeover")
            .is_some()
    );
    keeps.join("feed", None).await;
    resets.join("feed", None).await;
    let body = chat(2000, 7);
    let mut sizes = Vec::new();
    for round in 0..2 {
        api_publish(s.addr, "feed", body.clone()).await;
        let k = keeps.recv().await;
        let r = resets.recv().await;
        assert!(k.compressed && r.compressed, "round {round}");
        assert_eq!(k.json()["data"], body);
        assert_eq!(r.text, k.text);
        sizes.push((k.wire.len(), r.wire.len()));
    }
    // One compression each: the shared one (for `resets`) and `keeps`'s own.
    assert_eq!(Stats::get(&s.stats.compressions), 4);
    assert_eq!(Stats::get(&s.stats.compressed_frames), 4);
    let [(k1, r1), (k2, r2)] = sizes[..] else {
        unreachable!()
    };
    // The second copy refers back to the first in the kept window: far smaller. The
    // member without context pays the same twice.
    assert!(k2 * 3 < k1, "kept window: {k1} then {k2} bytes");
    assert!(r2 * 10 > r1 * 9, "reset window: {r1} then {r2} bytes");
    // Quiet past the release time: the node gives the window back, so the next copy
    // starts from an empty window (the size of a first copy), and it still reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api_publish(s.addr, "feed", body.clone()).await;
    let k3 = keeps.recv().await;
    assert!(k3.compressed);
    assert_eq!(k3.json()["data"], body);
    assert!(
        k3.wire.len() * 10 > k1 * 9,
        "after the release: {} bytes, first copy {k1}",
        k3.wire.len()
    );
    let _ = resets.recv().await;
    // And with the window kept again, a repeat is small again.
    api_publish(s.addr, "feed", body.clone()).await;
    let k4 = keeps.recv().await;
    assert_eq!(k4.json()["data"], body);
    assert!(k4.wire.len() * 3 < k1, "{} bytes", k4.wire.len());
}

/// The messages a rejoin with `since` recovers come compressed like live ones, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_messages_come_compressed_and_in_order() {
    let s = start(|c| {
        c.websocket.compression = true;
        c.websocket.compression_threshold = 256;
    })
    .await;
    let deflate = DeflateConfig::default();
    let mut m = Member::open(s.addr, "back", Some(&deflate)).await;
    let joined = m.join("history", None).await;
    let since = json!({"epoch": joined["epoch"], "offset": joined["offset"]});
    m.send(json!({"type": "leave", "room": "history"})).await;
    assert_eq!(m.recv().await.json()["type"], "left");
    for i in 0..20 {
        api_publish(s.addr, "history", chat(1000, i)).await;
    }
    let rejoined = m.join("history", Some(since)).await;
    assert_eq!(rejoined["recovered"], true, "{rejoined}");
    for i in 0..20 {
        let got = m.recv().await;
        assert!(got.compressed, "recovered message {i}");
        let v = got.json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["offset"], i + 1);
        assert_eq!(v["data"], chat(1000, i as usize));
    }
}
