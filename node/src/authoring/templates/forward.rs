//! `{{name}}`: a packet forwarding stage for medianode's SFU.
//!
//! For each RTP packet the node asks which participants get it; the node
//! does the rest (payloads, SSRC and sequence rewriting, sockets). This
//! stage sends every packet to every other member of its publisher's
//! room, or audio only (`audio-only = true`).
//!
//! What survives a restart: nothing of this struct, but the node tells
//! every new instance who is in which room (`update`) before its first
//! packet.

use medianode_sdk::{Forwarding, MediaKind, PacketMeta, RouteChange, Stage};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The stage's `[stage.config]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Forward audio only (video packets go nowhere).
    #[serde(default)]
    pub audio_only: bool,
}

pub struct {{Type}} {
    config: Config,
    /// Participant -> room.
    rooms: BTreeMap<u64, String>,
    /// Room -> members, in joining order.
    members: BTreeMap<String, Vec<u64>>,
}

impl Stage for {{Type}} {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok({{Type}} { config, rooms: BTreeMap::new(), members: BTreeMap::new() })
    }
}

impl {{Type}} {
    fn leave(&mut self, participant: u64) {
        if let Some(room) = self.rooms.remove(&participant)
            && let Some(members) = self.members.get_mut(&room)
        {
            members.retain(|&m| m != participant);
            if members.is_empty() {
                self.members.remove(&room);
            }
        }
    }
}

impl Forwarding for {{Type}} {
    fn update(&mut self, change: RouteChange) {
        match change {
            RouteChange::Joined { participant, room } => {
                self.leave(participant);
                self.members.entry(room.clone()).or_default().push(participant);
                self.rooms.insert(participant, room);
            }
            RouteChange::Left(participant) => self.leave(participant),
            // A subscriber's bandwidth and wished quality: for choosing
            // simulcast layers (see medianode's stock forwarder).
            RouteChange::Receiver { .. } => {}
        }
    }

    fn forward(&mut self, packet: &PacketMeta, out: &mut Vec<u64>) {
        if self.config.audio_only && packet.kind == MediaKind::Video {
            return;
        }
        // Of a stream sent in simulcast layers, only the lowest: a
        // subscriber must get one layer.
        if packet.layer.is_some_and(|layer| layer > 0) {
            return;
        }
        let Some(room) = self.rooms.get(&packet.publisher) else { return };
        let others = self.members.get(room).into_iter().flatten().filter(|&&m| m != packet.publisher);
        out.extend(others);
    }
}

medianode_sdk::export_forwarding!({{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    fn packet(publisher: u64, kind: MediaKind) -> PacketMeta {
        PacketMeta {
            publisher,
            kind,
            ssrc: 1,
            sequence: 1,
            timestamp: 0,
            payload_type: 111,
            marker: false,
            size: 100,
            audio_level: None,
            layer: None,
            keyframe: false,
        }
    }

    fn joined(stage: &mut {{Type}}, participant: u64, room: &str) {
        stage.update(RouteChange::Joined { participant, room: room.to_string() });
    }

    #[test]
    fn a_packet_goes_to_the_others_in_its_room() {
        let mut stage: {{Type}} = start("{}").expect("config");
        joined(&mut stage, 1, "a");
        joined(&mut stage, 2, "a");
        joined(&mut stage, 3, "b");
        let mut out = Vec::new();
        stage.forward(&packet(1, MediaKind::Audio), &mut out);
        assert_eq!(out, [2]);
        stage.update(RouteChange::Left(2));
        out.clear();
        stage.forward(&packet(1, MediaKind::Audio), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn audio_only_drops_video() {
        let mut stage: {{Type}} = start(r#"{"audio-only": true}"#).expect("config");
        joined(&mut stage, 1, "a");
        joined(&mut stage, 2, "a");
        let mut out = Vec::new();
        stage.forward(&packet(1, MediaKind::Video), &mut out);
        assert!(out.is_empty());
    }
}
