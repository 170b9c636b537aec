//! Members in a room, each an E2EE stage with a state store of its own,
//! talking through the stock signaling stage (the real delivery
//! service) the way edge nodes do: the harness plays each node's host,
//! turning `joined` into a seat and relaying every other message.
use super::*;
use medianode_sdk::{SignalAction, SignalEvent, Signaling};
use medianode_signaling::RoomServer;
use std::collections::VecDeque;

struct Node {
    name: String,
    connection: u64,
    stage: E2ee,
}

struct Room {
    server: RoomServer,
    nodes: Vec<Node>,
    config: &'static str,
    /// (connection, text) on their way to the server.
    upstream: VecDeque<(u64, String)>,
    next_connection: u64,
    /// Every message the server sent a node, by node name.
    seen: Vec<(String, Value)>,
    /// Names this room's state stores apart from other rooms' on the
    /// thread.
    id: u64,
}

static ROOMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Room {
    fn new(config: &'static str) -> Room {
        let id = ROOMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        host::use_state_store(&format!("{id}/server"));
        let server = medianode_sdk::start::<RoomServer>("{}").unwrap();
        Room { server, nodes: Vec::new(), config, upstream: VecDeque::new(), next_connection: 1, seen: Vec::new(), id }
    }

    /// Makes `name`'s (or the server's) state store the current one.
    fn store(&self, name: &str) {
        host::use_state_store(&format!("{}/{name}", self.id));
    }

    fn stage(&self, name: &str) -> E2ee {
        self.store(name);
        medianode_sdk::start::<E2ee>(self.config).unwrap()
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    fn join(&mut self, name: &str) {
        let connection = self.next_connection;
        self.next_connection += 1;
        match self.nodes.iter_mut().find(|n| n.name == name) {
            Some(node) => node.connection = connection,
            None => {
                let stage = self.stage(name);
                self.nodes.push(Node { name: name.into(), connection, stage });
            }
        }
        self.upstream.push_back((connection, json!({"type": "join", "room": "r", "user": name}).to_string()));
        self.run();
    }

    fn control(&mut self, i: usize, event: E2eeEvent) {
        self.store(&self.nodes[i].name);
        let node = &mut self.nodes[i];
        let mut out = Vec::new();
        node.stage.control(event, &mut out);
        self.upstream.extend(out.into_iter().map(|text| (node.connection, text)));
    }

    /// Delivers everything until nobody has anything left to say.
    fn run(&mut self) {
        while let Some((connection, text)) = self.upstream.pop_front() {
            self.store("server");
            let mut actions = Vec::new();
            self.server.handle(SignalEvent::Message { connection, text }, &mut actions);
            self.deliver(actions);
        }
    }

    fn deliver(&mut self, actions: Vec<SignalAction>) {
        for action in actions {
            let SignalAction::Send { connection, text } = action else { continue };
            let Some(i) = self.nodes.iter().position(|n| n.connection == connection) else { continue };
            let message: Value = serde_json::from_str(&text).unwrap();
            self.seen.push((self.nodes[i].name.clone(), message.clone()));
            let event = if message["type"] == "joined" {
                let own = &self.nodes[i].name;
                let others = message["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|m| m["user"].as_str())
                    .filter(|u| u != own)
                    .map(String::from)
                    .collect();
                E2eeEvent::Seated { room: "r".into(), user: own.clone(), others, rejoined: true }
            } else {
                E2eeEvent::Message(text)
            };
            self.control(i, event);
        }
    }

    /// The node's signaling connection drops (the server sees it go).
    fn cut(&mut self, name: &str) {
        let connection = self.nodes[self.index(name)].connection;
        self.store("server");
        let mut actions = Vec::new();
        self.server.handle(SignalEvent::Disconnected(connection), &mut actions);
        self.deliver(actions);
        self.run();
    }

    fn status(&self, name: &str) -> E2eeStatus {
        self.nodes[self.index(name)].stage.status()
    }

    /// Everyone in the group on one epoch with one safety number.
    fn agree(&self, expected_members: usize) -> u64 {
        let first = self.nodes[0].stage.status();
        for node in &self.nodes {
            let status = node.stage.status();
            assert_eq!((status.epoch, &status.safety_number), (first.epoch, &first.safety_number), "{}", node.name);
            assert_eq!(status.members.len(), expected_members, "{}: {:?}", node.name, status.members);
            assert!(!status.safety_number.is_empty());
        }
        first.epoch.unwrap()
    }

    fn seal(&mut self, name: &str, payload: &[u8]) -> Option<Vec<u8>> {
        self.frame(name, payload, false)
    }

    fn open(&mut self, name: &str, frame: &[u8]) -> Option<Vec<u8>> {
        self.frame(name, frame, true)
    }

    /// One frame through the node's stage, as the export glue runs it.
    fn frame(&mut self, name: &str, payload: &[u8], open: bool) -> Option<Vec<u8>> {
        let i = self.index(name);
        self.store(name);
        let stage = &mut self.nodes[i].stage;
        let info = [medianode_sdk::FrameInfo { size: payload.len() as u32, ..Default::default() }];
        let (mut frames, mut payloads) = (Vec::new(), Vec::new());
        if open {
            medianode_sdk::open_batch(stage, &info, payload, &mut frames, &mut payloads);
        } else {
            medianode_sdk::frame_batch(&info, payload, &mut frames, &mut payloads, |m, p, o| stage.seal(m, p, o));
        }
        (!frames.is_empty()).then_some(payloads)
    }
}

fn three(config: &'static str) -> Room {
    let mut room = Room::new(config);
    for name in ["alice", "bob", "carol"] {
        room.join(name);
    }
    room
}

#[test]
fn members_agree_and_open_each_others_frames_with_either_aead() {
    for config in ["{}", r#"{"aead": "wasm"}"#, r#"{"suite": "aes-256-gcm"}"#] {
        let mut room = three(config);
        room.agree(3);
        let frame = room.seal("alice", b"opus frame").expect("sealed");
        assert_ne!(&frame[frame.len() - 10..], b"opus frame");
        assert_eq!(room.open("bob", &frame).as_deref(), Some(&b"opus frame"[..]), "{config}");
        assert_eq!(room.open("carol", &frame).as_deref(), Some(&b"opus frame"[..]), "{config}");
        // Both bob and alice committed carol's add on the same epoch:
        // the delivery service took one and refused the other.
        assert!(room.seen.iter().any(|(_, m)| m["code"] == "stale-epoch"), "{config}");
    }
}

#[test]
fn nothing_is_sealed_before_the_group_and_a_leaver_opens_nothing_new() {
    let mut room = Room::new("{}");
    let zed = room.stage("zed");
    room.nodes.push(Node { name: "zed".into(), connection: 99, stage: zed });
    assert_eq!(room.seal("zed", b"secret"), None, "no group: dropped, never in the clear");
    let mut room = three("{}");
    let epoch = room.agree(3);
    room.upstream.push_back((room.nodes[1].connection, json!({"type": "leave"}).to_string()));
    room.run();
    let bob = room.nodes.remove(room.index("bob"));
    assert_eq!(room.agree(2), epoch + 1, "bob's leave is one commit");
    let mut room_with_bob = room;
    let after = room_with_bob.seal("alice", b"after bob").unwrap();
    assert!(room_with_bob.open("carol", &after).is_some());
    room_with_bob.nodes.push(bob);
    assert_eq!(room_with_bob.open("bob", &after), None, "bob has only the old epoch's keys");
}

/// The seed's crash, and its relatives: leaves for members without a
/// leaf, twice, before joining; nothing reaches openmls empty.
#[test]
fn leaves_of_unknown_members_are_no_ops() {
    let mut room = three("{}");
    let epoch = room.agree(3);
    for user in ["ghost", "ghost", "carol-to-be", ""] {
        let event = E2eeEvent::Message(json!({"type": "presence", "room": "r", "user": user, "state": "left"}).to_string());
        room.control(0, event);
    }
    room.control(0, E2eeEvent::Message("{not json".into()));
    room.control(0, E2eeEvent::Message(json!({"type": "mls-commit", "epoch": epoch, "commit": "AAAA"}).to_string()));
    room.run();
    // The garbage commit made alice start over; the others took her
    // back with one replacing commit.
    assert_eq!(room.agree(3), epoch + 1);
    let frame = room.seal("bob", b"still fine").unwrap();
    assert!(room.open("alice", &frame).is_some());
}

#[test]
fn a_fresh_instance_resumes_from_the_state_store_and_seals_at_once() {
    let mut room = three("{}");
    let epoch = room.agree(3);
    let i = room.index("carol");
    // Carol's instance trapped: a new one starts from her store.
    room.nodes[i].stage = room.stage("carol");
    room.control(
        i,
        E2eeEvent::Seated { room: "r".into(), user: "carol".into(), others: vec!["alice".into(), "bob".into()], rejoined: false },
    );
    room.run();
    assert_eq!(room.agree(3), epoch, "no rejoin: the group did not change");
    let frame = room.seal("carol", b"back").expect("seals at once");
    assert!(room.open("alice", &frame).is_some());
    assert!(room.upstream.is_empty());
}

#[test]
fn a_fresh_instance_without_usable_state_rejoins_with_a_new_key_package() {
    let mut room = three("{}");
    let epoch = room.agree(3);
    room.store("carol");
    host::state_put(MEMBER_KEY, b"damaged").unwrap();
    let i = room.index("carol");
    room.nodes[i].stage = room.stage("carol");
    assert_eq!(room.seal("carol", b"x"), None, "not back yet: dropped");
    room.control(
        i,
        E2eeEvent::Seated { room: "r".into(), user: "carol".into(), others: vec!["alice".into(), "bob".into()], rejoined: false },
    );
    room.run();
    assert_eq!(room.agree(3), epoch + 1, "her old leaf replaced in one commit");
    let frame = room.seal("carol", b"back").unwrap();
    assert!(room.open("bob", &frame).is_some());
}

#[test]
fn a_cut_connection_rejoins_on_the_current_epoch() {
    let mut room = three("{}");
    let epoch = room.agree(3);
    room.cut("carol");
    // While carol is away the others removed her.
    assert_eq!(room.status("alice").epoch, Some(epoch + 1));
    assert_eq!(room.status("alice").members.len(), 2);
    room.join("carol");
    assert_eq!(room.agree(3), epoch + 2);
    let frame = room.seal("alice", b"welcome back").unwrap();
    assert!(room.open("carol", &frame).is_some());
}

#[test]
fn twenty_rapid_joins_and_leaves_end_on_one_epoch() {
    let mut room = Room::new("{}");
    room.join("alice");
    room.join("bob");
    for round in 0..20 {
        let guest = format!("guest{round}");
        room.join(&guest);
        if round % 2 == 1 {
            for name in [guest.clone(), format!("guest{}", round - 1)] {
                let i = room.index(&name);
                room.upstream.push_back((room.nodes[i].connection, json!({"type": "leave"}).to_string()));
            }
            room.run();
            room.nodes.retain(|n| !n.name.starts_with("guest"));
        }
    }
    room.agree(2);
}

/// The fork a browser test found under churn: alice's commit for epoch E
/// loses to bob's; alice applies bob's, still wants more, and sends a new
/// commit for E+1 before the delivery service's refusal of her old one
/// (`stale-epoch`, room at E+1) reaches her. That refusal is not about
/// her new commit: dropping it there, and committing a third time, made
/// her merge her third commit when the service accepted her second, and
/// she and bob were on one epoch number in two different groups.
#[test]
fn a_refusal_of_an_old_commit_does_not_drop_the_one_in_flight() {
    let mut room = Room::new("{}");
    for name in ["alice", "bob", "carol", "dave"] {
        room.join(name);
    }
    let epoch = room.agree(4);
    let left = |user: &str| E2eeEvent::Message(json!({"type": "presence", "room": "r", "user": user, "state": "left"}).to_string());
    // Bob's commit (carol out) goes first; alice's (carol and dave out)
    // second, and it loses.
    room.control(room.index("bob"), left("carol"));
    room.control(room.index("alice"), left("carol"));
    room.control(room.index("alice"), left("dave"));
    room.run();
    let refused = room.seen.iter().filter(|(who, m)| who == "alice" && m["code"] == "stale-epoch").count();
    assert!(refused >= 1, "alice's first commit lost");
    let (alice, bob) = (room.status("alice"), room.status("bob"));
    assert_eq!((alice.epoch, &alice.safety_number), (bob.epoch, &bob.safety_number), "alice and bob in one group");
    assert!(alice.epoch > Some(epoch));
    // Carol and dave, removed while seated, asked back in: all four agree.
    room.agree(4);
    let frame = room.seal("alice", b"one group").unwrap();
    assert!(room.open("bob", &frame).is_some());
}

/// A room whose delivery service starts over (in a cluster, its home node
/// went: the new home knows nothing of the room). Every member rejoins,
/// and the new group numbers its epochs from 0 again: at epoch 2 it must
/// not take the old group's epoch-2 keys for its own (its frames failed to
/// open as forged before the keyring was cleared on a start over).
#[test]
fn a_group_that_starts_over_at_a_new_delivery_service_opens_its_frames() {
    let mut room = three("{}");
    assert_eq!(room.agree(3), 2);
    let pairs = [("alice", "bob"), ("bob", "carol"), ("carol", "alice")];
    // Opened before the move: the keyring keeps each sender's key of epoch 2.
    for (from, to) in pairs {
        let frame = room.seal(from, b"before").unwrap();
        assert!(room.open(to, &frame).is_some());
    }
    host::use_state_store(&format!("{}/another-home", room.id));
    room.server = medianode_sdk::start::<RoomServer>("{}").unwrap();
    for name in ["alice", "bob", "carol"] {
        room.join(name);
    }
    assert_eq!(room.agree(3), 2, "a new group, on the same epoch number");
    for (from, to) in pairs {
        let frame = room.seal(from, b"after the move").unwrap();
        assert_eq!(room.open(to, &frame).as_deref(), Some(&b"after the move"[..]), "{from} -> {to}");
    }
}
