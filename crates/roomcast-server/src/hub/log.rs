//! A room's bounded history.
//!
//! Invariants (checked by the tests below):
//! 1. Offsets are consecutive: the entry at position `i` has offset `first_offset() + i`.
//! 2. `last_offset()` only grows, by exactly one per append, and survives eviction: a
//!    log emptied by age still numbers its next message `last_offset() + 1`.
//! 3. At most `max_messages` entries are kept, and none older than `max_age_ms` once
//!    [`RoomLog::expire`] has run for that time (appends expire too).
//! 4. [`RoomLog::since`] returns every retained message after an offset, or says that
//!    the gap cannot be filled; never a partial answer.

use std::collections::VecDeque;

use bytes::Bytes;

/// One retained message.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its offset in the room.
    pub offset: u64,
    /// When it was appended (ms since the Unix epoch).
    pub ts: u64,
    /// The `message` push, framed: the same bytes go to every member and to recovery.
    pub frame: Bytes,
    /// Where the JSON object starts in `frame` (after the frame header).
    pub json_at: u8,
    /// The publisher's idempotency key, if any.
    pub id: Option<Box<str>>,
}

impl Entry {
    /// The JSON text of the message.
    pub fn json(&self) -> &[u8] {
        &self.frame[usize::from(self.json_at)..]
    }
}

/// What [`RoomLog::since`] found.
#[derive(Debug)]
pub enum Since<'a> {
    /// Every message after the offset, oldest first (possibly none).
    Complete(std::collections::vec_deque::Iter<'a, Entry>),
    /// Some of the messages after the offset are gone, or the offset is in the future.
    Gap,
}

/// The bounded, ordered log of one room.
#[derive(Debug)]
pub struct RoomLog {
    entries: VecDeque<Entry>,
    last_offset: u64,
    max_messages: usize,
    max_age_ms: u64,
}

impl RoomLog {
    /// An empty log keeping at most `max_messages` messages for at most `max_age_ms`.
    pub fn new(max_messages: usize, max_age_ms: u64) -> Self {
        Self {
            entries: VecDeque::new(),
            last_offset: 0,
            max_messages,
            max_age_ms,
        }
    }

    /// The offset of the newest message ever appended (0 before the first).
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// The offset of the oldest retained message, or `last_offset() + 1` when none is.
    pub fn first_offset(&self) -> u64 {
        self.entries
            .front()
            .map_or(self.last_offset + 1, |e| e.offset)
    }

    /// Retained messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next offset, to build the entry with.
    pub fn next_offset(&self) -> u64 {
        self.last_offset + 1
    }

    /// Appends `entry` (whose offset must be [`RoomLog::next_offset`]); evicts what the
    /// bounds require and returns the evicted entries' idempotency keys.
    pub fn append(&mut self, entry: Entry, evicted: &mut Vec<Box<str>>) {
        debug_assert_eq!(entry.offset, self.next_offset());
        self.last_offset = entry.offset;
        let now = entry.ts;
        self.entries.push_back(entry);
        while self.entries.len() > self.max_messages {
            Self::evict(self.entries.pop_front(), evicted);
        }
        self.expire(now, evicted);
    }

