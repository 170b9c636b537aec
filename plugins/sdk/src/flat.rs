//! Batched headers as they cross the plugin boundary: frame headers three
//! `u64` a frame (`flat-frames` in the WIT), packet metadata four `u64` a
//! packet (`forward`). A list of numbers crosses as one block copy where a
//! list of records crosses field by field; the SDK packs and unpacks here,
//! so plugin code only sees [`FrameInfo`]s and [`PacketMeta`]s. The node
//! uses the same functions on its side.

use crate::{FrameInfo, MediaKind, PacketMeta};

/// `u64`s per frame header.
pub const WORDS: usize = 3;

/// One header: sequence, timestamp, then stream (low 32 bits) and payload
/// size (high 32).
pub fn pack_one(stream: u32, sequence: u64, timestamp: u64, size: u32) -> [u64; WORDS] {
    [sequence, timestamp, u64::from(stream) | (u64::from(size) << 32)]
}

/// `(stream, sequence, timestamp, size)` of one packed header.
pub fn unpack_one(words: &[u64; WORDS]) -> (u32, u64, u64, u32) {
    (words[2] as u32, words[0], words[1], (words[2] >> 32) as u32)
}

/// Packs `frames`.
pub fn pack(frames: &[FrameInfo]) -> Vec<u64> {
    frames.iter().flat_map(|f| pack_one(f.stream, f.sequence, f.timestamp, f.size)).collect()
}

/// Unpacks `headers` (a trailing partial header is ignored: the host
/// sends whole ones).
pub fn unpack(headers: &[u64]) -> Vec<FrameInfo> {
    headers
        .as_chunks::<WORDS>()
        .0
        .iter()
        .map(|words| {
            let (stream, sequence, timestamp, size) = unpack_one(words);
            FrameInfo { stream, sequence, timestamp, size }
        })
        .collect()
}

/// `u64`s per packet's metadata.
pub const PACKET_WORDS: usize = 4;

const MARKER: u64 = 1;
const VIDEO: u64 = 2;
const HAS_LEVEL: u64 = 4;
const KEYFRAME: u64 = 8;
const HAS_LAYER: u64 = 16;

/// One packet's metadata, packed (see `forward` in the WIT).
pub fn pack_packet(p: &PacketMeta) -> [u64; PACKET_WORDS] {
    let flags = if p.marker { MARKER } else { 0 }
        | if p.kind == MediaKind::Video { VIDEO } else { 0 }
        | if p.audio_level.is_some() { HAS_LEVEL } else { 0 }
        | if p.keyframe { KEYFRAME } else { 0 }
        | if p.layer.is_some() { HAS_LAYER } else { 0 }
        | (u64::from(p.layer.unwrap_or(0)) << 8);
    [
        p.publisher,
        u64::from(p.ssrc) | (u64::from(p.timestamp) << 32),
        u64::from(p.sequence)
            | (u64::from(p.payload_type) << 16)
            | (u64::from(p.audio_level.unwrap_or(0)) << 24)
            | (u64::from(p.size) << 32),
        flags,
    ]
}

/// One packet's metadata, unpacked.
pub fn unpack_packet(w: &[u64; PACKET_WORDS]) -> PacketMeta {
    PacketMeta {
        publisher: w[0],
        kind: if w[3] & VIDEO != 0 { MediaKind::Video } else { MediaKind::Audio },
        ssrc: w[1] as u32,
        sequence: w[2] as u16,
        timestamp: (w[1] >> 32) as u32,
        payload_type: (w[2] >> 16) as u8,
        marker: w[3] & MARKER != 0,
        size: (w[2] >> 32) as u32,
        audio_level: (w[3] & HAS_LEVEL != 0).then_some((w[2] >> 24) as u8),
        layer: (w[3] & HAS_LAYER != 0).then_some((w[3] >> 8) as u8),
        keyframe: w[3] & KEYFRAME != 0,
    }
}

/// Unpacks packed packets (a trailing partial one is ignored).
pub fn unpack_packets(words: &[u64]) -> Vec<PacketMeta> {
    words.as_chunks::<PACKET_WORDS>().0.iter().map(unpack_packet).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let frames = [
            FrameInfo { stream: u32::MAX, sequence: u64::MAX, timestamp: 0, size: u32::MAX },
            FrameInfo { stream: 7, sequence: 1, timestamp: 90_000, size: 1200 },
        ];
        assert_eq!(unpack(&pack(&frames)), frames);
        assert_eq!(unpack(&pack(&frames)[..5]).len(), 1, "a partial header is ignored");
    }

    #[test]
    fn packets_round_trip() {
        let packets = [
            PacketMeta {
                publisher: u64::MAX,
                kind: MediaKind::Video,
                ssrc: u32::MAX,
                sequence: u16::MAX,
                timestamp: u32::MAX,
                payload_type: u8::MAX,
                marker: true,
                size: u32::MAX,
                audio_level: Some(u8::MAX),
                layer: Some(u8::MAX),
                keyframe: true,
            },
            PacketMeta {
                publisher: 3,
                kind: MediaKind::Audio,
                ssrc: 1,
                sequence: 2,
                timestamp: 4,
                payload_type: 111,
                marker: false,
                size: 160,
                audio_level: None,
                layer: None,
                keyframe: false,
            },
            PacketMeta {
                publisher: 4,
                kind: MediaKind::Video,
                ssrc: 9,
                sequence: 2,
                timestamp: 4,
                payload_type: 96,
                marker: false,
                size: 1000,
                audio_level: None,
                layer: Some(0),
                keyframe: false,
            },
        ];
        let words: Vec<u64> = packets.iter().flat_map(pack_packet).collect();
        assert_eq!(unpack_packets(&words), packets);
    }
}
