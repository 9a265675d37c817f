//! The client side of the opening handshake (RFC 6455 sections 4.1 and 4.2.2).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::headers::{self, ExtensionOffer};
use super::key;
use super::server::MAX_HEADERS;

/// Why the server's answer to our handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The head did not end within the size limit.
    #[error("response head exceeds {0} bytes")]
    HeadTooLarge(usize),
    /// Not HTTP.
    #[error("malformed HTTP response: {0}")]
    Malformed(httparse::Error),
    /// A header name or value that HTTP does not allow.
    #[error("malformed header field in the response")]
    InvalidHeader,
    /// "If the status code received from the server is not 101, the client handles the
    /// response per HTTP procedures."
    #[error("the server answered {0} instead of 101 Switching Protocols")]
    UnexpectedStatus(StatusCode),
    /// "If the response lacks an |Upgrade| header field or the |Upgrade| header field
    /// contains a value that is not an ASCII case-insensitive match for the value
    /// "websocket", the client MUST _Fail the WebSocket Connection_."
    #[error("the response lacks Upgrade: websocket")]
    MissingUpgrade,
    /// "If the response lacks a |Connection| header field or the |Connection| header field
    /// doesn't contain a token that is an ASCII case-insensitive match for the value
    /// "Upgrade", the client MUST _Fail the WebSocket Connection_."
    #[error("the response lacks Connection: Upgrade")]
    MissingConnectionUpgrade,
    /// "If the response lacks a |Sec-WebSocket-Accept| header field or the
    /// |Sec-WebSocket-Accept| contains a value other than the base64-encoded SHA-1 of ...
    /// the client MUST _Fail the WebSocket Connection_."
    #[error("missing or wrong Sec-WebSocket-Accept")]
    BadAccept,
    /// An extension we did not offer ("the client MUST _Fail the WebSocket Connection_").
    #[error("the server accepted extension {0} that was not offered")]
    UnexpectedExtension(String),
    /// A subprotocol we did not ask for.
    #[error("the server chose subprotocol {0} that was not requested")]
    UnexpectedProtocol(String),
}

/// What the client asks for beyond the handshake itself.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Subprotocols, in order of preference.
    pub protocols: Vec<String>,
    /// Extensions to offer.
    pub extensions: Vec<ExtensionOffer>,
    /// Extra header fields (`Origin`, `Authorization`, cookies...).
    pub headers: HeaderMap,
}

/// A handshake in flight: the key sent and what was offered, to check the answer with.
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    /// Empty for an extended CONNECT (RFC 8441), which has no key.
    pub(super) expected_accept: String,
    pub(super) protocols: Vec<String>,
    pub(super) extension_names: Vec<String>,
    pub(super) max_head: usize,
}

/// The server's accepted handshake.
#[derive(Clone, Debug)]
pub struct ServerAnswer {
    /// The 101 response.
    pub response: Response<()>,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with their parameters.
    pub extensions: Vec<ExtensionOffer>,
}

impl ClientHandshake {
    /// Starts a handshake for `authority` (the `Host` value, e.g. `example.com:8080`) and
    /// `target` (path and query, e.g. `/chat?room=a`). Returns the state to check the
    /// answer with and the request bytes to send.
    pub fn new(authority: &str, target: &str, options: &ClientOptions) -> (Self, Bytes) {
        let key = key::generate_key();
        let mut out = BytesMut::with_capacity(256);
        let target = if target.is_empty() { "/" } else { target };
        for part in ["GET ", target, " HTTP/1.1\r\nhost: ", authority] {
            out.put_slice(part.as_bytes());
        }
        out.put_slice(b"\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: ");
        out.put_slice(key.as_bytes());
        out.put_slice(b"\r\n");
        let mut field = |name: &HeaderName, value: &[u8]| {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        };
        if !options.protocols.is_empty() {
            field(
                &header::SEC_WEBSOCKET_PROTOCOL,
                options.protocols.join(", ").as_bytes(),
            );
        }
        if !options.extensions.is_empty() {
            let list: Vec<String> = options.extensions.iter().map(ToString::to_string).collect();
            field(
                &header::SEC_WEBSOCKET_EXTENSIONS,
                list.join(", ").as_bytes(),
            );
        }
        for (name, value) in &options.headers {
            field(name, value.as_bytes());
        }
        out.put_slice(b"\r\n");
        let state = Self {
            expected_accept: key::accept_key(key.as_bytes()),
            protocols: options.protocols.clone(),
            extension_names: options.extensions.iter().map(|e| e.name.clone()).collect(),
            max_head: super::server::DEFAULT_MAX_HEAD,
        };
        (state, out.freeze())
    }

