//! Look-ahead peak limiter: the output never exceeds the ceiling.
//!
//! `[stage.config]`: `ceiling-db` (default -1 dBFS), `lookahead-ms`
//! (default 5; also the latency the stage adds), `release-ms` (default 50).
//!
//! How it keeps the promise. For each input frame `k` the gain that would
//! put it exactly at the ceiling is `r[k] = min(1, ceiling / |x[k]|)`. The
//! audio is delayed by `D` frames (the look-ahead). The gain applied to the
//! frame leaving at time `n` (which entered at `n - D`) is the average of the
//! last `D` values of `h`, where `h[j]` is at most the minimum of `r` over
//! the `D + 1` frames up to `j`. Every one of those windows contains frame
//! `n - D`, so every term, and therefore the average, is at most `r[n - D]`:
//! the frame cannot exceed the ceiling. The average also makes the gain fall
//! smoothly over `D` frames instead of jumping; `h` rises back at the
//! release rate.
//! Each `r` is taken 1e-5 (0.0001 dB) under the ceiling so that rounding in
//! the average cannot reach it; a final clamp would catch it anyway and
//! counts how often it acted (the tests assert never).
//!
//! Non-finite input samples are replaced by silence.

use crate::math::db_to_amplitude;
use crate::{MAX_CHANNELS, check_range, time_coefficient};
use medianode_sdk::{AudioBlock, AudioDsp, Stage};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "defaults::ceiling")]
    pub ceiling_db: f32,
    #[serde(default = "defaults::lookahead")]
    pub lookahead_ms: f32,
    #[serde(default = "defaults::release")]
    pub release_ms: f32,
}

mod defaults {
    pub fn ceiling() -> f32 {
        -1.0
    }
    pub fn lookahead() -> f32 {
        5.0
    }
    pub fn release() -> f32 {
        50.0
    }
}

/// Applied to every required gain so that rounding cannot reach the ceiling.
const GAIN_MARGIN: f32 = 1.0 - 1e-5;

/// The highest sample rate the buffers are sized for (allocated once).
const MAX_RATE: u32 = 192_000;

#[derive(Debug)]
pub struct Limiter {
    config: Config,
    ceiling: f32,
    sample_rate: u32,
    channels: usize,
    /// Look-ahead (the delay) in frames: `D` above.
    lookahead: usize,
    release: f32,
    /// Delay line, `lookahead` frames of `MAX_CHANNELS` samples.
    delay: Vec<f32>,
    /// Sliding minimum of `r` over the last `lookahead + 1` frames: a
    /// monotonic queue of (frame number, r) in a ring.
    min_queue: Vec<(u64, f32)>,
    min_head: usize,
    min_len: usize,
    /// The last `lookahead` values of `h`, and their sum.
    h_ring: Vec<f32>,
    h_sum: f64,
    h: f32,
    /// Frames seen.
    frame: u64,
    /// Samples the final clamp had to touch (should stay 0).
    pub clamped: u64,
}

impl Stage for Limiter {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        check_range("ceiling-db", config.ceiling_db, -60.0..=0.0)?;
        check_range("lookahead-ms", config.lookahead_ms, 0.1..=20.0)?;
        check_range("release-ms", config.release_ms, 1.0..=10_000.0)?;
        let max_frames = (config.lookahead_ms * 0.001 * MAX_RATE as f32).ceil() as usize + 1;
        let mut limiter = Limiter {
            ceiling: db_to_amplitude(config.ceiling_db),
            config,
            sample_rate: 0,
            channels: 0,
            lookahead: 0,
            release: 0.0,
            delay: vec![0.0; max_frames * MAX_CHANNELS],
            min_queue: vec![(0, 1.0); max_frames + 1],
            min_head: 0,
            min_len: 0,
            h_ring: vec![1.0; max_frames],
            h_sum: 0.0,
            h: 1.0,
            frame: 0,
            clamped: 0,
        };
        limiter.reset(48_000, 1);
        Ok(limiter)
    }
}

impl Limiter {
    /// Sizes the windows for a rate and channel count (no allocation) and
    /// clears the state.
    fn reset(&mut self, sample_rate: u32, channels: usize) {
        self.sample_rate = sample_rate;
        self.channels = channels.min(MAX_CHANNELS);
        let frames = (self.config.lookahead_ms * 0.001 * sample_rate.min(MAX_RATE) as f32).round() as usize;
        self.lookahead = frames.clamp(1, self.h_ring.len());
        self.release = time_coefficient(self.config.release_ms, sample_rate);
        self.delay.fill(0.0);
        self.h_ring.fill(1.0);
        self.h_sum = self.lookahead as f64;
        self.h = 1.0;
        self.min_len = 0;
        self.frame = 0;
    }

