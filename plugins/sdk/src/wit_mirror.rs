//! The SDK's plain types against the WIT they mirror.
//!
//! Natively (where plugins are unit-tested) the SDK cannot use the types
//! `wit-bindgen` generates for a world, so [`crate::types`] writes them
//! out by hand. This module generates the WIT `types` interface natively
//! too and converts every mirrored type both ways, naming every field and
//! matching every case without a wildcard: a field or case added, removed,
//! renamed or retyped on either side stops `cargo test` from compiling.

mod wit {
    wit_bindgen::generate!({
        path: "wit",
        // `frame-info` and `packet-meta` cross no function of the contract
        // any more (they cross packed: `medianode_sdk::flat`), so functions
        // here make them generated.
        inline: "package medianode:mirror; world types-only {
            import medianode:plugin/types@0.3.0;
            use medianode:plugin/types@0.3.0.{frame-info, packet-meta};
            import mirror-frame-info: func(frame: frame-info);
            import mirror-packet-meta: func(packet: packet-meta);
        }",
        world: "medianode:mirror/types-only",
        generate_all,
    });
    pub use self::medianode::plugin::types::*;
}

use crate as sdk;

fn audio_level(l: wit::AudioLevel) -> sdk::AudioLevel {
    let wit::AudioLevel { rms_dbfs, peak_dbfs, voice } = l;
    sdk::AudioLevel { rms_dbfs, peak_dbfs, voice }
}

fn audio_level_back(l: sdk::AudioLevel) -> wit::AudioLevel {
    let sdk::AudioLevel { rms_dbfs, peak_dbfs, voice } = l;
    wit::AudioLevel { rms_dbfs, peak_dbfs, voice }
}

fn block_info(b: wit::BlockInfo) -> sdk::BlockInfo {
    let wit::BlockInfo { sequence, sample_rate, channels, frames, level } = b;
    sdk::BlockInfo { sequence, sample_rate, channels, frames, level: level.map(audio_level) }
}

fn block_info_back(b: sdk::BlockInfo) -> wit::BlockInfo {
    let sdk::BlockInfo { sequence, sample_rate, channels, frames, level } = b;
    wit::BlockInfo { sequence, sample_rate, channels, frames, level: level.map(audio_level_back) }
}

fn frame_info(f: wit::FrameInfo) -> sdk::FrameInfo {
    let wit::FrameInfo { stream, sequence, timestamp, size } = f;
    sdk::FrameInfo { stream, sequence, timestamp, size }
}

fn frame_info_back(f: sdk::FrameInfo) -> wit::FrameInfo {
    let sdk::FrameInfo { stream, sequence, timestamp, size } = f;
    wit::FrameInfo { stream, sequence, timestamp, size }
}

fn media_kind(k: wit::MediaKind) -> sdk::MediaKind {
    match k {
        wit::MediaKind::Audio => sdk::MediaKind::Audio,
        wit::MediaKind::Video => sdk::MediaKind::Video,
    }
}

fn media_kind_back(k: sdk::MediaKind) -> wit::MediaKind {
    match k {
        sdk::MediaKind::Audio => wit::MediaKind::Audio,
        sdk::MediaKind::Video => wit::MediaKind::Video,
    }
}

fn packet_meta(p: wit::PacketMeta) -> sdk::PacketMeta {
    let wit::PacketMeta { publisher, kind, ssrc, sequence, timestamp, payload_type, marker, size, audio_level, layer, keyframe } = p;
    sdk::PacketMeta {
        publisher,
        kind: media_kind(kind),
        ssrc,
        sequence,
        timestamp,
        payload_type,
        marker,
        size,
        audio_level,
        layer,
        keyframe,
    }
}

