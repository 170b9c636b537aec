//! The stock forwarding stage: every packet goes to every other member of
//! its publisher's room.
//!
//! This is the decision an SFU makes for each RTP packet; the host does the
//! rest (payloads, SSRC and sequence rewriting, sockets). Options:
//!
//! - `silence-level` (0-127, RFC 6464 -dBov): audio packets whose level is
//!   at or below this loudness (a higher number is quieter) are not
//!   forwarded, so silent talkers cost no bandwidth. Off by default: Opus
//!   already sends little during silence (DTX) and a dropped packet shows
//!   as loss in the subscriber's statistics.
//! - `max-video-subscribers`: video goes to at most this many members of a
//!   room (the first to join), a crude cap on fan-out for large rooms.
//!
//! Simulcast: of a stream sent in several layers, each subscriber gets the
//! one that fits its bandwidth estimate and the quality it asked for,
//! switching at keyframes ([`simulcast`]).
//!
//! Who is in which room arrives through `update`; the host tells every new
//! instance (after a crash, say) the whole table before its first packet.

pub mod simulcast;

use medianode_sdk::{Forwarding, KeyframeRequest, MediaKind, PacketMeta, RouteChange, Stage};
use serde::Deserialize;
use simulcast::Simulcast;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub silence_level: Option<u8>,
    pub max_video_subscribers: Option<usize>,
}

/// Rooms as the forwarding decision needs them.
#[derive(Debug, Default)]
struct Routes {
    /// Participant -> room.
    rooms: BTreeMap<u64, String>,
    /// Room -> members in joining order.
    members: BTreeMap<String, Vec<u64>>,
}

#[derive(Debug)]
pub struct RoomForwarder {
    config: Config,
    routes: Routes,
    simulcast: Simulcast,
}

impl Stage for RoomForwarder {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if config.silence_level.is_some_and(|l| l > 127) {
            return Err("silence-level is an RFC 6464 level: 0 (loudest) to 127 (silence)".into());
        }
        Ok(RoomForwarder { config, routes: Routes::default(), simulcast: Simulcast::default() })
    }
}

impl RoomForwarder {
    /// The stage with its default settings (for native use by the host).
    pub fn with_defaults() -> RoomForwarder {
        RoomForwarder { config: Config::default(), routes: Routes::default(), simulcast: Simulcast::default() }
    }

    fn leave(&mut self, participant: u64) {
        self.simulcast.forget(participant);
        if let Some(room) = self.routes.rooms.remove(&participant)
            && let Some(members) = self.routes.members.get_mut(&room)
        {
            members.retain(|&m| m != participant);
            if members.is_empty() {
                self.routes.members.remove(&room);
            }
        }
    }
}

impl Forwarding for RoomForwarder {
    fn update(&mut self, change: RouteChange) {
        match change {
            RouteChange::Joined { participant, room } => {
                self.leave(participant);
                self.routes.members.entry(room.clone()).or_default().push(participant);
                self.routes.rooms.insert(participant, room);
            }
            RouteChange::Left(participant) => self.leave(participant),
            RouteChange::Receiver { participant, bitrate, max_layer } => self.simulcast.receiver(participant, bitrate, max_layer),
        }
    }

    fn forward(&mut self, packet: &PacketMeta, out: &mut Vec<u64>) {
        let Some(members) = self.routes.rooms.get(&packet.publisher).and_then(|room| self.routes.members.get(room)) else {
            return;
        };
        if packet.kind == MediaKind::Audio
            && let (Some(floor), Some(level)) = (self.config.silence_level, packet.audio_level)
            && level >= floor
        {
            return;
        }
        let cap = match packet.kind {
            MediaKind::Video => self.config.max_video_subscribers.unwrap_or(usize::MAX),
            MediaKind::Audio => usize::MAX,
        };
        let others = members.iter().copied().filter(|&m| m != packet.publisher).take(cap);
        match packet.layer {
            Some(layer) => self.simulcast.forward(packet, layer, others, out),
            None => out.extend(others),
        }
    }

    fn keyframes(&mut self, wanted: &mut Vec<KeyframeRequest>) {
        self.simulcast.keyframes(wanted);
    }
}

#[cfg(feature = "export")]
medianode_sdk::export_forwarding!(RoomForwarder);

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    fn packet(publisher: u64, kind: MediaKind, audio_level: Option<u8>) -> PacketMeta {
        PacketMeta {
            publisher,
            kind,
            ssrc: 1,
            sequence: 0,
            timestamp: 0,
            payload_type: 111,
            marker: false,
            size: 100,
            audio_level,
            layer: None,
            keyframe: false,
        }
    }

    fn forwarder(config: &str) -> RoomForwarder {
        start(config).unwrap()
    }

    fn join(f: &mut RoomForwarder, participant: u64, room: &str) {
        f.update(RouteChange::Joined { participant, room: room.into() });
    }

    fn targets(f: &mut RoomForwarder, p: PacketMeta) -> Vec<u64> {
        let mut out = Vec::new();
        f.forward(&p, &mut out);
        out
    }

    #[test]
    fn packets_go_to_the_other_members_of_the_room_only() {
        let mut f = forwarder("{}");
        join(&mut f, 1, "a");
        join(&mut f, 2, "a");
        join(&mut f, 3, "b");
        join(&mut f, 4, "a");
        assert_eq!(targets(&mut f, packet(1, MediaKind::Audio, None)), vec![2, 4]);
        assert_eq!(targets(&mut f, packet(3, MediaKind::Video, None)), Vec::<u64>::new());
        f.update(RouteChange::Left(2));
        f.update(RouteChange::Left(2));
        f.update(RouteChange::Left(99));
        assert_eq!(targets(&mut f, packet(1, MediaKind::Audio, None)), vec![4]);
        // Moving rooms leaves the old one.
        join(&mut f, 4, "b");
        assert_eq!(targets(&mut f, packet(1, MediaKind::Audio, None)), Vec::<u64>::new());
        assert_eq!(targets(&mut f, packet(3, MediaKind::Audio, None)), vec![4]);
        assert_eq!(targets(&mut f, packet(77, MediaKind::Audio, None)), Vec::<u64>::new(), "unknown publisher");
    }

    #[test]
    fn silence_and_video_caps() {
        let mut f = forwarder(r#"{"silence-level": 100, "max-video-subscribers": 1}"#);
        for p in 1..=3 {
            join(&mut f, p, "a");
        }
        assert_eq!(targets(&mut f, packet(1, MediaKind::Audio, Some(127))), Vec::<u64>::new());
        assert_eq!(targets(&mut f, packet(1, MediaKind::Audio, Some(30))), vec![2, 3]);
        assert_eq!(targets(&mut f, packet(1, MediaKind::Audio, None)), vec![2, 3]);
        assert_eq!(targets(&mut f, packet(1, MediaKind::Video, Some(127))), vec![2]);
        assert!(start::<RoomForwarder>(r#"{"silence-level": 200}"#).is_err());
    }
}
