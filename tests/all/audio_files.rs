//! Audio through real WAV files: a 44.1 kHz stereo file goes through the
//! 4-stage voice chain (wasm plugins) into a WAV file, and the output is
//! checked against the same input processed by the reference: the node's
//! own file conversion, then the same DSP code run natively.

use crate::common::run;
use medianode::io::wav;
use medianode_dsp::{biquad::Biquad, compressor::Compressor, gain::Gain, gate::Gate};
use medianode_sdk::{BlockInfo, process_batch, start};
use std::f64::consts::TAU;
use std::path::Path;

/// Stage configs as the pipeline file writes them.
const GATE: &str = "{ threshold-db = -45, hold-ms = 80, release-ms = 120, range-db = -40 }";
const HIGH_PASS: &str = r#"{ kind = "high-pass", frequency = 80 }"#;
const COMPRESSOR: &str = "{ threshold-db = -24, ratio = 3, knee-db = 6, attack-ms = 5, release-ms = 80 }";
const GAIN: &str = "{ gain-db = 6 }";

/// A stage started natively from the same inline table, as JSON (what the
/// node hands a plugin's `init`).
fn native<S: medianode_sdk::Stage>(table: &str) -> S {
    let doc: toml::Table = toml::from_str(&format!("config = {table}")).unwrap();
    start(&serde_json::to_string(&doc["config"]).unwrap()).unwrap()
}

/// A speech-like signal: a 130 Hz glottal buzz (harmonics falling 6 dB per
/// octave) with a slow pitch drift, shaped into 4 Hz syllables with pauses,
/// and, with `hum`, a little 30 Hz hum that a high-pass should remove.
pub fn speech_like(rate: u32, seconds: f64, hum: bool) -> Vec<f32> {
    let n = (f64::from(rate) * seconds) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let pitch = 130.0 * (1.0 + 0.08 * (TAU * 0.7 * t).sin());
            phase += TAU * pitch / f64::from(rate);
            let buzz: f64 = (1..12).map(|h| (phase * f64::from(h)).sin() / f64::from(h)).sum();
            let syllable = (TAU * 4.0 * t).sin().max(0.0).powf(0.7);
            let pause = if (t % 1.5) > 1.2 { 0.0 } else { 1.0 };
            let hum = if hum { 0.02 * (TAU * 30.0 * t).sin() } else { 0.0 };
            (0.25 * buzz * syllable * pause + hum) as f32
        })
        .collect()
}

