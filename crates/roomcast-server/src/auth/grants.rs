//! What a token lets its client do in which rooms: the `rooms` claim, e.g.
//! `{"join":["lobby","team:*"],"publish":["team:42"]}`. A pattern is a room name in which
//! `*` stands for any run of characters (none included); a room matches an action when
//! any of the action's patterns matches it. A token without the claim may do everything,
//! as may a client without a token while auth is not required.

use serde::Deserialize;

use crate::protocol::RoomName;

/// What a request does to a room, as the `rooms` claim names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Join and receive (recovery with `since` included), on `/ws`, SSE, poll and raw
    /// rooms.
    Join,
    /// Publish (a raw room: send).
    Publish,
    /// Be visible, receive `presence_diff` pushes, and ask who is there.
    Presence,
    /// The `history` request.
    History,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Join => "join",
            Action::Publish => "publish",
            Action::Presence => "presence",
            Action::History => "history",
        }
    }
}

/// The longest pattern list of one action, and the longest pattern: a token is input.
const MAX_PATTERNS: usize = 64;
const MAX_PATTERN_LEN: usize = 128;

/// The `rooms` claim, checked.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomGrants {
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    presence: Vec<String>,
    #[serde(default)]
    history: Vec<String>,
}

impl RoomGrants {
    /// Refuses lists or patterns too long to be sensible.
    pub(crate) fn check(&self) -> Result<(), String> {
        for list in [&self.join, &self.publish, &self.presence, &self.history] {
            if list.len() > MAX_PATTERNS {
                return Err(format!("at most {MAX_PATTERNS} patterns per action"));
            }
            if list
                .iter()
                .any(|p| p.is_empty() || p.len() > MAX_PATTERN_LEN)
            {
                return Err(format!("patterns are 1 to {MAX_PATTERN_LEN} bytes"));
            }
        }
        Ok(())
    }

    fn list(&self, action: Action) -> &[String] {
        match action {
            Action::Join => &self.join,
            Action::Publish => &self.publish,
            Action::Presence => &self.presence,
            Action::History => &self.history,
        }
    }
}

/// What a client may do: everything, or what its `rooms` claim lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Grants {
    #[default]
    All,
    Only(RoomGrants),
}

impl Grants {
    /// Whether `action` on `room` is allowed.
    pub(crate) fn allows(&self, action: Action, room: &RoomName) -> bool {
        match self {
            Grants::All => true,
            Grants::Only(g) => g.list(action).iter().any(|p| matches(p, room.as_str())),
        }
    }
}

/// Whether `pattern` (with `*` for any run of characters) matches all of `name`. Linear in
/// their lengths' product at worst, with no recursion: the last `*` seen is where a
/// mismatch resumes.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            // The `*` takes one more character; try again after it.
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, n, want) in [
            ("lobby", "lobby", true),
            ("lobby", "lobby2", false),
            ("team:*", "team:42", true),
            ("team:*", "team:", true),
            ("team:*", "teams", false),
            ("*", "anything", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*:admin", "team:admin", true),
            ("*:admin", "team:admins", false),
            ("a**", "a", true),
            ("", "", true),
        ] {
            assert_eq!(matches(p, n), want, "{p:?} against {n:?}");
        }
    }

    #[test]
    fn a_claim_grants_only_what_it_lists() {
        let g: RoomGrants =
            serde_json::from_str(r#"{"join":["lobby","team:*"],"publish":["team:42"]}"#).unwrap();
        let g = Grants::Only(g);
        let room = |n: &str| RoomName::new(n).unwrap();
        assert!(g.allows(Action::Join, &room("team:7")));
        assert!(g.allows(Action::Publish, &room("team:42")));
        assert!(!g.allows(Action::Publish, &room("team:7")));
        assert!(!g.allows(Action::Join, &room("other")));
        assert!(!g.allows(Action::History, &room("lobby")));
        assert!(Grants::All.allows(Action::History, &room("lobby")));
    }
}
