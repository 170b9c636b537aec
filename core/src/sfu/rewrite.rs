//! Sequence numbers for one forwarded stream as one subscriber sees it.
//!
//! A subscriber gets its own SSRC per forwarded track, and sequence numbers
//! without the holes that packets dropped *for it* (by the forwarding
//! decision) would leave: a hole looks like loss and makes the subscriber
//! ask for retransmissions of packets that were never meant for it. Holes
//! from real loss upstream stay holes, so the subscriber's NACKs still work.

/// Rewrites one stream's sequence numbers for one subscriber.
#[derive(Debug, Clone, Default)]
pub struct SequenceRewriter {
    /// Packets of the stream withheld from this subscriber so far (mod 2^16).
    withheld: u16,
}

impl SequenceRewriter {
    /// The sequence number to send for a packet forwarded to this subscriber.
    pub fn forward(&mut self, sequence: u16) -> u16 {
        sequence.wrapping_sub(self.withheld)
    }

    /// A packet of the stream that this subscriber does not get.
    pub fn withhold(&mut self) {
        self.withheld = self.withheld.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_packets_leave_no_hole_and_wrap_around() {
        let mut r = SequenceRewriter::default();
        assert_eq!(r.forward(65534), 65534);
        r.withhold(); // 65535 not for this subscriber
        assert_eq!(r.forward(0), 65535);
        assert_eq!(r.forward(1), 0);
        // Upstream loss (2 never arrived) stays a hole.
        assert_eq!(r.forward(3), 2);
    }
}
