//! Node-to-node requests over Redis pub/sub: a `POST /cmd` for a session another node
//! holds, and a disconnect for every node.
//!
//! Every node's pub/sub connection subscribes to two control channels besides its rooms:
//! its own, `rc:ctl:INSTANCE` (the instance is the random prefix of the node's session
//! ids, so a session id names the node that holds it), and `rc:ctl:all`. A request goes
//! to one node's channel, or to `all`; `PUBLISH` answers how many nodes received it,
//! which is how many answers to wait for (none: no node holds the session). Answers go to
//! the asking node's own channel, matched by the request's id.
//!
//! A message is a kind byte, a JSON header, a newline, then the body as it is (a
//! command's body need not be valid JSON: the node that holds the session answers it).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::engine::{CommandAnswer, SessionCall};
use crate::protocol::ErrorCode;

/// The channel every node listens on.
pub(super) const ALL: &str = "rc:ctl:all";
pub(super) const PREFIX: &str = "rc:ctl:";

/// The control channel of the node whose instance is `instance`.
pub(super) fn channel(instance: &str) -> String {
    format!("{PREFIX}{instance}")
}

/// Whether `channel` is a control channel (rooms' channels are `rc:{ROOM}`).
pub(super) fn is_control(channel: &str) -> bool {
    channel.starts_with(PREFIX)
}

/// A control message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Control {
    /// A request for `session`, from the node whose instance is `from`, to be answered
    /// within `wait_ms`.
    Command {
        from: String,
        id: u64,
        session: String,
        call: SessionCall,
        wait_ms: u64,
    },
    /// Close `client` everywhere.
    Disconnect {
        from: String,
        id: u64,
        client: String,
        code: u16,
        reason: String,
    },
    /// The answer to request `id`.
    Answer { id: u64, answer: Answer },
}

/// What a node answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Command(CommandAnswer),
    Closed(usize),
}

#[derive(Serialize, Deserialize)]
struct CommandHead {
    from: String,
    id: u64,
    session: String,
    wait_ms: u64,
    /// A poll (the body is empty), not commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    poll: Option<PollHead>,
}

#[derive(Serialize, Deserialize)]
struct PollHead {
    seq: u64,
    timeout_ms: u64,
    limit: usize,
}

#[derive(Serialize, Deserialize)]
struct DisconnectHead {
    from: String,
    id: u64,
    client: String,
    code: u16,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct AnswerHead {
    id: u64,
    /// `replies`, `refused` or `closed`.
    kind: String,
    /// The error code of a single command's reply, or why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// How many connections were closed.
    #[serde(default)]
    closed: usize,
}

fn pack(kind: u8, head: &impl Serialize, body: &[u8]) -> Bytes {
    let head = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(1 + head.len() + 1 + body.len());
    out.put_u8(kind);
    out.put_slice(&head);
    out.put_u8(b'\n');
    out.put_slice(body);
    out.freeze()
}

impl Control {
    pub(super) fn encode(&self) -> Bytes {
        match self {
            Control::Command {
                from,
                id,
                session,
                call,
                wait_ms,
            } => {
                let (poll, body): (_, &[u8]) = match call {
                    SessionCall::Commands(body) => (None, body),
                    SessionCall::Poll {
                        seq,
                        timeout_ms,
                        limit,
                    } => (
                        Some(PollHead {
                            seq: *seq,
                            timeout_ms: *timeout_ms,
                            limit: *limit,
                        }),
                        b"",
                    ),
                };
                let head = CommandHead {
                    from: from.clone(),
                    id: *id,
                    session: session.clone(),
                    wait_ms: *wait_ms,
                    poll,
                };
                pack(b'c', &head, body)
            }
            Control::Disconnect {
                from,
                id,
                client,
                code,
                reason,
            } => {
                let head = DisconnectHead {
                    from: from.clone(),
                    id: *id,
                    client: client.clone(),
                    code: *code,
                    reason: reason.clone(),
                };
                pack(b'd', &head, b"")
            }
            Control::Answer { id, answer } => {
                let (kind, code, closed, body): (&str, _, _, &[u8]) = match answer {
                    Answer::Command(CommandAnswer::Replies { error, body }) => {
                        ("replies", error.map(|c| c.as_str().to_owned()), 0, body)
                    }
                    Answer::Command(CommandAnswer::Refused { code, message }) => (
                        "refused",
                        Some(code.as_str().to_owned()),
                        0,
                        message.as_bytes(),
                    ),
                    Answer::Closed(n) => ("closed", None, *n, b""),
                };
                let head = AnswerHead {
                    id: *id,
                    kind: kind.to_owned(),
                    code,
                    closed,
                };
                pack(b'a', &head, body)
            }
        }
    }

