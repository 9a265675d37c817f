//! The client side of the opening handshake: `ClientHandshake::parse_response` on
//! arbitrary bytes.
//!
//! The accept key is random, so every occurrence of the marker `{accept}` in the input is
//! replaced by the right `Sec-WebSocket-Accept` value; that lets the fuzzer get past the
//! key check to the subprotocol and extension checks.
//!
//! Checked, besides "never panics": an accepted answer is a 101 whose head lies within
//! the input, with only a subprotocol and extensions that were offered.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use roomcast_ws::handshake::{
    ClientHandshake, ClientOptions, DEFAULT_MAX_HEAD, ExtensionOffer, accept_key,
};

const MARKER: &[u8] = b"{accept}";
const PROTOCOLS: [&str; 2] = ["chat", "superchat"];
const EXTENSION: &str = "permessage-deflate";

struct Client {
    handshake: ClientHandshake,
    accept: String,
}

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let options = ClientOptions {
            protocols: PROTOCOLS.map(String::from).to_vec(),
            extensions: vec![ExtensionOffer {
                name: EXTENSION.into(),
                params: vec![("client_max_window_bits".into(), None)],
            }],
            ..ClientOptions::default()
        };
        let (handshake, request) = ClientHandshake::new("example.com:8080", "/chat", &options);
        let request = std::str::from_utf8(&request).expect("the request is ASCII");
        let key = request
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-key: "))
            .expect("the request has a key");
        Client {
            handshake,
            accept: accept_key(key.trim().as_bytes()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let client = client();
    let input = replace_marker(data, client.accept.as_bytes());
    match client.handshake.parse_response(&input) {
        Ok(Some((answer, n))) => {
            assert!(n <= input.len(), "head length {n} of {}", input.len());
            assert_eq!(answer.response.status().as_u16(), 101);
            if let Some(p) = &answer.protocol {
                assert!(PROTOCOLS.contains(&p.as_str()), "protocol {p:?} was not offered");
            }
            for e in &answer.extensions {
                assert_eq!(e.name, EXTENSION, "extension {e:?} was not offered");
            }
            // The head alone gives the same answer.
            let again = client.handshake.parse_response(&input[..n]);
            assert_eq!(again.map(|a| a.map(|(_, m)| m)), Ok(Some(n)));
        }
        Ok(None) => assert!(input.len() < DEFAULT_MAX_HEAD),
        Err(_) => {}
    }
});

fn replace_marker(data: &[u8], accept: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    let mut rest = data;
    while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(accept);
        rest = &rest[at + MARKER.len()..];
    }
    out.extend_from_slice(rest);
    out
}