fn packet_meta_back(p: sdk::PacketMeta) -> wit::PacketMeta {
    let sdk::PacketMeta { publisher, kind, ssrc, sequence, timestamp, payload_type, marker, size, audio_level, layer, keyframe } = p;
    wit::PacketMeta {
        publisher,
        kind: media_kind_back(kind),
        ssrc,
        sequence,
        timestamp,
        payload_type,
        marker,
        size,
        audio_level,
        layer,
        keyframe,
    }
}

fn route_change(c: wit::RouteChange) -> sdk::RouteChange {
    match c {
        wit::RouteChange::Joined(wit::RouteMember { participant, room }) => sdk::RouteChange::Joined { participant, room },
        wit::RouteChange::Left(participant) => sdk::RouteChange::Left(participant),
        wit::RouteChange::Receiver(wit::ReceiverState { participant, bitrate, max_layer }) => {
            sdk::RouteChange::Receiver { participant, bitrate, max_layer }
        }
    }
}

fn route_change_back(c: sdk::RouteChange) -> wit::RouteChange {
    match c {
        sdk::RouteChange::Joined { participant, room } => wit::RouteChange::Joined(wit::RouteMember { participant, room }),
        sdk::RouteChange::Left(participant) => wit::RouteChange::Left(participant),
        sdk::RouteChange::Receiver { participant, bitrate, max_layer } => {
            wit::RouteChange::Receiver(wit::ReceiverState { participant, bitrate, max_layer })
        }
    }
}

fn grant(g: wit::SeatGrant) -> sdk::Grant {
    let wit::SeatGrant { room, user } = g;
    sdk::Grant { room, user }
}

fn grant_back(g: sdk::Grant) -> wit::SeatGrant {
    let sdk::Grant { room, user } = g;
    wit::SeatGrant { room, user }
}

fn signal_event(e: wit::SignalEvent) -> sdk::SignalEvent {
    match e {
        wit::SignalEvent::Connected(wit::SignalPeer { connection, grant: g }) => {
            sdk::SignalEvent::Connected { connection, grant: g.map(grant) }
        }
        wit::SignalEvent::Message(wit::SignalMessage { connection, text }) => sdk::SignalEvent::Message { connection, text },
        wit::SignalEvent::Disconnected(connection) => sdk::SignalEvent::Disconnected(connection),
    }
}

fn signal_event_back(e: sdk::SignalEvent) -> wit::SignalEvent {
    match e {
        sdk::SignalEvent::Connected { connection, grant: g } => {
            wit::SignalEvent::Connected(wit::SignalPeer { connection, grant: g.map(grant_back) })
        }
        sdk::SignalEvent::Message { connection, text } => wit::SignalEvent::Message(wit::SignalMessage { connection, text }),
        sdk::SignalEvent::Disconnected(connection) => wit::SignalEvent::Disconnected(connection),
    }
}

fn signal_action(a: wit::SignalAction) -> sdk::SignalAction {
    match a {
        wit::SignalAction::Send(wit::SignalMessage { connection, text }) => sdk::SignalAction::Send { connection, text },
        wit::SignalAction::Close(wit::SignalMessage { connection, text }) => sdk::SignalAction::Close { connection, reason: text },
        wit::SignalAction::Seated(wit::Seat { connection, room, user }) => sdk::SignalAction::Seated { connection, room, user },
        wit::SignalAction::Unseated(connection) => sdk::SignalAction::Unseated(connection),
    }
}

fn signal_action_back(a: sdk::SignalAction) -> wit::SignalAction {
    match a {
        sdk::SignalAction::Send { connection, text } => wit::SignalAction::Send(wit::SignalMessage { connection, text }),
        sdk::SignalAction::Close { connection, reason } => wit::SignalAction::Close(wit::SignalMessage { connection, text: reason }),
        sdk::SignalAction::Seated { connection, room, user } => wit::SignalAction::Seated(wit::Seat { connection, room, user }),
        sdk::SignalAction::Unseated(connection) => wit::SignalAction::Unseated(connection),
    }
}

