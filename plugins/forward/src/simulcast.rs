//! Simulcast layer choice: which encoding of a layered stream each
//! subscriber gets.
//!
//! A publisher may send a stream in several encodings (layers, 0 = the
//! lowest). Every layer's packets carry the stream's SSRC and their layer;
//! a subscriber must get exactly one layer at a time, and may move to
//! another only where that layer starts a keyframe (it cannot decode a
//! layer from the middle).
//!
//! For each (subscriber, stream) the *target* is the highest layer that
//! (a) the publisher is sending now, (b) the subscriber asked for at most
//! (`max-layer`), and (c) fits its share of its bandwidth estimate: the
//! estimate times [`HEADROOM`], split evenly among the layered streams it
//! receives. Moving up needs [`UP_MARGIN`] more room than staying, so an
//! estimate that wobbles around a layer's rate does not flip it to and
//! fro. Without an estimate yet, the target is the highest layer asked
//! for. While the subscriber's current layer differs from its target it
//! keeps getting the current one, and the stage asks the publisher for a
//! keyframe of the target (again every [`ASK_AGAIN_AFTER`] packets while
//! none comes); at that keyframe it switches.
//!
//! Layer bitrates are measured from the packets themselves: bytes over
//! RTP time (90 kHz for video), in windows of half a second.

use medianode_sdk::{ANY_LAYER, KeyframeRequest, PacketMeta};
use std::collections::BTreeMap;

/// Layers a stream may have (browsers send three).
pub const MAX_LAYERS: usize = 4;
/// The share of a bandwidth estimate that video may use.
const HEADROOM: f64 = 0.85;
/// Moving up a layer needs this much more room than staying on it.
const UP_MARGIN: f64 = 1.15;
/// Frames of a stream's other layers after which a layer not seen is taken
/// as stopped (the publisher paused it: no bandwidth, no CPU, or a camera
/// too small for it): about a second with two others at 30 frames a second.
const STALE_AFTER: u32 = 60;
/// Packets of a stream between keyframe requests for a pending switch.
const ASK_AGAIN_AFTER: u32 = 150;
/// A measuring window: half a second of 90 kHz RTP time.
const WINDOW: u32 = 45_000;
/// RTP clock of video.
const CLOCK: f64 = 90_000.0;

/// One layer's bitrate, measured.
#[derive(Debug, Default, Clone, Copy)]
struct Meter {
    /// The RTP timestamp the window began at.
    start: Option<u32>,
    bytes: u64,
    /// Bits per second over the last whole window (0: not measured yet).
    bitrate: u64,
    /// Whether it was ever seen.
    seen: bool,
    /// Frames the other layers ended since this one was last seen.
    missed: u32,
}

impl Meter {
    fn live(&self) -> bool {
        self.seen && self.missed < STALE_AFTER
    }

    fn add(&mut self, timestamp: u32, size: u32) {
        (self.seen, self.missed) = (true, 0);
        let Some(start) = self.start else {
            self.start = Some(timestamp);
            return;
        };
        self.bytes += u64::from(size);
        let elapsed = timestamp.wrapping_sub(start);
        if elapsed >= WINDOW {
            // A jump of more than ten seconds is a restart, not a rate.
            if elapsed < 10 * WINDOW * 2 {
                self.bitrate = (self.bytes as f64 * 8.0 * CLOCK / f64::from(elapsed)) as u64;
            }
            (self.start, self.bytes) = (Some(timestamp), 0);
        }
    }
}

/// A layered stream as the stage sees it.
#[derive(Debug, Default)]
struct Stream {
    publisher: u64,
    meters: [Meter; MAX_LAYERS],
}

impl Stream {
    /// Layers the publisher sends now, lowest first.
    fn live(&self) -> impl Iterator<Item = u8> + '_ {
        (0..MAX_LAYERS as u8).filter(|&l| self.meters[usize::from(l)].live())
    }

    /// A packet of `layer`: it is measured, and when it ends a frame, every
    /// other layer has missed one more.
    fn add(&mut self, layer: u8, packet: &PacketMeta) {
        self.meters[usize::from(layer)].add(packet.timestamp, packet.size);
        if packet.marker {
            for (l, meter) in self.meters.iter_mut().enumerate() {
                if l != usize::from(layer) && meter.seen {
                    meter.missed = meter.missed.saturating_add(1);
                }
            }
        }
    }
}

/// A subscriber's layer of one stream.
#[derive(Debug, Clone, Copy)]
struct Choice {
    current: Option<u8>,
    /// Packets since the last keyframe request for the target.
    since_asked: Option<u32>,
}

/// What a subscriber can take.
#[derive(Debug, Clone, Copy)]
struct Receiver {
    bitrate: u64,
    max_layer: u8,
}

