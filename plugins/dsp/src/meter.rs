//! Level meter: RMS and peak level in dBFS and a voice-activity flag for
//! every block, written on the block itself so that later stages (and the
//! node's metrics) can read them. The audio passes unchanged.
//!
//! `[stage.config]`: `vad-threshold-db` (default -50 dBFS: quieter blocks
//! are never voice), `vad-margin-db` (default 9: how far above the tracked
//! noise floor a block must be), `hangover-ms` (default 200: how long the
//! flag stays up after the last active block, so it does not flicker
//! between syllables).
//!
//! Voice activity here is an energy detector with an adaptive noise floor:
//! the floor starts at the threshold, follows quiet blocks down at once and
//! rises slowly (6 dB/s),
//! so steady background noise stops counting as activity.

use crate::check_range;
use medianode_sdk::{AudioBlock, AudioDsp, AudioLevel, Stage};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "defaults::threshold")]
    pub vad_threshold_db: f32,
    #[serde(default = "defaults::margin")]
    pub vad_margin_db: f32,
    #[serde(default = "defaults::hangover")]
    pub hangover_ms: f32,
}

mod defaults {
    pub fn threshold() -> f32 {
        -50.0
    }
    pub fn margin() -> f32 {
        9.0
    }
    pub fn hangover() -> f32 {
        200.0
    }
}

/// How fast the noise floor rises, in dB per second.
const FLOOR_RISE_DB_PER_S: f32 = 6.0;
/// The level reported for digital silence.
pub const SILENCE_DB: f32 = -120.0;

#[derive(Debug)]
pub struct Meter {
    config: Config,
    noise_floor: f32,
    /// Seconds of hangover left.
    hangover_left: f32,
}

impl Stage for Meter {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        check_range("vad-threshold-db", config.vad_threshold_db, -120.0..=0.0)?;
        check_range("vad-margin-db", config.vad_margin_db, 0.0..=60.0)?;
        check_range("hangover-ms", config.hangover_ms, 0.0..=10_000.0)?;
        Ok(Meter { noise_floor: config.vad_threshold_db, config, hangover_left: 0.0 })
    }
}

/// RMS and peak of `samples` in dBFS (finite samples only; silence is
/// [`SILENCE_DB`]).
pub fn levels(samples: &[f32]) -> (f32, f32) {
    let (mut sum, mut peak, mut n) = (0f64, 0f32, 0usize);
    for &s in samples.iter().filter(|s| s.is_finite()) {
        sum += f64::from(s) * f64::from(s);
        peak = if s.abs() > peak { s.abs() } else { peak };
        n += 1;
    }
    let db = |x: f64| if x > 0.0 { ((20.0 * x.log10()) as f32).max(SILENCE_DB) } else { SILENCE_DB };
    (db((sum / n.max(1) as f64).sqrt()), db(f64::from(peak)))
}

impl AudioDsp for Meter {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        let (rms, peak) = levels(block.samples);
        let seconds = block.frames() as f32 / block.sample_rate.max(1) as f32;
        self.noise_floor = if rms < self.noise_floor { rms } else { self.noise_floor + FLOOR_RISE_DB_PER_S * seconds };
        let active = rms > self.config.vad_threshold_db && rms > self.noise_floor + self.config.vad_margin_db;
        if active {
            self.hangover_left = self.config.hangover_ms * 0.001;
        } else {
            self.hangover_left = (self.hangover_left - seconds).max(0.0);
        }
        block.level = Some(AudioLevel { rms_dbfs: rms, peak_dbfs: peak, voice: active || self.hangover_left > 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    fn block_of(meter: &mut Meter, amplitude: f32) -> AudioLevel {
        let mut samples: Vec<f32> = (0..480).map(|i| amplitude * (i as f32 * 0.1).sin()).collect();
        let mut block = AudioBlock { sequence: 0, sample_rate: 48_000, channels: 1, samples: &mut samples, level: None };
        meter.process(&mut block);
        block.level.unwrap()
    }

    #[test]
    fn speech_over_steady_noise_is_voice_and_the_noise_is_not() {
        let mut meter: Meter = start("{}").unwrap();
        // 1 s of a steady -43 dBFS (RMS) background.
        for _ in 0..100 {
            block_of(&mut meter, 0.01);
        }
        let noise = block_of(&mut meter, 0.01);
        assert!(!noise.voice, "steady noise must not count as voice: {noise:?}");
        let speech = block_of(&mut meter, 0.3);
        assert!(speech.voice);
        assert!((speech.peak_dbfs - 20.0 * 0.3f32.log10()).abs() < 0.1);
        assert!((speech.rms_dbfs - (speech.peak_dbfs - 3.01)).abs() < 0.2, "a sine's RMS is 3 dB under its peak");
    }
}
