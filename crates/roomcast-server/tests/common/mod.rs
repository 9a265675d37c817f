//! An in-process server on a free port, and a raw TCP client that can break the rules.
//!
//! Every wait here is bounded: a missing answer fails the test with a message saying what
//! was missing, it never hangs the run. One helper per kind of wait:
//! - an HTTP request and its whole answer: [`http`] (a client with connect and request
//!   timeouts) and [`exchange`] (which also bounds the call itself);
//! - an SSE stream: [`Sse::open`] bounds the opening, [`Sse::next`] each event;
//! - raw bytes: [`raw_exchange`] fails unless a whole response arrives in time;
//! - WebSocket: [`Client::recv_raw`], [`RawClient::next_frame`].

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

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one HTTP request may take, answer read whole (long polls included: tests ask
/// for `timeout_ms` well under this).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an SSE stream may go without an event (or a raw read without a byte).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs ring as the process's TLS provider: built with the whole workspace, reqwest
/// has the CLI's TLS without a provider of its own (`rustls-no-provider`).
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client whose every request is bounded: connect within [`CONNECT_TIMEOUT`], the
/// whole answer within [`HTTP_TIMEOUT`]. A new one per call: a pooled connection must not
/// outlive the test's runtime.
pub fn http() -> reqwest::Client {
    tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(HTTP_TIMEOUT)
        .build()
        .unwrap()
}

/// An HTTP client for streams (SSE): connect within [`CONNECT_TIMEOUT`], then no bound on
/// the whole answer but [`EVENT_TIMEOUT`] between two reads.
pub fn http_streaming() -> reqwest::Client {
    tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(EVENT_TIMEOUT)
        .build()
        .unwrap()
}

/// Sends a request and reads its whole answer: status, headers, body. Fails (never hangs)
/// when no answer comes within [`HTTP_TIMEOUT`].
pub async fn exchange(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let (client, req) = req.build_split();
    let req = req.unwrap();
    let what = format!("{} {}", req.method(), req.url());
    let answer = tokio::time::timeout(HTTP_TIMEOUT + Duration::from_secs(1), async {
        let resp = client
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: the body did not arrive whole: {e}"));
        (status, headers, body)
    })
    .await;
    answer.unwrap_or_else(|_| panic!("{what}: no answer within {HTTP_TIMEOUT:?}"))
}

/// `GET url` with [`http`]: status and JSON body.
pub async fn get_json_status(url: impl AsRef<str>) -> (u16, serde_json::Value) {
    let url = url.as_ref();
    let (status, _, body) = exchange(http().get(url)).await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body:?}"));
    (status, v)
}

/// Awaits `fut` for at most `bound`; past that the test fails, saying what it waited for.
/// The one bounded wait for anything the other helpers here do not already bound.
pub async fn within<T>(
    what: &str,
    bound: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(bound, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {bound:?}"))
}

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

/// Sends raw bytes and returns the response, which must arrive whole (the head, and a
/// body as long as its `content-length`, or until the server closes) within
/// [`EVENT_TIMEOUT`]: a partial or missing answer fails the test.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("no connection within 5 s")
        .unwrap();
    // The server may answer and close before reading everything (431): read regardless.
    let _ = tokio::time::timeout(EVENT_TIMEOUT, s.write_all(request)).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(EVENT_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if response_complete(&out) {
                return true;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match read {
        Ok(true) => {}
        Ok(false) => {
            let head_done = text.contains("\r\n\r\n");
            assert!(
                head_done && response_length(&out).is_none(),
                "the server closed before a whole response: {text:?}"
            );
        }
        Err(_) => panic!("no whole response within {EVENT_TIMEOUT:?}: got {text:?}"),
    }
    text
}

/// The `content-length` of a response whose head has arrived.
fn response_length(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    let (head, _) = text.split_once("\r\n\r\n")?;
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        })
        .and_then(Result::ok)
}

fn response_complete(bytes: &[u8]) -> bool {
    let Some(start) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    // A 101 has no body: the connection now speaks WebSocket.
    bytes.starts_with(b"HTTP/1.1 101 ")
        || response_length(bytes).is_some_and(|n| bytes.len() - (start + 4) >= n)
}

