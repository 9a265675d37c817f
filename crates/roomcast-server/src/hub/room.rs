//! The authoritative state of one room, kept by the room's home worker: epoch, offsets
//! and history, idempotency keys, presence, and which workers have members.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::log::{Entry, RoomLog, Since};
use super::presence::Presence;
use crate::protocol::{RoomName, SincePos, reply};

/// Members of a room on one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subs {
    /// Connections in the room.
    pub members: u32,
    /// Of which receive presence diffs.
    pub presence: u32,
}

/// How long a room keeps its messages.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// At most this many messages.
    pub max_messages: usize,
    /// None older than this.
    pub max_age_ms: u64,
}

/// The outcome of a publish.
#[derive(Debug)]
pub struct Published {
    /// The message's offset (the first one's, for a retried idempotency key).
    pub offset: u64,
    /// The `message` frame to deliver; `None` for a retry already delivered.
    pub frame: Option<Bytes>,
}

/// The outcome of a join.
#[derive(Debug)]
pub struct Joined {
    /// The room's last offset.
    pub offset: u64,
    /// Present when the join asked for recovery.
    pub recovered: Option<bool>,
    /// The missed `message` frames, in order, when recovered.
    pub missed: Vec<Bytes>,
}

/// One room at its home worker.
#[derive(Debug)]
pub struct Room {
    name: RoomName,
    epoch: Arc<str>,
    log: RoomLog,
    /// Idempotency keys of retained messages.
    ids: HashMap<Box<str>, u64>,
    presence: Presence,
    subs: Vec<Subs>,
    evicted: Vec<Box<str>>,
}

impl Room {
    /// A new room with a fresh `epoch`, for a node of `workers` workers.
    pub fn new(name: RoomName, epoch: Arc<str>, workers: usize, limits: HistoryLimits) -> Self {
        Self {
            name,
            epoch,
            log: RoomLog::new(limits.max_messages, limits.max_age_ms),
            ids: HashMap::new(),
            presence: Presence::default(),
            subs: vec![Subs::default(); workers],
            evicted: Vec::new(),
        }
    }

