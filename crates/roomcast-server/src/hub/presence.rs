//! Who is in a room, and the batched changes pushed to those who watch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

/// The visible members of one room: one entry per client id however many connections it
/// has, with the `info` of its first join.
///
/// Changes are not pushed one by one: they accumulate until [`Presence::take_diff`], which
/// the server calls at most every `presence_batch_ms`, so a burst of 1,000 joins becomes a
/// few `presence_diff` pushes per member, not 1,000. A client that joins and leaves within
/// one batch produces nothing.
#[derive(Debug, Default)]
pub struct Presence {
    members: HashMap<Arc<str>, Member>,
    /// Clients changed since the last diff, with whether each was present before.
    changed: HashMap<Arc<str>, bool>,
}

#[derive(Debug)]
struct Member {
    info: Bytes,
    conns: u32,
}

/// The net change since the last diff.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Clients now present that were not, with their info (JSON object text).
    pub joined: Vec<(Arc<str>, Bytes)>,
    /// Clients gone that were present.
    pub left: Vec<Arc<str>>,
}

impl Presence {
    /// A connection of `client` joined with `info` (a JSON object's text).
    pub fn join(&mut self, client: &Arc<str>, info: Bytes) {
        let present = self.members.contains_key(client);
        self.changed.entry(client.clone()).or_insert(present);
        self.members
            .entry(client.clone())
            .or_insert(Member { info, conns: 0 })
            .conns += 1;
    }

    /// A connection of `client` left; the client leaves with its last connection.
    pub fn leave(&mut self, client: &Arc<str>) {
        let Some(m) = self.members.get_mut(client) else {
            return;
        };
        self.changed.entry(client.clone()).or_insert(true);
        m.conns -= 1;
        if m.conns == 0 {
            self.members.remove(client);
        }
    }

    /// Whether a diff is waiting.
    pub fn is_dirty(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Number of visible clients.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nobody is visible.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The visible clients and their info.
    pub fn members(&self) -> impl Iterator<Item = (&Arc<str>, &Bytes)> {
        self.members.iter().map(|(c, m)| (c, &m.info))
    }

    /// The net change since the last call; `None` if nothing changed on balance.
    pub fn take_diff(&mut self) -> Option<Diff> {
        let mut diff = Diff::default();
        for (client, was_present) in self.changed.drain() {
            match (was_present, self.members.get(&client)) {
                (false, Some(m)) => diff.joined.push((client, m.info.clone())),
                (true, None) => diff.left.push(client),
                _ => {}
            }
        }
        diff.joined.sort_by(|a, b| a.0.cmp(&b.0));
        diff.left.sort();
        (!diff.joined.is_empty() || !diff.left.is_empty()).then_some(diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn per_client_not_per_connection() {
        let mut p = Presence::default();
        p.join(&c("alice"), Bytes::from_static(b"{}"));
        p.join(&c("alice"), Bytes::from_static(b"{\"second\":1}"));
        let d = p.take_diff().unwrap();
        assert_eq!(d.joined, vec![(c("alice"), Bytes::from_static(b"{}"))]);
        assert_eq!(p.len(), 1);
        p.leave(&c("alice"));
        assert_eq!(
            p.take_diff(),
            None,
            "one connection left, alice is still here"
        );
        p.leave(&c("alice"));
        assert_eq!(p.take_diff().unwrap().left, vec![c("alice")]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_burst_is_one_diff_and_churn_cancels_out() {
        let mut p = Presence::default();
        p.join(&c("stays"), Bytes::from_static(b"{}"));
        p.take_diff();
        for i in 0..1000 {
            p.join(&c(&format!("u{i}")), Bytes::from_static(b"{}"));
        }
        p.join(&c("flicker"), Bytes::from_static(b"{}"));
        p.leave(&c("flicker"));
        p.leave(&c("stays"));
        let d = p.take_diff().unwrap();
        assert_eq!(d.joined.len(), 1000);
        assert_eq!(d.left, vec![c("stays")]);
        assert!(!d.joined.iter().any(|(n, _)| &**n == "flicker"));
        assert_eq!(p.take_diff(), None);
    }

    #[test]
    fn members_are_listed_with_their_first_info() {
        let mut p = Presence::default();
        assert!(p.is_empty() && !p.is_dirty());
        p.join(&c("bob"), Bytes::from_static(b"{\"n\":2}"));
        p.join(&c("ann"), Bytes::from_static(b"{\"n\":1}"));
        p.join(&c("ann"), Bytes::from_static(b"{\"n\":3}"));
        assert!(!p.is_empty() && p.is_dirty());
        let mut members: Vec<(String, Bytes)> = p
            .members()
            .map(|(c, i)| (c.to_string(), i.clone()))
            .collect();
        members.sort();
        assert_eq!(
            members,
            vec![
                ("ann".to_owned(), Bytes::from_static(b"{\"n\":1}")),
                ("bob".to_owned(), Bytes::from_static(b"{\"n\":2}"))
            ]
        );
        assert_eq!(p.len(), 2);
        p.take_diff();
        assert!(!p.is_dirty());
        // Leaving a room one never joined changes nothing.
        p.leave(&c("carol"));
        assert!(!p.is_dirty());
        assert_eq!(p.len(), 2);
    }
}
