//! `{{name}}`: an audio DSP stage for medianode.
//!
//! A tremolo: the level swings between 1 and `1 - depth`, `rate-hz` times
//! a second. The node calls `process` once per block (10 ms of 48 kHz
//! audio by default), in stream order, within the stage's deadline.
//!
//! What survives a restart: nothing of this struct (a crash or a reload
//! starts a fresh instance through `new`). Keep what must survive in the
//! host state store (`medianode_sdk::host::state_put`).

use medianode_sdk::{AudioBlock, AudioDsp, Stage};
use serde::Deserialize;

/// The stage's `[stage.config]` table. `deny_unknown_fields`: a misspelt
/// key is an error the user sees at its place in the pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Swings per second (0.1 to 50).
    #[serde(default = "default_rate")]
    pub rate_hz: f32,
    /// How deep each swing goes: 0 (not at all) to 1 (down to silence).
    #[serde(default = "default_depth")]
    pub depth: f32,
}

fn default_rate() -> f32 {
    5.0
}

fn default_depth() -> f32 {
    0.5
}

pub struct {{Type}} {
    config: Config,
    /// Where in the swing the next sample is, 0 to 1.
    phase: f32,
}

impl Stage for {{Type}} {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if !(0.1..=50.0).contains(&config.rate_hz) {
            return Err(format!("`rate-hz` must be 0.1 to 50, not {}", config.rate_hz));
        }
        if !(0.0..=1.0).contains(&config.depth) {
            return Err(format!("`depth` must be 0 to 1, not {}", config.depth));
        }
        Ok({{Type}} { config, phase: 0.0 })
    }
}

impl AudioDsp for {{Type}} {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        let channels = usize::from(block.channels.max(1));
        let step = self.config.rate_hz / block.sample_rate.max(1) as f32;
        for frame in block.samples.chunks_mut(channels) {
            let swing = 0.5 * (1.0 + (self.phase * std::f32::consts::TAU).sin());
            let gain = 1.0 - self.config.depth * swing;
            frame.iter_mut().for_each(|sample| *sample *= gain);
            self.phase = (self.phase + step).fract();
        }
    }
}

// The component's exports (on wasm32; natively this expands to nothing).
medianode_sdk::export_audio_dsp!({{Type}});

/// Native unit tests: the SDK starts and runs the stage exactly as the
/// node's glue does (`start` parses the config JSON; `process_batch` runs
/// a batch of blocks).
#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::{BlockInfo, process_batch, start};

    /// Runs one mono 48 kHz block of `samples` through a fresh stage.
    fn run(config: &str, samples: &mut [f32]) {
        let mut stage: {{Type}} = start(config).expect("a valid config");
        let mut blocks = [BlockInfo { sequence: 0, sample_rate: 48_000, channels: 1, frames: samples.len() as u32, level: None }];
        process_batch(&mut stage, &mut blocks, samples);
    }

    #[test]
    fn depth_zero_changes_nothing() {
        let mut samples = vec![0.5; 480];
        run(r#"{"depth": 0.0}"#, &mut samples);
        assert!(samples.iter().all(|&s| s == 0.5));
    }

    #[test]
    fn full_depth_swings_from_unity_to_silence() {
        let mut samples = vec![1.0; 48_000];
        run(r#"{"rate-hz": 5.0, "depth": 1.0}"#, &mut samples);
        let (low, high) = samples.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        assert!(low < 0.001 && high > 0.999, "swung from {low} to {high}");
    }

    #[test]
    fn a_bad_setting_is_refused_by_name() {
        let refused = start::<{{Type}}>(r#"{"depth": 2.0}"#).err().expect("depth 2 is refused");
        assert!(refused.contains("depth"), "{refused}");
        let misspelt = start::<{{Type}}>(r#"{"dpeth": 0.5}"#).err().expect("an unknown key is refused");
        assert!(misspelt.contains("dpeth"), "{misspelt}");
    }
}
