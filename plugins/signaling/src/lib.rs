//! The stock signaling stage: rooms, members, presence, publish state, and
//! typing / ack / read events, over the JSON protocol below. The host owns
//! the WebSocket connections (heartbeat, size and rate limits); this stage
//! owns what the messages mean.
//!
//! Client to node (`type` selects the message):
//!
//! | type | fields | effect |
//! |---|---|---|
//! | `join` | `room`, `user`, optional `e2ee` (true: the member takes part in the room's MLS group) | joins; answered with `joined` (members, each with its `e2ee`), others get `presence` (with `e2ee`) |
//! | `leave` | | leaves (idempotent: `left` even when not joined) |
//! | `publish` | `kinds` (`"audio"`, `"video"`) | others get `published` |
//! | `unpublish` | | others get `unpublished` |
//! | `subscribe` | `publisher` | checked against the room; answered with `subscribed` |
//! | `typing` | optional `room`, `user` | others get `typing` |
//! | `message` | `id`, `text` (at most [`MAX_TEXT`] characters), optional `room`, `user` | others get the chat message |
//! | `ack`, `read` | `id`, optional `room`, `user` | others get the same event |
//! | `mute`, `unmute` | `kind` (`"audio"`, `"video"`) | others get `muted` / `unmuted` |
//! | `mls-key-package` | `package` | others get it (one of them adds the sender) |
//! | `mls-commit` | `epoch`, `commit`, optional `welcome`, `joiners` | ordered: see below |
//!
//! The stage is the room's MLS delivery service: the first `mls-commit` for
//! the room's current epoch is accepted (`mls-accepted` to its author, the
//! commit to the other members, the welcome to the `joiners`) and the epoch
//! advances; a commit for another epoch gets a `stale-epoch` error with the
//! current epoch, and its author processes the winner and tries again. The
//! stage never reads MLS bytes.
//!
//! Optional `room` and `user` fields must name the sender's own room and
//! user: a client cannot speak for another. Every problem is answered with
//! `{"type": "error", "code", "message", "ref"}` (`ref`: the offending
//! message's type) and the connection stays open: codes `bad-json`,
//! `unknown-type`, `bad-message`, `not-joined`, `already-joined`,
//! `user-taken`, `room-full`, `wrong-room`, `wrong-user`, `no-such-publisher`,
//! `token-scope`, `stale-epoch`.
//!
//! When the node checks access tokens, each connection arrives with the room
//! and user its token grants, and a join anywhere else is refused with
//! `token-scope`.
//!
//! A join tells the host the connection's seat (`seated`), so that its media
//! (SDP, ICE, RTP) is carried from then on; a leave or disconnect takes the
//! seat back (`unseated`).
//!
//! Rooms live in the host state store (key `rooms`), written after every
//! change and read back by `init`: a crash of this stage loses no room.

use medianode_sdk::{Grant, SignalAction, SignalEvent, Signaling, Stage, host};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "default_room_size")]
    pub max_room_size: usize,
}

