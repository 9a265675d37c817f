//! Replies and pushes, each built as a finished text frame.
//!
//! A push is serialized and framed once and the same `Bytes` go to every recipient; a
//! `message` frame is also what the room's history keeps, so recovery re-sends the very
//! bytes that went out live.

use std::sync::Arc;

use bytes::Bytes;

use super::RoomName;
use super::{ErrorCode, JsonFrame};

/// `{"type":"welcome",...}`.
pub fn welcome(
    r: Option<u64>,
    client: &str,
    session: &str,
    node: &str,
    heartbeat_ms: u64,
) -> Bytes {
    let mut f = JsonFrame::with_capacity(128);
    f.raw(b"{\"type\":\"welcome\"").reference(r);
    f.raw(b",\"client\":")
        .string(client)
        .raw(b",\"session\":")
        .string(session);
    f.raw(b",\"node\":")
        .string(node)
        .raw(b",\"heartbeat_ms\":")
        .number(heartbeat_ms)
        .raw(b"}");
    f.frame()
}

/// `{"type":"joined",...}`; `recovered` only when the join asked for recovery.
pub fn joined(
    r: Option<u64>,
    room: &RoomName,
    epoch: &str,
    offset: u64,
    recovered: Option<bool>,
) -> Bytes {
    let mut f = JsonFrame::with_capacity(96);
    f.raw(b"{\"type\":\"joined\"").reference(r);
    f.raw(b",\"room\":")
        .string(room.as_str())
        .raw(b",\"epoch\":")
        .string(epoch);
    f.raw(b",\"offset\":").number(offset);
    if let Some(rec) = recovered {
        f.raw(if rec {
            b",\"recovered\":true"
        } else {
            b",\"recovered\":false"
        });
    }
    f.raw(b"}");
    f.frame()
}

/// `{"type":"left",...}`.
pub fn left(r: Option<u64>, room: &RoomName) -> Bytes {
    let mut f = JsonFrame::with_capacity(64);
    f.raw(b"{\"type\":\"left\"")
        .reference(r)
        .raw(b",\"room\":")
        .string(room.as_str())
        .raw(b"}");
    f.frame()
}

/// `{"type":"ack",...}`.
pub fn ack(r: Option<u64>, room: &RoomName, offset: u64) -> Bytes {
    let mut f = JsonFrame::with_capacity(64);
    f.raw(b"{\"type\":\"ack\"")
        .reference(r)
        .raw(b",\"room\":")
        .string(room.as_str());
    f.raw(b",\"offset\":").number(offset).raw(b"}");
    f.frame()
}

/// `{"type":"pong",...}`.
pub fn pong(r: Option<u64>) -> Bytes {
    let mut f = JsonFrame::with_capacity(32);
    f.raw(b"{\"type\":\"pong\"").reference(r).raw(b"}");
    f.frame()
}

/// `{"type":"refreshed",...}`: the connection goes on until `expires_at` (ms).
pub fn refreshed(r: Option<u64>, expires_at: u64) -> Bytes {
    let mut f = JsonFrame::with_capacity(64);
    f.raw(b"{\"type\":\"refreshed\"")
        .reference(r)
        .raw(b",\"expires_at\":")
        .number(expires_at)
        .raw(b"}");
    f.frame()
}

/// `{"type":"token_expiring","expires_at":...}`: a push, sent shortly before the token's
/// `exp`; without a `refresh` by then the connection closes with 4009.
pub fn token_expiring(expires_at: u64) -> Bytes {
    let mut f = JsonFrame::with_capacity(64);
    f.raw(b"{\"type\":\"token_expiring\",\"expires_at\":")
        .number(expires_at)
        .raw(b"}");
    f.frame()
}

/// `{"type":"error",...}`.
pub fn error(r: Option<u64>, code: ErrorCode, message: &str) -> Bytes {
    let mut f = JsonFrame::with_capacity(64 + message.len());
    f.raw(b"{\"type\":\"error\"")
        .reference(r)
        .raw(b",\"code\":\"")
        .raw(code.as_str().as_bytes());
    f.raw(b"\",\"message\":").string(message).raw(b"}");
    f.frame()
}

