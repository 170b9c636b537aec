//! Active-speaker detection from RFC 6464 audio levels, sans-IO.
//!
//! Each audio packet's level (-dBov: 0 loudest, 127 silence) updates its
//! publisher's smoothed loudness. A publisher becomes the room's active
//! speaker when it is the loudest, louder than `threshold`, and has been
//! for `hold`, which keeps the highlight from flickering between talkers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Smoothing of levels, per packet (~20 ms of audio): a time constant of
/// about 100 ms.
const SMOOTHING: f32 = 0.2;

#[derive(Debug)]
pub struct SpeakerDetector {
    threshold: f32,
    hold: Duration,
    /// Publisher -> smoothed loudness (127 - level: higher is louder).
    loudness: HashMap<u64, f32>,
    current: Option<u64>,
    /// The candidate to replace `current` and since when it leads.
    challenger: Option<(u64, Instant)>,
}

impl SpeakerDetector {
    /// `threshold` in -dBov (e.g. 60: quieter than -60 dBov is not speech).
    pub fn new(threshold: u8, hold: Duration) -> SpeakerDetector {
        SpeakerDetector {
            threshold: 127.0 - f32::from(threshold.min(127)),
            hold,
            loudness: HashMap::new(),
            current: None,
            challenger: None,
        }
    }

    /// Records a packet's level; returns the new active speaker when it changes.
    pub fn level(&mut self, now: Instant, publisher: u64, level: u8) -> Option<u64> {
        let loudness = 127.0 - f32::from(level.min(127));
        let smoothed = self.loudness.entry(publisher).or_insert(0.0);
        *smoothed += SMOOTHING * (loudness - *smoothed);
        let (leader, loudest) = self.loudness.iter().fold((publisher, f32::MIN), |best, (&p, &l)| if l > best.1 { (p, l) } else { best });
        if loudest < self.threshold || self.current == Some(leader) {
            self.challenger = None;
            return None;
        }
        match self.challenger {
            Some((p, since)) if p == leader => {
                if now.duration_since(since) >= self.hold {
                    self.current = Some(leader);
                    self.challenger = None;
                    return Some(leader);
                }
            }
            _ => self.challenger = Some((leader, now)),
        }
        None
    }

    /// A publisher left.
    pub fn forget(&mut self, publisher: u64) {
        self.loudness.remove(&publisher);
        if self.current == Some(publisher) {
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loudest_talker_wins_after_the_hold_and_silence_never_does() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = SpeakerDetector::new(60, Duration::from_millis(200));
        // Two silent publishers: no speaker.
        for i in 0..50 {
            assert_eq!(d.level(ms(i * 20), 1, 127), None);
            assert_eq!(d.level(ms(i * 20), 2, 120), None);
        }
        // 2 starts talking at -20 dBov: active once it has led for 200 ms.
        let mut became = None;
        for i in 50..100 {
            // The change shows on whichever packet crosses the hold.
            if let Some(p) = d.level(ms(i * 20), 1, 127).or(d.level(ms(i * 20), 2, 20)) {
                became = Some((p, i));
                break;
            }
        }
        let (p, i) = became.expect("2 becomes the speaker");
        assert_eq!(p, 2);
        assert!((60..=70).contains(&i), "after ~200 ms of leading (packet {i})");
        // No repeat event while 2 keeps talking.
        assert_eq!(d.level(ms(2100), 2, 20), None);
    }
}
