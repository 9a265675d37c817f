//! The server side of the opening handshake (RFC 6455 section 4.2).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::headers::{self, ExtensionOffer};
use super::key;

/// The most header fields a request head may have.
pub const MAX_HEADERS: usize = 64;
/// The default largest request head, in bytes.
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;

/// Why a handshake request was refused; each maps to an HTTP status
/// ([`RequestError::status`]) and a plain-text reason ([`std::fmt::Display`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The head did not end within the size limit.
    #[error("request head exceeds {0} bytes")]
    HeadTooLarge(usize),
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// Not HTTP.
    #[error("malformed HTTP request: {0}")]
    Malformed(httparse::Error),
    /// A request target that is not a valid URI.
    #[error("malformed request target")]
    InvalidTarget,
    /// A header name or value that HTTP does not allow.
    #[error("malformed header field")]
    InvalidHeader,
    /// Over HTTP/2 a WebSocket is opened by an extended CONNECT (RFC 8441 section 4),
    /// and the request was another method.
    #[error(
        "method {0} not allowed: over HTTP/2 a WebSocket opens with an extended CONNECT (RFC 8441)"
    )]
    ConnectRequired(Method),
    /// "The method of the request MUST be GET."
    #[error("method {0} not allowed: a WebSocket handshake is a GET request")]
    MethodNotAllowed(Method),
    /// "... and the HTTP version MUST be at least 1.1."
    #[error("HTTP/1.1 or later is required for a WebSocket handshake")]
    HttpVersion,
    /// "An |Upgrade| header field containing the value "websocket"": without it this is
    /// not a WebSocket request at all.
    #[error("this endpoint only speaks WebSocket: send Upgrade: websocket")]
    NotWebSocket,
    /// "A |Connection| header field that includes the token "Upgrade"."
    #[error("the Connection header must include the token Upgrade")]
    MissingConnectionUpgrade,
    /// "A |Sec-WebSocket-Version| header field, with a value of 13."
    #[error("unsupported or missing Sec-WebSocket-Version: this server speaks version 13")]
    UnsupportedVersion,
    /// "A |Host| header field containing the server's authority."
    #[error("missing or repeated Host header")]
    InvalidHost,
    /// No `Sec-WebSocket-Key`.
    #[error("missing Sec-WebSocket-Key header")]
    MissingKey,
    /// A key that is not 16 bytes in base64, or more than one.
    #[error("Sec-WebSocket-Key must be one base64 value of 16 bytes")]
    InvalidKey,
    /// A `Sec-WebSocket-Protocol` element that is not a token.
    #[error("malformed Sec-WebSocket-Protocol")]
    InvalidProtocol,
    /// A `Sec-WebSocket-Extensions` element that does not follow the grammar.
    #[error("malformed Sec-WebSocket-Extensions element: {0}")]
    InvalidExtensions(String),
}

impl RequestError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadTooLarge(_) | Self::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::MethodNotAllowed(_) | Self::ConnectRequired(_) => StatusCode::METHOD_NOT_ALLOWED,
            // "If this version does not match a version understood by the server, the
            // server MUST abort the WebSocket handshake ... and instead send an
            // appropriate HTTP error code (such as 426 Upgrade Required)".
            Self::NotWebSocket | Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Header fields the refusal must carry.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            // RFC 9110 section 15.5.6: a 405 "MUST generate an Allow header field".
            Self::MethodNotAllowed(_) => vec![(header::ALLOW, HeaderValue::from_static("GET"))],
            Self::ConnectRequired(_) => {
                vec![(header::ALLOW, HeaderValue::from_static("CONNECT"))]
            }
            // RFC 9110 section 15.5.22: a 426 "MUST send an Upgrade header field"; RFC
            // 6455 section 4.2.2: with "a |Sec-WebSocket-Version| header field indicating
            // the version(s) the server is capable of understanding".
            Self::NotWebSocket | Self::UnsupportedVersion => vec![
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                ),
            ],
            _ => Vec::new(),
        }
    }

    /// The whole HTTP/1.1 refusal: status, headers and the reason as a text body. The
    /// connection is closed after it.
    pub fn to_http1(&self) -> Bytes {
        encode_response(&self.to_response())
    }

    /// The refusal as an `http::Response`, for servers built on an HTTP library.
    pub fn to_response(&self) -> Response<String> {
        let mut resp = Response::new(format!("{self}\n"));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        for (name, value) in self.headers() {
            h.append(name, value);
        }
        resp
    }
}

