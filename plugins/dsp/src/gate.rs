//! Noise gate: lets audio through while its level is above a threshold and
//! attenuates it by `range-db` otherwise.
//!
//! `[stage.config]`: `threshold-db` (default -50 dBFS, compared with the peak
//! level), `attack-ms` (default 1: how fast it opens), `hold-ms` (default 50:
//! how long it stays open after the level falls), `release-ms` (default 100:
//! how fast it closes), `range-db` (default -80: the attenuation when closed).
//!
//! Static curve: 0 dB above the threshold, `range-db` below. Channels are
//! linked (the loudest decides), so a stereo image does not wander. Like the
//! compressor, it decides once per control step of 16 frames and ramps the
//! gain across the step.

use crate::compressor::{CONTROL_FRAMES, ramp};
use crate::math::{db_to_amplitude, peak};
use crate::{check_range, time_coefficient};
use medianode_sdk::{AudioBlock, AudioDsp, Stage};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "defaults::threshold")]
    pub threshold_db: f32,
    #[serde(default = "defaults::attack")]
    pub attack_ms: f32,
    #[serde(default = "defaults::hold")]
    pub hold_ms: f32,
    #[serde(default = "defaults::release")]
    pub release_ms: f32,
    #[serde(default = "defaults::range")]
    pub range_db: f32,
}

mod defaults {
    pub fn threshold() -> f32 {
        -50.0
    }
    pub fn attack() -> f32 {
        1.0
    }
    pub fn hold() -> f32 {
        50.0
    }
    pub fn release() -> f32 {
        100.0
    }
    pub fn range() -> f32 {
        -80.0
    }
}

/// Release of the level detector: long enough to bridge the gaps between
/// the peaks of a 50 Hz wave, short next to `hold-ms`.
const DETECTOR_RELEASE_MS: f32 = 10.0;

#[derive(Debug)]
pub struct Gate {
    config: Config,
    threshold: f32,
    range: f32,
    sample_rate: u32,
    attack: f32,
    release: f32,
    detector_release: f32,
    /// `detector_release` over a whole control step.
    detector_release_step: f32,
    hold_frames: u32,
    /// Peak envelope of the input.
    envelope: f32,
    /// Frames the gate stays open for after the level fell.
    hold_left: u32,
    /// The gain applied now, between `range` and 1.
    gain: f32,
}

impl Stage for Gate {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        check_range("threshold-db", config.threshold_db, -120.0..=0.0)?;
        check_range("attack-ms", config.attack_ms, 0.0..=1000.0)?;
        check_range("hold-ms", config.hold_ms, 0.0..=10_000.0)?;
        check_range("release-ms", config.release_ms, 0.0..=10_000.0)?;
        check_range("range-db", config.range_db, -120.0..=0.0)?;
        let mut gate = Gate {
            threshold: db_to_amplitude(config.threshold_db),
            range: db_to_amplitude(config.range_db),
            gain: db_to_amplitude(config.range_db),
            config,
            sample_rate: 0,
            attack: 0.0,
            release: 0.0,
            detector_release: 0.0,
            detector_release_step: 0.0,
            hold_frames: 0,
            envelope: 0.0,
            hold_left: 0,
        };
        gate.set_rate(48_000);
        Ok(gate)
    }
}

impl Gate {
    fn set_rate(&mut self, sample_rate: u32) {
        self.sample_rate = sample_rate;
        self.attack = time_coefficient(self.config.attack_ms, sample_rate);
        self.release = time_coefficient(self.config.release_ms, sample_rate);
        self.detector_release = time_coefficient(DETECTOR_RELEASE_MS, sample_rate);
        self.detector_release_step = self.detector_release.powi(CONTROL_FRAMES as i32);
        self.hold_frames = (self.config.hold_ms * 0.001 * sample_rate as f32) as u32;
    }

    /// The gain applied now, as a factor.
    pub fn gain(&self) -> f32 {
        self.gain
    }
}

impl AudioDsp for Gate {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        if block.sample_rate != self.sample_rate {
            self.set_rate(block.sample_rate);
        }
        let channels = usize::from(block.channels.max(1));
        // Decide once per control step (a third of a millisecond), on the
        // step's peak; ramp the gain across the step.
        for step in block.samples.chunks_mut(CONTROL_FRAMES * channels) {
            let frames = (step.len() / channels) as i32;
            let level = peak(step);
            let decay = if frames == CONTROL_FRAMES as i32 { self.detector_release_step } else { self.detector_release.powi(frames) };
            self.envelope = level.max(self.envelope * decay);
            let target = if self.envelope > self.threshold {
                self.hold_left = self.hold_frames;
                1.0
            } else if self.hold_left > 0 {
                self.hold_left = self.hold_left.saturating_sub(frames as u32);
                1.0
            } else {
                self.range
            };
            let k = if target > self.gain { self.attack } else { self.release };
            let end = target + (self.gain - target) * k.powi(frames);
            ramp(step, channels, self.gain, end);
            self.gain = end;
        }
        if !(self.envelope.is_finite() && self.gain.is_finite()) {
            (self.envelope, self.gain) = (0.0, self.range);
        }
    }
}
