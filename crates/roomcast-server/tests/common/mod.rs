//! An in-process server on a free port, and a raw TCP client that can break the rules.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use roomcast_server::{Config, Server, ShutdownHandle};
use roomcast_ws::frame::{FrameHeader, apply_mask};
use roomcast_ws::handshake::{ClientHandshake, ClientOptions};
use roomcast_ws::{FrameDecoder, OpCode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: ShutdownHandle,
    pub stats: std::sync::Arc<roomcast_server::Stats>,
}

pub async fn start(config: impl FnOnce(&mut Config)) -> TestServer {
    // RUST_LOG=roomcast_server=debug shows the server's logs in a failing test.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.echo = true;
    c.server.workers = 2;
    config(&mut c);
    let server = Server::bind(c).unwrap();
    let addr = server.local_addr().unwrap();
    let stop = server.shutdown_handle();
    let stats = server.stats();
    tokio::spawn(server.run());
    TestServer { addr, stop, stats }
}

/// Sends raw bytes and returns the response: everything until the server closes, or
/// until a whole response (head and `content-length` body) has arrived, or 5 s.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if response_complete(&out) {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        })
        .and_then(Result::ok);
    length.is_some_and(|n| body.len() >= n)
}

/// A WebSocket client on a raw socket: frames are built by hand.
pub struct RawClient {
    pub stream: TcpStream,
    decoder: FrameDecoder,
    buf: BytesMut,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        Self::connect_with_receive_buffer(addr, path, None).await
    }

    /// Connects with `SO_RCVBUF` set first: a small one makes a slow reader.
    pub async fn connect_with_receive_buffer(
        addr: SocketAddr,
        path: &str,
        rcvbuf: Option<u32>,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(addr).await.unwrap();
        let (hs, request) =
            ClientHandshake::new(&addr.to_string(), path, &ClientOptions::default());
        stream.write_all(&request).await.unwrap();
        let mut buf = BytesMut::new();
        loop {
            if let Some((_, n)) = hs.parse_response(&buf).unwrap() {
                let _ = buf.split_to(n);
                break;
            }
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "closed during the handshake"
            );
        }
        Self {
            stream,
            decoder: FrameDecoder::new(Role::Client, 64 << 20),
            buf,
        }
    }

    /// Sends one masked frame; `b0` is the first header byte (FIN, RSV, opcode).
    pub async fn send_frame(&mut self, b0: u8, payload: &[u8]) {
        self.stream
            .write_all(&masked_frame(b0, payload))
            .await
            .unwrap();
    }

    /// The next frame from the server: opcode and payload; `None` at EOF.
    pub async fn next_frame(&mut self) -> Option<(OpCode, Vec<u8>)> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some((f.header.opcode, f.payload.to_vec()));
            }
            let n =
                tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("no frame within 5 s")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Expects a close frame with `code`, then the server closing the TCP connection.
    pub async fn expect_close(&mut self, code: u16) -> String {
        let (op, payload) = self.next_frame().await.expect("a close frame");
        assert_eq!(op, OpCode::Close, "payload {payload:?}");
        assert!(payload.len() >= 2, "close without a code");
        assert_eq!(
            u16::from_be_bytes([payload[0], payload[1]]),
            code,
            "reason: {}",
            String::from_utf8_lossy(&payload[2..])
        );
        assert_eq!(
            self.next_frame().await,
            None,
            "the server must close the TCP connection"
        );
        String::from_utf8_lossy(&payload[2..]).into_owned()
    }
}

pub fn masked_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut head = [0u8; FrameHeader::MAX_SIZE];
    let header = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 7,
        opcode: OpCode::from_bits(b0 & 0xf).unwrap(),
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let n = header.write(&mut head);
    let mut out = head[..n].to_vec();
    let mut body = payload.to_vec();
    apply_mask(&mut body, key, 0);
    out.extend_from_slice(&body);
    out
}