/// Writes a whole HTTP/1.1 response (a refusal chosen by the application) with
/// `content-length` and `connection: close`.
pub fn encode_response(resp: &Response<String>) -> Bytes {
    let status = resp.status();
    let body = resp.body();
    let mut out = BytesMut::with_capacity(128 + body.len());
    let line = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    out.put_slice(line.as_bytes());
    for (name, value) in resp.headers() {
        if name == header::CONTENT_LENGTH || name == header::CONNECTION {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.put_slice(body.as_bytes());
    out.freeze()
}

/// Parses an HTTP/1.x request head from the front of `buf`. `Ok(None)` means it is not
/// complete yet; otherwise the request and the length of its head.
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(Request<()>, usize)>, RequestError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Complete(_)) => return Err(RequestError::HeadTooLarge(max_head)),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Err(RequestError::HeadTooLarge(max_head));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(e) => return Err(RequestError::Malformed(e)),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| RequestError::Malformed(httparse::Error::Token))?;
    let uri: http::Uri = parsed
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| RequestError::InvalidTarget)?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    let headers = req.headers_mut();
    headers.reserve(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| RequestError::InvalidHeader)?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| RequestError::InvalidHeader)?;
        headers.append(name, value);
    }
    Ok(Some((req, len)))
}

/// What a valid handshake request offers; the server answers it with
/// [`ClientOffer::accept`].
#[derive(Clone, Debug)]
pub struct ClientOffer {
    /// `Sec-WebSocket-Key`; `None` for an offer over HTTP/2, which has none (RFC 8441).
    pub(super) key: Option<HeaderValue>,
    /// Subprotocols the client asked for, in its order of preference.
    pub protocols: Vec<String>,
    /// Extensions the client offered, in its order of preference.
    pub extensions: Vec<ExtensionOffer>,
}

/// Checks a request against RFC 6455 section 4.2.1, in the order that gives the most
/// useful status: the method, the HTTP version, whether it is a WebSocket request at
/// all, then each field.
pub fn validate_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<ClientOffer, RequestError> {
    if method != Method::GET {
        return Err(RequestError::MethodNotAllowed(method.clone()));
    }
    if version < Version::HTTP_11 {
        return Err(RequestError::HttpVersion);
    }
    if !headers::has_token(headers, header::UPGRADE, "websocket") {
        return Err(RequestError::NotWebSocket);
    }
    if !headers::has_token(headers, header::CONNECTION, "upgrade") {
        return Err(RequestError::MissingConnectionUpgrade);
    }
    match headers::single(headers, header::SEC_WEBSOCKET_VERSION) {
        Ok(Some(v)) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(RequestError::UnsupportedVersion),
    }
    match headers::single(headers, header::HOST) {
        Ok(Some(host)) if !host.is_empty() => {}
        _ => return Err(RequestError::InvalidHost),
    }
    let key = match headers::single(headers, header::SEC_WEBSOCKET_KEY) {
        Ok(None) => return Err(RequestError::MissingKey),
        Ok(Some(k)) if key::is_valid_key(k.as_bytes().trim_ascii()) => Some(k.clone()),
        _ => return Err(RequestError::InvalidKey),
    };
    ClientOffer::with_fields(key, headers)
}

