//! WebSockets over HTTP/2 (RFC 8441): the extended CONNECT that opens a WebSocket on one
//! stream of an HTTP/2 connection, both roles, without I/O.
//!
//! The HTTP/2 library carries the request and its `:protocol` pseudo-header; what is
//! checked here is what RFC 8441 section 5 keeps of RFC 6455's handshake: the version,
//! subprotocols and extensions. There is no `Sec-WebSocket-Key` and no
//! `Sec-WebSocket-Accept`, and the answer is a 200, not a 101. Once it is sent, the
//! stream's DATA frames carry RFC 6455 frames, masked by the client as over TCP.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::client::{ClientHandshake, ClientOptions, ResponseError, ServerAnswer};
use super::headers;
use super::server::{Accept, ClientOffer, RequestError, accept_fields};

/// The `:protocol` of an extended CONNECT that opens a WebSocket ("The :protocol
/// pseudo-header field MUST be included in the CONNECT request, and it MUST have a value
/// of websocket to initiate a WebSocket connection on an HTTP/2 stream", RFC 8441
/// section 5).
pub const PROTOCOL: &str = "websocket";

/// Checks an extended CONNECT against RFC 8441 sections 4 and 5: `method` and
/// `protocol` (the `:protocol` pseudo-header, as the HTTP/2 library gives it), and
/// `authority` (`:authority`), then the RFC 6455 fields section 5 keeps.
pub fn validate_connect(
    method: &Method,
    protocol: Option<&str>,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Result<ClientOffer, RequestError> {
    // "The :method pseudo-header field is set to CONNECT" (section 5).
    if method != Method::CONNECT {
        return Err(RequestError::ConnectRequired(method.clone()));
    }
    if !protocol.is_some_and(|p| p.eq_ignore_ascii_case(PROTOCOL)) {
        return Err(RequestError::NotWebSocket);
    }
    // "On requests bearing the :protocol pseudo-header field, the :authority
    // pseudo-header field is interpreted according to Section 8.1.2.3 of [RFC7540]
    // instead of Section 8.3 of that document" (section 4): it names the server.
    if authority.is_none_or(str::is_empty) {
        return Err(RequestError::InvalidHost);
    }
    match headers::single(headers, header::SEC_WEBSOCKET_VERSION) {
        Ok(Some(v)) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(RequestError::UnsupportedVersion),
    }
    ClientOffer::with_fields(None, headers)
}

impl ClientOffer {
    /// The answer to an extended CONNECT: a 200 with the chosen subprotocol and
    /// extensions ("If the server accepts the request, it responds with a 2xx (Successful)
    /// status code", RFC 8441 section 5), for the HTTP/2 library to send.
    pub fn accept_connect(&self, accept: &Accept) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        for (name, value) in accept_fields(accept) {
            h.append(name, value);
        }
        resp
    }
}

impl RequestError {
    /// The status of the refusal over HTTP/2: as over HTTP/1.1, but 400 for a 426, which
    /// "MUST send an Upgrade header field" (RFC 9110 section 15.5.22) that HTTP/2 does
    /// not allow; RFC 6455 section 4.2.2 names 426 only as an example ("such as").
    pub fn status_h2(&self) -> StatusCode {
        match self.status() {
            StatusCode::UPGRADE_REQUIRED => StatusCode::BAD_REQUEST,
            s => s,
        }
    }

    /// The header fields of the refusal that HTTP/2 allows: `Upgrade` is a
    /// connection-specific field, which an HTTP/2 message must not carry (RFC 9113
    /// section 8.2.2).
    pub fn headers_h2(&self) -> Vec<(header::HeaderName, HeaderValue)> {
        let mut h = self.headers();
        h.retain(|(name, _)| name != header::UPGRADE);
        h
    }
}

impl ClientHandshake {
    /// Starts an extended CONNECT: the state to check the answer with, and the header
    /// fields to send beside `:method = CONNECT`, `:protocol = websocket`, `:scheme`,
    /// `:path` and `:authority`, which the HTTP/2 library sets.
    pub fn connect(options: &ClientOptions) -> (Self, HeaderMap) {
        let mut fields = HeaderMap::new();
        fields.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        if !options.protocols.is_empty()
            && let Ok(v) = HeaderValue::from_str(&options.protocols.join(", "))
        {
            fields.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        if !options.extensions.is_empty() {
            let list: Vec<String> = options.extensions.iter().map(ToString::to_string).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                fields.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
            }
        }
        for (name, value) in &options.headers {
            fields.append(name, value.clone());
        }
        let state = Self {
            expected_accept: String::new(),
            protocols: options.protocols.clone(),
            extension_names: options.extensions.iter().map(|e| e.name.clone()).collect(),
            max_head: super::server::DEFAULT_MAX_HEAD,
        };
        (state, fields)
    }

