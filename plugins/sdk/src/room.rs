//! What the room's signaling messages mean to an E2EE stage, for whoever
//! hosts it: the edge node (around its wasm plugin) and the browser (around
//! the same stage compiled for the page) turn messages into
//! [`E2eeEvent`]s here, so both follow one rule.
//!
//! `joined` seats the stage (after every (re)connect, with who else is
//! there and takes part in the group: the members that joined with `e2ee`;
//! a plain participant never adds anyone, so a member among only plain
//! ones is alone and makes the group); `presence` keeps the roster and
//! reaches the stage too (a `left` for a member it never knew is the
//! stage's business to ignore);
//! the MLS delivery messages and errors go to the stage as they are;
//! everything else (media negotiation, chat) is not the stage's.

use crate::E2eeEvent;
use serde_json::Value;
use std::collections::BTreeSet;

/// One member's view of its room: who it is, and which other members of
/// the room take part in its group.
#[derive(Debug, Clone)]
pub struct Roster {
    room: String,
    user: String,
    others: BTreeSet<String>,
}

impl Roster {
    pub fn new(room: &str, user: &str) -> Roster {
        Roster { room: room.to_string(), user: user.to_string(), others: BTreeSet::new() }
    }

    /// The others in the room, in name order.
    pub fn others(&self) -> impl Iterator<Item = &String> {
        self.others.iter()
    }

    /// What the message `text` (JSON from the signaling server) means to
    /// the stage, if anything. Anything may come: text that is not JSON
    /// means nothing.
    pub fn event(&mut self, text: &str) -> Option<E2eeEvent> {
        let message: Value = serde_json::from_str(text).ok()?;
        self.classify(&message, || text.to_string())
    }

    /// [`Self::event`] for a message already parsed.
    pub fn message(&mut self, message: &Value) -> Option<E2eeEvent> {
        self.classify(message, || message.to_string())
    }

    /// `text` gives the message's JSON, made only for what the stage gets.
    fn classify(&mut self, message: &Value, text: impl FnOnce() -> String) -> Option<E2eeEvent> {
        let kind = message.get("type").and_then(Value::as_str).unwrap_or_default();
        let user = message.get("user").and_then(Value::as_str);
        match kind {
            "joined" => {
                self.others = message
                    .get("members")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|m| is_e2ee(m))
                    .filter_map(|m| m.get("user").and_then(Value::as_str))
                    .filter(|u| *u != self.user)
                    .map(String::from)
                    .collect();
                Some(E2eeEvent::Seated {
                    room: self.room.clone(),
                    user: self.user.clone(),
                    others: self.others.iter().cloned().collect(),
                    rejoined: true,
                })
            }
            "presence" => {
                match (message.get("state").and_then(Value::as_str), user) {
                    (Some("joined"), Some(user)) if user != self.user && is_e2ee(message) => self.others.insert(user.to_string()),
                    (Some("left"), Some(user)) => self.others.remove(user),
                    _ => false,
                };
                Some(E2eeEvent::Message(text()))
            }
            "error" | "mls-key-package" | "mls-commit" | "mls-welcome" | "mls-accepted" => Some(E2eeEvent::Message(text())),
            _ => None,
        }
    }
}

/// Whether a member (in `joined`) or a newcomer (`presence`) joined with `e2ee`.
fn is_e2ee(member: &Value) -> bool {
    member.get("e2ee").and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn others(roster: &Roster) -> Vec<&str> {
        roster.others().map(String::as_str).collect()
    }

    #[test]
    fn joined_seats_and_presence_keeps_the_roster() {
        let mut roster = Roster::new("r", "ann");
        // Pat joined without E2EE: not one of the group's.
        let joined =
            r#"{"type":"joined","room":"r","members":[{"user":"ann","e2ee":true},{"user":"bob","e2ee":true},{"user":"pat","e2ee":false}]}"#;
        assert_eq!(
            roster.event(joined),
            Some(E2eeEvent::Seated { room: "r".into(), user: "ann".into(), others: vec!["bob".into()], rejoined: true })
        );
        let cy = r#"{"type":"presence","state":"joined","user":"cy","e2ee":true}"#;
        assert_eq!(roster.event(cy), Some(E2eeEvent::Message(cy.into())));
        let plain = r#"{"type":"presence","state":"joined","user":"quinn"}"#;
        assert_eq!(roster.event(plain), Some(E2eeEvent::Message(plain.into())));
        assert_eq!(others(&roster), ["bob", "cy"]);
        // Leaving twice, or someone never seen: the roster does not care,
        // and the stage is told (its rules make these no-ops).
        for left in [
            r#"{"type":"presence","state":"left","user":"bob"}"#,
            r#"{"type":"presence","state":"left","user":"bob"}"#,
            r#"{"type":"presence","state":"left","user":"zed"}"#,
        ] {
            assert_eq!(roster.event(left), Some(E2eeEvent::Message(left.into())));
        }
        assert_eq!(others(&roster), ["cy"]);
    }

    #[test]
    fn media_chat_and_garbage_are_not_the_stages() {
        let mut roster = Roster::new("r", "ann");
        for text in [r#"{"type":"offer","sdp":"v=0"}"#, r#"{"type":"message","id":"1","text":"hi"}"#, "not json", "[]", r#"{"type":7}"#] {
            assert_eq!(roster.event(text), None, "{text}");
        }
        let commit = r#"{"type":"mls-commit","epoch":3}"#;
        assert_eq!(roster.event(commit), Some(E2eeEvent::Message(commit.into())));
    }
}

#[cfg(test)]
mod plain_participants {
    use super::*;

    /// A member among only plain participants is alone: it makes the group
    /// rather than wait for a welcome nobody would send.
    #[test]
    fn a_member_among_plain_participants_is_alone() {
        let mut roster = Roster::new("r", "ann");
        let joined = r#"{"type":"joined","room":"r","members":[{"user":"ann","e2ee":true},{"user":"pat"},{"user":"quinn","e2ee":false}]}"#;
        assert_eq!(roster.event(joined), Some(E2eeEvent::Seated { room: "r".into(), user: "ann".into(), others: vec![], rejoined: true }));
    }
}
