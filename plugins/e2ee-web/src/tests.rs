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
    /// Messages for this connection wait here (a slow line) until
    /// [`Room::catch_up`].
    slow: Option<(u64, Vec<String>)>,
}

impl Room {
    fn new() -> Room {
        host::use_state_store("server");
        Room { server: medianode_sdk::start::<RoomServer>("{}").unwrap(), members: Vec::new(), slow: None }
    }

    fn join(&mut self, user: &str) {
        host::use_state_store(user);
        self.members.push((user.to_string(), Member::new("r", user, r#"{"aead": "wasm"}"#).unwrap()));
        let connection = self.members.len() as u64;
        self.deliver(vec![(connection, json!({"type": "join", "room": "r", "user": user, "e2ee": true}).to_string())]);
    }

    /// The member on `connection` (numbered from 1) hangs up.
    fn leave(&mut self, connection: u64) {
        host::use_state_store("server");
        let mut actions = Vec::new();
        self.server.handle(SignalEvent::Disconnected(connection), &mut actions);
        self.relay(actions);
    }

    /// The slow line's messages arrive.
    fn catch_up(&mut self) {
        let Some((connection, waiting)) = self.slow.take() else { return };
        let actions = waiting.into_iter().map(|text| SignalAction::Send { connection, text }).collect();
        self.relay(actions);
    }

    fn relay(&mut self, actions: Vec<SignalAction>) {
        let upstream = self.hand_out(actions);
        self.deliver(upstream);
    }

    /// The server's messages to their members (a slow line's wait); what
    /// the members answer.
    fn hand_out(&mut self, actions: Vec<SignalAction>) -> Vec<(u64, String)> {
        let mut upstream = Vec::new();
        for action in actions {
            let SignalAction::Send { connection, text } = action else { continue };
            if let Some((slow, waiting)) = &mut self.slow
                && *slow == connection
            {
                waiting.push(text);
                continue;
            }
            let (user, member) = &mut self.members[connection as usize - 1];
            host::use_state_store(user);
            upstream.extend(member.signal(&text).into_iter().map(|t| (connection, t)));
        }
        upstream
    }

    /// Relays until nobody has anything left to say.
    fn deliver(&mut self, mut upstream: Vec<(u64, String)>) {
        while !upstream.is_empty() {
            for (connection, text) in std::mem::take(&mut upstream) {
                host::use_state_store("server");
                let mut actions = Vec::new();
                self.server.handle(SignalEvent::Message { connection, text }, &mut actions);
                upstream.extend(self.hand_out(actions));
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
    assert!(room.members[1].1.open(&sealed, None) == Some(frame.clone()), "bob opens ann's frame");
    assert!(room.members[1].1.open(&frame, None).is_none(), "plaintext does not open");
    let mut forged = sealed.clone();
    forged[sealed.len() - 1] ^= 1;
    assert!(room.members[1].1.open(&forged, None).is_none(), "a forgery does not open");
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

/// The seed's failures, as the page's worker meets them: a `left` for a
/// member nobody knew, a second `left` for one who left, a `left` before a
/// `joined`, a commit for an epoch long past, a welcome that is garbage.
/// None of them stops the member: it still seals, opens and agrees, and a
/// newcomer joins the group after them.
#[test]
fn unknown_and_duplicate_leaves_stale_commits_and_garbage_stop_nothing() {
    let mut room = Room::new();
    room.join("ann");
    room.join("bob");
    room.join("cy");
    room.leave(2); // bob
    let epoch = room.members[0].1.epoch();
    for text in [
        json!({"type": "presence", "state": "left", "user": "zed"}),
        json!({"type": "presence", "state": "left", "user": "bob"}),
        json!({"type": "presence", "state": "left", "user": "early"}),
        json!({"type": "presence", "state": "joined", "user": "early"}),
        json!({"type": "mls-commit", "room": "r", "from": "bob", "epoch": 0, "commit": "AAAA"}),
        json!({"type": "mls-welcome", "room": "r", "from": "bob", "epoch": 1, "welcome": "not base64!"}),
        json!({"type": "error", "code": "stale-epoch", "ref": "mls-commit", "epoch": 0}),
    ] {
        for i in [0, 2] {
            let (user, member) = &mut room.members[i];
            host::use_state_store(user);
            let out = member.signal(&text.to_string());
            assert!(out.iter().all(|t| !t.contains("mls-commit")), "{user} answered {text} with a commit: {out:?}");
        }
    }
    let (ann, cy) = (&room.members[0].1, &room.members[2].1);
    assert_eq!(ann.epoch(), epoch, "nothing moved the epoch");
    assert_eq!(ann.members().len(), 2, "{:?}", ann.members());
    assert_eq!((ann.epoch(), ann.safety_number()), (cy.epoch(), cy.safety_number()));

    room.join("dee");
    host::use_state_store("ann");
    let sealed = room.members[0].1.seal(b"still here").expect("ann seals");
    for i in [2, 3] {
        let (user, member) = &mut room.members[i];
        host::use_state_store(user);
        assert_eq!(member.open(&sealed, None).as_deref(), Some(&b"still here"[..]), "{user} opens ann's frame");
        assert_eq!(member.members().len(), 3);
    }
}

/// Ann moves to the next epoch (cy joins) while bob's line is slow: her
/// first frames under the new key are held at bob, not dropped, and come
/// out with their tags once bob has the commit.
#[test]
fn frames_from_an_epoch_ahead_are_held_and_released_with_their_tags() {
    let mut room = Room::new();
    room.join("ann");
    room.join("bob");
    room.slow = Some((2, Vec::new()));
    room.join("cy");
    host::use_state_store("ann");
    let ahead = room.members[0].1.seal(b"new epoch").expect("ann seals");
    assert_ne!(room.members[0].1.epoch(), room.members[1].1.epoch(), "bob is behind");
    host::use_state_store("bob");
    assert_eq!(room.members[1].1.open(&ahead, Some(7)), None, "held: bob has no key for it yet");
    assert!(room.members[1].1.take_released().is_none());
    room.catch_up();
    assert_eq!(room.members[0].1.epoch(), room.members[1].1.epoch());
    host::use_state_store("bob");
    let next = room.members[0].1.seal(b"after").expect("ann seals");
    assert_eq!(room.members[1].1.open(&next, Some(8)).as_deref(), Some(&b"after"[..]));
    let released = room.members[1].1.take_released().expect("the held frame");
    assert_eq!((released.tag, released.payload.as_slice()), (7, &b"new epoch"[..]));
    assert!(room.members[1].1.take_released().is_none());
}
