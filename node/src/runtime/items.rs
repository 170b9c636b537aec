//! Batches of items, as they flow between pipeline nodes and into plugins.
//!
//! A batch is flat, exactly as it crosses the WIT boundary: a list of
//! headers and one list holding every item's samples (audio) or payload
//! bytes (frames), item after item. A call into a plugin then copies two
//! lists each way however many items the batch holds, instead of two per
//! item. The helpers here give item-by-item views over that layout.

use super::bindings::types::{BlockInfo, FrameBatch, FrameInfo};

/// A batch of items of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum Items {
    Audio(AudioBatch),
    Frames(FrameBatch),
}

/// The node's audio format: 48 kHz.
pub const SAMPLE_RATE: u32 = 48_000;

/// A batch of audio blocks: the headers, and every block's interleaved
/// samples back to back, as f32 bit patterns (see the WIT).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioBatch {
    pub blocks: Vec<BlockInfo>,
    pub samples: Vec<u32>,
}

impl AudioBatch {
    pub fn new() -> AudioBatch {
        AudioBatch::default()
    }

    /// Appends a block; its header's `frames` is taken from `samples`.
    pub fn push(&mut self, mut info: BlockInfo, samples: &[f32]) {
        info.frames = (samples.len() / usize::from(info.channels.max(1))) as u32;
        self.blocks.push(info);
        self.samples.extend_from_slice(bytemuck::cast_slice(samples));
    }

    /// All samples as f32. (The `samples` field holds their bit patterns,
    /// which cross the wasm boundary faster; see the WIT.)
    pub fn pcm(&self) -> &[f32] {
        bytemuck::cast_slice(&self.samples)
    }

    /// Each block's header and samples, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&BlockInfo, &[f32])> {
        let mut rest = self.pcm();
        self.blocks.iter().map(move |info| {
            let (mine, tail) = rest.split_at(block_len(info).min(rest.len()));
            rest = tail;
            (info, mine)
        })
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.blocks.clear();
        self.samples.clear();
    }

    /// Silent blocks with these headers (their levels cleared).
    pub fn silence(headers: &[BlockInfo]) -> AudioBatch {
        let samples = headers.iter().map(block_len).sum();
        AudioBatch { blocks: headers.iter().map(|h| BlockInfo { level: None, ..*h }).collect(), samples: vec![0; samples] }
    }
}

/// Samples owned by a block.
fn block_len(info: &BlockInfo) -> usize {
    info.frames as usize * usize::from(info.channels)
}

impl FrameBatch {
    pub fn new() -> FrameBatch {
        FrameBatch { frames: Vec::new(), payloads: Vec::new() }
    }

    /// Appends a frame; its header's `size` is taken from `payload`.
    pub fn push(&mut self, mut info: FrameInfo, payload: &[u8]) {
        info.size = payload.len() as u32;
        self.frames.push(info);
        self.payloads.extend_from_slice(payload);
    }

    /// Each frame's header and payload, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&FrameInfo, &[u8])> {
        let mut rest = self.payloads.as_slice();
        self.frames.iter().map(move |info| {
            let (mine, tail) = rest.split_at((info.size as usize).min(rest.len()));
            rest = tail;
            (info, mine)
        })
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.payloads.clear();
    }
}

impl Default for FrameBatch {
    fn default() -> Self {
        FrameBatch::new()
    }
}