/// The `message` push; returns the frame and where its JSON starts.
///
/// Its text is [`message_head`], the epoch, `","offset":`, the offset, [`message_tail`],
/// the timestamp and `}`: the Redis engine's publish script puts the same pieces
/// together, with the epoch, offset and time it takes in Redis.
pub fn message(
    room: &RoomName,
    epoch: &str,
    offset: u64,
    from: &str,
    data: &[u8],
    ts: u64,
) -> (Bytes, u8) {
    let mut f = JsonFrame::with_capacity(96 + data.len());
    message_head(f.json_mut(), room);
    f.raw(epoch.as_bytes())
        .raw(b"\",\"offset\":")
        .number(offset);
    message_tail(f.json_mut(), from, data);
    f.number(ts).raw(b"}");
    f.finish()
}

/// A `message` push's text up to its epoch: `{"type":"message","room":R,"epoch":"`.
/// Epochs are the server's own hex strings, so they need no escaping.
pub fn message_head(out: &mut Vec<u8>, room: &RoomName) {
    out.extend_from_slice(b"{\"type\":\"message\",\"room\":");
    let _ = serde_json::to_writer(&mut *out, room.as_str());
    out.extend_from_slice(b",\"epoch\":\"");
}

/// A `message` push's text after its offset, up to its timestamp:
/// `,"from":F,"data":D,"ts":`.
pub fn message_tail(out: &mut Vec<u8>, from: &str, data: &[u8]) {
    out.extend_from_slice(b",\"from\":");
    let _ = serde_json::to_writer(&mut *out, from);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b",\"ts\":");
}

/// `{"type":"presence","members":[...]}`.
pub fn presence<'a>(
    r: Option<u64>,
    room: &RoomName,
    members: impl Iterator<Item = (&'a Arc<str>, &'a Bytes)>,
) -> Bytes {
    let mut f = JsonFrame::with_capacity(128);
    f.raw(b"{\"type\":\"presence\"")
        .reference(r)
        .raw(b",\"room\":")
        .string(room.as_str());
    f.raw(b",\"members\":");
    member_list(&mut f, members);
    f.raw(b"}");
    f.frame()
}

/// The `presence_diff` push.
pub fn presence_diff(room: &RoomName, joined: &[(Arc<str>, Bytes)], left: &[Arc<str>]) -> Bytes {
    let mut f = JsonFrame::with_capacity(64 + 48 * (joined.len() + left.len()));
    f.raw(b"{\"type\":\"presence_diff\",\"room\":")
        .string(room.as_str())
        .raw(b",\"joined\":");
    member_list(&mut f, joined.iter().map(|(c, i)| (c, i)));
    f.raw(b",\"left\":[");
    for (i, client) in left.iter().enumerate() {
        if i > 0 {
            f.raw(b",");
        }
        f.raw(b"{\"client\":").string(client).raw(b"}");
    }
    f.raw(b"]}");
    f.frame()
}

/// `[{"client":...,"info":...},...]`.
fn member_list<'a>(f: &mut JsonFrame, members: impl Iterator<Item = (&'a Arc<str>, &'a Bytes)>) {
    f.raw(b"[");
    for (i, (client, info)) in members.enumerate() {
        if i > 0 {
            f.raw(b",");
        }
        f.raw(b"{\"client\":")
            .string(client)
            .raw(b",\"info\":")
            .raw(info)
            .raw(b"}");
    }
    f.raw(b"]");
}

