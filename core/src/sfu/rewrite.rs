//! Sequence numbers and timestamps for one forwarded stream as one
//! subscriber sees it.
//!
//! A subscriber gets its own SSRC per forwarded track, and sequence numbers
//! without the holes that packets dropped *for it* (by the forwarding
//! decision) would leave: a hole looks like loss and makes the subscriber
//! ask for retransmissions of packets that were never meant for it. Holes
//! from real loss upstream stay holes, so the subscriber's NACKs still work.
//!
//! With simulcast the subscriber's copy comes from one of several source
//! streams (layers, each with its own SSRC, sequence numbers and RTP
//! timestamps) and moves between them. At a switch the new source is
//! rebased: its first packet gets the sequence number after the last one
//! sent, and a timestamp after the last one sent by the wall-clock time
//! between them, so the subscriber sees one continuous stream.

/// Rewrites one stream's sequence numbers and timestamps for one
/// subscriber.
#[derive(Debug, Clone, Default)]
pub struct SequenceRewriter {
    /// The source (SSRC) this subscriber's copy comes from now.
    source: Option<u32>,
    /// Subtracted from the source's sequence numbers (mod 2^16): packets
    /// withheld, and the rebase at a switch.
    sequence_offset: u16,
    /// Subtracted from the source's timestamps (mod 2^32).
    timestamp_offset: u32,
    /// The last copy sent: its sequence number, timestamp, and the wall
    /// clock (in the stream's RTP units) when it went.
    last: Option<(u16, u32, u32)>,
}

/// One copy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub sequence: u16,
    pub timestamp: u32,
    /// The copy comes from another source than the one before.
    pub switched: bool,
}

impl SequenceRewriter {
    /// The numbers to send for packet `sequence`/`timestamp` of `source`
    /// forwarded to this subscriber; `clock` is the wall clock now in the
    /// stream's RTP units (any origin, wrapping).
    pub fn forward(&mut self, source: u32, sequence: u16, timestamp: u32, clock: u32) -> Rewritten {
        let switched = self.source.is_some_and(|s| s != source);
        if switched && let Some((last_sequence, last_timestamp, last_clock)) = self.last {
            self.sequence_offset = sequence.wrapping_sub(last_sequence.wrapping_add(1));
            let elapsed = clock.wrapping_sub(last_clock).clamp(1, 1 << 30);
            self.timestamp_offset = timestamp.wrapping_sub(last_timestamp.wrapping_add(elapsed));
        }
        self.source = Some(source);
        let out = Rewritten {
            sequence: sequence.wrapping_sub(self.sequence_offset),
            timestamp: timestamp.wrapping_sub(self.timestamp_offset),
            switched,
        };
        self.last = Some((out.sequence, out.timestamp, clock));
        out
    }

    /// A packet of `source` that this subscriber does not get: a hole to
    /// close if it comes from the subscriber's current source.
    pub fn withhold(&mut self, source: u32) {
        if self.source.is_none_or(|s| s == source) {
            self.sequence_offset = self.sequence_offset.wrapping_add(1);
        }
    }

    /// The source this subscriber's copy comes from now.
    pub fn source(&self) -> Option<u32> {
        self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(r: &mut SequenceRewriter, sequence: u16) -> u16 {
        r.forward(1, sequence, 0, 0).sequence
    }

    #[test]
    fn withheld_packets_leave_no_hole_and_wrap_around() {
        let mut r = SequenceRewriter::default();
        assert_eq!(seq(&mut r, 65534), 65534);
        r.withhold(1); // 65535 not for this subscriber
        assert_eq!(seq(&mut r, 0), 65535);
        assert_eq!(seq(&mut r, 1), 0);
        // Upstream loss (2 never arrived) stays a hole.
        assert_eq!(seq(&mut r, 3), 2);
        // Packets of another source leave no mark.
        r.withhold(9);
        assert_eq!(seq(&mut r, 4), 3);
    }

    #[test]
    fn a_switch_of_source_continues_the_numbers() {
        let mut r = SequenceRewriter::default();
        // Layer A: sequence 100.., timestamps 5000.. (3000 a frame).
        let a = r.forward(0xA, 100, 5000, 0);
        assert_eq!((a.sequence, a.timestamp, a.switched), (100, 5000, false));
        let a = r.forward(0xA, 101, 8000, 3000);
        assert_eq!((a.sequence, a.timestamp), (101, 8000));
        // Layer B: its own numbers entirely; 3000 ticks of wall clock later.
        let b = r.forward(0xB, 40_000, 1_000_000, 6000);
        assert_eq!((b.sequence, b.timestamp, b.switched), (102, 11_000, true));
        let b = r.forward(0xB, 40_001, 1_003_000, 9000);
        assert_eq!((b.sequence, b.timestamp, b.switched), (103, 14_000, false));
        assert_eq!(r.source(), Some(0xB));
        // A packet of B withheld closes its hole; one of A does nothing now.
        r.withhold(0xB);
        r.withhold(0xA);
        assert_eq!(r.forward(0xB, 40_003, 1_006_000, 12_000).sequence, 104);
    }

    #[test]
    fn a_switch_in_the_same_instant_still_moves_time_forward() {
        let mut r = SequenceRewriter::default();
        r.forward(0xA, 7, 100, 50);
        let b = r.forward(0xB, 9000, 42, 50);
        assert_eq!((b.sequence, b.timestamp), (8, 101));
    }
}
