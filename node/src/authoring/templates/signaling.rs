//! `{{name}}`: a signaling stage for medianode.
//!
//! The node owns the WebSocket connections; this stage owns what their
//! messages mean. Messages are JSON objects with a `type`:
//! - `{"type": "join", "room": R, "user": U}`: seats the connection in room
//!   R as U (the node then carries its media) and answers `joined`;
//! - `{"type": "leave"}`: unseats it;
//! - `{"type": "message", "text": T}`: relays T to the others in the room;
//! - anything else: an `error` reply. Never a dropped connection, never a
//!   panic.
//!
//! (The stock signaling stage speaks the whole protocol the node's web page
//! uses: presence, chat, mute, MLS. This one is a starting point.)
//!
//! What survives a restart: nothing of this struct; a stage that must keep
//! its rooms across a crash keeps them in the host state store.

use medianode_sdk::{Grant, SignalAction, SignalEvent, Signaling, Stage};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

/// The stage's `[stage.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Members a room may hold.
    #[serde(default = "default_room_size")]
    pub max_room_size: usize,
}

fn default_room_size() -> usize {
    16
}

/// What a client may send.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Message {
    Join { room: String, user: String },
    Leave,
    Message { text: String },
}

pub struct {{Type}} {
    config: Config,
    /// What each connection's token allows, when the node checks tokens.
    grants: BTreeMap<u64, Grant>,
    /// Connection -> (room, user).
    seats: BTreeMap<u64, (String, String)>,
}

impl Stage for {{Type}} {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.max_room_size == 0 {
            return Err("`max-room-size` must be at least 1".into());
        }
        Ok({{Type}} { config, grants: BTreeMap::new(), seats: BTreeMap::new() })
    }
}

fn send(connection: u64, message: serde_json::Value) -> SignalAction {
    SignalAction::Send { connection, text: message.to_string() }
}

impl {{Type}} {
    fn join(&mut self, connection: u64, room: String, user: String, out: &mut Vec<SignalAction>) {
        if self.grants.get(&connection).is_some_and(|g| g.room != room || g.user != user) {
            out.push(send(connection, json!({"type": "error", "reason": "not-allowed"})));
            return;
        }
        let members = self.seats.values().filter(|(r, _)| *r == room).count();
        if members >= self.config.max_room_size {
            out.push(send(connection, json!({"type": "error", "reason": "room-full"})));
            return;
        }
        self.leave(connection, out);
        out.push(SignalAction::Seated { connection, room: room.clone(), user: user.clone() });
        out.push(send(connection, json!({"type": "joined", "room": room, "user": user})));
        self.seats.insert(connection, (room, user));
    }

    fn leave(&mut self, connection: u64, out: &mut Vec<SignalAction>) {
        if self.seats.remove(&connection).is_some() {
            out.push(SignalAction::Unseated(connection));
        }
    }

    fn relay(&self, from: u64, text: String, out: &mut Vec<SignalAction>) {
        let Some((room, user)) = self.seats.get(&from) else {
            out.push(send(from, json!({"type": "error", "reason": "join a room first"})));
            return;
        };
        for (&connection, (r, _)) in &self.seats {
            if r == room && connection != from {
                out.push(send(connection, json!({"type": "message", "from": user, "text": text})));
            }
        }
    }
}

impl Signaling for {{Type}} {
    fn handle(&mut self, event: SignalEvent, out: &mut Vec<SignalAction>) {
        match event {
            SignalEvent::Connected { connection, grant } => {
                if let Some(grant) = grant {
                    self.grants.insert(connection, grant);
                }
            }
            SignalEvent::Disconnected(connection) => {
                self.grants.remove(&connection);
                self.leave(connection, out);
            }
            SignalEvent::Message { connection, text } => match serde_json::from_str::<Message>(&text) {
                Ok(Message::Join { room, user }) => self.join(connection, room, user, out),
                Ok(Message::Leave) => self.leave(connection, out),
                Ok(Message::Message { text }) => self.relay(connection, text, out),
                Err(e) => out.push(send(connection, json!({"type": "error", "reason": e.to_string()}))),
            },
        }
    }
}

medianode_sdk::export_signaling!({{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    fn message(stage: &mut {{Type}}, connection: u64, text: &str) -> Vec<SignalAction> {
        let mut out = Vec::new();
        stage.handle(SignalEvent::Message { connection, text: text.to_string() }, &mut out);
        out
    }

    #[test]
    fn join_then_relay_to_the_others() {
        let mut stage: {{Type}} = start("{}").expect("config");
        let out = message(&mut stage, 1, r#"{"type":"join","room":"a","user":"alice"}"#);
        assert!(matches!(&out[0], SignalAction::Seated { connection: 1, .. }), "{out:?}");
        message(&mut stage, 2, r#"{"type":"join","room":"a","user":"bob"}"#);
        let out = message(&mut stage, 1, r#"{"type":"message","text":"hi"}"#);
        assert!(matches!(&out[..], [SignalAction::Send { connection: 2, text }] if text.contains("hi")), "{out:?}");
    }

    #[test]
    fn nonsense_gets_an_error_reply() {
        let mut stage: {{Type}} = start("{}").expect("config");
        for text in ["", "{", r#"{"type":"typing"}"#, r#"{"type":"leave"}"#] {
            let out = message(&mut stage, 1, text);
            assert!(out.iter().all(|a| matches!(a, SignalAction::Send { connection: 1, .. })), "{text}: {out:?}");
        }
    }
}