    /// Checks the answer to an extended CONNECT: a 2xx, and only the subprotocol and
    /// extensions offered.
    pub fn check_connect_response(
        &self,
        response: Response<()>,
    ) -> Result<ServerAnswer, ResponseError> {
        if !response.status().is_success() {
            return Err(ResponseError::UnexpectedStatus(response.status()));
        }
        self.check_fields(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::ExtensionOffer;
    use crate::handshake::headers::map as fields;

    #[test]
    fn an_extended_connect_round_trip() {
        let options = ClientOptions {
            protocols: vec!["chat".into()],
            extensions: vec![ExtensionOffer {
                name: "permessage-deflate".into(),
                params: vec![],
            }],
            ..ClientOptions::default()
        };
        let (client, sent) = ClientHandshake::connect(&options);
        assert!(!sent.contains_key(header::SEC_WEBSOCKET_KEY));
        let offer = validate_connect(
            &Method::CONNECT,
            Some("websocket"),
            Some("example.com"),
            &sent,
        )
        .expect("a valid offer");
        assert_eq!(offer.protocols, ["chat"]);
        assert_eq!(offer.extensions[0].name, "permessage-deflate");
        let answer = offer.accept_connect(&Accept {
            protocol: offer.select_protocol(&["chat"]),
            extensions: offer.extensions.clone(),
            ..Accept::default()
        });
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(!answer.headers().contains_key(header::SEC_WEBSOCKET_ACCEPT));
        let checked = client.check_connect_response(answer).expect("accepted");
        assert_eq!(checked.protocol.as_deref(), Some("chat"));
        assert_eq!(checked.extensions.len(), 1);
    }

    #[test]
    fn refusals() {
        let ok = fields(&[("sec-websocket-version", "13")]);
        let check = |m: Method, p: Option<&str>, a: Option<&str>, h: &HeaderMap| {
            validate_connect(&m, p, a, h)
                .map(|_| ())
                .map_err(|e| e.status().as_u16())
        };
        let host = Some("example.com");
        assert_eq!(check(Method::CONNECT, Some("websocket"), host, &ok), Ok(()));
        assert_eq!(check(Method::GET, Some("websocket"), host, &ok), Err(405));
        assert_eq!(check(Method::CONNECT, None, host, &ok), Err(426));
        assert_eq!(
            check(Method::CONNECT, Some("webtransport"), host, &ok),
            Err(426)
        );
        assert_eq!(
            check(Method::CONNECT, Some("websocket"), None, &ok),
            Err(400)
        );
        let old = fields(&[("sec-websocket-version", "8")]);
        assert_eq!(
            check(Method::CONNECT, Some("websocket"), host, &old),
            Err(426)
        );
        let bad = fields(&[
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "a b"),
        ]);
        assert_eq!(
            check(Method::CONNECT, Some("websocket"), host, &bad),
            Err(400)
        );
        let allow = RequestError::ConnectRequired(Method::GET).headers_h2();
        assert_eq!(allow[0].1, "CONNECT");
        assert!(
            RequestError::NotWebSocket
                .headers_h2()
                .iter()
                .all(|(n, _)| n != header::UPGRADE)
        );
    }

    #[test]
    fn an_answer_with_what_was_not_offered_fails() {
        let (client, _) = ClientHandshake::connect(&ClientOptions::default());
        let mut resp = Response::new(());
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat"),
        );
        assert!(matches!(
            client.check_connect_response(resp),
            Err(ResponseError::UnexpectedProtocol(_))
        ));
        let mut refused = Response::new(());
        *refused.status_mut() = StatusCode::FORBIDDEN;
        assert!(matches!(
            client.check_connect_response(refused),
            Err(ResponseError::UnexpectedStatus(StatusCode::FORBIDDEN))
        ));
    }
}
