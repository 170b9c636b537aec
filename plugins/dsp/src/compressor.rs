//! Feed-forward compressor with a soft knee.
//!
//! `[stage.config]`: `threshold-db` (default -20 dBFS), `ratio` (default 4),
//! `knee-db` (default 6), `attack-ms` (default 5), `release-ms` (default 50),
//! `makeup-db` (default 0).
//!
//! The design of Giannoulis, Massberg and Reiss, "Digital Dynamic Range
//! Compressor Design — A Tutorial and Analysis" (JAES 2012): the gain
//! computer works on the peak level in dB, the gain reduction is smoothed by
//! a decoupled peak detector (release, then attack), and the makeup gain is
//! added last. All of that runs once per [`CONTROL_FRAMES`] frames (a third
//! of a millisecond) on their peak, and the gain is ramped linearly between
//! steps: the per-sample work is one multiply. Static curve, for an input level `x` (dB):
//!
//! ```text
//! x - T < -W/2:        y = x
//! |x - T| <= W/2:      y = x + (1/R - 1) (x - T + W/2)^2 / (2W)
//! x - T > W/2:         y = T + (x - T) / R
//! ```
//! plus makeup. Channels are linked.

use crate::math::{from_db, peak, to_db};
use crate::{check_range, time_coefficient};
use medianode_sdk::{AudioBlock, AudioDsp, Stage};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "defaults::threshold")]
    pub threshold_db: f32,
    #[serde(default = "defaults::ratio")]
    pub ratio: f32,
    #[serde(default = "defaults::knee")]
    pub knee_db: f32,
    #[serde(default = "defaults::attack")]
    pub attack_ms: f32,
    #[serde(default = "defaults::release")]
    pub release_ms: f32,
    #[serde(default)]
    pub makeup_db: f32,
}

mod defaults {
    pub fn threshold() -> f32 {
        -20.0
    }
    pub fn ratio() -> f32 {
        4.0
    }
    pub fn knee() -> f32 {
        6.0
    }
    pub fn attack() -> f32 {
        5.0
    }
    pub fn release() -> f32 {
        50.0
    }
}

impl Config {
    /// The static curve: output level in dB for input level `x` in dB,
    /// makeup included.
    pub fn curve(&self, x: f32) -> f32 {
        let (t, w, r) = (self.threshold_db, self.knee_db, self.ratio);
        let y = if 2.0 * (x - t) < -w {
            x
        } else if 2.0 * (x - t).abs() <= w {
            let over = x - t + w / 2.0;
            x + (1.0 / r - 1.0) * over * over / (2.0 * w)
        } else {
            t + (x - t) / r
        };
        y + self.makeup_db
    }
}

/// Frames per control step: the level detector and gain computer run once
/// per step (on the step's peak) and the gain is interpolated linearly
/// across it, which keeps dB math out of the per-sample loop.
pub const CONTROL_FRAMES: usize = 16;

#[derive(Debug)]
pub struct Compressor {
    config: Config,
    sample_rate: u32,
    /// Attack and release coefficients per control step.
    attack: f32,
    release: f32,
    /// Gain reduction (dB, >= 0) after the release stage, and after attack.
    peak: f32,
    reduction: f32,
    /// The linear gain reached at the end of the last step.
    gain: f32,
}

impl Stage for Compressor {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        check_range("threshold-db", config.threshold_db, -80.0..=0.0)?;
        check_range("ratio", config.ratio, 1.0..=100.0)?;
        check_range("knee-db", config.knee_db, 0.0..=24.0)?;
        check_range("attack-ms", config.attack_ms, 0.0..=1000.0)?;
        check_range("release-ms", config.release_ms, 0.0..=10_000.0)?;
        check_range("makeup-db", config.makeup_db, -24.0..=48.0)?;
        let gain = from_db(config.makeup_db);
        let mut c = Compressor { config, sample_rate: 0, attack: 0.0, release: 0.0, peak: 0.0, reduction: 0.0, gain };
        c.set_rate(48_000);
        Ok(c)
    }
}

impl Compressor {
    fn set_rate(&mut self, sample_rate: u32) {
        self.sample_rate = sample_rate;
        let step_rate = sample_rate / CONTROL_FRAMES as u32;
        self.attack = time_coefficient(self.config.attack_ms, step_rate);
        self.release = time_coefficient(self.config.release_ms, step_rate);
    }

    /// The gain reduction applied now, in dB (>= 0).
    pub fn reduction_db(&self) -> f32 {
        self.reduction
    }
}

impl AudioDsp for Compressor {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        if block.sample_rate != self.sample_rate {
            self.set_rate(block.sample_rate);
        }
        let channels = usize::from(block.channels.max(1));
        let (attack, release, makeup) = (self.attack, self.release, self.config.makeup_db);
        for step in block.samples.chunks_mut(CONTROL_FRAMES * channels) {
            let level = peak(step);
            let x = to_db(level);
            let wanted = x - (self.config.curve(x) - makeup); // reduction >= 0
            self.peak = wanted.max(release * self.peak + (1.0 - release) * wanted);
            self.reduction = attack * self.reduction + (1.0 - attack) * self.peak;
            let target = from_db(makeup - self.reduction);
            if !target.is_finite() {
                continue;
            }
            ramp(step, channels, self.gain, target);
            self.gain = target;
        }
        if !(self.peak.is_finite() && self.reduction.is_finite()) {
            (self.peak, self.reduction) = (0.0, 0.0);
        }
    }
}

/// Multiplies `samples` by a gain going linearly from `from` (exclusive)
/// to `to` (reached on the last frame).
pub(crate) fn ramp(samples: &mut [f32], channels: usize, from: f32, to: f32) {
    let frames = samples.len() / channels.max(1);
    let delta = (to - from) / frames.max(1) as f32;
    // i32 indices: their conversion to f32 vectorizes; usize's does not.
    if channels == 1 {
        for (i, s) in samples.iter_mut().enumerate() {
            *s *= from + delta * (i as i32 + 1) as f32;
        }
    } else {
        for (i, frame) in samples.chunks_exact_mut(channels).enumerate() {
            let gain = from + delta * (i as i32 + 1) as f32;
            frame.iter_mut().for_each(|s| *s *= gain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_continuous_at_the_knee_edges() {
        let c = Config { threshold_db: -20.0, ratio: 4.0, knee_db: 6.0, attack_ms: 5.0, release_ms: 50.0, makeup_db: 0.0 };
        assert!((c.curve(-23.0) - -23.0).abs() < 1e-5);
        assert!((c.curve(-17.0) - (-20.0 + 3.0 / 4.0)).abs() < 1e-5);
        assert!((c.curve(0.0) - -15.0).abs() < 1e-5);
        assert_eq!(c.curve(-60.0), -60.0);
    }
}
