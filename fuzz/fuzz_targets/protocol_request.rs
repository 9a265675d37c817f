//! The `/ws` JSON protocol parser on arbitrary bytes (`roomcast_server::protocol::parse`).
//!
//! Checked, besides "never panics": a `ref` is returned only for JSON that has one, and
//! the error reply built for a refusal is one JSON object carrying that `ref` and a code.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use roomcast_server::protocol::{parse, reply};
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let (reference, request) = parse(data);
    // The parser skips the fields it ignores without checking their UTF-8 (frames reach
    // it validated; `/cmd` bodies may not be), so compare with the lossy text.
    // The fields are read as raw JSON text: the parser skips the ones it ignores, and a
    // skipped `1e999` or lone `\uD800` escape is JSON a `serde_json::Value` cannot hold.
    let text = String::from_utf8_lossy(data);
    let fields: Option<HashMap<String, &RawValue>> = serde_json::from_str(&text).ok();
    if let Some(r) = reference {
        let fields = fields.as_ref().expect("a ref from text that is not a JSON object");
        let raw = fields.get("ref").expect("a ref from an object without one");
        assert_eq!(serde_json::from_str::<u64>(raw.get()).ok(), Some(r));
    }
    if let Err(e) = request {
        let frame = reply::error(reference, e.code, &e.message);
        // A server text frame: 2 or 4 header bytes (the reply is under 64 KiB).
        let body = if frame[1] == 126 { &frame[4..] } else { &frame[2..] };
        let v: serde_json::Value = serde_json::from_slice(body).expect("the error reply is JSON");
        assert_eq!(v["type"], "error");
        assert_eq!(v["ref"].as_u64(), reference);
        assert!(v["code"].is_string());
    }
});
