//! The server side of the opening handshake on arbitrary bytes: `parse_request`, then
//! `validate_request`, then the answer.
//!
//! Checked, besides "never panics": a complete head lies within the input and the
//! limit and parses the same from exactly its own bytes; a valid offer's 101 answer is a
//! complete HTTP/1.1 response carrying the right `Sec-WebSocket-Accept`, and echoing the
//! offered subprotocol and extensions round-trips through the header grammar; every
//! refusal is a complete 4xx response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_ws::handshake::{
    Accept, DEFAULT_MAX_HEAD, accept_key, headers, parse_request, validate_request,
};

fuzz_target!(|data: &[u8]| {
    for max_head in [DEFAULT_MAX_HEAD, 128] {
        check(data, max_head);
    }
});

fn check(data: &[u8], max_head: usize) {
    let (req, n) = match parse_request(data, max_head) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() < max_head, "partial head of {} bytes", data.len());
            return;
        }
        Err(e) => return check_refusal(&e.to_http1(), e.status().as_u16()),
    };
    assert!(n <= data.len() && n <= max_head, "head length {n}");
    let again = parse_request(&data[..n], max_head).expect("the head alone parses");
    assert_eq!(again.map(|(_, m)| m), Some(n));

    let offer = match validate_request(req.method(), req.version(), req.headers()) {
        Ok(offer) => offer,
        Err(e) => return check_refusal(&e.to_http1(), e.status().as_u16()),
    };
    let reply = offer.accept(&Accept::default());
    assert!(reply.starts_with(b"HTTP/1.1 101"), "{reply:?}");

    // Echo what was offered: the first subprotocol and every extension.
    let accept = Accept {
        protocol: offer.protocols.first().cloned(),
        extensions: offer.extensions.clone(),
        ..Accept::default()
    };
    let reply = offer.accept(&accept);
    assert!(reply.starts_with(b"HTTP/1.1 101 "), "{reply:?}");
    let mut fields = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut fields);
    assert_eq!(
        parsed.parse(&reply),
        Ok(httparse::Status::Complete(reply.len())),
        "{reply:?}"
    );
    assert_eq!(parsed.code, Some(101));
    let field = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let key = req.headers()["sec-websocket-key"].as_bytes().trim_ascii();
    assert_eq!(
        field("sec-websocket-accept"),
        Some(accept_key(key).as_bytes())
    );
    assert_eq!(
        field("sec-websocket-protocol"),
        accept.protocol.as_deref().map(str::as_bytes)
    );

    let response = offer.accept_response(&accept);
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(
        headers::extensions(response.headers()),
        Ok(offer.extensions.clone()),
        "extensions do not round-trip"
    );
}

fn check_refusal(reply: &[u8], status: u16) {
    assert!((400..500).contains(&status), "refusal with status {status}");
    let mut fields = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut fields);
    match parsed.parse(reply) {
        Ok(httparse::Status::Complete(_)) => assert_eq!(parsed.code, Some(status)),
        other => panic!("refusal is not an HTTP response: {other:?} {reply:?}"),
    }
}
