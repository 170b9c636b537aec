//! Who receives a copy of each publisher stream, and how each copy is
//! numbered.
//!
//! For every publisher stream (by its SSRC) the fanout keeps the
//! subscribers that have a track for it, each a *leg* with its own SSRC and
//! [`SequenceRewriter`]. Given one packet and the subscribers the
//! forwarding decision chose, [`Fanout::route`] hands each chosen leg its
//! copy's SSRC, sequence number and timestamp, and counts the packet as
//! withheld for every other leg, so that no subscriber sees a hole for a
//! packet that was never meant for it. A simulcast stream's layers share
//! its legs: each packet names its source (the layer's own SSRC), and a
//! leg moving between sources is rebased ([`SequenceRewriter`]). What a leg carries for the I/O layer (an outbox, a
//! socket) is the type parameter: this module never touches it.

use super::rewrite::{Rewritten, SequenceRewriter};
use std::collections::HashMap;

/// One subscriber's copy of one publisher stream.
#[derive(Debug)]
pub struct Leg<L> {
    /// The SSRC the subscriber sees.
    pub ssrc: u32,
    sequence: SequenceRewriter,
    /// The I/O layer's end of the leg.
    pub io: L,
}

/// How to send one copy of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    /// The leg moved to another source (simulcast layer) with this copy.
    pub switched: bool,
}

/// One packet of a stream, as routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// The publisher stream (its legs' key).
    pub stream: u32,
    /// The SSRC it came with: the stream's, or its simulcast layer's.
    pub source: u32,
    pub sequence: u16,
    pub timestamp: u32,
    /// The wall clock now, in the stream's RTP units (for rebasing).
    pub clock: u32,
}

/// Publisher stream -> subscriber -> leg.
#[derive(Debug)]
pub struct Fanout<L> {
    streams: HashMap<u32, HashMap<u64, Leg<L>>>,
}

impl<L> Default for Fanout<L> {
    fn default() -> Self {
        Fanout { streams: HashMap::new() }
    }
}

impl<L> Fanout<L> {
    /// `subscriber` now receives `stream` as `ssrc`, through `io` (a second
    /// subscription to the same stream replaces the first).
    pub fn subscribe(&mut self, stream: u32, subscriber: u64, ssrc: u32, io: L) {
        self.streams.entry(stream).or_default().insert(subscriber, Leg { ssrc, sequence: SequenceRewriter::default(), io });
    }

    /// `subscriber` no longer receives `stream`.
    pub fn unsubscribe(&mut self, stream: u32, subscriber: u64) {
        if let Some(legs) = self.streams.get_mut(&stream) {
            legs.remove(&subscriber);
            if legs.is_empty() {
                self.streams.remove(&stream);
            }
        }
    }

    /// Everything `participant` received is gone.
    pub fn forget(&mut self, participant: u64) {
        self.streams.values_mut().for_each(|legs| {
            legs.remove(&participant);
        });
        self.streams.retain(|_, legs| !legs.is_empty());
    }

    /// Routes `packet` to the `chosen` subscribers: `deliver` is called
    /// with each chosen leg and its copy.
    pub fn route(&mut self, packet: Routed, chosen: &[u64], mut deliver: impl FnMut(&mut Leg<L>, Copy)) {
        let Some(legs) = self.streams.get_mut(&packet.stream) else { return };
        for (subscriber, leg) in legs.iter_mut() {
            if chosen.contains(subscriber) {
                let Rewritten { sequence, timestamp, switched } =
                    leg.sequence.forward(packet.source, packet.sequence, packet.timestamp, packet.clock);
                deliver(leg, Copy { ssrc: leg.ssrc, sequence, timestamp, switched });
            } else {
                leg.sequence.withhold(packet.source);
            }
        }
    }

    /// `subscriber`'s source of `stream` now (its simulcast layer's SSRC).
    pub fn source(&self, stream: u32, subscriber: u64) -> Option<u32> {
        self.streams.get(&stream)?.get(&subscriber)?.sequence.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(stream: u32, sequence: u16) -> Routed {
        Routed { stream, source: stream, sequence, timestamp: 0, clock: 0 }
    }

    fn routed(fanout: &mut Fanout<&'static str>, sequence: u16, chosen: &[u64]) -> Vec<(&'static str, (u32, u16))> {
        let mut out = Vec::new();
        fanout.route(packet(100, sequence), chosen, |leg, copy| out.push((leg.io, (copy.ssrc, copy.sequence))));
        out.sort_by_key(|(name, _)| *name);
        out
    }

    #[test]
    fn each_leg_has_its_ssrc_and_no_holes_for_what_it_was_not_sent() {
        let mut fanout = Fanout::default();
        fanout.subscribe(100, 1, 0xA, "a");
        fanout.subscribe(100, 2, 0xB, "b");
        assert_eq!(routed(&mut fanout, 10, &[1, 2]), [("a", (0xA, 10)), ("b", (0xB, 10))]);
        // 11 is for `a` only: `b`'s next copy follows its last without a gap.
        assert_eq!(routed(&mut fanout, 11, &[1]), [("a", (0xA, 11))]);
        assert_eq!(routed(&mut fanout, 12, &[1, 2]), [("a", (0xA, 12)), ("b", (0xB, 11))]);
        // Unknown streams and unknown subscribers route nowhere.
        let mut none = Vec::new();
        fanout.route(packet(999, 1), &[1, 2], |leg, _| none.push(leg.io));
        assert!(none.is_empty());
        assert_eq!(routed(&mut fanout, 13, &[7]), []);
    }

    #[test]
    fn a_forgotten_participant_gets_nothing_and_empty_streams_go() {
        let mut fanout = Fanout::default();
        fanout.subscribe(100, 1, 0xA, "a");
        fanout.subscribe(200, 1, 0xC, "c");
        fanout.subscribe(100, 2, 0xB, "b");
        fanout.forget(1);
        assert_eq!(routed(&mut fanout, 1, &[1, 2]), [("b", (0xB, 1))]);
        assert!(!fanout.streams.contains_key(&200), "a stream nobody receives is gone");
    }
}