impl ClientOffer {
    /// The offer of a request whose other fields were checked: `key` (none over HTTP/2),
    /// and the subprotocols and extensions of `headers`, each checked against its grammar.
    pub(super) fn with_fields(
        key: Option<HeaderValue>,
        headers: &HeaderMap,
    ) -> Result<Self, RequestError> {
        let mut protocols = Vec::new();
        for p in headers::list(headers, header::SEC_WEBSOCKET_PROTOCOL) {
            if !headers::is_token(p) {
                return Err(RequestError::InvalidProtocol);
            }
            protocols.push(p.to_owned());
        }
        let extensions = headers::extensions(headers).map_err(RequestError::InvalidExtensions)?;
        Ok(Self {
            key,
            protocols,
            extensions,
        })
    }
}

/// The server's answer to a [`ClientOffer`]: the chosen subprotocol and extensions, and
/// any extra header fields (cookies, a node id).
#[derive(Clone, Debug, Default)]
pub struct Accept {
    /// The subprotocol chosen, one of [`ClientOffer::protocols`].
    pub protocol: Option<String>,
    /// The extensions accepted, with their parameters.
    pub extensions: Vec<ExtensionOffer>,
    /// Extra header fields for the 101 response.
    pub headers: HeaderMap,
}

impl ClientOffer {
    /// The first subprotocol, in the client's order, that `supported` contains.
    pub fn select_protocol(&self, supported: &[&str]) -> Option<String> {
        self.protocols
            .iter()
            .find(|p| supported.contains(&p.as_str()))
            .cloned()
    }

    /// The `Sec-WebSocket-Accept` value that proves the server read this request (empty
    /// for an extended CONNECT, which has no key: RFC 8441 section 5).
    pub fn accept_key(&self) -> String {
        self.key
            .as_ref()
            .map_or_else(String::new, |k| key::accept_key(k.as_bytes().trim_ascii()))
    }

    /// The 101 response head, ready to write.
    pub fn accept(&self, accept: &Accept) -> Bytes {
        let mut out = BytesMut::with_capacity(160);
        out.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ");
        out.put_slice(self.accept_key().as_bytes());
        out.put_slice(b"\r\n");
        for (name, value) in accept_fields(accept) {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }

    /// The 101 response as an `http::Response`, for servers built on an HTTP library.
    pub fn accept_response(&self, accept: &Accept) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::try_from(self.accept_key()) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        for (name, value) in accept_fields(accept) {
            h.append(name, value);
        }
        resp
    }
}

