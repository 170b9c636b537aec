//! Biquad filters after Robert Bristow-Johnson's "Audio EQ Cookbook".
//!
//! `[stage.config]`: `kind` = `"low-pass"` | `"high-pass"` | `"peaking"` |
//! `"low-shelf"` | `"high-shelf"`, `frequency` (Hz: cutoff, centre or shelf
//! midpoint), `q` (default 0.7071, Butterworth), `gain-db` (peaking and
//! shelves; default 0).
//!
//! Each is the bilinear transform of a second-order analog prototype,
//! pre-warped so that `frequency` lands exactly; the filter runs in
//! transposed direct form II, one state pair per channel. Coefficients are
//! recomputed only when a block arrives at a new sample rate.

use crate::{MAX_CHANNELS, check_range};
use medianode_sdk::{AudioBlock, AudioDsp, Stage};
use serde::Deserialize;
use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    LowPass,
    HighPass,
    Peaking,
    LowShelf,
    HighShelf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub kind: Kind,
    pub frequency: f32,
    #[serde(default = "default_q")]
    pub q: f32,
    #[serde(default)]
    pub gain_db: f32,
}

fn default_q() -> f32 {
    std::f32::consts::FRAC_1_SQRT_2
}

/// Normalized coefficients (a0 = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    pub b0: f64,
    pub b1: f64,
    pub b2: f64,
    pub a1: f64,
    pub a2: f64,
}

impl Coefficients {
    /// The cookbook formulas for `config` at `sample_rate`.
    pub fn new(config: &Config, sample_rate: u32) -> Coefficients {
        let fs = f64::from(sample_rate.max(1));
        // Keep the centre below Nyquist whatever the rate.
        let f0 = f64::from(config.frequency).min(fs * 0.49);
        let w0 = 2.0 * PI * f0 / fs;
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / (2.0 * f64::from(config.q));
        let a = 10f64.powf(f64::from(config.gain_db) / 40.0);
        let sqrt_a_alpha = 2.0 * a.sqrt() * alpha;
        let (b0, b1, b2, a0, a1, a2) = match config.kind {
            Kind::LowPass => ((1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0, 1.0 + alpha, -2.0 * cos, 1.0 - alpha),
            Kind::HighPass => ((1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0, 1.0 + alpha, -2.0 * cos, 1.0 - alpha),
            Kind::Peaking => (1.0 + alpha * a, -2.0 * cos, 1.0 - alpha * a, 1.0 + alpha / a, -2.0 * cos, 1.0 - alpha / a),
            Kind::LowShelf => (
                a * ((a + 1.0) - (a - 1.0) * cos + sqrt_a_alpha),
                2.0 * a * ((a - 1.0) - (a + 1.0) * cos),
                a * ((a + 1.0) - (a - 1.0) * cos - sqrt_a_alpha),
                (a + 1.0) + (a - 1.0) * cos + sqrt_a_alpha,
                -2.0 * ((a - 1.0) + (a + 1.0) * cos),
                (a + 1.0) + (a - 1.0) * cos - sqrt_a_alpha,
            ),
            Kind::HighShelf => (
                a * ((a + 1.0) + (a - 1.0) * cos + sqrt_a_alpha),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                a * ((a + 1.0) + (a - 1.0) * cos - sqrt_a_alpha),
                (a + 1.0) - (a - 1.0) * cos + sqrt_a_alpha,
                2.0 * ((a - 1.0) - (a + 1.0) * cos),
                (a + 1.0) - (a - 1.0) * cos - sqrt_a_alpha,
            ),
        };
        Coefficients { b0: b0 / a0, b1: b1 / a0, b2: b2 / a0, a1: a1 / a0, a2: a2 / a0 }
    }
}

#[derive(Debug)]
pub struct Biquad {
    config: Config,
    sample_rate: u32,
    /// b0, b1, b2, a1, a2 as f32 for the sample loop.
    c: [f32; 5],
    /// Transposed direct form II state (s1, s2) per channel.
    state: [[f32; 2]; MAX_CHANNELS],
}

impl Stage for Biquad {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        check_range("frequency", config.frequency, 10.0..=23_000.0)?;
        check_range("q", config.q, 0.1..=40.0)?;
        check_range("gain-db", config.gain_db, -48.0..=48.0)?;
        let mut biquad = Biquad { config, sample_rate: 0, c: [0.0; 5], state: [[0.0; 2]; MAX_CHANNELS] };
        biquad.set_rate(48_000);
        Ok(biquad)
    }
}

impl Biquad {
    fn set_rate(&mut self, sample_rate: u32) {
        let k = Coefficients::new(&self.config, sample_rate);
        self.c = [k.b0 as f32, k.b1 as f32, k.b2 as f32, k.a1 as f32, k.a2 as f32];
        self.sample_rate = sample_rate;
    }
}

impl AudioDsp for Biquad {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        if block.sample_rate != self.sample_rate {
            self.set_rate(block.sample_rate);
        }
        let [b0, b1, b2, a1, a2] = self.c;
        let channels = usize::from(block.channels.max(1));
        for (ch, state) in self.state.iter_mut().enumerate().take(channels) {
            let [mut s1, mut s2] = *state;
            let mut step = |x: &mut f32| {
                let y = b0 * *x + s1;
                s1 = b1 * *x - a1 * y + s2;
                s2 = b2 * *x - a2 * y;
                *x = y;
            };
            if channels == 1 {
                block.samples.iter_mut().for_each(&mut step);
            } else {
                block.samples.iter_mut().skip(ch).step_by(channels).for_each(&mut step);
            }
            // A NaN in the input would stay in the state for good: reset.
            *state = if s1.is_finite() && s2.is_finite() { [s1, s2] } else { [0.0, 0.0] };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    #[test]
    fn low_pass_passes_dc_and_blocks_nyquist() {
        let mut f: Biquad = start(r#"{"kind": "low-pass", "frequency": 1000}"#).unwrap();
        let mut dc = [1.0f32; 4800];
        f.process(&mut AudioBlock { sequence: 0, sample_rate: 48_000, channels: 1, samples: &mut dc, level: None });
        assert!((dc[4799] - 1.0).abs() < 1e-4);
        let mut nyquist: Vec<f32> = (0..4800).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        f.process(&mut AudioBlock { sequence: 1, sample_rate: 48_000, channels: 1, samples: &mut nyquist, level: None });
        assert!(nyquist[4799].abs() < 1e-3);
    }

    #[test]
    fn a_nan_does_not_stick() {
        let mut f: Biquad = start(r#"{"kind": "high-pass", "frequency": 80}"#).unwrap();
        let mut samples = [f32::NAN, 0.0, 0.0];
        f.process(&mut AudioBlock { sequence: 0, sample_rate: 48_000, channels: 1, samples: &mut samples, level: None });
        let mut next = [0.0f32; 4];
        f.process(&mut AudioBlock { sequence: 1, sample_rate: 48_000, channels: 1, samples: &mut next, level: None });
        assert_eq!(next, [0.0; 4]);
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(start::<Biquad>(r#"{"kind": "band-stop", "frequency": 80}"#).unwrap_err().contains("unknown variant"));
        assert!(start::<Biquad>(r#"{"kind": "peaking", "frequency": 5}"#).unwrap_err().contains("out of range"));
    }
}
