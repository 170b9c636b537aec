//! The gain stage: multiplies every sample by a fixed factor given in dB.
//!
//! `[stage.config]`: `gain-db` (default 0.0), between -120 and +40 dB.

use medianode_sdk::{AudioBlock, AudioDsp, Stage};
use serde::Deserialize;

/// The stage's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub gain_db: f32,
}

/// Scales samples by `10^(gain_db / 20)`.
#[derive(Debug)]
pub struct Gain {
    factor: f32,
}

impl Stage for Gain {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if !(-120.0..=40.0).contains(&config.gain_db) {
            return Err(format!("gain-db = {} is out of range; use -120.0 to 40.0", config.gain_db));
        }
        Ok(Gain { factor: 10f32.powf(config.gain_db / 20.0) })
    }
}

impl AudioDsp for Gain {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        for sample in block.samples.iter_mut() {
            *sample *= self.factor;
        }
    }
}

medianode_sdk::export_audio_dsp!(Gain);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_six_db_halves_amplitude() {
        let mut gain: Gain = medianode_sdk::start(r#"{"gain-db": -6.0206}"#).unwrap();
        let mut samples = [1.0, -0.5];
        let mut block = AudioBlock { sequence: 0, sample_rate: 48_000, channels: 1, samples: &mut samples, level: None };
        gain.process(&mut block);
        assert!((samples[0] - 0.5).abs() < 1e-4);
        assert!((samples[1] + 0.25).abs() < 1e-4);
    }

    #[test]
    fn rejects_unknown_keys_and_out_of_range() {
        assert!(medianode_sdk::start::<Gain>(r#"{"gain": 1}"#).unwrap_err().contains("unknown field"));
        assert!(medianode_sdk::start::<Gain>(r#"{"gain-db": 100}"#).unwrap_err().contains("out of range"));
    }
}
