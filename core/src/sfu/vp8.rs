//! What the SFU reads of a VP8 RTP payload (RFC 7741): whether a packet
//! starts a keyframe, the only place a subscriber can start decoding or
//! move to another simulcast layer.
//!
//! The payload descriptor comes first: one byte (X, N, S, PID), then, when
//! X is set, an extension byte (I, L, T, K) and the fields it announces
//! (a 7- or 15-bit picture id, TL0PICIDX, TID/KEYIDX). A packet starts a
//! frame when S is set and PID is 0; the VP8 frame's first byte follows,
//! whose lowest bit (P) is 0 for a keyframe. With end-to-end encryption
//! (SFrame) the descriptor stays in the clear and the frame's first bytes
//! are left unencrypted for this reason, as other SFUs expect.

/// Whether the VP8 payload starts a keyframe. Malformed input is not one.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // Picture id: 15 bits when its first bit (M) is set.
            let Some(&pid) = payload.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID, Y, KEYIDX
        }
    }
    payload.get(at).is_some_and(|&frame| frame & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::starts_keyframe;

    #[test]
    fn keyframes_are_found_behind_every_descriptor_shape() {
        // S=1, PID=0, no extension; frame byte P=0.
        assert!(starts_keyframe(&[0x10, 0x00, 0x9d]));
        // P=1: an interframe.
        assert!(!starts_keyframe(&[0x10, 0x01]));
        // X with a 15-bit picture id, TL0PICIDX and TID (Chrome's shape).
        assert!(starts_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x50]));
        assert!(!starts_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x51]));
        // X with a 7-bit picture id only.
        assert!(starts_keyframe(&[0x90, 0x80, 0x05, 0x00]));
        // Not the start of a frame, or not partition 0.
        assert!(!starts_keyframe(&[0x00, 0x00]));
        assert!(!starts_keyframe(&[0x11, 0x00]));
    }

    #[test]
    fn truncated_payloads_are_not_keyframes() {
        for bad in [&[][..], &[0x10], &[0x90], &[0x90, 0x80], &[0x90, 0x80, 0x80, 0x01]] {
            assert!(!starts_keyframe(bad), "{bad:?}");
        }
    }
}