    /// The latency the limiter adds, in frames.
    pub fn latency(&self) -> usize {
        self.lookahead
    }

    /// Pushes `r` for the current frame and returns the minimum over the window.
    fn window_min(&mut self, r: f32) -> f32 {
        let cap = self.min_queue.len();
        let window = self.lookahead as u64 + 1;
        // Drop entries that left the window, then those no smaller than `r`.
        while self.min_len > 0 && self.min_queue[self.min_head].0 + window <= self.frame {
            self.min_head = (self.min_head + 1) % cap;
            self.min_len -= 1;
        }
        while self.min_len > 0 && self.min_queue[(self.min_head + self.min_len - 1) % cap].1 >= r {
            self.min_len -= 1;
        }
        self.min_queue[(self.min_head + self.min_len) % cap] = (self.frame, r);
        self.min_len += 1;
        self.min_queue[self.min_head].1
    }
}

impl AudioDsp for Limiter {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        let channels = usize::from(block.channels.max(1));
        if block.sample_rate != self.sample_rate || channels.min(MAX_CHANNELS) != self.channels {
            self.reset(block.sample_rate, channels);
        }
        let slots = self.lookahead;
        let ceiling = self.ceiling;
        for frame in block.samples.chunks_exact_mut(channels) {
            let mut level = 0f32;
            for s in frame.iter_mut() {
                if !s.is_finite() {
                    *s = 0.0;
                }
                // Not `f32::max`: a libm call per sample in wasm.
                level = if s.abs() > level { s.abs() } else { level };
            }
            // The margin (1e-5, under 0.0001 dB) absorbs float rounding in
            // the product and the running average.
            let r = if level > ceiling * GAIN_MARGIN { ceiling * GAIN_MARGIN / level } else { 1.0 };
            let m = self.window_min(r);
            // h falls at once to the window minimum and recovers at the release rate.
            let released = 1.0 + (self.h - 1.0) * self.release;
            self.h = if m < released { m } else { released };
            let slot = (self.frame % slots as u64) as usize;
            self.h_sum += f64::from(self.h) - f64::from(self.h_ring[slot]);
            self.h_ring[slot] = self.h;
            let gain = (self.h_sum / slots as f64) as f32;
            // Swap the frame with the delay line: out goes the frame that
            // entered `lookahead` frames ago.
            let line = &mut self.delay[slot * MAX_CHANNELS..][..self.channels];
            for (s, delayed) in frame.iter_mut().zip(line.iter_mut()) {
                let out = *delayed * gain;
                *delayed = *s;
                *s = if out.abs() > ceiling {
                    self.clamped += 1;
                    out.clamp(-ceiling, ceiling)
                } else {
                    out
                };
            }
            self.frame += 1;
        }
        if !self.h_sum.is_finite() {
            self.reset(self.sample_rate, self.channels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::start;

    #[test]
    fn never_exceeds_the_ceiling_without_the_clamp() {
        let mut limiter: Limiter = start(r#"{"ceiling-db": -1.0}"#).unwrap();
        let ceiling = db_to_amplitude(-1.0);
        // A tone with overs up to +12 dBFS, bursts and single-sample spikes.
        let mut samples: Vec<f32> = (0..48_000)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let burst = if (i / 2400) % 3 == 0 { 4.0 } else { 0.5 };
                let spike = if i % 997 == 0 { 3.0 } else { 0.0 };
                burst * (t * 440.0 * std::f32::consts::TAU).sin() + spike
            })
            .collect();
        for (n, chunk) in samples.chunks_mut(480).enumerate() {
            limiter.process(&mut AudioBlock { sequence: n as u64, sample_rate: 48_000, channels: 1, samples: chunk, level: None });
        }
        let peak = crate::math::peak(&samples);
        assert!(peak <= ceiling, "peak {peak} over ceiling {ceiling}");
        assert_eq!(limiter.clamped, 0, "the gain alone must keep the ceiling");
        assert!(peak > ceiling * 0.9, "the limiter should not over-attenuate: peak {peak}");
    }
}
