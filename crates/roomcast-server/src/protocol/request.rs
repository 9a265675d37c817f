//! Client requests.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::RoomName;
use super::{ErrorCode, ProtoError};

/// A position in a room's stream: "everything after this".
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SincePos {
    /// The epoch the offset belongs to.
    pub epoch: String,
    /// The last offset the client has.
    pub offset: u64,
}

/// Every field any request may carry. Unknown fields are ignored, as the contract says,
/// and `data` and `presence` stay raw JSON text: they are passed on, never interpreted.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "ref")]
    reference: Option<u64>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    client: Option<String>,
    token: Option<String>,
    #[serde(borrow)]
    presence: Option<&'a RawValue>,
    since: Option<SincePos>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    limit: Option<u64>,
}

/// A request, checked for the fields its type needs.
#[derive(Debug)]
pub enum Request<'a> {
    /// `hello`: must come first.
    Hello {
        /// The client id (the server picks one when absent).
        client: Option<String>,
        /// An auth token.
        token: Option<String>,
    },
    /// `join`.
    Join {
        /// The room.
        room: RoomName,
        /// Presence info (a JSON object) if the member is to be visible.
        presence: Option<&'a RawValue>,
        /// Recover from this position.
        since: Option<SincePos>,
    },
    /// `leave`.
    Leave {
        /// The room.
        room: RoomName,
    },
    /// `publish`.
    Publish {
        /// The room.
        room: RoomName,
        /// Any JSON.
        data: &'a RawValue,
        /// The idempotency key.
        id: Option<Cow<'a, str>>,
    },
    /// `presence`: who is in the room.
    Presence {
        /// The room.
        room: RoomName,
    },
    /// `history`.
    History {
        /// The room.
        room: RoomName,
        /// From after this position.
        since: Option<SincePos>,
        /// At most this many ([`history_limit`]).
        limit: usize,
    },
    /// `ping`.
    Ping,
    /// `refresh`: a newer token for the same client, before the current one expires.
    Refresh {
        /// The token.
        token: String,
    },
}

/// How many messages a `history` request gets when it names no `limit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// The largest `limit` a `history` request may name.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// Checks a `history` request's `limit`, on every transport: 1 to [`MAX_HISTORY_LIMIT`],
/// [`DEFAULT_HISTORY_LIMIT`] when absent. A value out of range is refused, not clamped,
/// so a client never gets fewer messages than it asked for without being told.
pub fn history_limit(given: Option<u64>) -> Result<usize, ProtoError> {
    match given {
        None => Ok(DEFAULT_HISTORY_LIMIT),
        Some(n) if (1..=MAX_HISTORY_LIMIT as u64).contains(&n) => Ok(n as usize),
        Some(_) => Err(ProtoError::new(
            ErrorCode::BadRequest,
            format!("`limit` must be 1 to {MAX_HISTORY_LIMIT}"),
        )),
    }
}

/// The longest idempotency key accepted.
pub const MAX_ID_LEN: usize = 256;
/// The longest client id accepted.
pub const MAX_CLIENT_LEN: usize = 128;

/// Checks an idempotency key (`publish`'s `id`, on every transport).
pub fn check_id(id: &str) -> Result<(), ProtoError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ProtoError::new(
            ErrorCode::BadRequest,
            format!("`id` must be 1 to {MAX_ID_LEN} bytes"),
        ));
    }
    Ok(())
}

/// The client id a connection or session goes by: the one given (`hello`'s `client`, or
/// the `client` query parameter), checked, or a new anonymous one.
pub fn client_id(given: Option<&str>) -> Result<String, ProtoError> {
    match given {
        Some(c) if c.is_empty() || c.len() > MAX_CLIENT_LEN || c.chars().any(char::is_control) => {
            Err(ProtoError::new(
                ErrorCode::BadRequest,
                format!("`client` must be 1 to {MAX_CLIENT_LEN} bytes without control characters"),
            ))
        }
        Some(c) => Ok(c.to_owned()),
        None => Ok(format!("anon-{}", crate::random_id(6))),
    }
}

/// Only the `ref` of a request: read again when the whole envelope was refused.
#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref")]
    reference: Option<u64>,
}

