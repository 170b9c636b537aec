//! The cluster's shared view, as each node keeps it: which nodes are alive
//! and how loaded, and which node is each room's home.
//!
//! Nodes share state through Redis (the node's `cluster` module does the
//! I/O): every node writes a heartbeat with its load under a key that
//! expires, and claims a room's home with an atomic set-if-absent. This
//! module is the logic between those reads and writes, with time passed
//! in, so it is tested with a simulated clock:
//!
//! - [`Membership`]: the nodes heard from within [`HEARTBEAT_TTL`]; a node
//!   whose heartbeat lapses is dead (a SIGKILLed node stops writing; its
//!   keys expire by themselves). A draining node is alive but takes no new
//!   rooms.
//! - [`Membership::least_loaded`]: where a new room goes (fewest
//!   participants, then least CPU, then the id, so every node picks the
//!   same one from the same view).
//! - [`Rooms`]: each room's home; [`Rooms::rehome`] moves the rooms of
//!   dead or draining nodes to the least loaded live one.
//!
//! A room's home orders its MLS commits (the signaling stage there is the
//! delivery service), so a room has exactly one home at a time: the claim
//! in Redis decides races; this view only proposes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a node writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

/// A node not heard from for this long is dead: four heartbeats missed.
/// Short, because its participants wait that long before they can be
/// re-homed (the issue's budget for a killed node is 5 s end to end).
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(2);

/// A room's home claim lasts this long unless its home renews it (with
/// each heartbeat, while the room has members); a room nobody is in is
/// forgotten after it.
pub const ROOM_TTL: Duration = Duration::from_secs(10);

/// What a node says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Where clients and other nodes reach it: its signaling WebSocket URL.
    pub url: String,
    /// Its media port (`ip:port`), where relays send.
    pub media: String,
    pub participants: u32,
    /// Its process's CPU use, in cores.
    pub cpu: f32,
    /// Packets it forwards per second.
    pub packets_per_second: u64,
    /// It is draining (`POST /drain`): alive, but takes no new rooms.
    pub draining: bool,
}

/// The nodes heard from, and when.
#[derive(Debug, Default)]
pub struct Membership {
    nodes: BTreeMap<String, (NodeInfo, Instant)>,
}

impl Membership {
    /// The nodes read at `now` are all there are: a node missing from
    /// `infos` is gone (its heartbeat key expired), at once.
    pub fn observe(&mut self, now: Instant, infos: Vec<NodeInfo>) {
        self.nodes = infos.into_iter().map(|info| (info.id.clone(), (info, now))).collect();
    }

    /// `info` was heard at `now`.
    pub fn heartbeat(&mut self, now: Instant, info: NodeInfo) {
        self.nodes.insert(info.id.clone(), (info, now));
    }

    /// Whether `id` was heard from within the TTL.
    pub fn is_alive(&self, now: Instant, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|(_, at)| now.saturating_duration_since(*at) < HEARTBEAT_TTL)
    }

    /// The nodes heard from within the TTL.
    pub fn alive(&self, now: Instant) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(move |(_, at)| now.saturating_duration_since(*at) < HEARTBEAT_TTL).map(|(info, _)| info)
    }

    /// Forgets the nodes whose heartbeat lapsed; returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let dead: Vec<String> = self.nodes.keys().filter(|id| !self.is_alive(now, id)).cloned().collect();
        for id in &dead {
            self.nodes.remove(id);
        }
        dead
    }

    /// Where a new room goes: the live, undrained node with the fewest
    /// participants (then the least CPU, then the smallest id).
    pub fn least_loaded(&self, now: Instant) -> Option<&NodeInfo> {
        self.least_loaded_for(now, "", &[])
    }

    /// The same, as `asking` places a room its client asked for: it wins
    /// a tie on participants (no proxy for a room its first member
    /// brings), and nodes in `excluded` (found unreachable) are passed over.
    pub fn least_loaded_for(&self, now: Instant, asking: &str, excluded: &[&str]) -> Option<&NodeInfo> {
        self.alive(now).filter(|n| !n.draining && !excluded.contains(&n.id.as_str())).min_by(|a, b| {
            a.participants
                .cmp(&b.participants)
                .then_with(|| (b.id == asking).cmp(&(a.id == asking)))
                .then(a.cpu.total_cmp(&b.cpu))
                .then_with(|| a.id.cmp(&b.id))
        })
    }

    pub fn get(&self, id: &str) -> Option<&NodeInfo> {
        self.nodes.get(id).map(|(info, _)| info)
    }
}

/// Each room's home node.
#[derive(Debug, Default)]
pub struct Rooms {
    homes: BTreeMap<String, String>,
}

impl Rooms {
    pub fn home(&self, room: &str) -> Option<&str> {
        self.homes.get(room).map(String::as_str)
    }

    /// `room`'s home is `node` (a claim that won, or one read back).
    pub fn set_home(&mut self, room: &str, node: &str) {
        self.homes.insert(room.to_string(), node.to_string());
    }

    /// The room emptied: it has no home until someone comes.
    pub fn forget(&mut self, room: &str) {
        self.homes.remove(room);
    }