fn write_wav(path: &Path, rate: u32, channels: u16, mono: &[f32]) {
    let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in mono {
        for _ in 0..channels {
            w.write_sample((s * 32767.0).round() as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// The chain run natively on 10 ms blocks, as the reference.
fn reference(input: &[f32]) -> Vec<f32> {
    let mut gate: Gate = native(GATE);
    let mut filter: Biquad = native(HIGH_PASS);
    let mut compressor: Compressor = native(COMPRESSOR);
    let mut gain: Gain = native(GAIN);
    let mut out = input.to_vec();
    for (n, block) in out.chunks_mut(480).enumerate() {
        let mut info = [BlockInfo { sequence: n as u64, sample_rate: 48_000, channels: 1, frames: block.len() as u32, level: None }];
        process_batch(&mut gate, &mut info, block);
        process_batch(&mut filter, &mut info, block);
        process_batch(&mut compressor, &mut info, block);
        process_batch(&mut gain, &mut info, block);
    }
    out
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for i in 0..n {
        let (x, y) = (f64::from(a[i]), f64::from(b[i]));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}

fn rms_db(x: &[f32]) -> f64 {
    10.0 * (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).log10()
}

#[tokio::test]
async fn a_wav_file_through_the_voice_chain_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.wav");
    write_wav(&input_path, 44_100, 2, &speech_like(44_100, 3.0, true));

    let text = format!(
        r#"
        [pipeline]
        pace = "asap"
        [[source]]
        id = "in"
        kind = "wav"
        path = "{input}"
        channels = 1
        [[stage]]
        id = "gate"
        plugin = "stock:gate"
        inputs = ["in"]
        config = {GATE}
        limits = {{ deadline = "1s" }}
        [[stage]]
        id = "high-pass"
        plugin = "stock:biquad"
        inputs = ["gate"]
        config = {HIGH_PASS}
        limits = {{ deadline = "1s" }}
        [[stage]]
        id = "compressor"
        plugin = "stock:compressor"
        inputs = ["high-pass"]
        config = {COMPRESSOR}
        limits = {{ deadline = "1s" }}
        [[stage]]
        id = "gain"
        plugin = "stock:gain"
        inputs = ["compressor"]
        config = {GAIN}
        limits = {{ deadline = "1s" }}
        [[sink]]
        id = "out"
        kind = "wav"
        path = "{output}"
        inputs = ["gain"]
        "#,
        input = input_path.display(),
        output = dir.path().join("out.wav").display(),
    );
    let run = run(&text).await;
    assert_eq!(run.stats().sink("out").unwrap().get().missing, 0);

    let output = wav::load(&dir.path().join("out.wav"), None).unwrap();
    assert_eq!(output.channels, 1);
    let converted = wav::load(&input_path, Some(1)).unwrap();
    let expected = reference(&converted.samples);
    // Whole blocks: the file's last block is padded with silence.
    assert_eq!(output.samples.len(), converted.samples.len().div_ceil(480) * 480);
    let out = &output.samples[..expected.len()];
    let r = correlation(out, &expected);
    assert!(r > 0.9999, "correlation with the reference {r}");
    let (level, want) = (rms_db(out), rms_db(&expected));
    assert!((level - want).abs() < 0.05, "level {level:.2} dB vs reference {want:.2} dB");
    // And the chain did something: the hum is gone and the level moved.
    assert!((level - rms_db(&converted.samples)).abs() > 1.0, "the chain changed the level: {level:.2} dB");
}

/// The best correlation of `decoded` with `source` over lags 0..max_lag
/// (the codec delays the signal), and that lag.
fn aligned_correlation(source: &[f32], decoded: &[f32], max_lag: usize) -> (f64, usize) {
    (0..max_lag)
        .map(|lag| (correlation(&source[..source.len() - max_lag], &decoded[lag..]), lag))
        .fold((f64::MIN, 0), |best, c| if c.0 > best.0 { c } else { best })
}

/// Opus at 32 kbit/s (complexity 10, FEC on) on a speech-like signal, in
/// both of its coding modes, with bounds from what each mode preserves:
///
/// - `application = "audio"` codes with CELT, a transform (MDCT) coder that
///   keeps the waveform: at 32 kbit/s the residual is ~20 dB under the
///   signal. Bound: correlation > 0.99 and SNR > 15 dB.
/// - `application = "voip"` codes speech with SILK, a linear-prediction
///   coder with noise shaping that keeps what the ear hears, not the exact
///   waveform (phase of the upper harmonics drifts): measured ~0.87
///   correlation (SNR ~6 dB) here, at 32 and 64 kbit/s alike. Bound: > 0.8.
///
/// A broken path (a wrong delay, a dropped or doubled block, noise)
/// correlates near 0, far under either bound.
#[tokio::test]
async fn opus_round_trip_keeps_speech() {
    for (application, min_correlation, min_snr) in [("audio", 0.99, 15.0), ("voip", 0.8, 3.0)] {
        let (r, snr, lag) = opus_round_trip(application).await;
        println!("opus {application} 32 kbit/s: correlation {r:.4} at a delay of {lag} samples, SNR {snr:.1} dB");
        assert!(r > min_correlation && snr > min_snr, "{application}: correlation {r:.4}, SNR {snr:.1} dB (lag {lag})");
        assert!(lag < 1000, "the codec delay is a few ms, not {lag} samples");
    }
}

/// Speech through encoder and decoder: (correlation, SNR in dB, delay).
async fn opus_round_trip(application: &str) -> (f64, f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let source = speech_like(48_000, 3.0, false);
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut w = hound::WavWriter::create(dir.path().join("in.wav"), spec).unwrap();
    source.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    let text = format!(
        r#"
        [pipeline]
        pace = "asap"
        [[source]]
        id = "in"
        kind = "wav"
        path = "{dir}/in.wav"
        [[stage]]
        id = "encode"
        builtin = "opus-encoder"
        inputs = ["in"]
        config = {{ bitrate = 32000, complexity = 10, fec = true, application = "{application}" }}
        [[stage]]
        id = "decode"
        builtin = "opus-decoder"
        inputs = ["encode"]
        [[sink]]
        id = "out"
        kind = "wav"
        path = "{dir}/out.wav"
        inputs = ["decode"]
        "#,
        dir = dir.path().display()
    );
    run(&text).await.stats();
    let decoded = wav::load(&dir.path().join("out.wav"), None).unwrap().samples;
    assert_eq!(decoded.len(), source.len().div_ceil(480) * 480, "one decoded block per block");
    let (r, lag) = aligned_correlation(&source, &decoded, 2000);
    let compared = &source[..source.len() - 2000];
    let residual: f64 = compared.iter().zip(&decoded[lag..]).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
    let signal: f64 = compared.iter().map(|&a| f64::from(a).powi(2)).sum();
    (r, 10.0 * (signal / residual).log10(), lag)
}
