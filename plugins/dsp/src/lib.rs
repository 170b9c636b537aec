//! The stock audio DSP of medianode.
//!
//! Each module is one stage: a plain struct with a typed config, that
//! processes interleaved f32 blocks in place. The same code runs natively
//! (tests, benchmarks) and as a wasm plugin: the crates under `plugins/`
//! named after each stage are one export macro over these types.
//!
//! | stage | what it does |
//! |---|---|
//! | [`gain::Gain`] | fixed gain in dB, with smoothed changes |
//! | [`biquad::Biquad`] | RBJ-cookbook filters: low/high-pass, peaking, low/high shelf |
//! | [`gate::Gate`] | noise gate: threshold, attack, hold, release, range |
//! | [`compressor::Compressor`] | feed-forward compressor with a soft knee and makeup gain |
//! | [`limiter::Limiter`] | look-ahead peak limiter that never exceeds its ceiling |
//! | [`meter::Meter`] | RMS and peak level and voice activity, written on each block |
//!
//! Rules every stage follows, because they run on the audio path: no
//! allocation after `new` (state is sized for [`MAX_CHANNELS`] up front), no
//! panics on any input (NaN and infinities included), and per-sample work
//! kept to a few multiplies (the dB conversions in the dynamics stages use
//! the fast approximations in [`math`]).

pub mod biquad;
pub mod compressor;
pub mod gain;
pub mod gate;
pub mod limiter;
pub mod math;
pub mod meter;

/// The most interleaved channels a stage keeps state for; extra channels
/// pass through unprocessed (filters) or share the linked detector (dynamics).
pub const MAX_CHANNELS: usize = 8;

/// Time constant in milliseconds to a one-pole smoothing coefficient per
/// sample: the fraction of the remaining distance kept each sample.
pub fn time_coefficient(ms: f32, sample_rate: u32) -> f32 {
    if ms <= 0.0 || sample_rate == 0 {
        return 0.0;
    }
    (-1.0 / (ms * 0.001 * sample_rate as f32)).exp()
}

/// Checks that a config value lies in `range`, naming the key in the error.
pub(crate) fn check_range(key: &str, value: f32, range: std::ops::RangeInclusive<f32>) -> Result<f32, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!("{key} = {value} is out of range; use {} to {}", range.start(), range.end()))
    }
}