    /// Drops the messages older than the age bound.
    pub fn expire(&mut self, now_ms: u64, evicted: &mut Vec<Box<str>>) {
        while self
            .entries
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.ts) > self.max_age_ms)
        {
            Self::evict(self.entries.pop_front(), evicted);
        }
    }

    fn evict(entry: Option<Entry>, evicted: &mut Vec<Box<str>>) {
        if let Some(id) = entry.and_then(|e| e.id) {
            evicted.push(id);
        }
    }

    /// Every retained message after `offset`, if that is all of them.
    pub fn since(&self, offset: u64) -> Since<'_> {
        if offset > self.last_offset || offset + 1 < self.first_offset() {
            return Since::Gap;
        }
        let skip = (offset + 1 - self.first_offset()) as usize;
        let mut iter = self.entries.iter();
        if skip > 0 {
            iter.nth(skip - 1);
        }
        Since::Complete(iter)
    }

    /// Up to `limit` retained messages after `offset` (or from the oldest when `None`).
    pub fn range(&self, after: Option<u64>, limit: usize) -> impl Iterator<Item = &Entry> {
        let skip = match after {
            Some(o) if o >= self.first_offset() => (o + 1 - self.first_offset()) as usize,
            _ => 0,
        };
        self.entries.iter().skip(skip).take(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &RoomLog, ts: u64, id: Option<&str>) -> Entry {
        Entry {
            offset: log.next_offset(),
            ts,
            frame: Bytes::from(format!("m{}", log.next_offset())),
            json_at: 0,
            id: id.map(Into::into),
        }
    }

    fn offsets(s: Since<'_>) -> Option<Vec<u64>> {
        match s {
            Since::Complete(it) => Some(it.map(|e| e.offset).collect()),
            Since::Gap => None,
        }
    }

    fn check_invariants(log: &RoomLog) {
        for (i, e) in log.entries.iter().enumerate() {
            assert_eq!(e.offset, log.first_offset() + i as u64);
        }
        assert!(log.len() <= log.max_messages);
        if let Some(e) = log.entries.back() {
            assert_eq!(e.offset, log.last_offset());
        }
    }

    #[test]
    fn count_bound_and_recovery() {
        let mut log = RoomLog::new(3, 1_000_000);
        let mut evicted = Vec::new();
        assert_eq!(offsets(log.since(0)), Some(vec![]));
        for i in 0..5 {
            let e = entry(&log, 10, Some(&format!("k{i}")));
            log.append(e, &mut evicted);
            check_invariants(&log);
        }
        assert_eq!(log.last_offset(), 5);
        assert_eq!(log.first_offset(), 3);
        assert_eq!(evicted, vec![Box::from("k0"), Box::from("k1")]);
        assert_eq!(offsets(log.since(2)), Some(vec![3, 4, 5]));
        assert_eq!(offsets(log.since(4)), Some(vec![5]));
        assert_eq!(offsets(log.since(5)), Some(vec![]));
        assert_eq!(offsets(log.since(1)), None, "message 2 is gone");
        assert_eq!(offsets(log.since(6)), None, "offset in the future");
        assert_eq!(
            log.range(None, 2).map(|e| e.offset).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(
            log.range(Some(3), 10).map(|e| e.offset).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(log.range(Some(0), 10).count(), 3);
    }

    #[test]
    fn age_bound_keeps_numbering() {
        let mut log = RoomLog::new(100, 1000);
        let mut evicted = Vec::new();
        log.append(entry(&log, 0, None), &mut evicted);
        log.append(entry(&log, 500, None), &mut evicted);
        log.expire(1200, &mut evicted);
        assert_eq!(log.len(), 1);
        log.expire(1501, &mut evicted);
        assert!(log.is_empty());
        assert_eq!((log.last_offset(), log.first_offset()), (2, 3));
        assert_eq!(offsets(log.since(2)), Some(vec![]), "nothing was missed");
        assert_eq!(offsets(log.since(1)), None, "message 2 expired");
        log.append(entry(&log, 2000, None), &mut evicted);
        assert_eq!(log.last_offset(), 3);
        check_invariants(&log);
    }

    #[test]
    fn a_message_exactly_max_age_old_is_kept() {
        let mut log = RoomLog::new(100, 1000);
        let mut evicted = Vec::new();
        log.append(entry(&log, 500, Some("k")), &mut evicted);
        log.expire(1500, &mut evicted);
        assert_eq!(log.len(), 1, "1000 ms old: not older than the bound");
        assert!(evicted.is_empty());
        log.expire(1501, &mut evicted);
        assert!(log.is_empty());
        assert_eq!(evicted, vec![Box::from("k")]);
        // A clock going backwards expires nothing.
        log.append(entry(&log, 5000, None), &mut evicted);
        log.expire(10, &mut evicted);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn exactly_max_messages_are_kept() {
        let mut log = RoomLog::new(3, 1_000_000);
        let mut evicted = Vec::new();
        for _ in 0..3 {
            log.append(entry(&log, 1, None), &mut evicted);
        }
        assert_eq!(
            (log.len(), log.first_offset(), log.next_offset()),
            (3, 1, 4)
        );
        assert_eq!(offsets(log.since(0)), Some(vec![1, 2, 3]));
        assert_eq!(
            log.range(Some(1), 1).map(|e| e.offset).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(log.range(Some(3), 10).count(), 0);
        assert_eq!(
            log.range(Some(99), 10).count(),
            0,
            "after the newest: nothing"
        );
    }
}
