//! Gain: multiplies every sample by a factor given in dB.
//!
//! `[stage.config]`: `gain-db` (default 0, from -120 to +40) and
//! `smoothing-ms` (default 10): a change of gain (see [`Gain::set_gain_db`])
//! ramps linearly over that time instead of jumping, which would click.

use crate::check_range;
use crate::math::db_to_amplitude;
use medianode_sdk::{AudioBlock, AudioDsp, Stage};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub gain_db: f32,
    #[serde(default = "default_smoothing")]
    pub smoothing_ms: f32,
}

fn default_smoothing() -> f32 {
    10.0
}

#[derive(Debug)]
pub struct Gain {
    smoothing_ms: f32,
    /// The factor being applied now.
    current: f32,
    target: f32,
    /// Change of `current` per frame while ramping.
    step: f32,
    /// Frames left in the ramp.
    ramp_left: u32,
    sample_rate: u32,
}

impl Stage for Gain {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        let gain_db = check_range("gain-db", config.gain_db, -120.0..=40.0)?;
        let smoothing_ms = check_range("smoothing-ms", config.smoothing_ms, 0.0..=10_000.0)?;
        let factor = db_to_amplitude(gain_db);
        Ok(Gain { smoothing_ms, current: factor, target: factor, step: 0.0, ramp_left: 0, sample_rate: 48_000 })
    }
}

impl Gain {
    /// Moves the gain to `gain_db` over the smoothing time.
    pub fn set_gain_db(&mut self, gain_db: f32) {
        self.target = db_to_amplitude(gain_db.clamp(-120.0, 40.0));
        let frames = (self.smoothing_ms * 0.001 * self.sample_rate as f32).round() as u32;
        if frames == 0 {
            self.current = self.target;
            self.ramp_left = 0;
        } else {
            self.step = (self.target - self.current) / frames as f32;
            self.ramp_left = frames;
        }
    }

    /// The factor applied to the next sample.
    pub fn factor(&self) -> f32 {
        self.current
    }
}

impl AudioDsp for Gain {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        self.sample_rate = block.sample_rate;
        let channels = usize::from(block.channels.max(1));
        // The ramp, frame by frame, then the steady part in one flat loop
        // (which the compiler vectorizes).
        let ramp_frames = (self.ramp_left as usize).min(block.samples.len() / channels);
        let (ramp, steady) = block.samples.split_at_mut(ramp_frames * channels);
        for frame in ramp.chunks_exact_mut(channels) {
            self.current += self.step;
            self.ramp_left -= 1;
            if self.ramp_left == 0 {
                self.current = self.target;
            }
            frame.iter_mut().for_each(|s| *s *= self.current);
        }
        let factor = self.current;
        steady.iter_mut().for_each(|s| *s *= factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    fn run(gain: &mut Gain, samples: &mut [f32]) {
        gain.process(&mut AudioBlock { sequence: 0, sample_rate: 48_000, channels: 1, samples, level: None });
    }

    #[test]
    fn minus_six_db_halves_amplitude() {
        let mut gain: Gain = start(r#"{"gain-db": -6.0206}"#).unwrap();
        let mut samples = [1.0, -0.5];
        run(&mut gain, &mut samples);
        assert!((samples[0] - 0.5).abs() < 1e-4);
        assert!((samples[1] + 0.25).abs() < 1e-4);
    }

    #[test]
    fn changes_ramp_over_the_smoothing_time() {
        let mut gain: Gain = start(r#"{"gain-db": 0, "smoothing-ms": 1}"#).unwrap();
        gain.set_gain_db(-120.0);
        let mut samples = [1.0f32; 96];
        run(&mut gain, &mut samples);
        // 1 ms = 48 frames of ramp: strictly falling, then the target.
        assert!(samples[..48].windows(2).all(|w| w[1] < w[0]), "{samples:?}");
        assert!((samples[23] - 0.5).abs() < 0.03, "halfway at frame 23: {}", samples[23]);
        assert!(samples[48..].iter().all(|&s| s == db_to_amplitude(-120.0)));
    }

    #[test]
    fn rejects_unknown_keys_and_out_of_range() {
        assert!(start::<Gain>(r#"{"gain": 1}"#).unwrap_err().contains("unknown field"));
        assert!(start::<Gain>(r#"{"gain-db": 100}"#).unwrap_err().contains("out of range"));
    }
}