    /// Parses and checks the server's response head at the front of `buf`. `Ok(None)`
    /// means it is not complete yet; otherwise the answer and the head's length (bytes
    /// after it are already WebSocket frames).
    pub fn parse_response(
        &self,
        buf: &[u8],
    ) -> Result<Option<(ServerAnswer, usize)>, ResponseError> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= self.max_head => {
                return Err(ResponseError::HeadTooLarge(self.max_head));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ResponseError::Malformed(e)),
        };
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(parsed.code.unwrap_or_default())
            .map_err(|_| ResponseError::Malformed(httparse::Error::Status))?;
        *response.version_mut() = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ResponseError::InvalidHeader)?;
            let value =
                HeaderValue::from_bytes(field.value).map_err(|_| ResponseError::InvalidHeader)?;
            response.headers_mut().append(name, value);
        }
        self.check(response).map(|answer| Some((answer, len)))
    }

    fn check(&self, response: Response<()>) -> Result<ServerAnswer, ResponseError> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ResponseError::UnexpectedStatus(response.status()));
        }
        let h = response.headers();
        if !headers::has_token(h, header::UPGRADE, "websocket") {
            return Err(ResponseError::MissingUpgrade);
        }
        if !headers::has_token(h, header::CONNECTION, "upgrade") {
            return Err(ResponseError::MissingConnectionUpgrade);
        }
        match headers::single(h, header::SEC_WEBSOCKET_ACCEPT) {
            Ok(Some(v)) if v.as_bytes().trim_ascii() == self.expected_accept.as_bytes() => {}
            _ => return Err(ResponseError::BadAccept),
        }
        self.check_fields(response)
    }

    /// The subprotocol and extensions of an accepting answer, checked against the offer.
    pub(super) fn check_fields(
        &self,
        response: Response<()>,
    ) -> Result<ServerAnswer, ResponseError> {
        let h = response.headers();
        let extensions = headers::extensions(h).map_err(ResponseError::UnexpectedExtension)?;
        if let Some(e) = extensions
            .iter()
            .find(|e| !self.extension_names.contains(&e.name))
        {
            return Err(ResponseError::UnexpectedExtension(e.name.clone()));
        }
        // "If the response includes a |Sec-WebSocket-Protocol| header field and this
        // header field indicates the use of a subprotocol that was not present in the
        // client's handshake ... the client MUST _Fail the WebSocket Connection_."
        let protocol = match headers::single(h, header::SEC_WEBSOCKET_PROTOCOL) {
            Ok(None) => None,
            Ok(Some(v)) => {
                let p = v.to_str().unwrap_or_default().trim().to_owned();
                if !self.protocols.contains(&p) {
                    return Err(ResponseError::UnexpectedProtocol(p));
                }
                Some(p)
            }
            Err(()) => {
                return Err(ResponseError::UnexpectedProtocol(
                    "(repeated header)".into(),
                ));
            }
        };
        Ok(ServerAnswer {
            response,
            protocol,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{Accept, parse_request, validate_request};

    fn options() -> ClientOptions {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://example.com"),
        );
        ClientOptions {
            protocols: vec!["chat".into(), "superchat".into()],
            headers,
            ..ClientOptions::default()
        }
    }

    #[test]
    fn round_trip_with_the_server_side() {
        let (client, request) = ClientHandshake::new("example.com:8080", "/chat?x=1", &options());
        let (req, n) = parse_request(&request, 4096).unwrap().unwrap();
        assert_eq!(n, request.len());
        assert_eq!(req.uri().path_and_query().unwrap().as_str(), "/chat?x=1");
        assert_eq!(req.headers()[header::ORIGIN], "http://example.com");
        let offer = validate_request(req.method(), req.version(), req.headers()).unwrap();
        let reply = offer.accept(&Accept {
            protocol: offer.select_protocol(&["superchat"]),
            ..Accept::default()
        });
        let mut wire = reply.to_vec();
        wire.extend_from_slice(&[0x81, 0x00]); // a frame right behind the head
        let (answer, len) = client.parse_response(&wire).unwrap().unwrap();
        assert_eq!(len, reply.len());
        assert_eq!(answer.protocol.as_deref(), Some("superchat"));
        for n in 0..reply.len() {
            assert!(client.parse_response(&reply[..n]).unwrap().is_none());
        }
    }

    #[test]
    fn refuses_bad_answers() {
        let (client, _) = ClientHandshake::new("h", "/", &options());
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            client.expected_accept
        );
        assert!(client.parse_response(good.as_bytes()).is_ok());
        let cases: &[(&str, &str, ResponseError)] = &[
            (
                "101 Switching Protocols",
                "200 OK",
                ResponseError::UnexpectedStatus(StatusCode::OK),
            ),
            ("Upgrade: websocket\r\n", "", ResponseError::MissingUpgrade),
            (
                "Connection: Upgrade\r\n",
                "Connection: close\r\n",
                ResponseError::MissingConnectionUpgrade,
            ),
            (
                "Sec-WebSocket-Accept: ",
                "Sec-WebSocket-Accept: x",
                ResponseError::BadAccept,
            ),
            (
                "\r\n\r\n",
                "\r\nSec-WebSocket-Protocol: other\r\n\r\n",
                ResponseError::UnexpectedProtocol("other".into()),
            ),
            (
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                ResponseError::UnexpectedExtension("permessage-deflate".into()),
            ),
        ];
        for (from, to, want) in cases {
            let raw = good.replacen(from, to, 1);
            assert_eq!(
                client.parse_response(raw.as_bytes()).unwrap_err(),
                *want,
                "{raw}"
            );
        }
    }

    fn good_answer(client: &ClientHandshake, version: &str) -> String {
        format!(
            "HTTP/{version} 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            client.expected_accept
        )
    }

    #[test]
    fn the_answer_keeps_its_http_version() {
        let (client, _) = ClientHandshake::new("h", "/", &options());
        for (version, want) in [("1.1", Version::HTTP_11), ("1.0", Version::HTTP_10)] {
            let raw = good_answer(&client, version);
            let (answer, len) = client.parse_response(raw.as_bytes()).unwrap().unwrap();
            assert_eq!((answer.response.version(), len), (want, raw.len()));
            assert_eq!(answer.response.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(answer.protocol, None);
        }
    }

    #[test]
    fn an_unfinished_head_is_refused_at_the_size_limit() {
        let (client, _) = ClientHandshake::new("h", "/", &options());
        let limit = super::super::server::DEFAULT_MAX_HEAD;
        let mut head = b"HTTP/1.1 101 Switching Protocols\r\nx-pad: ".to_vec();
        head.resize(limit - 1, b'a');
        assert!(
            client.parse_response(&head).unwrap().is_none(),
            "one byte under"
        );
        head.push(b'a');
        assert_eq!(
            client.parse_response(&head).unwrap_err(),
            ResponseError::HeadTooLarge(limit)
        );
    }
}
