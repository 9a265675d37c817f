//! What a node knows of a room it has members in, for the Redis engine: who it delivers
//! to, where it is in the room's sequence, what waits, and the presence changes it
//! gathers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::wire::Live;
use crate::engine::{ConnKey, Reply};
use crate::hub::{Diff, Subs};

/// Whether the node is subscribed to the room's channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sub {
    No,
    Pending,
    Yes,
}

/// An ack waiting for its message to be delivered on this node.
#[derive(Debug)]
pub(super) struct Ack {
    pub offset: u64,
    pub conn: ConnKey,
    pub reply: Reply,
    pub deadline: Instant,
}

/// One client's presence changes within a batch.
#[derive(Debug)]
struct Change {
    /// The batch's first event for the client was a join (so it was not visible before).
    first_joined: bool,
    /// Its info if its last event was a join.
    info: Option<Bytes>,
}

#[derive(Debug)]
pub(super) struct RoomState {
    /// Tells this room's state from a later one of the same name (after the node's last
    /// member left and a new one came): replies to the old one's reads are ignored.
    pub incarnation: u64,
    pub subs: Vec<Subs>,
    /// This node's visible clients: their memberships here, and their info.
    pub clients: HashMap<Arc<str>, (u32, Bytes)>,
    pub sub: Sub,
    /// The epoch and the last offset delivered to this node's members.
    pub epoch: Option<Arc<str>>,
    pub last: u64,
    /// Reads out that live messages must wait for (fills, joins with `since`).
    pub busy: u32,
    pub held: VecDeque<Live>,
    pub acks: Vec<Ack>,
    /// A fill is wanted once the reads out come back.
    pub want_fill: bool,
    /// A check of the room against Redis's top is out (see `Broker::check`).
    pub checking: bool,
    diff: HashMap<Arc<str>, Change>,
}

impl RoomState {
    pub(super) fn new(incarnation: u64, workers: usize) -> Self {
        Self {
            incarnation,
            subs: vec![Subs::default(); workers],
            clients: HashMap::new(),
            sub: Sub::No,
            epoch: None,
            last: 0,
            busy: 0,
            held: VecDeque::new(),
            acks: Vec::new(),
            want_fill: false,
            checking: false,
            diff: HashMap::new(),
        }
    }

    pub(super) fn members(&self) -> u32 {
        self.subs.iter().map(|s| s.members).sum()
    }

    /// A member joins on `worker` (visible with `info`).
    pub(super) fn count_in(&mut self, worker: usize, client: &Arc<str>, info: Option<&Bytes>) {
        let w = worker.min(self.subs.len() - 1);
        self.subs[w].members += 1;
        if let Some(info) = info {
            self.subs[w].presence += 1;
            self.clients
                .entry(client.clone())
                .or_insert_with(|| (0, info.clone()))
                .0 += 1;
        }
    }

    /// A member of `worker` goes.
    pub(super) fn count_out(&mut self, worker: usize, client: &Arc<str>, presence: bool) {
        let w = worker.min(self.subs.len() - 1);
        self.subs[w].members = self.subs[w].members.saturating_sub(1);
        if presence {
            self.subs[w].presence = self.subs[w].presence.saturating_sub(1);
            if let Some((n, _)) = self.clients.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    self.clients.remove(client);
                }
            }
        }
    }

    /// Whether a presence change is gathering.
    pub(super) fn presence_dirty(&self) -> bool {
        !self.diff.is_empty()
    }

    /// A client became visible in the cluster (`info`) or stopped being (`None`).
    pub(super) fn presence_changed(&mut self, client: Arc<str>, info: Option<Bytes>) {
        let first_joined = info.is_some();
        self.diff
            .entry(client)
            .or_insert(Change {
                first_joined,
                info: None,
            })
            .info = info;
    }

    /// The net change of the batch, as one diff: a client that joined and left (or left
    /// and came back) within it is not in it. Sorted by client, as on one node.
    pub(super) fn take_diff(&mut self) -> Diff {
        let mut diff = Diff::default();
        for (client, change) in self.diff.drain() {
            match (change.first_joined, change.info) {
                (true, Some(info)) => diff.joined.push((client, info)),
                (false, None) => diff.left.push(client),
                _ => {}
            }
        }
        diff.joined.sort_by(|a, b| a.0.cmp(&b.0));
        diff.left.sort();
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_batch_is_its_net_change() {
        let mut r = RoomState::new(1, 1);
        let info = Bytes::from_static(b"{}");
        r.presence_changed(c("b"), Some(info.clone()));
        r.presence_changed(c("a"), Some(info.clone()));
        // Joined and left within the batch: nothing.
        r.presence_changed(c("x"), Some(info.clone()));
        r.presence_changed(c("x"), None);
        // Left and came back: nothing either (it was visible before and is now).
        r.presence_changed(c("y"), None);
        r.presence_changed(c("y"), Some(info.clone()));
        r.presence_changed(c("z"), None);
        let diff = r.take_diff();
        let joined: Vec<&str> = diff.joined.iter().map(|(c, _)| &**c).collect();
        assert_eq!(joined, ["a", "b"]);
        assert_eq!(diff.left, [c("z")]);
        assert!(!r.presence_dirty());
    }

    #[test]
    fn counts_follow_joins_and_leaves() {
        let mut r = RoomState::new(1, 2);
        let info = Bytes::from_static(b"{}");
        r.count_in(1, &c("a"), Some(&info));
        r.count_in(1, &c("a"), Some(&info));
        r.count_in(0, &c("b"), None);
        assert_eq!((r.members(), r.clients.len()), (3, 1));
        r.count_out(1, &c("a"), true);
        assert_eq!(r.clients.get("a").map(|e| e.0), Some(1));
        r.count_out(1, &c("a"), true);
        r.count_out(0, &c("b"), false);
        assert_eq!((r.members(), r.clients.len()), (0, 0));
    }
}