    /// The room's name.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// The current epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The current epoch, shared.
    pub fn epoch_arc(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Members on all workers.
    pub fn member_count(&self) -> u32 {
        self.subs.iter().map(|s| s.members).sum()
    }

    /// Visible clients (joined with presence).
    pub fn visible_count(&self) -> usize {
        self.presence.len()
    }

    /// The last offset (0 before the first message).
    pub fn last_offset(&self) -> u64 {
        self.log.last_offset()
    }

    /// Appends a message, unless `id` was seen: then the first offset is returned and
    /// nothing is delivered again.
    pub fn publish(&mut self, from: &str, data: &[u8], id: Option<&str>, now_ms: u64) -> Published {
        if let Some(&offset) = id.and_then(|id| self.ids.get(id)) {
            return Published {
                offset,
                frame: None,
            };
        }
        let offset = self.log.next_offset();
        let (frame, json_at) = reply::message(&self.name, &self.epoch, offset, from, data, now_ms);
        let id: Option<Box<str>> = id.map(Into::into);
        if let Some(id) = &id {
            self.ids.insert(id.clone(), offset);
        }
        self.log.append(
            Entry {
                offset,
                ts: now_ms,
                frame: frame.clone(),
                json_at,
                id,
            },
            &mut self.evicted,
        );
        self.forget_evicted();
        Published {
            offset,
            frame: Some(frame),
        }
    }

    /// A member joins from `worker`; with `presence` it is visible and gets diffs.
    pub fn join(
        &mut self,
        worker: usize,
        client: &Arc<str>,
        presence: Option<Bytes>,
        since: Option<&SincePos>,
    ) -> Joined {
        let subs = &mut self.subs[worker];
        subs.members += 1;
        if let Some(info) = presence {
            subs.presence += 1;
            self.presence.join(client, info);
        }
        let offset = self.log.last_offset();
        let Some(since) = since else {
            return Joined {
                offset,
                recovered: None,
                missed: Vec::new(),
            };
        };
        if since.epoch != *self.epoch {
            return Joined {
                offset,
                recovered: Some(false),
                missed: Vec::new(),
            };
        }
        match self.log.since(since.offset) {
            Since::Complete(entries) => Joined {
                offset,
                recovered: Some(true),
                missed: entries.map(|e| e.frame.clone()).collect(),
            },
            Since::Gap => Joined {
                offset,
                recovered: Some(false),
                missed: Vec::new(),
            },
        }
    }

    /// A member on `worker` left (or its connection ended).
    pub fn leave(&mut self, worker: usize, client: &Arc<str>, had_presence: bool) {
        let subs = &mut self.subs[worker];
        subs.members = subs.members.saturating_sub(1);
        if had_presence {
            subs.presence = subs.presence.saturating_sub(1);
            self.presence.leave(client);
        }
    }

    /// Workers with members, and how many.
    pub fn subscribers(&self) -> impl Iterator<Item = (usize, Subs)> + '_ {
        self.subs
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, s)| s.members > 0)
    }

    /// The `presence` reply.
    pub fn presence_reply(&self, r: Option<u64>) -> Bytes {
        reply::presence(r, &self.name, self.presence.members())
    }

    /// The `history` reply: up to `limit` retained messages after `since` (from the
    /// oldest retained when `since` is absent or of another epoch).
    pub fn history_reply(&self, r: Option<u64>, since: Option<&SincePos>, limit: usize) -> Bytes {
        let after = since.filter(|s| s.epoch == *self.epoch).map(|s| s.offset);
        reply::history(
            r,
            &self.name,
            &self.epoch,
            self.log.range(after, limit).map(Entry::json),
        )
    }

    /// The pending presence change as a `presence_diff` frame, if any.
    pub fn take_presence_diff(&mut self) -> Option<Bytes> {
        let diff = self.presence.take_diff()?;
        Some(reply::presence_diff(&self.name, &diff.joined, &diff.left))
    }

    /// Whether a presence diff is waiting.
    pub fn presence_dirty(&self) -> bool {
        self.presence.is_dirty()
    }

    /// Drops messages past their age.
    pub fn expire(&mut self, now_ms: u64) {
        self.log.expire(now_ms, &mut self.evicted);
        self.forget_evicted();
    }

    /// Whether the room holds nothing worth keeping: no member anywhere, no retained
    /// message, no pending presence change. Such a room can be dropped; if it comes back
    /// it gets a new epoch, so nobody can mistake its offsets for the old ones.
    pub fn is_idle(&self) -> bool {
        self.subs.iter().all(|s| s.members == 0) && self.log.is_empty() && !self.presence.is_dirty()
    }

    fn forget_evicted(&mut self) {
        for id in self.evicted.drain(..) {
            self.ids.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Room {
        Room::new(
            RoomName::new("lobby").unwrap(),
            Arc::from("e1"),
            2,
            HistoryLimits {
                max_messages: 5,
                max_age_ms: 60_000,
            },
        )
    }

    fn since(epoch: &str, offset: u64) -> SincePos {
        SincePos {
            epoch: epoch.into(),
            offset,
        }
    }

    /// The JSON of a short server text frame.
    fn json(frame: &[u8]) -> serde_json::Value {
        let at = if frame[1] == 126 { 4 } else { 2 };
        serde_json::from_slice(&frame[at..]).unwrap()
    }

    fn offsets_of(frames: &[Bytes]) -> Vec<u64> {
        frames
            .iter()
            .map(|f| json(f)["offset"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn offsets_recovery_and_gaps() {
        let mut r = room();
        let alice: Arc<str> = Arc::from("alice");
        assert_eq!(r.join(0, &alice, None, None).offset, 0);
        for i in 1..=7 {
            let p = r.publish("alice", b"1", None, i);
            assert_eq!(p.offset, i);
        }
        // history keeps 5: offsets 3..=7
        let j = r.join(1, &alice, None, Some(&since("e1", 4)));
        assert_eq!((j.offset, j.recovered), (7, Some(true)));
        assert_eq!(offsets_of(&j.missed), vec![5, 6, 7]);
        let j = r.join(1, &alice, None, Some(&since("e1", 7)));
        assert_eq!((j.recovered, j.missed.len()), (Some(true), 0));
        assert_eq!(
            r.join(1, &alice, None, Some(&since("e1", 1))).recovered,
            Some(false),
            "2 is gone"
        );
        assert_eq!(
            r.join(1, &alice, None, Some(&since("e1", 9))).recovered,
            Some(false),
            "the future"
        );
        assert_eq!(
            r.join(1, &alice, None, Some(&since("other", 4))).recovered,
            Some(false),
            "another epoch"
        );
        assert_eq!(
            r.subscribers().collect::<Vec<_>>(),
            vec![
                (
                    0,
                    Subs {
                        members: 1,
                        presence: 0
                    }
                ),
                (
                    1,
                    Subs {
                        members: 5,
                        presence: 0
                    }
                )
            ]
        );
    }

    #[test]
    fn idempotent_publish_until_evicted() {
        let mut r = room();
        let first = r.publish("a", b"1", Some("k"), 1);
        assert!(first.frame.is_some());
        let retry = r.publish("a", b"1", Some("k"), 2);
        assert_eq!((retry.offset, retry.frame.is_none()), (1, true));
        assert_eq!(r.last_offset(), 1);
        for t in 0..5 {
            r.publish("a", b"1", None, 3 + t);
        }
        // "k" was evicted with its message: a new publish with it is a new message
        let again = r.publish("a", b"1", Some("k"), 10);
        assert_eq!((again.offset, again.frame.is_some()), (7, true));
    }

    #[test]
    fn history_and_presence_replies() {
        let mut r = room();
        let bob: Arc<str> = Arc::from("bob");
        r.join(0, &bob, Some(Bytes::from_static(b"{\"n\":1}")), None);
        for t in 1..=3 {
            r.publish("bob", b"\"x\"", None, t);
        }
        let h = json(&r.history_reply(Some(6), Some(&since("e1", 1)), 10));
        assert_eq!(
            h["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["offset"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        let h = json(&r.history_reply(None, Some(&since("old", 2)), 2));
        assert_eq!(
            h["messages"].as_array().unwrap().len(),
            2,
            "another epoch: from the oldest"
        );
        assert_eq!(h["epoch"], "e1");
        let diff = r.take_presence_diff().unwrap();
        assert_eq!(json(&diff)["joined"][0]["client"], "bob");
        r.leave(0, &bob, true);
        assert!(r.take_presence_diff().is_some());
        assert!(!r.is_idle(), "messages are retained");
        r.expire(100_000);
        assert!(r.is_idle());
    }

    #[test]
    fn counts_follow_joins_and_leaves_on_every_worker() {
        let mut r = room();
        assert_eq!(
            (r.name().as_str(), r.epoch(), &**r.epoch_arc()),
            ("lobby", "e1", "e1")
        );
        assert!(r.is_idle());
        let (ann, bob): (Arc<str>, Arc<str>) = (Arc::from("ann"), Arc::from("bob"));
        r.join(0, &ann, Some(Bytes::from_static(b"{}")), None);
        assert!(!r.is_idle(), "a member");
        r.join(1, &ann, Some(Bytes::from_static(b"{}")), None);
        r.join(1, &bob, None, None);
        assert_eq!((r.member_count(), r.visible_count()), (3, 1));
        assert!(r.presence_dirty());
        assert!(r.take_presence_diff().is_some());
        assert!(!r.presence_dirty());
        assert_eq!(r.take_presence_diff(), None);
        assert_eq!(
            r.subscribers().collect::<Vec<_>>(),
            vec![
                (
                    0,
                    Subs {
                        members: 1,
                        presence: 1
                    }
                ),
                (
                    1,
                    Subs {
                        members: 2,
                        presence: 1
                    }
                )
            ]
        );
        r.leave(0, &ann, true);
        assert_eq!(r.subscribers().map(|(w, _)| w).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            r.take_presence_diff(),
            None,
            "ann is still there from worker 1"
        );
        assert_eq!((r.member_count(), r.visible_count()), (2, 1));
        r.leave(1, &bob, false);
        r.leave(1, &ann, true);
        assert_eq!((r.member_count(), r.visible_count()), (0, 0));
        assert!(r.presence_dirty());
        assert!(!r.is_idle(), "a presence change is pending");
        let diff = json(&r.take_presence_diff().unwrap());
        assert_eq!(diff["left"], serde_json::json!([{"client": "ann"}]));
        assert!(r.is_idle());
        // A leave too many does not wrap around.
        r.leave(1, &bob, true);
        assert_eq!(r.member_count(), 0);
        assert_eq!(r.subscribers().count(), 0);
    }

    #[test]
    fn presence_reply_lists_the_visible_members() {
        let mut r = room();
        let (ann, bob): (Arc<str>, Arc<str>) = (Arc::from("ann"), Arc::from("bob"));
        r.join(0, &ann, Some(Bytes::from_static(b"{\"n\":1}")), None);
        r.join(1, &bob, None, None);
        let p = json(&r.presence_reply(Some(3)));
        assert_eq!(
            p,
            serde_json::json!({"type":"presence","ref":3,"room":"lobby","members":[{"client":"ann","info":{"n":1}}]})
        );
        for t in 1..=3 {
            r.publish("ann", b"1", None, t);
        }
        assert_eq!(r.last_offset(), 3);
        assert_eq!(r.join(1, &bob, None, None).offset, 3);
    }
}
