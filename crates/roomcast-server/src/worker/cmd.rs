//! What is asked of an SSE or poll session, whichever node the request reached: its
//! commands (`POST /cmd`) and its polls.
//!
//! A `/cmd` body is one JSON command, or an array of them, exactly as a `/ws` client would
//! send them. Each runs on the worker that owns the session, in order (so a join, then a
//! publish, reach the room in that order), and the answer is the reply, or the array of
//! replies, a `/ws` client would get. A poll drops what its cursor acknowledged, waits
//! for events, and answers them with the next cursor. The HTTP driver (`crate::http`)
//! calls these for a session of its own node; the engine asks for them when another
//! node forwarded the request ([`LocalMsg::RemoteCall`]).

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::Worker;
use crate::engine::{CommandAnswer, Engine, HomeMsg, LocalMsg, Reply, SessionCall};
use crate::member::{HttpKind, HttpMember, frame_json};
use crate::protocol::ErrorCode;

/// How long one command may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of events in a poll's answer that goes to another node (through Redis,
/// whose pub/sub connections have an output limit); the cursor goes on from there.
const FORWARDED_POLL_BYTES: usize = 256 * 1024;

impl Worker {
    /// Runs the commands in `body` for `member`, and answers with their replies.
    pub(crate) async fn session_commands(
        self: &Rc<Self>,
        member: &Arc<HttpMember>,
        body: &[u8],
    ) -> CommandAnswer {
        let (commands, single) = match split(body) {
            Ok(c) => c,
            Err(message) => {
                return CommandAnswer::Refused {
                    code: ErrorCode::BadRequest,
                    message,
                };
            }
        };
        member.touch();
        let mut replies: Vec<(Bytes, Option<ErrorCode>)> = Vec::with_capacity(commands.len());
        for command in commands {
            let (notify, reply) = self.pending();
            let msg = LocalMsg::HttpCommand {
                member: member.key,
                text: Bytes::copy_from_slice(command.get().as_bytes()),
                notify,
            };
            self.send_local(usize::from(member.key.worker), msg);
            let reply = match tokio::time::timeout(REPLY_TIMEOUT, reply).await {
                Ok(Ok(reply)) => reply,
                _ => {
                    self.cancel_pending(notify);
                    Reply::error(None, ErrorCode::Unavailable, "no reply in time")
                }
            };
            replies.push((frame_json(&reply.frame()), reply.code()));
        }
        if single && let Some((body, error)) = replies.pop() {
            return CommandAnswer::Replies { error, body };
        }
        let mut out =
            BytesMut::with_capacity(replies.iter().map(|(r, _)| r.len() + 1).sum::<usize>() + 2);
        out.put_u8(b'[');
        for (i, (r, _)) in replies.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(r);
        }
        out.put_u8(b']');
        CommandAnswer::Replies {
            error: None,
            body: out.freeze(),
        }
    }

    /// A poll of `member`: the events up to `ack` arrived; waits at most `timeout` for
    /// one (answering at once if some are queued), then answers at most `limit` of them
    /// and at most `max_bytes` of events.
    pub(crate) async fn session_poll(
        self: &Rc<Self>,
        member: &Arc<HttpMember>,
        ack: Option<u64>,
        timeout: Duration,
        limit: usize,
        max_bytes: usize,
    ) -> Bytes {
        member.touch();
        if let Some(seq) = ack {
            member.ack(seq);
        }
        // Wait for something to return (or the timeout: then the answer has no events).
        let _ = tokio::time::timeout(
            timeout,
            std::future::poll_fn(|cx| {
                let mut st = member.state();
                if !st.events.is_empty() || st.closed || self.shared.is_draining() {
                    return Poll::Ready(());
                }
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }),
        )
        .await;
        member.touch();
        member.poll_answer(limit, max_bytes)
    }

    /// A request another node forwarded for a session of this one.
    pub(super) fn remote_call(
        self: &Rc<Self>,
        session: &str,
        call: SessionCall,
        reply: oneshot::Sender<CommandAnswer>,
    ) {
        let member = self.shared.session(session);
        let member = match (&call, member) {
            (SessionCall::Poll { .. }, Some(m)) if m.kind != HttpKind::Poll || m.is_closed() => {
                None
            }
            (_, m) => m,
        };
        let Some(member) = member else {
            let _ = reply.send(no_session());
            return;
        };
        // One forwarded poll per session at a time: each answer crosses Redis.
        if matches!(call, SessionCall::Poll { .. })
            && member.forwarded_poll.swap(true, Ordering::AcqRel)
        {
            let _ = reply.send(CommandAnswer::Refused {
                code: ErrorCode::RateLimited,
                message: "a poll of this session is already waiting".into(),
            });
            return;
        }
        let worker = self.clone();
        tokio::task::spawn_local(async move {
            let answer = match call {
                SessionCall::Commands(body) => worker.session_commands(&member, &body).await,
                SessionCall::Poll {
                    seq,
                    timeout_ms,
                    limit,
                } => {
                    let config = &worker.shared.config.http;
                    let timeout = Duration::from_millis(timeout_ms.min(config.poll_timeout_ms));
                    let limit = limit.clamp(1, config.poll_max_events);
                    let body = worker
                        .session_poll(&member, Some(seq), timeout, limit, FORWARDED_POLL_BYTES)
                        .await;
                    member.forwarded_poll.store(false, Ordering::Release);
                    CommandAnswer::Replies { error: None, body }
                }
            };
            let _ = reply.send(answer);
        });
    }
}

/// What came of sending a request to the node of a session.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// Not another node's session, or no broker to reach it through.
    No,
    /// That node's answer.
    Answer(CommandAnswer),
    /// No node holds the session (its node is gone).
    Gone,
    /// No answer in time, or the broker is unreachable.
    Silent,
}

impl Worker {
    /// Sends `call` to the node whose session `session` is, if that is another node's and
    /// a broker can reach it, and waits at most `wait` for the answer.
    pub(crate) async fn forward(
        self: &Rc<Self>,
        session: &str,
        call: SessionCall,
        wait: Duration,
    ) -> Forwarded {
        let Engine::Redis(_) = &self.engine else {
            return Forwarded::No;
        };
        if self.shared.is_mine(session) {
            return Forwarded::No;
        }
        let (reply, rx) = oneshot::channel();
        self.to_broker(HomeMsg::Forward {
            session: session.into(),
            call,
            wait,
            reply,
        });
        match tokio::time::timeout(wait + Duration::from_millis(500), rx).await {
            Ok(Ok(Some(answer))) => Forwarded::Answer(answer),
            Ok(Ok(None)) => Forwarded::Gone,
            _ => Forwarded::Silent,
        }
    }
}

/// The answer for a session no node holds.
pub(crate) fn no_session() -> CommandAnswer {
    CommandAnswer::Refused {
        code: ErrorCode::NotFound,
        message: "no such session: open one with GET /sse or GET /poll".into(),
    }
}

/// One command or an array of them, each kept as its raw JSON text; and whether it was
/// one (not an array).
fn split(body: &[u8]) -> Result<(Vec<Box<RawValue>>, bool), String> {
    let raw =
        serde_json::from_slice::<Box<RawValue>>(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if raw.get().trim_start().starts_with('[') {
        let list =
            serde_json::from_str(raw.get()).map_err(|e| format!("invalid command list: {e}"))?;
        return Ok((list, false));
    }
    Ok((vec![raw], true))
}