fn default_room_size() -> usize {
    50
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum ClientMessage {
    Join {
        room: String,
        user: String,
        #[serde(default)]
        e2ee: bool,
    },
    Leave {},
    Publish {
        kinds: Vec<MediaKind>,
    },
    Unpublish {},
    Subscribe {
        publisher: String,
    },
    Typing {
        room: Option<String>,
        user: Option<String>,
    },
    Message {
        id: String,
        text: String,
        room: Option<String>,
        user: Option<String>,
    },
    Ack {
        id: String,
        room: Option<String>,
        user: Option<String>,
    },
    Read {
        id: String,
        room: Option<String>,
        user: Option<String>,
    },
    Mute {
        kind: MediaKind,
    },
    Unmute {
        kind: MediaKind,
    },
    MlsKeyPackage {
        package: String,
    },
    MlsCommit {
        epoch: u64,
        commit: String,
        welcome: Option<String>,
        joiners: Option<Vec<String>>,
    },
}

const TYPES: &[&str] = medianode_sdk::SIGNALING_TYPES;

/// Longest chat message, in characters.
pub const MAX_TEXT: usize = 2000;
/// Longest message id, in characters (`[A-Za-z0-9_-]`).
pub const MAX_ID: usize = 64;

/// Why a chat message is refused, if it is: its id must name it (and the
/// acks and reads that refer to it), and its text is text, shown as such.
fn check_chat(id: &str, text: &str) -> Result<(), String> {
    if id.is_empty() || id.chars().count() > MAX_ID || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("id must be 1 to {MAX_ID} letters, digits, `-` or `_`"));
    }
    let length = text.chars().count();
    if length > MAX_TEXT {
        return Err(format!("text is {length} characters; the limit is {MAX_TEXT}"));
    }
    if text.trim().is_empty() {
        return Err("text is empty".into());
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("text holds control characters (only newlines and tabs are allowed)".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum MediaKind {
    Audio,
    Video,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Rooms {
    rooms: BTreeMap<String, BTreeMap<String, Member>>,
    seats: BTreeMap<u64, Seat>,
    /// What each connection's token allows, when tokens are checked.
    #[serde(default)]
    grants: BTreeMap<u64, (String, String)>,
    /// Each room's MLS epoch, as the delivery service has ordered it.
    #[serde(default)]
    mls_epochs: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    connection: u64,
    publishing: Vec<MediaKind>,
    /// The kinds the member has muted (its client sends nothing for them).
    #[serde(default)]
    muted: Vec<MediaKind>,
    /// Whether it takes part in the room's MLS group (its E2EE members
    /// add it; the others never wait for it).
    #[serde(default)]
    e2ee: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seat {
    room: String,
    user: String,
}

const STATE_KEY: &str = "rooms";

/// The stage: rooms and who is in them.
#[derive(Debug)]
pub struct RoomServer {
    config: Config,
    state: Rooms,
}

impl Stage for RoomServer {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        // A previous instance's rooms, if it crashed; a damaged record starts empty.
        let state = host::state_get(STATE_KEY).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Ok(RoomServer { config, state })
    }
}

/// An error reply.
fn error(connection: u64, code: &str, message: impl Into<String>, reference: Option<&str>) -> SignalAction {
    let text = json!({"type": "error", "code": code, "message": message.into(), "ref": reference}).to_string();
    SignalAction::Send { connection, text }
}

fn send(connection: u64, value: Value) -> SignalAction {
    SignalAction::Send { connection, text: value.to_string() }
}

impl RoomServer {
    fn save(&self) {
        if let Err(e) = host::state_put(STATE_KEY, &serde_json::to_vec(&self.state).unwrap_or_default()) {
            host::log(host::Level::Error, &format!("cannot save rooms: {e}"));
        }
    }

    /// Sends `value` to every member of `room` but `except`.
    fn broadcast(&self, room: &str, except: u64, value: &Value, out: &mut Vec<SignalAction>) {
        if let Some(members) = self.state.rooms.get(room) {
            out.extend(members.values().filter(|m| m.connection != except).map(|m| send(m.connection, value.clone())));
        }
    }

    /// Removes a connection's seat (leave or disconnect); idempotent.
    fn vacate(&mut self, connection: u64, out: &mut Vec<SignalAction>) -> bool {
        let Some(seat) = self.state.seats.remove(&connection) else { return false };
        if let Some(members) = self.state.rooms.get_mut(&seat.room) {
            members.remove(&seat.user);
            if members.is_empty() {
                self.state.rooms.remove(&seat.room);
                // The group ends with the room; the next one starts at epoch 0.
                self.state.mls_epochs.remove(&seat.room);
            }
        }
        out.push(SignalAction::Unseated(connection));
        let presence = json!({"type": "presence", "room": seat.room, "user": seat.user, "state": "left"});
        self.broadcast(&seat.room, connection, &presence, out);
        true
    }

    fn message(&mut self, connection: u64, text: &str, out: &mut Vec<SignalAction>) {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return out.push(error(connection, "bad-json", format!("not JSON: {e}"), None)),
        };
        let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
            return out.push(error(connection, "bad-message", "a message is a JSON object with a string `type`", None));
        };
        if !TYPES.contains(&kind.as_str()) {
            return out.push(error(connection, "unknown-type", format!("unknown type `{kind}`; types: {}", TYPES.join(", ")), Some(&kind)));
        }
        let message: ClientMessage = match serde_json::from_value(value) {
            Ok(m) => m,
            Err(e) => return out.push(error(connection, "bad-message", e.to_string(), Some(&kind))),
        };
        let seat = self.state.seats.get(&connection).cloned();
        // Everything but join needs a seat; join needs none.
        let seat = match (&message, seat) {
            (ClientMessage::Join { .. }, Some(seat)) => {
                return out.push(error(
                    connection,
                    "already-joined",
                    format!("already in room `{}` as `{}`", seat.room, seat.user),
                    Some(&kind),
                ));
            }
            (ClientMessage::Join { room, user, e2ee }, None) => return self.join(connection, room, user, *e2ee, out),
            (ClientMessage::Leave {}, None) => return out.push(send(connection, json!({"type": "left"}))),
            (_, None) => return out.push(error(connection, "not-joined", "join a room first", Some(&kind))),
            (_, Some(seat)) => seat,
        };
        let own = |room: &Option<String>, user: &Option<String>| -> Result<(), SignalAction> {
            if room.as_ref().is_some_and(|r| *r != seat.room) {
                return Err(error(connection, "wrong-room", format!("you are in room `{}`", seat.room), Some(&kind)));
            }
            if user.as_ref().is_some_and(|u| *u != seat.user) {
                return Err(error(connection, "wrong-user", format!("you are `{}`", seat.user), Some(&kind)));
            }
            Ok(())
        };
        let (room, user) = (seat.room.as_str(), seat.user.as_str());
        match message {
            ClientMessage::Join { .. } => {}
            ClientMessage::Leave {} => {
                self.vacate(connection, out);
                self.save();
                out.push(send(connection, json!({"type": "left"})));
            }
            ClientMessage::Publish { kinds } => {
                if let Some(member) = self.state.rooms.get_mut(room).and_then(|m| m.get_mut(user)) {
                    member.publishing = kinds.clone();
                }
                self.save();
                self.broadcast(room, connection, &json!({"type": "published", "room": room, "user": user, "kinds": kinds}), out);
            }
            ClientMessage::Unpublish {} => {
                if let Some(member) = self.state.rooms.get_mut(room).and_then(|m| m.get_mut(user)) {
                    member.publishing.clear();
                }
                self.save();
                self.broadcast(room, connection, &json!({"type": "unpublished", "room": room, "user": user}), out);
            }
            ClientMessage::Subscribe { publisher } => {
                let publishing = self.state.rooms.get(room).and_then(|m| m.get(&publisher)).map(|m| m.publishing.clone());
                match publishing {
                    Some(kinds) if publisher != user => {
                        out.push(send(connection, json!({"type": "subscribed", "room": room, "publisher": publisher, "kinds": kinds})));
                    }
                    _ => out.push(error(
                        connection,
                        "no-such-publisher",
                        format!("no other member `{publisher}` in room `{room}`"),
                        Some(&kind),
                    )),
                }
            }
            ClientMessage::Typing { room: r, user: u } => match own(&r, &u) {
                Ok(()) => self.broadcast(room, connection, &json!({"type": "typing", "room": room, "user": user}), out),
                Err(e) => out.push(e),
            },
            ClientMessage::Message { id, text, room: r, user: u } => {
                let checked =
                    own(&r, &u).and_then(|()| check_chat(&id, &text).map_err(|e| error(connection, "bad-message", e, Some(&kind))));
                match checked {
                    Ok(()) => {
                        let chat = json!({"type": "message", "room": room, "user": user, "id": id, "text": text});
                        self.broadcast(room, connection, &chat, out);
                    }
                    Err(e) => out.push(e),
                }
            }
            ClientMessage::Mute { kind: media } | ClientMessage::Unmute { kind: media } => {
                let mute = kind == "mute";
                if let Some(member) = self.state.rooms.get_mut(room).and_then(|m| m.get_mut(user)) {
                    member.muted.retain(|k| *k != media);
                    if mute {
                        member.muted.push(media);
                    }
                }
                self.save();
                let event = if mute { "muted" } else { "unmuted" };
                self.broadcast(room, connection, &json!({"type": event, "room": room, "user": user, "kind": media}), out);
            }
            ClientMessage::Ack { id, room: r, user: u } | ClientMessage::Read { id, room: r, user: u } => match own(&r, &u) {
                Ok(()) => self.broadcast(room, connection, &json!({"type": kind, "room": room, "user": user, "id": id}), out),
                Err(e) => out.push(e),
            },
            ClientMessage::MlsKeyPackage { package } => {
                self.broadcast(room, connection, &json!({"type": "mls-key-package", "room": room, "user": user, "package": package}), out);
            }
            ClientMessage::MlsCommit { epoch, commit, welcome, joiners } => {
                let (room, user) = (room.to_string(), user.to_string());
                self.commit(connection, &room, &user, epoch, commit, welcome, joiners.unwrap_or_default(), out);
            }
        }
    }

    /// The MLS delivery service: the first commit for the room's current
    /// epoch wins and goes to every other member (its welcome to the
    /// joiners); a commit for any other epoch is refused with the current
    /// one, so that its author processes the winner and tries again.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        connection: u64,
        room: &str,
        user: &str,
        epoch: u64,
        commit: String,
        welcome: Option<String>,
        joiners: Vec<String>,
        out: &mut Vec<SignalAction>,
    ) {
        let current = self.state.mls_epochs.get(room).copied().unwrap_or(0);
        if epoch != current {
            let text = json!({"type": "error", "code": "stale-epoch", "message": format!("the room is at MLS epoch {current}"), "ref": "mls-commit", "epoch": current});
            return out.push(SignalAction::Send { connection, text: text.to_string() });
        }
        self.state.mls_epochs.insert(room.to_string(), current + 1);
        self.save();
        out.push(send(connection, json!({"type": "mls-accepted", "room": room, "epoch": epoch})));
        let Some(members) = self.state.rooms.get(room) else { return };
        for (name, member) in members {
            if member.connection == connection {
                continue;
            }
            if joiners.contains(name) {
                if let Some(welcome) = &welcome {
                    out.push(send(
                        member.connection,
                        json!({"type": "mls-welcome", "room": room, "from": user, "epoch": epoch + 1, "welcome": welcome}),
                    ));
                }
            } else {
                out.push(send(
                    member.connection,
                    json!({"type": "mls-commit", "room": room, "from": user, "epoch": epoch, "commit": commit}),
                ));
            }
        }
    }

    fn join(&mut self, connection: u64, room: &str, user: &str, e2ee: bool, out: &mut Vec<SignalAction>) {
        if room.is_empty() || user.is_empty() || room.len() > 128 || user.len() > 128 {
            return out.push(error(connection, "bad-message", "room and user are 1 to 128 characters", Some("join")));
        }
        if let Some((granted_room, granted_user)) = self.state.grants.get(&connection)
            && (granted_room != room || granted_user != user)
        {
            let message = format!("your token is for room `{granted_room}` as `{granted_user}`");
            return out.push(error(connection, "token-scope", message, Some("join")));
        }
        let members = self.state.rooms.get(room);
        if members.is_some_and(|m| m.contains_key(user)) {
            return out.push(error(connection, "user-taken", format!("`{user}` is already in room `{room}`"), Some("join")));
        }
        if members.is_some_and(|m| m.len() >= self.config.max_room_size) {
            return out.push(error(
                connection,
                "room-full",
                format!("room `{room}` has {} members", self.config.max_room_size),
                Some("join"),
            ));
        }
        let members = self.state.rooms.entry(room.to_string()).or_default();
        members.insert(user.to_string(), Member { connection, publishing: Vec::new(), muted: Vec::new(), e2ee });
        let list: Vec<Value> =
            members.iter().map(|(u, m)| json!({"user": u, "publishing": m.publishing, "muted": m.muted, "e2ee": m.e2ee})).collect();
        self.state.seats.insert(connection, Seat { room: room.to_string(), user: user.to_string() });
        self.save();
        out.push(send(connection, json!({"type": "joined", "room": room, "user": user, "members": list})));
        out.push(SignalAction::Seated { connection, room: room.to_string(), user: user.to_string() });
        let presence = json!({"type": "presence", "room": room, "user": user, "state": "joined", "e2ee": e2ee});
        self.broadcast(room, connection, &presence, out);
    }
}