fn e2ee_event(e: wit::E2eeEvent) -> sdk::E2eeEvent {
    match e {
        wit::E2eeEvent::Seated(wit::E2eeSeat { room, user, others, rejoined }) => sdk::E2eeEvent::Seated { room, user, others, rejoined },
        wit::E2eeEvent::Message(text) => sdk::E2eeEvent::Message(text),
    }
}

fn e2ee_event_back(e: sdk::E2eeEvent) -> wit::E2eeEvent {
    match e {
        sdk::E2eeEvent::Seated { room, user, others, rejoined } => wit::E2eeEvent::Seated(wit::E2eeSeat { room, user, others, rejoined }),
        sdk::E2eeEvent::Message(text) => wit::E2eeEvent::Message(text),
    }
}

fn e2ee_status(s: wit::E2eeStatus) -> sdk::E2eeStatus {
    let wit::E2eeStatus { epoch, safety_number, members } = s;
    sdk::E2eeStatus { epoch, safety_number, members }
}

fn e2ee_status_back(s: sdk::E2eeStatus) -> wit::E2eeStatus {
    let sdk::E2eeStatus { epoch, safety_number, members } = s;
    wit::E2eeStatus { epoch, safety_number, members }
}

/// The conversions compile (the real check); a round trip of one value of
/// each type keeps every field's value, so none is wired to the wrong one.
#[test]
fn every_mirror_matches_its_wit_type() {
    let level = sdk::AudioLevel { rms_dbfs: -20.0, peak_dbfs: -3.0, voice: true };
    assert_eq!(audio_level(audio_level_back(level)), level);
    let block = sdk::BlockInfo { sequence: 7, sample_rate: 48_000, channels: 2, frames: 480, level: Some(level) };
    assert_eq!(block_info(block_info_back(block)), block);
    let frame = sdk::FrameInfo { stream: 1, sequence: 2, timestamp: 3, size: 4 };
    assert_eq!(frame_info(frame_info_back(frame)), frame);
    let packet = sdk::PacketMeta {
        publisher: 1,
        kind: sdk::MediaKind::Video,
        ssrc: 2,
        sequence: 3,
        timestamp: 4,
        payload_type: 96,
        marker: true,
        size: 1200,
        audio_level: Some(30),
        layer: Some(2),
        keyframe: true,
    };
    assert_eq!(packet_meta(packet_meta_back(packet)), packet);
    for change in [
        sdk::RouteChange::Joined { participant: 1, room: "r".into() },
        sdk::RouteChange::Left(2),
        sdk::RouteChange::Receiver { participant: 3, bitrate: 250_000, max_layer: 1 },
    ] {
        assert_eq!(route_change(route_change_back(change.clone())), change);
    }
    let grant = Some(sdk::Grant { room: "r".into(), user: "u".into() });
    for event in [
        sdk::SignalEvent::Connected { connection: 1, grant },
        sdk::SignalEvent::Message { connection: 2, text: "hi".into() },
        sdk::SignalEvent::Disconnected(3),
    ] {
        assert_eq!(signal_event(signal_event_back(event.clone())), event);
    }
    for action in [
        sdk::SignalAction::Send { connection: 1, text: "a".into() },
        sdk::SignalAction::Close { connection: 2, reason: "b".into() },
        sdk::SignalAction::Seated { connection: 3, room: "r".into(), user: "u".into() },
        sdk::SignalAction::Unseated(4),
    ] {
        assert_eq!(signal_action(signal_action_back(action.clone())), action);
    }
    for event in [
        sdk::E2eeEvent::Seated { room: "r".into(), user: "u".into(), others: vec!["o".into()], rejoined: true },
        sdk::E2eeEvent::Message("m".into()),
    ] {
        assert_eq!(e2ee_event(e2ee_event_back(event.clone())), event);
    }
    let status = sdk::E2eeStatus { epoch: Some(3), safety_number: vec![1, 2], members: vec!["a".into()] };
    assert_eq!(e2ee_status(e2ee_status_back(status.clone())), status);
}