/// A WebSocket client on a raw socket: frames are built by hand.
pub struct RawClient {
    pub stream: TcpStream,
    /// The extensions the server accepted, as it answered them.
    pub extensions: Vec<roomcast_ws::handshake::ExtensionOffer>,
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
        Self::connect_with_options(addr, path, rcvbuf, &ClientOptions::default()).await
    }

    /// Connects offering what `options` says (extensions, subprotocols, headers).
    pub async fn connect_with_options(
        addr: SocketAddr,
        path: &str,
        rcvbuf: Option<u32>,
        options: &ClientOptions,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
            .await
            .expect("no connection within 5 s")
            .unwrap();
        let (hs, request) = ClientHandshake::new(&addr.to_string(), path, options);
        stream.write_all(&request).await.unwrap();
        let mut buf = BytesMut::new();
        let answer = tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                if let Some((answer, n)) = hs.parse_response(&buf).unwrap() {
                    let _ = buf.split_to(n);
                    break answer;
                }
                assert!(
                    stream.read_buf(&mut buf).await.unwrap() > 0,
                    "closed during the handshake"
                );
            }
        })
        .await
        .expect("no handshake answer within 10 s");
        let mut decoder = FrameDecoder::new(Role::Client, 64 << 20);
        if !options.extensions.is_empty() {
            // What an offered extension may set (RSV1, for permessage-deflate).
            decoder.set_allowed_rsv(0b100);
        }
        Self {
            stream,
            decoder,
            buf,
            extensions: answer.extensions,
        }
    }

    /// Sends one masked frame; `b0` is the first header byte (FIN, RSV, opcode).
    pub async fn send_frame(&mut self, b0: u8, payload: &[u8]) {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.stream.write_all(&masked_frame(b0, payload)),
        )
        .await
        .expect("the server took no frame within 10 s")
        .unwrap();
    }

    /// The next frame from the server: opcode and payload; `None` at EOF.
    pub async fn next_frame(&mut self) -> Option<(OpCode, Vec<u8>)> {
        let (header, payload) = self.next_frame_with_header().await?;
        Some((header.opcode, payload))
    }

    /// The next frame from the server with its header (RSV bits, FIN); `None` at EOF.
    pub async fn next_frame_with_header(&mut self) -> Option<(FrameHeader, Vec<u8>)> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some((f.header, f.payload.to_vec()));
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
        let (ws, _) = tokio::time::timeout(
            EVENT_TIMEOUT,
            roomcast_ws::tokio::connect(&format!("ws://{addr}/ws")),
        )
        .await
        .expect("no WebSocket handshake within 10 s")
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
        tokio::time::timeout(
            Duration::from_secs(10),
            self.ws.send(roomcast_ws::Message::text(text)),
        )
        .await
        .expect("the server took no message within 10 s")
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
    /// Opens `GET /sse?{query}` with an optional `Last-Event-ID`; the answer must come
    /// within [`HTTP_TIMEOUT`].
    pub async fn open(addr: SocketAddr, query: &str, last_id: Option<&str>) -> Self {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let url = format!("http://{addr}/sse?{query}");
        let mut req = http_streaming().get(&url);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = tokio::time::timeout(HTTP_TIMEOUT, req.send())
            .await
            .unwrap_or_else(|_| panic!("GET {url}: no answer within {HTTP_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
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

    /// Opens `GET /sse?{query}` on a raw socket whose `SO_RCVBUF` is `rcvbuf` (a small one
    /// makes a slow reader: nothing is read until the first [`Sse::next`]).
    pub async fn open_with_receive_buffer(
        addr: SocketAddr,
        query: &str,
        last_id: Option<&str>,
        rcvbuf: u32,
    ) -> Self {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
            .await
            .expect("no connection within 5 s")
            .unwrap();
        let mut request = format!("GET /sse?{query} HTTP/1.1\r\nHost: {addr}\r\n");
        if let Some(id) = last_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let head_len = tokio::time::timeout(HTTP_TIMEOUT, async {
            loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return i + 4;
                }
                assert!(
                    stream.read_buf(&mut buf).await.unwrap() > 0,
                    "closed before the SSE answer's head"
                );
            }
        })
        .await
        .expect("no SSE answer within 30 s");
        let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let _ = buf.split_to(head_len);
        let body =
            futures_util::stream::unfold((stream, buf), |(mut stream, mut buf)| async move {
                let chunk = read_chunk(&mut stream, &mut buf).await?;
                Some((Ok::<_, std::io::Error>(chunk), (stream, buf)))
            });
        let events = body.eventsource().filter_map(|e| async move { e.ok() });
        Self {
            events: Box::pin(events),
            last_id: last_id.unwrap_or_default().to_owned(),
        }
    }

    /// The next event, or `None` when the stream ends first; fails after
    /// [`EVENT_TIMEOUT`] without either.
    pub async fn next_or_end(&mut self) -> Option<(String, serde_json::Value)> {
        use futures_util::StreamExt;
        let e = tokio::time::timeout(EVENT_TIMEOUT, self.events.next())
            .await
            .expect("no SSE event and no end within 10 s")?;
        if !e.id.is_empty() {
            self.last_id = e.id.clone();
        }
        Some((
            e.event.clone(),
            serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {:?}", e.data)),
        ))
    }

    /// The next event: its name and JSON.
    pub async fn next(&mut self) -> (String, serde_json::Value) {
        self.next_or_end().await.expect("the stream ended")
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

/// One chunk of a `transfer-encoding: chunked` body; `None` at its end (or EOF). A chunk
/// that does not arrive within [`EVENT_TIMEOUT`] fails the test.
async fn read_chunk(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<bytes::Bytes> {
    async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, n: usize) -> bool {
        while buf.len() < n {
            match tokio::time::timeout(EVENT_TIMEOUT, stream.read_buf(buf))
                .await
                .expect("no SSE bytes within 10 s")
            {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    }
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                return None;
            }
            if !fill(stream, buf, i + 2 + size + 2).await {
                return None;
            }
            let _ = buf.split_to(i + 2);
            let chunk = buf.split_to(size).freeze();
            let _ = buf.split_to(2);
            return Some(chunk);
        }
        let have = buf.len();
        if !fill(stream, buf, have + 1).await {
            return None;
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
    let client = http();
    let url = format!("http://{addr}{path}");
    let req = match method {
        "POST" => client
            .post(url)
            .json(&body.unwrap_or(serde_json::Value::Null)),
        _ => client.get(url),
    };
    let (status, _, text) = exchange(req).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text:?}")),
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

/// `GET url` (bounded), answered 200 with JSON.
pub async fn get_json(url: impl AsRef<str>) -> serde_json::Value {
    let (status, body) = get_json_status(url).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (bounded) until `/api/rooms` says `room` has `n` members.
pub async fn wait_for_members(addr: std::net::SocketAddr, room: &str, n: u64) {
    let started = std::time::Instant::now();
    loop {
        let (status, v) = api(addr, "GET", "/api/rooms", None).await;
        assert_eq!(status, 200, "{v}");
        let members = v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room"] == room)
            .map(|r| r["members"].as_u64().unwrap());
        if members == Some(n) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{room} still has {members:?} members after 10 s, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Long-polls `path` until `n` messages arrived; returns them and the last cursor.
pub async fn poll_messages(
    addr: std::net::SocketAddr,
    first_query: &str,
    n: usize,
) -> (Vec<serde_json::Value>, String, u32) {
    let mut messages = Vec::new();
    let mut url = format!("http://{addr}/poll?{first_query}&timeout_ms=2000");
    let mut cursor = String::new();
    let mut polls = 0;
    let started = std::time::Instant::now();
    while messages.len() < n {
        polls += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {n} messages after {polls} polls in 60 s",
            messages.len()
        );
        let v = get_json(&url).await;
        for e in v["events"].as_array().unwrap() {
            if e["type"] == "message" {
                messages.push(e.clone());
            }
        }
        cursor = v["cursor"].as_str().unwrap().to_owned();
        url = format!("http://{addr}/poll?cursor={cursor}&timeout_ms=2000");
    }
    (messages, cursor, polls)
}

/// The offsets of a `history` reply's messages, in order.
pub fn message_offsets(v: &serde_json::Value) -> Vec<u64> {
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {v}"))
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// Polls a new session (`first_query`) until its own `joined` events are through; returns
/// the cursor after them.
pub async fn poll_past_joined(
    addr: std::net::SocketAddr,
    first_query: &str,
    rooms: usize,
) -> String {
    let mut url = format!("http://{addr}/poll?{first_query}&timeout_ms=1000");
    let mut joined = 0;
    for _ in 0..20 {
        let v = get_json(&url).await;
        let cursor = v["cursor"].as_str().unwrap().to_owned();
        joined += v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "joined")
            .count();
        if joined >= rooms {
            return cursor;
        }
        url = format!("http://{addr}/poll?cursor={cursor}&timeout_ms=1000");
    }
    panic!("the session's joined events did not come in 20 polls");
}

/// The Python that has the peers' packages (`scripts/test` makes the venv).
pub fn python() -> String {
    std::env::var("ROOMCAST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The Node that runs the `ws` peer.
pub fn node() -> String {
    std::env::var("ROOMCAST_TEST_NODE").unwrap_or_else(|_| "node".to_owned())
}

/// Runs a peer's script (`tests/peers/<script>`) with `args`, within 60 s; it must exit
/// cleanly and print "all scenarios passed". Returns its stdout.
pub async fn run_peer(program: &str, script: &str, args: &[&str]) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers")
        .join(script);
    let run = tokio::process::Command::new(program)
        .arg(&path)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (scripts/test installs the peers)"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{script}: {stdout}\n{stderr}");
    assert!(
        stdout.contains("all scenarios passed"),
        "{script}: {stdout}\n{stderr}"
    );
    stdout
}

/// Sends a WebSocket handshake for `path` with `extra` header lines and reads the answer's
/// head: its status, the head, and the stream (open after a 101).
pub async fn upgrade_head(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, TcpStream) {
    upgrade_head_on(
        TcpStream::connect(addr).await.unwrap(),
        addr,
        path,
        "",
        extra,
    )
    .await
}

/// [`upgrade_head`] on a connection already open to `addr`, after `before` (bytes sent
/// ahead of the request, such as a PROXY header). A connection closed without an answer
/// gives status 0.
pub async fn upgrade_head_on(
    mut s: TcpStream,
    addr: SocketAddr,
    path: &str,
    before: &str,
    extra: &str,
) -> (u16, String, TcpStream) {
    let req = format!(
        "{before}GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    // A connection dropped unread may be reset: no answer, status 0.
    let _ = s.write_all(req.as_bytes()).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(EVENT_TIMEOUT, s.read(&mut buf))
            .await
            .expect("an answer to the handshake")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, s)
}
