//! What the Redis engine reads back: script replies, stream entries and live messages,
//! parsed without trusting their shape (a reply that does not parse is an error, never a
//! panic).

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use crate::protocol::JsonFrame;

/// A live message on a room's channel: `OFFSET EPOCH JSON`.
#[derive(Debug)]
pub(super) struct Live {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub json: Bytes,
}

/// A WebSocket text frame of a JSON text.
pub(super) fn frame_of(json: &[u8]) -> Bytes {
    let mut f = JsonFrame::with_capacity(json.len());
    f.raw(json);
    f.frame()
}

pub(super) fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn int_of(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn string_of(v: Value) -> Option<String> {
    bytes_of(v).and_then(|b| String::from_utf8(b).ok())
}

pub(super) fn parse_published(v: Value) -> Option<(u64, Arc<str>, bool)> {
    let Value::Array(items) = v else { return None };
    let mut it = items.into_iter();
    let offset = int_of(&it.next()?)?;
    let epoch = string_of(it.next()?)?;
    let duplicate = int_of(&it.next()?)? == 1;
    Some((offset, Arc::from(epoch), duplicate))
}

pub(super) fn parse_tick(v: Value) -> Option<(String, u64)> {
    let Value::Array(items) = v else { return None };
    let mut it = items.into_iter();
    let epoch = string_of(it.next()?)?;
    let top = int_of(&it.next()?)?;
    Some((epoch, top))
}

/// A read of a room: its epoch ('' when it has no state), top, and entries
/// `(offset, ts, json)`.
#[derive(Debug)]
pub(super) struct Read {
    pub epoch: String,
    pub top: u64,
    pub entries: Vec<(u64, u64, Bytes)>,
}

pub(super) fn parse_read(v: Value) -> Option<Read> {
    let Value::Array(items) = v else { return None };
    let mut it = items.into_iter();
    let epoch = string_of(it.next()?)?;
    let top = int_of(&it.next()?)?;
    let entries = match it.next() {
        Some(Value::Array(entries)) => entries.into_iter().filter_map(parse_entry).collect(),
        _ => Vec::new(),
    };
    Some(Read {
        epoch,
        top,
        entries,
    })
}

/// `[id, [field, value, ...]]` of a stream entry.
pub(super) fn parse_entry(v: Value) -> Option<(u64, u64, Bytes)> {
    let Value::Array(parts) = v else { return None };
    let mut parts = parts.into_iter();
    let id = string_of(parts.next()?)?;
    let offset = id.split('-').next()?.parse().ok()?;
    let Some(Value::Array(fields)) = parts.next() else {
        return None;
    };
    let (mut ts, mut json) = (0, None);
    let mut f = fields.into_iter();
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        match bytes_of(k).as_deref() {
            Some(b"t") => ts = int_of(&v).unwrap_or(0),
            Some(b"j") => json = bytes_of(v),
            _ => {}
        }
    }
    Some((offset, ts, Bytes::from(json?)))
}

/// `OFFSET EPOCH JSON` of a live message.
pub(super) fn parse_live(body: Bytes) -> Option<Live> {
    let space = body.iter().position(|&b| b == b' ')?;
    let offset = std::str::from_utf8(&body[..space]).ok()?.parse().ok()?;
    let rest = body.slice(space + 1..);
    let space = rest.iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&rest[..space]).ok()?;
    Some(Live {
        offset,
        epoch: Arc::from(epoch),
        json: rest.slice(space + 1..),
    })
}

/// `[client, info, ...]` of the presence script, sorted by client.
pub(super) fn parse_presence(v: Value) -> Option<Vec<(Arc<str>, Bytes)>> {
    let Value::Array(items) = v else { return None };
    let mut members: Vec<(Arc<str>, Bytes)> = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(c), Some(i)) = (it.next(), it.next()) {
        let client = String::from_utf8(bytes_of(c)?).ok()?;
        members.push((Arc::from(client), Bytes::from(bytes_of(i)?)));
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    Some(members)
}
