//! Frame headers as they cross the plugin boundary: three `u64` a frame
//! (`flat-frames` in the WIT). A list of numbers crosses as one block copy
//! where a list of records crosses field by field; the SDK packs and
//! unpacks here, so plugin code only sees [`FrameInfo`]s. The node uses
//! the same functions on its side.

use crate::FrameInfo;

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
}