    /// Where `room` lives: its home if that node is alive and not
    /// draining, or else the least loaded node (to be claimed).
    pub fn place(&self, room: &str, nodes: &Membership, now: Instant) -> Option<String> {
        match self.home(room) {
            Some(home) if nodes.is_alive(now, home) && nodes.get(home).is_some_and(|n| !n.draining) => Some(home.to_string()),
            _ => nodes.least_loaded(now).map(|n| n.id.clone()),
        }
    }

    /// The rooms whose home is dead or draining, each with the node it
    /// should move to (none while no node can take it).
    pub fn rehome(&self, nodes: &Membership, now: Instant) -> Vec<(String, Option<String>)> {
        self.homes
            .iter()
            .filter(|(_, home)| !nodes.is_alive(now, home) || nodes.get(home).is_some_and(|n| n.draining))
            .map(|(room, _)| (room.clone(), nodes.least_loaded(now).map(|n| n.id.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: u32, cpu: f32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            url: format!("ws://{id}/ws"),
            media: String::new(),
            participants,
            cpu,
            packets_per_second: 0,
            draining: false,
        }
    }

    #[test]
    fn a_node_whose_heartbeat_lapses_is_dead_and_its_rooms_move() {
        let t0 = Instant::now();
        let mut nodes = Membership::default();
        let mut rooms = Rooms::default();
        nodes.heartbeat(t0, node("a", 3, 0.5));
        nodes.heartbeat(t0, node("b", 1, 0.1));
        nodes.heartbeat(t0, node("c", 1, 0.2));
        // New rooms go to the least loaded: b (fewest participants, least CPU).
        assert_eq!(rooms.place("r1", &nodes, t0).as_deref(), Some("b"));
        rooms.set_home("r1", "b");
        rooms.set_home("r2", "a");
        // a keeps its heartbeat; b stops (killed).
        let mut at = t0;
        while at < t0 + HEARTBEAT_TTL + HEARTBEAT_EVERY {
            at += HEARTBEAT_EVERY;
            nodes.heartbeat(at, node("a", 3, 0.5));
            nodes.heartbeat(at, node("c", 1, 0.2));
        }
        assert!(!nodes.is_alive(at, "b") && nodes.is_alive(at, "a"));
        assert_eq!(rooms.rehome(&nodes, at), [("r1".to_string(), Some("c".to_string()))]);
        assert_eq!(rooms.place("r1", &nodes, at).as_deref(), Some("c"));
        assert_eq!(rooms.place("r2", &nodes, at).as_deref(), Some("a"), "a live home keeps its room");
        assert_eq!(nodes.expire(at), ["b"]);
        assert!(nodes.get("b").is_none());
    }

    #[test]
    fn a_draining_node_takes_no_rooms_and_gives_its_own_away() {
        let t0 = Instant::now();
        let mut nodes = Membership::default();
        let mut rooms = Rooms::default();
        nodes.heartbeat(t0, NodeInfo { draining: true, ..node("a", 0, 0.0) });
        nodes.heartbeat(t0, node("b", 9, 1.0));
        rooms.set_home("r", "a");
        assert_eq!(rooms.place("new", &nodes, t0).as_deref(), Some("b"), "not the idle but draining node");
        assert_eq!(rooms.rehome(&nodes, t0), [("r".to_string(), Some("b".to_string()))]);
        // With nobody to take it, a room waits.
        nodes.heartbeat(t0, NodeInfo { draining: true, ..node("b", 9, 1.0) });
        assert_eq!(rooms.rehome(&nodes, t0), [("r".to_string(), None)]);
        assert_eq!(rooms.place("new", &nodes, t0), None);
    }

    #[test]
    fn a_node_missing_from_a_read_is_gone_at_once() {
        let t0 = Instant::now();
        let mut nodes = Membership::default();
        nodes.observe(t0, vec![node("a", 0, 0.0), node("b", 0, 0.0)]);
        nodes.observe(t0 + HEARTBEAT_EVERY, vec![node("a", 0, 0.0)]);
        assert!(nodes.is_alive(t0 + HEARTBEAT_EVERY, "a") && !nodes.is_alive(t0 + HEARTBEAT_EVERY, "b"));
    }

    #[test]
    fn every_node_picks_the_same_home_from_the_same_view() {
        let t0 = Instant::now();
        let mut nodes = Membership::default();
        for id in ["c", "a", "b"] {
            nodes.heartbeat(t0, node(id, 2, 0.3));
        }
        assert_eq!(nodes.least_loaded(t0).map(|n| n.id.as_str()), Some("a"), "ties go to the smallest id");
        let pick = |nodes: &Membership, asking, excluded: &[&str]| nodes.least_loaded_for(t0, asking, excluded).map(|n| n.id.clone());
        assert_eq!(pick(&nodes, "c", &[]).as_deref(), Some("c"), "or to the node that asks");
        assert_eq!(pick(&nodes, "c", &["c"]).as_deref(), Some("a"), "unless it is excluded");
        nodes.heartbeat(t0, node("c", 3, 0.3));
        assert_eq!(pick(&nodes, "c", &[]).as_deref(), Some("a"), "a tie on participants only");
    }
}
