//! Two members in a room through the real delivery service (the stock
//! signaling stage), driven only through what JavaScript sees: `signal`
//! in, texts out, `seal` and `open`.
use super::*;
use medianode_sdk::host;
use medianode_sdk::{SignalAction, SignalEvent, Signaling};
use medianode_signaling::RoomServer;
use serde_json::json;

struct Room {
    server: RoomServer,
    /// Members by connection - 1, each with its state store's name.
    members: Vec<(String, Member)>,
}

impl Room {
    fn new() -> Room {
        host::use_state_store("server");
        Room { server: medianode_sdk::start::<RoomServer>("{}").unwrap(), members: Vec::new() }
    }

    fn join(&mut self, user: &str) {
        host::use_state_store(user);
        self.members.push((user.to_string(), Member::new("r", user, r#"{"aead": "wasm"}"#).unwrap()));
        let connection = self.members.len() as u64;
        self.deliver(vec![(connection, json!({"type": "join", "room": "r", "user": user}).to_string())]);
    }

    /// Relays until nobody has anything left to say.
    fn deliver(&mut self, mut upstream: Vec<(u64, String)>) {
        while !upstream.is_empty() {
            for (connection, text) in std::mem::take(&mut upstream) {
                host::use_state_store("server");
                let mut actions = Vec::new();
                self.server.handle(SignalEvent::Message { connection, text }, &mut actions);
                for action in actions {
                    let SignalAction::Send { connection, text } = action else { continue };
                    let (user, member) = &mut self.members[connection as usize - 1];
                    host::use_state_store(user);
                    upstream.extend(member.signal(&text).into_iter().map(|t| (connection, t)));
                }
            }
        }
    }
}

#[test]
fn two_members_agree_and_open_each_others_frames() {
    let mut room = Room::new();
    room.join("ann");
    room.join("bob");
    let (ann, bob) = (&room.members[0].1, &room.members[1].1);
    assert!(ann.epoch().is_some());
    assert_eq!(ann.epoch(), bob.epoch());
    assert_eq!(ann.safety_number(), bob.safety_number());
    assert_eq!(ann.safety_number().split(' ').count(), 16, "{}", ann.safety_number());
    assert_eq!(ann.members().len(), 2);

    let frame = vec![0x5a; 1200];
    let sealed = room.members[0].1.seal(&frame).expect("ann seals");
    assert_ne!(&sealed[sealed.len() - 1200..], &frame[..], "ciphertext");
    assert!(room.members[1].1.open(&sealed) == Some(frame.clone()), "bob opens ann's frame");
    assert!(room.members[1].1.open(&frame).is_none(), "plaintext does not open");
    let mut forged = sealed.clone();
    forged[sealed.len() - 1] ^= 1;
    assert!(room.members[1].1.open(&forged).is_none(), "a forgery does not open");
}

#[test]
fn nothing_is_sealed_before_the_group() {
    let mut room = Room::new();
    host::use_state_store("alone");
    let mut alone = Member::new("r", "alone", r#"{"aead": "wasm"}"#).unwrap();
    assert_eq!(alone.seal(b"hello"), None, "fail closed: no key, no frame");
    assert!(alone.signal("not json").is_empty());
    room.join("ann");
    assert!(room.members[0].1.seal(b"hello").is_some(), "a group of one seals");
}