impl Signaling for RoomServer {
    fn handle(&mut self, event: SignalEvent, out: &mut Vec<SignalAction>) {
        match event {
            SignalEvent::Connected { connection, grant } => {
                if let Some(Grant { room, user }) = grant {
                    self.state.grants.insert(connection, (room, user));
                    self.save();
                }
            }
            SignalEvent::Message { connection, text } => self.message(connection, &text, out),
            SignalEvent::Disconnected(connection) => {
                let granted = self.state.grants.remove(&connection).is_some();
                if self.vacate(connection, out) || granted {
                    self.save();
                }
            }
        }
    }
}

#[cfg(feature = "export")]
medianode_sdk::export_signaling!(RoomServer);

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    fn server() -> RoomServer {
        host::state_delete(STATE_KEY);
        start("{}").unwrap()
    }

    /// Sends `text` on `connection`; returns (to, parsed message) pairs.
    fn say(s: &mut RoomServer, connection: u64, text: &str) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        s.handle(SignalEvent::Message { connection, text: text.into() }, &mut out);
        out.into_iter()
            .map(|a| match a {
                SignalAction::Send { connection, text } => (connection, serde_json::from_str(&text).unwrap()),
                SignalAction::Close { connection, reason } => (connection, json!({"closed": reason})),
                SignalAction::Seated { connection, room, user } => (connection, json!({"seated": [room, user]})),
                SignalAction::Unseated(connection) => (connection, json!({"unseated": true})),
            })
            .filter(|(_, v)| v.get("seated").is_none() && v.get("unseated").is_none())
            .collect()
    }

    /// A room `r` with alice, bob and carol on connections 1, 2 and 3.
    fn alice_bob_carol() -> RoomServer {
        let mut s = server();
        say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#);
        say(&mut s, 2, r#"{"type":"join","room":"r","user":"bob"}"#);
        say(&mut s, 3, r#"{"type":"join","room":"r","user":"carol"}"#);
        s
    }

    fn code(replies: &[(u64, Value)]) -> &str {
        replies[0].1["code"].as_str().unwrap_or("")
    }

    /// Who joined with `e2ee` is told in `joined` and `presence`: an E2EE
    /// member counts only those as its group's (a plain one adds nobody).
    #[test]
    fn members_say_whether_they_take_part_in_e2ee() {
        let mut s = server();
        say(&mut s, 1, r#"{"type":"join","room":"r","user":"pat"}"#);
        let r = say(&mut s, 2, r#"{"type":"join","room":"r","user":"ann","e2ee":true}"#);
        let joined = &r.iter().find(|(c, _)| *c == 2).unwrap().1;
        let flag = |user: &str| joined["members"].as_array().unwrap().iter().find(|m| m["user"] == user).unwrap()["e2ee"].clone();
        assert_eq!((flag("pat"), flag("ann")), (json!(false), json!(true)));
        let presence = &r.iter().find(|(c, _)| *c == 1).unwrap().1;
        assert_eq!((&presence["type"], &presence["e2ee"]), (&json!("presence"), &json!(true)));
        let r = say(&mut s, 3, r#"{"type":"join","room":"r","user":"bob","e2ee":"yes"}"#);
        assert_eq!(r[0].1["code"], "bad-message", "{r:?}");
    }

    #[test]
    fn chat_messages_reach_the_others_and_bad_ones_get_coded_errors() {
        let mut s = alice_bob_carol();
        let r = say(&mut s, 1, r#"{"type":"message","id":"m-1","text":"<b>hi</b>\nall"}"#);
        let to: Vec<u64> = r.iter().map(|(to, _)| *to).collect();
        assert_eq!(to, [2, 3], "the others, not the sender");
        assert_eq!(r[0].1, json!({"type": "message", "room": "r", "user": "alice", "id": "m-1", "text": "<b>hi</b>\nall"}));
        // Delivered and read marks go back to the room, the sender included.
        let r = say(&mut s, 2, r#"{"type":"ack","id":"m-1"}"#);
        assert!(r.iter().any(|(to, v)| *to == 1 && v["type"] == "ack" && v["user"] == "bob" && v["id"] == "m-1"));
        let r = say(&mut s, 3, r#"{"type":"read","id":"m-1"}"#);
        assert!(r.iter().any(|(to, v)| *to == 1 && v["type"] == "read" && v["user"] == "carol"));

        let long = format!(r#"{{"type":"message","id":"m-2","text":"{}"}}"#, "x".repeat(MAX_TEXT + 1));
        let bad = [
            (long.as_str(), "bad-message", "limit"),
            (r#"{"type":"message","id":"m-3","text":"   "}"#, "bad-message", "empty"),
            (r#"{"type":"message","id":"m 4","text":"hi"}"#, "bad-message", "id must be"),
            (r#"{"type":"message","id":"m-5","text":"bell\u0007"}"#, "bad-message", "control"),
            (r#"{"type":"message","id":"m-6"}"#, "bad-message", "text"),
            (r#"{"type":"message","id":"m-7","text":"hi","user":"bob"}"#, "wrong-user", "you are `alice`"),
            (r#"{"type":"message","id":7,"text":"hi"}"#, "bad-message", "string"),
        ];
        for (message, code, says) in bad {
            let r = say(&mut s, 1, message);
            assert_eq!(r.len(), 1, "{message}: only the sender hears of it: {r:?}");
            assert_eq!((r[0].0, r[0].1["code"].as_str()), (1, Some(code)), "{message} -> {r:?}");
            assert!(r[0].1["message"].as_str().is_some_and(|m| m.contains(says)), "{message} -> {r:?}");
            assert_eq!(r[0].1["ref"], "message");
        }
        // Still in the room, still heard.
        let r = say(&mut s, 1, r#"{"type":"message","id":"m-8","text":"still here"}"#);
        assert_eq!(r.len(), 2);
        // Not in a room: nobody to tell.
        let r = say(&mut s, 9, r#"{"type":"message","id":"m-9","text":"hi"}"#);
        assert_eq!(r[0].1["code"], "not-joined");
    }

    #[test]
    fn mute_state_reaches_the_others_and_newcomers() {
        let mut s = server();
        say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#);
        say(&mut s, 2, r#"{"type":"join","room":"r","user":"bob"}"#);
        let r = say(&mut s, 1, r#"{"type":"mute","kind":"audio"}"#);
        assert_eq!(r, [(2, json!({"type": "muted", "room": "r", "user": "alice", "kind": "audio"}))]);
        say(&mut s, 1, r#"{"type":"mute","kind":"audio"}"#);
        say(&mut s, 1, r#"{"type":"mute","kind":"video"}"#);
        // Muting twice is muting once; a newcomer learns it from `joined`.
        let r = say(&mut s, 3, r#"{"type":"join","room":"r","user":"carol"}"#);
        let alice = r[0].1["members"].as_array().unwrap().iter().find(|m| m["user"] == "alice").cloned().unwrap();
        assert_eq!(alice["muted"], json!(["audio", "video"]));
        let r = say(&mut s, 1, r#"{"type":"unmute","kind":"audio"}"#);
        assert!(r.iter().all(|(_, v)| v["type"] == "unmuted" && v["kind"] == "audio"));
        assert_eq!(r.len(), 2);
        for bad in [r#"{"type":"mute","kind":"screen"}"#, r#"{"type":"mute"}"#, r#"{"type":"unmute","kind":7}"#] {
            let r = say(&mut s, 1, bad);
            assert_eq!((r.len(), r[0].1["code"].as_str()), (1, Some("bad-message")), "{bad} -> {r:?}");
        }
    }

    #[test]
    fn join_presence_publish_subscribe_leave() {
        let mut s = server();
        let r = say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#);
        assert_eq!(r[0].1["type"], "joined");
        let r = say(&mut s, 2, r#"{"type":"join","room":"r","user":"bob"}"#);
        assert_eq!((r[0].0, r[0].1["members"].as_array().unwrap().len()), (2, 2));
        assert_eq!((r[1].0, r[1].1["type"].as_str(), r[1].1["user"].as_str()), (1, Some("presence"), Some("bob")));
        let r = say(&mut s, 1, r#"{"type":"publish","kinds":["audio","video"]}"#);
        assert_eq!((r[0].0, r[0].1["type"].as_str()), (2, Some("published")));
        let r = say(&mut s, 2, r#"{"type":"subscribe","publisher":"alice"}"#);
        assert_eq!(r[0].1["kinds"], json!(["audio", "video"]));
        let r = say(&mut s, 1, r#"{"type":"unpublish"}"#);
        assert_eq!(r[0].1["type"], "unpublished");
        let r = say(&mut s, 1, r#"{"type":"leave"}"#);
        assert!(r.iter().any(|(to, v)| *to == 2 && v["state"] == "left"));
        assert!(r.iter().any(|(to, v)| *to == 1 && v["type"] == "left"));
    }

    /// The seed's WebSocket handler panicked on every Typing and Ack event.
    #[test]
    fn typing_ack_and_read_reach_the_others() {
        let mut s = server();
        say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#);
        say(&mut s, 2, r#"{"type":"join","room":"r","user":"bob"}"#);
        for text in [r#"{"type":"typing"}"#, r#"{"type":"ack","id":"m1"}"#, r#"{"type":"read","id":"m1","room":"r","user":"alice"}"#] {
            let r = say(&mut s, 1, text);
            assert_eq!(r.len(), 1, "{text}: {r:?}");
            assert_eq!((r[0].0, r[0].1["user"].as_str()), (2, Some("alice")), "{text}");
        }
    }

    #[test]
    fn bad_messages_get_error_replies() {
        let mut s = server();
        assert_eq!(code(&say(&mut s, 1, "{nope")), "bad-json");
        assert_eq!(code(&say(&mut s, 1, "[1,2]")), "bad-message");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"dance"}"#)), "unknown-type");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"typing"}"#)), "not-joined");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"join","room":"r"}"#)), "bad-message");
        say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#);
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#)), "already-joined");
        assert_eq!(code(&say(&mut s, 2, r#"{"type":"join","room":"r","user":"alice"}"#)), "user-taken");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"typing","room":"other"}"#)), "wrong-room");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"ack","id":"x","user":"bob"}"#)), "wrong-user");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"subscribe","publisher":"ghost"}"#)), "no-such-publisher");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"publish","kinds":["smell"]}"#)), "bad-message");
    }

    #[test]
    fn leaving_is_idempotent_and_a_disconnect_leaves() {
        let mut s = server();
        assert_eq!(say(&mut s, 1, r#"{"type":"leave"}"#)[0].1["type"], "left");
        say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#);
        say(&mut s, 2, r#"{"type":"join","room":"r","user":"bob"}"#);
        let mut out = Vec::new();
        s.handle(SignalEvent::Disconnected(2), &mut out);
        s.handle(SignalEvent::Disconnected(2), &mut out);
        s.handle(SignalEvent::Disconnected(99), &mut out);
        assert_eq!(out.len(), 2, "bob unseated, and one presence message for him: {out:?}");
        assert_eq!(out[0], SignalAction::Unseated(2));
        assert_eq!(say(&mut s, 1, r#"{"type":"leave"}"#).len(), 1);
        assert_eq!(say(&mut s, 1, r#"{"type":"leave"}"#)[0].1["type"], "left");
    }

    #[test]
    fn joins_tell_the_host_the_seat_and_tokens_scope_them() {
        let mut s = server();
        let mut out = Vec::new();
        let grant = Some(Grant { room: "r".into(), user: "alice".into() });
        s.handle(SignalEvent::Connected { connection: 1, grant }, &mut out);
        assert!(out.is_empty());
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"join","room":"r","user":"mallory"}"#)), "token-scope");
        assert_eq!(code(&say(&mut s, 1, r#"{"type":"join","room":"q","user":"alice"}"#)), "token-scope");
        s.handle(SignalEvent::Message { connection: 1, text: r#"{"type":"join","room":"r","user":"alice"}"#.into() }, &mut out);
        assert!(out.contains(&SignalAction::Seated { connection: 1, room: "r".into(), user: "alice".into() }), "{out:?}");
        out.clear();
        s.handle(SignalEvent::Message { connection: 1, text: r#"{"type":"leave"}"#.into() }, &mut out);
        assert_eq!(out[0], SignalAction::Unseated(1));
    }

    #[test]
    fn the_first_commit_for_an_epoch_wins() {
        let mut s = alice_bob_carol();
        let r = say(&mut s, 3, r#"{"type":"mls-key-package","package":"KP"}"#);
        assert_eq!(r.len(), 2, "alice and bob get carol's key package");
        assert!(r.iter().all(|(_, v)| v["user"] == "carol" && v["package"] == "KP"));
        // Alice adds carol at epoch 0; bob's commit for epoch 0 comes second.
        let r = say(&mut s, 1, r#"{"type":"mls-commit","epoch":0,"commit":"C1","welcome":"W","joiners":["carol"]}"#);
        assert!(r.iter().any(|(to, v)| *to == 1 && v["type"] == "mls-accepted"));
        assert!(r.iter().any(|(to, v)| *to == 2 && v["type"] == "mls-commit" && v["commit"] == "C1"));
        assert!(r.iter().any(|(to, v)| *to == 3 && v["type"] == "mls-welcome" && v["epoch"] == 1));
        let r = say(&mut s, 2, r#"{"type":"mls-commit","epoch":0,"commit":"C2"}"#);
        assert_eq!((code(&r), r[0].1["epoch"].as_u64()), ("stale-epoch", Some(1)));
        let r = say(&mut s, 2, r#"{"type":"mls-commit","epoch":1,"commit":"C2"}"#);
        assert_eq!(r.len(), 3, "accepted on retry: bob told, alice and carol get it");
        // The room empties: its group ends with it.
        for c in 1..=3 {
            say(&mut s, c, r#"{"type":"leave"}"#);
        }
        say(&mut s, 4, r#"{"type":"join","room":"r","user":"dave"}"#);
        let r = say(&mut s, 4, r#"{"type":"mls-commit","epoch":0,"commit":"C"}"#);
        assert_eq!(r[0].1["type"], "mls-accepted");
    }

    #[test]
    fn a_fresh_instance_keeps_the_rooms() {
        let mut s = server();
        say(&mut s, 1, r#"{"type":"join","room":"r","user":"alice"}"#);
        drop(s);
        let mut again: RoomServer = start("{}").unwrap();
        let r = say(&mut again, 2, r#"{"type":"join","room":"r","user":"bob"}"#);
        assert_eq!(r[0].1["members"].as_array().unwrap().len(), 2, "alice is still there");
        assert_eq!(r[1].0, 1, "and alice's connection hears of bob");
    }
}