/// The choice of layers for every subscriber of every layered stream.
#[derive(Debug, Default)]
pub struct Simulcast {
    streams: BTreeMap<u32, Stream>,
    /// Layered streams per publisher.
    published: BTreeMap<u64, usize>,
    choices: BTreeMap<(u64, u32), Choice>,
    receivers: BTreeMap<u64, Receiver>,
    wanted: Vec<KeyframeRequest>,
}

impl Simulcast {
    /// What `participant` can receive changed.
    pub fn receiver(&mut self, participant: u64, bitrate: u64, max_layer: u8) {
        self.receivers.insert(participant, Receiver { bitrate, max_layer });
    }

    /// `participant` left: its streams and choices go.
    pub fn forget(&mut self, participant: u64) {
        self.receivers.remove(&participant);
        self.published.remove(&participant);
        self.streams.retain(|_, s| s.publisher != participant);
        let streams = &self.streams;
        self.choices.retain(|&(subscriber, stream), _| subscriber != participant && streams.contains_key(&stream));
    }

    /// Of `members` (the publisher's room, the publisher left out), pushes
    /// those that get layered `packet` to `out`.
    pub fn forward(&mut self, packet: &PacketMeta, layer: u8, members: impl Iterator<Item = u64>, out: &mut Vec<u64>) {
        if usize::from(layer) >= MAX_LAYERS {
            return;
        }
        let stream = self.streams.entry(packet.ssrc).or_insert_with(|| {
            *self.published.entry(packet.publisher).or_default() += 1;
            Stream { publisher: packet.publisher, ..Stream::default() }
        });
        stream.add(layer, packet);
        for member in members {
            let target = self.target(member, packet.ssrc);
            let choice = self.choices.entry((member, packet.ssrc)).or_insert(Choice { current: None, since_asked: None });
            if choice.current != Some(target) {
                if layer == target && packet.keyframe {
                    (choice.current, choice.since_asked) = (Some(target), None);
                } else {
                    let ask = choice.since_asked.is_none_or(|n| n >= ASK_AGAIN_AFTER);
                    if ask {
                        self.wanted.push(KeyframeRequest { ssrc: packet.ssrc, layer: target });
                    }
                    choice.since_asked = Some(if ask { 0 } else { choice.since_asked.unwrap_or(0) + 1 });
                }
            }
            if choice.current == Some(layer) {
                out.push(member);
            }
        }
    }

    /// The keyframes wanted since the last call (each once).
    pub fn keyframes(&mut self, wanted: &mut Vec<KeyframeRequest>) {
        self.wanted.sort_unstable_by_key(|k| (k.ssrc, k.layer));
        self.wanted.dedup();
        wanted.append(&mut self.wanted);
    }

