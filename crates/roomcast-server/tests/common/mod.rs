//! An in-process server on a free port, and a raw TCP client that can break the rules.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use roomcast_server::{Server, ServerConfig, ShutdownHandle};
use roomcast_ws::frame::{FrameHeader, apply_mask};
use roomcast_ws::handshake::{ClientHandshake, ClientOptions};
use roomcast_ws::{FrameDecoder, OpCode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: ShutdownHandle,
}

pub async fn start(config: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let mut c = ServerConfig::default();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.echo = true;
    config(&mut c);
    let server = Server::bind(c).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stop = server.shutdown_handle();
    tokio::spawn(server.run());
    TestServer { addr, stop }
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
        let mut stream = TcpStream::connect(addr).await.unwrap();
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