    /// Parses a control message; `None` for anything else (a node of another version,
    /// or a stray publish on the channel).
    pub(super) fn decode(payload: Bytes) -> Option<Self> {
        let kind = *payload.first()?;
        let end = payload.iter().position(|&b| b == b'\n')?;
        let head = payload.get(1..end)?;
        let body = payload.slice(end + 1..);
        match kind {
            b'c' => {
                let h: CommandHead = serde_json::from_slice(head).ok()?;
                let call = match h.poll {
                    None => SessionCall::Commands(body),
                    Some(p) => SessionCall::Poll {
                        seq: p.seq,
                        timeout_ms: p.timeout_ms,
                        limit: p.limit,
                    },
                };
                Some(Control::Command {
                    from: h.from,
                    id: h.id,
                    session: h.session,
                    call,
                    wait_ms: h.wait_ms,
                })
            }
            b'd' => {
                let h: DisconnectHead = serde_json::from_slice(head).ok()?;
                Some(Control::Disconnect {
                    from: h.from,
                    id: h.id,
                    client: h.client,
                    code: h.code,
                    reason: h.reason,
                })
            }
            b'a' => {
                let h: AnswerHead = serde_json::from_slice(head).ok()?;
                let code = h.code.as_deref().and_then(ErrorCode::parse);
                let answer = match h.kind.as_str() {
                    "replies" => Answer::Command(CommandAnswer::Replies { error: code, body }),
                    "refused" => Answer::Command(CommandAnswer::Refused {
                        code: code.unwrap_or(ErrorCode::Unavailable),
                        message: String::from_utf8_lossy(&body).into_owned(),
                    }),
                    "closed" => Answer::Closed(h.closed),
                    _ => return None,
                };
                Some(Control::Answer { id: h.id, answer })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Control) {
        assert_eq!(Control::decode(c.encode()), Some(c));
    }

    #[test]
    fn every_message_survives_the_wire() {
        round_trip(Control::Command {
            from: "ab12cd34".into(),
            id: 7,
            session: "ab12cd34ffee".into(),
            // Not JSON, with a newline: the body is taken as it is.
            call: SessionCall::Commands(Bytes::from_static(b"{\"type\":\"ping\"\n,}\xff")),
            wait_ms: 12_000,
        });
        round_trip(Control::Command {
            from: "ab12cd34".into(),
            id: 8,
            session: "ab12cd34ffee".into(),
            call: SessionCall::Poll {
                seq: 41,
                timeout_ms: 25_000,
                limit: 100,
            },
            wait_ms: 27_000,
        });
        round_trip(Control::Disconnect {
            from: "x".into(),
            id: 1,
            client: "al\nice".into(),
            code: 4003,
            reason: "bye".into(),
        });
        round_trip(Control::Answer {
            id: 2,
            answer: Answer::Command(CommandAnswer::Replies {
                error: Some(ErrorCode::NotJoined),
                body: Bytes::from_static(b"{\"type\":\"error\"}"),
            }),
        });
        round_trip(Control::Answer {
            id: 3,
            answer: Answer::Command(CommandAnswer::Refused {
                code: ErrorCode::NotFound,
                message: "no such session".into(),
            }),
        });
        round_trip(Control::Answer {
            id: 4,
            answer: Answer::Closed(12),
        });
    }

    #[test]
    fn what_is_not_a_control_message_is_none() {
        for junk in [
            &b""[..],
            b"c",
            b"c{}",
            b"x{}\n",
            b"c{\"from\":1}\n",
            b"a{\"id\":1,\"kind\":\"what\"}\n",
        ] {
            assert_eq!(Control::decode(Bytes::from_static(junk)), None, "{junk:?}");
        }
        assert!(is_control(&channel("ab")) && is_control(ALL));
        assert!(!is_control("rc:{lobby}"));
    }
}