    /// The layer `subscriber` should get of `stream` now.
    fn target(&self, subscriber: u64, ssrc: u32) -> u8 {
        let Some(stream) = self.streams.get(&ssrc) else { return 0 };
        let receiver = self.receivers.get(&subscriber).copied().unwrap_or(Receiver { bitrate: 0, max_layer: ANY_LAYER });
        // Per packet and subscriber: no allocation here.
        let Some(lowest) = stream.live().next() else { return 0 };
        let mut allowed = stream.live().filter(|&l| l <= receiver.max_layer);
        let Some(lowest_allowed) = allowed.next() else { return lowest };
        let highest_allowed = allowed.last().unwrap_or(lowest_allowed);
        if receiver.bitrate == 0 {
            return highest_allowed;
        }
        // Its share: the estimate split among the layered streams it gets
        // (all but its own).
        let own = self.published.get(&subscriber).copied().unwrap_or(0);
        let streams = self.streams.len().saturating_sub(own).max(1);
        let budget = receiver.bitrate as f64 * HEADROOM / streams as f64;
        let current = self.choices.get(&(subscriber, ssrc)).and_then(|c| c.current);
        let fits = |l: u8| {
            let rate = stream.meters[usize::from(l)].bitrate as f64;
            let needed = if current.is_some_and(|c| l > c) { rate * UP_MARGIN } else { rate };
            rate > 0.0 && needed <= budget
        };
        (lowest_allowed..=highest_allowed)
            .rev()
            .filter(|&l| stream.meters[usize::from(l)].live())
            .find(|&l| fits(l))
            .unwrap_or(lowest_allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::MediaKind;

    /// A publisher sending three layers at 30 frames a second: layer `l`
    /// sends `sizes[l]` bytes per frame, in one packet; a keyframe every
    /// `gop` frames.
    struct Publisher {
        frame: u32,
        sizes: [u32; 3],
        gop: u32,
    }

    impl Publisher {
        fn frame(&mut self) -> Vec<PacketMeta> {
            let keyframe = self.frame.is_multiple_of(self.gop);
            let timestamp = self.frame * 3000;
            self.frame += 1;
            (0..3u8)
                .map(|layer| PacketMeta {
                    publisher: 1,
                    kind: MediaKind::Video,
                    ssrc: 7,
                    sequence: 0,
                    timestamp,
                    payload_type: 96,
                    marker: true,
                    size: self.sizes[usize::from(layer)],
                    audio_level: None,
                    layer: Some(layer),
                    keyframe,
                })
                .collect()
        }
    }

    /// Runs `frames` frames; returns the layers subscriber 2 got (one entry
    /// per frame it got one in) and the keyframes asked for.
    fn run(s: &mut Simulcast, p: &mut Publisher, frames: u32) -> (Vec<u8>, Vec<KeyframeRequest>) {
        let (mut got, mut asked) = (Vec::new(), Vec::new());
        for _ in 0..frames {
            for packet in p.frame() {
                let mut out = Vec::new();
                let layer = packet.layer.unwrap_or(0);
                s.forward(&packet, layer, [2u64].into_iter(), &mut out);
                if out == [2] {
                    got.push(layer);
                }
            }
            s.keyframes(&mut asked);
        }
        (got, asked)
    }

    // 30 fps: 400 B = 96 kb/s, 2000 B = 480 kb/s, 6000 B = 1.44 Mb/s.
    fn publisher() -> Publisher {
        Publisher { frame: 0, sizes: [400, 2000, 6000], gop: 60 }
    }

    #[test]
    fn a_limited_subscriber_gets_the_low_layer_and_moves_up_when_the_limit_goes() {
        let mut s = Simulcast::default();
        let mut p = publisher();
        s.receiver(2, 300_000, ANY_LAYER);
        let (got, asked) = run(&mut s, &mut p, 120);
        // One layer per frame, the low one once it is measured.
        assert_eq!(got.len(), 120, "one layer each frame");
        assert_eq!(got.last(), Some(&0), "{got:?}");
        assert!(got.iter().skip(60).all(|&l| l == 0), "{got:?}");
        let _ = asked;
        // The limit goes: it asks for a keyframe of the top layer, and moves
        // at the next keyframe (not before).
        s.receiver(2, 5_000_000, ANY_LAYER);
        let (got, asked) = run(&mut s, &mut p, 60);
        assert!(asked.contains(&KeyframeRequest { ssrc: 7, layer: 2 }), "{asked:?}");
        // (The frame it switches in comes twice: the old layer's, then the
        // new layer's keyframe; the host gives it a later timestamp.)
        assert!((60..=61).contains(&got.len()), "{got:?}");
        assert!(got.iter().all(|&l| l == 0 || l == 2), "{got:?}");
        assert_eq!(got.last(), Some(&2));
        let switched = got.iter().position(|&l| l == 2).unwrap_or(0);
        assert_eq!((p.frame - 60 + switched as u32 - 1) % p.gop, 0, "switched at a keyframe: {got:?}");
        assert!(got[switched..].iter().all(|&l| l == 2), "{got:?}");
        // A middle estimate: the middle layer.
        s.receiver(2, 800_000, ANY_LAYER);
        let (got, _) = run(&mut s, &mut p, 120);
        assert_eq!(got.last(), Some(&1), "{got:?}");
    }

    #[test]
    fn the_quality_asked_for_caps_the_layer_and_without_an_estimate_it_is_the_top() {
        let mut s = Simulcast::default();
        let mut p = publisher();
        let (got, _) = run(&mut s, &mut p, 90);
        assert_eq!(got.last(), Some(&2), "no estimate: the top layer");
        s.receiver(2, 0, 1);
        let (got, _) = run(&mut s, &mut p, 90);
        assert_eq!(got.last(), Some(&1), "{got:?}");
    }

    #[test]
    fn a_layer_that_stops_is_left_for_one_that_runs() {
        let mut s = Simulcast::default();
        let mut p = publisher();
        let (got, _) = run(&mut s, &mut p, 90);
        assert_eq!(got.last(), Some(&2));
        // The publisher stops its top layer: within a second or so the
        // subscriber moves down, at a keyframe.
        let mut got = Vec::new();
        for _ in 0..90 {
            for packet in p.frame().into_iter().filter(|p| p.layer != Some(2)) {
                let mut out = Vec::new();
                s.forward(&packet, packet.layer.unwrap_or(0), [2u64].into_iter(), &mut out);
                if out == [2] {
                    got.push(packet.layer.unwrap_or(0));
                }
            }
        }
        assert_eq!(got.last(), Some(&1), "{:?}", &got[got.len().saturating_sub(10)..]);
        // Leaving forgets it all.
        s.forget(1);
        assert!(s.streams.is_empty() && s.choices.is_empty());
    }
}
