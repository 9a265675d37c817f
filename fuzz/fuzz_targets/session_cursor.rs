//! The SSE and poll session positions on arbitrary text: a poll `cursor` and an SSE
//! `Last-Event-ID` (`roomcast_server::fuzz`).
//!
//! Checked, besides "never panics": what decodes re-encodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    roomcast_server::fuzz::cursor(&text);
    roomcast_server::fuzz::positions(&text);
});