/// A `/ws` protocol client for tests, on our own driver.
pub struct Client {
    pub ws: roomcast_ws::tokio::WebSocket<TcpStream>,
    /// Pushes and replies received while waiting for something else.
    pub backlog: std::collections::VecDeque<serde_json::Value>,
    next_ref: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (ws, _) = roomcast_ws::tokio::connect(&format!("ws://{addr}/ws"))
            .await
            .unwrap();
        Self {
            ws,
            backlog: Default::default(),
            next_ref: 100,
        }
    }

    /// Connects and says hello as `client`.
    pub async fn hello(addr: SocketAddr, client: &str) -> Self {
        let mut c = Self::connect(addr).await;
        let w = c
            .request(serde_json::json!({"type": "hello", "client": client}))
            .await;
        assert_eq!(w["type"], "welcome", "{w}");
        c
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(roomcast_ws::Message::text(text))
            .await
            .unwrap();
    }

    /// The next JSON message from the server (skipping control frames); `None` once the
    /// connection is closed.
    pub async fn recv_raw(&mut self) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.recv())
                .await
                .expect("no message within 10 s")?;
            match msg.unwrap() {
                roomcast_ws::Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).unwrap());
                }
                roomcast_ws::Message::Close(_) => {}
                _ => {}
            }
        }
    }

    /// The next message: from the backlog first.
    pub async fn recv(&mut self) -> serde_json::Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv_raw().await.expect("connection closed")
    }

    /// Sends a request with a fresh ref and returns the reply carrying it; anything else
    /// received meanwhile goes to the backlog.
    pub async fn request(&mut self, mut v: serde_json::Value) -> serde_json::Value {
        self.next_ref += 1;
        let r = self.next_ref;
        v["ref"] = r.into();
        self.send(v).await;
        loop {
            let m = self
                .recv_raw()
                .await
                .expect("connection closed before the reply");
            if m["ref"] == r {
                return m;
            }
            self.backlog.push_back(m);
        }
    }

    /// The next message of a type, from the backlog or the wire; others stay queued.
    pub async fn next_of(&mut self, kind: &str) -> serde_json::Value {
        if let Some(i) = self.backlog.iter().position(|m| m["type"] == kind) {
            return self.backlog.remove(i).unwrap();
        }
        loop {
            let m = self.recv_raw().await.expect("connection closed");
            if m["type"] == kind {
                return m;
            }
            self.backlog.push_back(m);
        }
    }

    pub async fn join(&mut self, room: &str) -> serde_json::Value {
        let r = self
            .request(serde_json::json!({"type": "join", "room": room}))
            .await;
        assert_eq!(r["type"], "joined", "{r}");
        r
    }

    pub async fn publish(&mut self, room: &str, data: serde_json::Value) -> serde_json::Value {
        let r = self
            .request(serde_json::json!({"type": "publish", "room": room, "data": data}))
            .await;
        assert_eq!(r["type"], "ack", "{r}");
        r
    }
}

/// An SSE stream read with a real SSE parser (eventsource-stream).
pub struct Sse {
    events: std::pin::Pin<Box<dyn futures_util::Stream<Item = eventsource_stream::Event> + Send>>,
    /// The last event id seen.
    pub last_id: String,
}

impl Sse {
    /// Opens `GET /sse?{query}` with an optional `Last-Event-ID`.
    pub async fn open(addr: SocketAddr, query: &str, last_id: Option<&str>) -> Self {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let mut req = reqwest::Client::new().get(format!("http://{addr}/sse?{query}"));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        let events = resp
            .bytes_stream()
            .eventsource()
            .filter_map(|e| async move { e.ok() });
        Self {
            events: Box::pin(events),
            last_id: last_id.unwrap_or_default().to_owned(),
        }
    }

    /// The next event: its name and JSON.
    pub async fn next(&mut self) -> (String, serde_json::Value) {
        use futures_util::StreamExt;
        let e = tokio::time::timeout(Duration::from_secs(10), self.events.next())
            .await
            .expect("no SSE event within 10 s")
            .expect("the stream ended");
        if !e.id.is_empty() {
            self.last_id = e.id.clone();
        }
        (
            e.event.clone(),
            serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {:?}", e.data)),
        )
    }

    /// Whether the stream ends within 5 s (events before the end are skipped).
    pub async fn ended(&mut self) -> bool {
        use futures_util::StreamExt;
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.events.next().await.is_some() {}
        })
        .await
        .is_ok()
    }

    /// The next event of a name.
    pub async fn next_of(&mut self, name: &str) -> serde_json::Value {
        loop {
            let (n, v) = self.next().await;
            if n == name {
                return v;
            }
        }
    }
}

/// Calls the HTTP API (`POST` with a body, or `GET`); returns status and JSON.
pub async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}{path}");
    let req = match method {
        "POST" => client
            .post(url)
            .json(&body.unwrap_or(serde_json::Value::Null)),
        _ => client.get(url),
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}")),
    )
}

/// Publishes through the HTTP API; returns the offset.
pub async fn api_publish(addr: SocketAddr, room: &str, data: serde_json::Value) -> u64 {
    let (status, v) = api(
        addr,
        "POST",
        "/api/publish",
        Some(serde_json::json!({"room": room, "data": data})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["results"][0]["offset"].as_u64().unwrap()
}