/// Parses one text message. The `ref` is returned even when the request is refused, so
/// the error reply can carry it: a field of the wrong type (`"room":5`) loses nothing, only
/// JSON that is not an object or a `ref` that is not a u64 leaves the reply without one.
pub fn parse(text: &[u8]) -> (Option<u64>, Result<Request<'_>, ProtoError>) {
    // Derived structs would also take a JSON array, field by field in order
    // (`["publish",3]`): a request is an object, and nothing else is read for a `ref`.
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return (
            None,
            Err(ProtoError::new(
                ErrorCode::BadRequest,
                "invalid request: a request is one JSON object",
            )),
        );
    }
    let env: Envelope<'_> = match serde_json::from_slice(text) {
        Ok(env) => env,
        Err(e) => {
            // The error path only: a second, lenient read for the `ref`.
            let reference = serde_json::from_slice::<RefOnly>(text)
                .ok()
                .and_then(|r| r.reference);
            return (
                reference,
                Err(ProtoError::new(
                    ErrorCode::BadRequest,
                    format!("invalid request: {e}"),
                )),
            );
        }
    };
    (env.reference, request(env))
}

fn request(env: Envelope<'_>) -> Result<Request<'_>, ProtoError> {
    let Some(kind) = env.kind.as_deref() else {
        return Err(ProtoError::new(
            ErrorCode::BadRequest,
            "missing field `type`",
        ));
    };
    let room = |what: &str| -> Result<RoomName, ProtoError> {
        let name = env.room.as_deref().ok_or_else(|| {
            ProtoError::new(ErrorCode::BadRequest, format!("{what} needs a `room`"))
        })?;
        RoomName::new(name).map_err(|e| ProtoError::new(ErrorCode::BadRequest, e.to_string()))
    };
    Ok(match kind {
        "hello" => Request::Hello {
            client: env.client,
            token: env.token,
        },
        "join" => {
            let room = room("join")?;
            if let Some(p) = env.presence
                && !p.get().trim_start().starts_with('{')
            {
                return Err(ProtoError::new(
                    ErrorCode::BadRequest,
                    "`presence` must be a JSON object",
                ));
            }
            Request::Join {
                room,
                presence: env.presence,
                since: env.since,
            }
        }
        "leave" => Request::Leave {
            room: room("leave")?,
        },
        "publish" => {
            let room = room("publish")?;
            let data = env
                .data
                .ok_or_else(|| ProtoError::new(ErrorCode::BadRequest, "publish needs `data`"))?;
            if let Some(id) = &env.id {
                check_id(id)?;
            }
            Request::Publish {
                room,
                data,
                id: env.id,
            }
        }
        "presence" => Request::Presence {
            room: room("presence")?,
        },
        "history" => {
            let room = room("history")?;
            Request::History {
                room,
                since: env.since,
                limit: history_limit(env.limit)?,
            }
        }
        "ping" => Request::Ping,
        "refresh" => Request::Refresh {
            token: env
                .token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ProtoError::new(ErrorCode::BadRequest, "refresh needs `token`"))?,
        },
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(ProtoError::new(
                ErrorCode::UnknownType,
                format!("unknown request type {shown:?}"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (Option<u64>, Option<ErrorCode>) {
        let (r, req) = parse(text.as_bytes());
        (r, req.err().map(|e| e.code))
    }

    #[test]
    fn valid_requests() {
        let (r, req) = parse(br#"{"type":"publish","room":"lobby","data":{"a":[1,2]},"id":"k1","ref":4,"extra":true}"#);
        assert_eq!(r, Some(4));
        match req.unwrap() {
            Request::Publish { room, data, id } => {
                assert_eq!(room.as_str(), "lobby");
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
                assert_eq!(id.as_deref(), Some("k1"));
            }
            other => panic!("{other:?}"),
        }
        let (_, req) = parse(
            br#"{"type":"join","room":"a","presence":{"n":"x"},"since":{"epoch":"e","offset":41}}"#,
        );
        match req.unwrap() {
            Request::Join {
                since, presence, ..
            } => {
                assert_eq!(
                    since,
                    Some(SincePos {
                        epoch: "e".into(),
                        offset: 41
                    })
                );
                assert_eq!(presence.unwrap().get(), r#"{"n":"x"}"#);
            }
            other => panic!("{other:?}"),
        }
        let (_, req) = parse(br#"{"type":"history","room":"a","limit":1000}"#);
        assert!(matches!(req.unwrap(), Request::History { limit: 1000, .. }));
        let (_, req) = parse(br#"{"type":"history","room":"a","limit":1}"#);
        assert!(matches!(req.unwrap(), Request::History { limit: 1, .. }));
        let (_, req) = parse(br#"{"type":"history","room":"a"}"#);
        assert!(matches!(req.unwrap(), Request::History { limit: 100, .. }));
        // escaped strings cannot be borrowed and still parse
        let (_, req) = parse(br#"{"type":"publish","room":"lobby","data":"x","id":"k\u0031"}"#);
        assert!(matches!(req.unwrap(), Request::Publish { id: Some(id), .. } if id == "k1"));
    }

    #[test]
    fn refusals() {
        assert_eq!(code("not json"), (None, Some(ErrorCode::BadRequest)));
        assert_eq!(code(r#"{"ref":1}"#), (Some(1), Some(ErrorCode::BadRequest)));
        assert_eq!(
            code(r#"{"type":"dance","ref":2}"#),
            (Some(2), Some(ErrorCode::UnknownType))
        );
        assert_eq!(
            code(r#"{"type":"join","ref":3}"#),
            (Some(3), Some(ErrorCode::BadRequest))
        );
        assert_eq!(
            code(r#"{"type":"join","room":"a b","ref":3}"#),
            (Some(3), Some(ErrorCode::BadRequest))
        );
        assert_eq!(
            code(r#"{"type":"join","room":"a","presence":[1]}"#),
            (None, Some(ErrorCode::BadRequest))
        );
        assert_eq!(
            code(r#"{"type":"publish","room":"a","ref":5}"#),
            (Some(5), Some(ErrorCode::BadRequest))
        );
        assert_eq!(
            code(r#"{"type":"publish","room":"a","data":1,"id":""}"#),
            (None, Some(ErrorCode::BadRequest))
        );
        assert_eq!(
            code(r#"{"type":"ping","ref":"seven"}"#),
            (None, Some(ErrorCode::BadRequest))
        );
        assert_eq!(code(r#"[1,2]"#), (None, Some(ErrorCode::BadRequest)));
        // A field of the wrong type keeps the ref; a ref of the wrong type cannot be read.
        for text in [
            r#"{"type":"join","room":5,"ref":8}"#,
            r#"{"type":"history","room":"a","limit":"10","ref":8}"#,
            r#"{"type":"hello","client":42,"ref":8}"#,
            r#"{"ref":8,"type":"publish","room":"a","data":1,"id":3}"#,
        ] {
            assert_eq!(code(text), (Some(8), Some(ErrorCode::BadRequest)), "{text}");
        }
        assert_eq!(
            code(r#"{"type":"join","room":5,"ref":"8"}"#),
            (None, Some(ErrorCode::BadRequest))
        );
        // Not an object, even one that would fill the fields in order: no request, no ref
        // (found by the protocol_request fuzz target).
        for text in [
            "[22]",
            r#"["ping",7]"#,
            " [\"publish\",3,\"a\"]",
            "7",
            "\"hello\"",
        ] {
            assert_eq!(code(text), (None, Some(ErrorCode::BadRequest)), "{text}");
        }
        // One rule for `limit` on every transport: 1 to 1000, refused outside, never clamped.
        for limit in ["0", "1001", "5000"] {
            assert_eq!(
                code(&format!(
                    r#"{{"type":"history","room":"a","limit":{limit},"ref":6}}"#
                )),
                (Some(6), Some(ErrorCode::BadRequest)),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn id_and_client_length_bounds() {
        assert!(check_id(&"k".repeat(MAX_ID_LEN)).is_ok());
        for bad in [String::new(), "k".repeat(MAX_ID_LEN + 1)] {
            assert_eq!(check_id(&bad).unwrap_err().code, ErrorCode::BadRequest);
        }
        let longest = "c".repeat(MAX_CLIENT_LEN);
        assert_eq!(client_id(Some(&longest)).unwrap(), longest);
        assert_eq!(client_id(Some("alice")).unwrap(), "alice");
        for bad in [String::new(), "c".repeat(MAX_CLIENT_LEN + 1), "a\nb".into()] {
            assert_eq!(
                client_id(Some(&bad)).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad:?}"
            );
        }
        let anon = client_id(None).unwrap();
        assert!(anon.starts_with("anon-") && anon.len() > 5, "{anon}");
        assert_ne!(anon, client_id(None).unwrap());
        assert_eq!(history_limit(None).unwrap(), DEFAULT_HISTORY_LIMIT);
    }
}