impl Items {
    pub fn len(&self) -> usize {
        match self {
            Items::Audio(b) => b.blocks.len(),
            Items::Frames(b) => b.frames.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty batch of the same type.
    pub fn empty_like(&self) -> Items {
        match self {
            Items::Audio(_) => Items::Audio(AudioBatch::new()),
            Items::Frames(_) => Items::Frames(FrameBatch::new()),
        }
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        match self {
            Items::Audio(b) => b.clear(),
            Items::Frames(b) => b.clear(),
        }
    }

    /// Appends the items of `range` of `other` (of the same type; a mismatch
    /// is ignored, and the pipeline's link type check makes it impossible).
    pub fn extend_from(&mut self, other: &Items, range: std::ops::Range<usize>) {
        match (self, other) {
            (Items::Audio(a), Items::Audio(b)) => {
                for (info, samples) in b.iter().skip(range.start).take(range.len()) {
                    a.push(*info, samples);
                }
            }
            (Items::Frames(a), Items::Frames(b)) => {
                for (info, payload) in b.iter().skip(range.start).take(range.len()) {
                    a.push(*info, payload);
                }
            }
            _ => {}
        }
    }

    /// Appends all of `other`.
    pub fn append(&mut self, other: &Items) {
        self.extend_from(other, 0..other.len());
    }

    /// Items `range` as a new batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Items {
        let mut out = self.empty_like();
        out.extend_from(self, range);
        out
    }

    /// Appends item `index` of `other` with its samples set to silence (the
    /// stand-in for an audio block a stage could not process). Frames have no
    /// silence: nothing is appended.
    pub fn push_muted(&mut self, other: &Items, index: usize) {
        if let (Items::Audio(a), Items::Audio(b)) = (self, other)
            && let Some((info, samples)) = b.iter().nth(index)
        {
            a.blocks.push(BlockInfo { level: None, ..*info });
            a.samples.resize(a.samples.len() + samples.len(), 0.0f32.to_bits());
        }
    }

    /// The sequence number of each item, for gap detection and reports.
    pub fn sequences(&self) -> impl Iterator<Item = u64> + '_ {
        let (a, f): (&[BlockInfo], &[FrameInfo]) = match self {
            Items::Audio(b) => (&b.blocks, &[]),
            Items::Frames(b) => (&[], &b.frames),
        };
        a.iter().map(|b| b.sequence).chain(f.iter().map(|f| f.sequence))
    }

    /// A short description of item `index`, for crash reports.
    pub fn summary(&self, index: usize) -> serde_json::Value {
        match self {
            Items::Audio(batch) => batch.iter().nth(index).map_or(serde_json::Value::Null, |(b, samples)| {
                let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
                serde_json::json!({
                    "type": "audio-block",
                    "sequence": b.sequence,
                    "sample_rate": b.sample_rate,
                    "channels": b.channels,
                    "samples": samples.len(),
                    "peak": if peak.is_finite() { serde_json::json!(peak) } else { serde_json::json!(peak.to_string()) },
                    "non_finite_samples": samples.iter().filter(|s| !s.is_finite()).count(),
                })
            }),
            Items::Frames(batch) => batch.iter().nth(index).map_or(serde_json::Value::Null, |(f, payload)| {
                serde_json::json!({
                    "type": "frame",
                    "stream": f.stream,
                    "sequence": f.sequence,
                    "timestamp": f.timestamp,
                    "size": payload.len(),
                    "head": super::hex(&payload[..payload.len().min(16)]),
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(sequence: u64) -> BlockInfo {
        BlockInfo { sequence, sample_rate: 48_000, channels: 2, frames: 0, level: None }
    }

    #[test]
    fn flat_audio_batches_slice_and_mute_by_block() {
        let mut batch = AudioBatch::new();
        batch.push(block(0), &[1.0, 2.0]);
        batch.push(block(1), &[3.0, 4.0, 5.0, 6.0]);
        batch.push(block(2), &[7.0, 8.0]);
        let items = Items::Audio(batch);
        let Items::Audio(tail) = items.slice(1..3) else { unreachable!() };
        assert_eq!(tail.pcm(), [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(tail.blocks[0].frames, 2);
        let mut out = items.slice(0..1);
        out.push_muted(&items, 1);
        let Items::Audio(out) = out else { unreachable!() };
        assert_eq!(out.pcm(), [1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(out.blocks.iter().map(|b| b.sequence).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn flat_frame_batches_iterate_by_frame() {
        let mut batch = FrameBatch::new();
        let info = FrameInfo { stream: 0, sequence: 0, timestamp: 0, size: 0 };
        batch.push(info, b"ab");
        batch.push(FrameInfo { sequence: 1, ..info }, b"");
        batch.push(FrameInfo { sequence: 2, ..info }, b"cde");
        let payloads: Vec<&[u8]> = batch.iter().map(|(_, p)| p).collect();
        assert_eq!(payloads, [&b"ab"[..], b"", b"cde"]);
    }
}