pub(super) fn accept_fields(
    accept: &Accept,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    let protocol = accept
        .protocol
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
        .map(|v| (header::SEC_WEBSOCKET_PROTOCOL, v));
    let extensions = (!accept.extensions.is_empty())
        .then(|| {
            let list: Vec<String> = accept.extensions.iter().map(ToString::to_string).collect();
            HeaderValue::from_str(&list.join(", ")).ok()
        })
        .flatten()
        .map(|v| (header::SEC_WEBSOCKET_EXTENSIONS, v));
    protocol
        .into_iter()
        .chain(extensions)
        .chain(accept.headers.iter().map(|(n, v)| (n.clone(), v.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn check(raw: &str) -> Result<ClientOffer, RequestError> {
        let (req, _) = parse_request(raw.as_bytes(), DEFAULT_MAX_HEAD)?.expect("complete");
        validate_request(req.method(), req.version(), req.headers())
    }

    #[test]
    fn rfc_handshake() {
        let (req, n) = parse_request(RFC_REQUEST.as_bytes(), DEFAULT_MAX_HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(n, RFC_REQUEST.len());
        assert_eq!(req.uri().path(), "/chat");
        let offer = validate_request(req.method(), req.version(), req.headers()).unwrap();
        assert_eq!(offer.protocols, ["chat", "superchat"]);
        let chosen = offer.select_protocol(&["superchat", "other"]);
        assert_eq!(chosen.as_deref(), Some("superchat"));
        let reply = offer.accept(&Accept {
            protocol: chosen,
            ..Accept::default()
        });
        let reply = std::str::from_utf8(&reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(reply.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(reply.contains("sec-websocket-protocol: superchat\r\n"));
        assert!(reply.ends_with("\r\n\r\n"));
    }

    #[test]
    fn partial_and_oversized_heads() {
        for n in 0..RFC_REQUEST.len() {
            assert_eq!(
                parse_request(&RFC_REQUEST.as_bytes()[..n], DEFAULT_MAX_HEAD)
                    .unwrap()
                    .map(|r| r.1),
                None
            );
        }
        assert_eq!(
            parse_request(RFC_REQUEST.as_bytes(), 64).unwrap_err(),
            RequestError::HeadTooLarge(64)
        );
        assert_eq!(
            parse_request(&[b'G'; 100], 64).unwrap_err(),
            RequestError::HeadTooLarge(64)
        );
    }

    #[test]
    fn refusals_have_the_right_status() {
        let cases: &[(&str, &str, u16)] = &[
            ("GET /chat HTTP/1.1", "POST /chat HTTP/1.1", 405),
            ("GET /chat HTTP/1.1", "GET /chat HTTP/1.0", 400),
            ("Upgrade: websocket\r\n", "", 426),
            ("Upgrade: websocket\r\n", "Upgrade: h2c\r\n", 426),
            ("Connection: Upgrade\r\n", "Connection: keep-alive\r\n", 400),
            ("Sec-WebSocket-Version: 13\r\n", "", 426),
            (
                "Sec-WebSocket-Version: 13\r\n",
                "Sec-WebSocket-Version: 8\r\n",
                426,
            ),
            ("Host: server.example.com\r\n", "", 400),
            ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 400),
            (
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                "Sec-WebSocket-Key: c2hvcnQ=\r\n",
                400,
            ),
            (
                "Sec-WebSocket-Protocol: chat, superchat\r\n",
                "Sec-WebSocket-Protocol: a b\r\n",
                400,
            ),
        ];
        for (from, to, status) in cases {
            let raw = RFC_REQUEST.replace(from, to);
            let err = check(&raw).expect_err(&raw);
            assert_eq!(err.status().as_u16(), *status, "{raw} gave {err}");
        }
        let garbage = parse_request(b"\x16\x03\x01\x00\r\n\r\n", DEFAULT_MAX_HEAD).unwrap_err();
        assert_eq!(garbage.status().as_u16(), 400);
    }

    #[test]
    fn refusal_bytes() {
        let err = check(&RFC_REQUEST.replace("Sec-WebSocket-Version: 13\r\n", "")).unwrap_err();
        let text = String::from_utf8(err.to_http1().to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("sec-websocket-version: 13\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let resp = err.to_response();
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    }

    #[test]
    fn case_and_lists_in_tokens() {
        let raw = RFC_REQUEST
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "Connection: keep-alive, upgrade");
        assert!(check(&raw).is_ok());
    }

    #[test]
    fn heads_over_16_kib_or_64_fields_get_431() {
        // A head still unfinished at 16 KiB is refused; one byte less may still end.
        let mut head = b"GET /chat HTTP/1.1\r\nx-pad: ".to_vec();
        head.resize(16 * 1024 - 1, b'a');
        assert_eq!(
            parse_request(&head, DEFAULT_MAX_HEAD).unwrap().map(|r| r.1),
            None
        );
        head.push(b'a');
        let err = parse_request(&head, DEFAULT_MAX_HEAD).unwrap_err();
        assert_eq!(err, RequestError::HeadTooLarge(16 * 1024));
        assert_eq!(err.status().as_u16(), 431);
        // 64 fields pass, 65 do not.
        let with_fields = |n: usize| {
            let mut raw = String::from("GET /chat HTTP/1.1\r\n");
            for i in 0..n {
                raw.push_str(&format!("x-f{i}: v\r\n"));
            }
            raw.push_str("\r\n");
            parse_request(raw.as_bytes(), DEFAULT_MAX_HEAD)
        };
        assert_eq!(
            with_fields(MAX_HEADERS).unwrap().unwrap().0.headers().len(),
            64
        );
        let err = with_fields(MAX_HEADERS + 1).unwrap_err();
        assert_eq!(err, RequestError::TooManyHeaders);
        assert_eq!(err.status().as_u16(), 431);
        assert!(err.headers().is_empty());
    }

    #[test]
    fn refusals_carry_the_headers_http_requires() {
        let post = check(&RFC_REQUEST.replace("GET /chat", "POST /chat")).unwrap_err();
        assert_eq!(post, RequestError::MethodNotAllowed(Method::POST));
        let text = String::from_utf8(post.to_http1().to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nallow: GET\r\n"), "{text}");
        assert_eq!(post.to_response().headers()[header::ALLOW], "GET");
        let bad_key =
            check(&RFC_REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")).unwrap_err();
        assert_eq!(
            (bad_key.status().as_u16(), bad_key.headers()),
            (400, Vec::new())
        );
    }

    #[test]
    fn encode_response_writes_its_own_length_and_connection_fields() {
        let mut resp = Response::new("body".to_owned());
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        let text = String::from_utf8(encode_response(&resp).to_vec()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbody"
        );
    }

    #[test]
    fn host_and_key_must_each_be_there_once() {
        let host = "Host: server.example.com\r\n";
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let cases = [
            (RFC_REQUEST.replace(host, ""), RequestError::InvalidHost),
            (
                RFC_REQUEST.replace(host, "Host: \r\n"),
                RequestError::InvalidHost,
            ),
            (
                RFC_REQUEST.replace(host, &format!("{host}Host: other.example.com\r\n")),
                RequestError::InvalidHost,
            ),
            (RFC_REQUEST.replace(key, ""), RequestError::MissingKey),
            (
                RFC_REQUEST.replace(
                    key,
                    &format!("{key}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
                ),
                RequestError::InvalidKey,
            ),
        ];
        for (raw, want) in cases {
            let err = check(&raw).expect_err(&raw);
            assert_eq!(err, want, "{raw}");
            assert_eq!(err.status().as_u16(), 400);
        }
    }

    #[test]
    fn the_101_in_both_forms_carries_what_was_chosen() {
        let offer = check(RFC_REQUEST).unwrap();
        let none = std::str::from_utf8(&offer.accept(&Accept::default()))
            .unwrap()
            .to_owned();
        assert!(!none.contains("sec-websocket-extensions"), "{none}");
        assert!(!none.contains("sec-websocket-protocol"), "{none}");
        let deflate = ExtensionOffer {
            name: "permessage-deflate".into(),
            params: vec![("client_max_window_bits".into(), Some("10".into()))],
        };
        let mut extra = HeaderMap::new();
        extra.insert("x-node", HeaderValue::from_static("n1"));
        let accept = Accept {
            protocol: Some("chat".into()),
            extensions: vec![deflate],
            headers: extra,
        };
        let head = offer.accept(&accept);
        let head = std::str::from_utf8(&head).unwrap();
        for line in [
            "sec-websocket-extensions: permessage-deflate; client_max_window_bits=10\r\n",
            "sec-websocket-protocol: chat\r\n",
            "x-node: n1\r\n",
        ] {
            assert!(head.contains(line), "{line} missing in {head}");
        }
        let resp = offer.accept_response(&accept);
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = resp.headers();
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "Upgrade");
        assert_eq!(
            h[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        assert_eq!(
            h[header::SEC_WEBSOCKET_EXTENSIONS],
            "permessage-deflate; client_max_window_bits=10"
        );
        assert_eq!(h["x-node"], "n1");
    }
}