/// `{"type":"history","messages":[...]}` from the messages' JSON texts.
pub fn history<'a>(
    r: Option<u64>,
    room: &RoomName,
    epoch: &str,
    messages: impl Iterator<Item = &'a [u8]>,
) -> Bytes {
    let mut f = JsonFrame::with_capacity(256);
    f.raw(b"{\"type\":\"history\"")
        .reference(r)
        .raw(b",\"room\":")
        .string(room.as_str());
    f.raw(b",\"epoch\":").string(epoch).raw(b",\"messages\":[");
    for (i, m) in messages.enumerate() {
        if i > 0 {
            f.raw(b",");
        }
        f.raw(m);
    }
    f.raw(b"]}");
    f.frame()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(frame: &Bytes) -> Value {
        // the payload of a short unmasked text frame starts after a 2- or 4-byte header
        let at = if frame[1] == 126 { 4 } else { 2 };
        assert_eq!(frame[0], 0x81, "a final text frame");
        serde_json::from_slice(&frame[at..]).unwrap()
    }

    #[test]
    fn shapes_match_the_contract() {
        let room = RoomName::new("lobby").unwrap();
        assert_eq!(
            parse(&welcome(Some(1), "alice", "s1", "n1", 25000)),
            json!({"type":"welcome","ref":1,"client":"alice","session":"s1","node":"n1","heartbeat_ms":25000})
        );
        assert_eq!(
            parse(&joined(Some(2), &room, "e", 45, Some(true))),
            json!({"type":"joined","ref":2,"room":"lobby","epoch":"e","offset":45,"recovered":true})
        );
        assert_eq!(
            parse(&joined(None, &room, "e", 0, None)),
            json!({"type":"joined","room":"lobby","epoch":"e","offset":0})
        );
        assert_eq!(
            parse(&left(Some(3), &room)),
            json!({"type":"left","ref":3,"room":"lobby"})
        );
        assert_eq!(
            parse(&ack(Some(4), &room, 46)),
            json!({"type":"ack","ref":4,"room":"lobby","offset":46})
        );
        assert_eq!(parse(&pong(Some(7))), json!({"type":"pong","ref":7}));
        assert_eq!(
            parse(&error(None, ErrorCode::NotJoined, "join \"lobby\" first")),
            json!({"type":"error","code":"not_joined","message":"join \"lobby\" first"})
        );
        let (frame, at) = message(&room, "e", 46, "alice", br#"{"text":"hi"}"#, 1732181234567);
        assert_eq!(usize::from(at), 2);
        assert_eq!(
            parse(&frame),
            json!({"type":"message","room":"lobby","epoch":"e","offset":46,"from":"alice","data":{"text":"hi"},"ts":1732181234567u64})
        );
        let alice: Arc<str> = Arc::from("alice");
        let info = Bytes::from_static(b"{\"n\":1}");
        assert_eq!(
            parse(&presence(Some(5), &room, [(&alice, &info)].into_iter())),
            json!({"type":"presence","ref":5,"room":"lobby","members":[{"client":"alice","info":{"n":1}}]})
        );
        assert_eq!(
            parse(&presence_diff(
                &room,
                &[(alice.clone(), info.clone())],
                &[Arc::from("carol")]
            )),
            json!({"type":"presence_diff","room":"lobby","joined":[{"client":"alice","info":{"n":1}}],"left":[{"client":"carol"}]})
        );
        let m = &frame[2..];
        assert_eq!(
            parse(&history(Some(6), &room, "e", [m, m].into_iter()))["messages"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn lists_of_several_are_comma_separated() {
        let room = RoomName::new("lobby").unwrap();
        let (ann, bob): (Arc<str>, Arc<str>) = (Arc::from("ann"), Arc::from("bob"));
        let info = Bytes::from_static(b"{}");
        let joined = [(ann.clone(), info.clone()), (bob.clone(), info.clone())];
        let left: [Arc<str>; 3] = [Arc::from("c1"), Arc::from("c2"), Arc::from("c3")];
        assert_eq!(
            parse(&presence_diff(&room, &joined, &left)),
            json!({"type":"presence_diff","room":"lobby",
                "joined":[{"client":"ann","info":{}},{"client":"bob","info":{}}],
                "left":[{"client":"c1"},{"client":"c2"},{"client":"c3"}]})
        );
        assert_eq!(
            parse(&presence(
                None,
                &room,
                [(&ann, &info), (&bob, &info)].into_iter()
            ))["members"],
            json!([{"client":"ann","info":{}},{"client":"bob","info":{}}])
        );
        assert_eq!(parse(&presence_diff(&room, &[], &[]))["left"], json!([]));
    }
}
