//! The stock DSP plugins, run as wasm components, measured against
//! reference math: each biquad's magnitude response against its analog
//! prototype, gain to 1e-6, the gate's and compressor's static curves, the
//! limiter's ceiling, and the meter's levels read by a later stage.

use crate::common::{run, runtime};
use medianode::runtime::AudioBatch;
use medianode::runtime::bindings::BlockInfo;
use medianode::runtime::{CallLimits, Instance, Items, StageShared, stock};
use std::f64::consts::{PI, TAU};
use std::sync::Arc;
use std::time::Duration;

const RATE: u32 = 48_000;
const BLOCK: usize = 480;

/// A started instance of a stock plugin.
fn stage(name: &str, config: &str) -> Instance {
    let plugin = runtime().load(&format!("stock:{name}"), stock::bytes(name).expect("stock plugin"), 512 << 10).expect("load");
    let limits = CallLimits { deadline: Duration::from_secs(1), init_deadline: Duration::from_secs(5) };
    Instance::start(&plugin, Arc::new(StageShared::new(name, 1 << 20)), config, 64 << 20, limits)
        .unwrap_or_else(|f| panic!("{name} did not start: {}", f.message))
}

/// Runs a mono signal through `instance` in 10 ms blocks.
fn process(instance: &mut Instance, signal: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(signal.len());
    for (n, chunk) in signal.chunks(BLOCK).enumerate() {
        let mut batch = AudioBatch::new();
        batch.push(BlockInfo { sequence: n as u64, sample_rate: RATE, channels: 1, frames: 0, level: None }, chunk);
        let Items::Audio(result) = instance.call(&Items::Audio(batch)).expect("call") else { unreachable!() };
        out.extend_from_slice(result.pcm());
    }
    out
}

fn sine(frequency: f64, amplitude: f64, seconds: f64) -> Vec<f32> {
    let n = (seconds * f64::from(RATE)) as usize;
    (0..n).map(|i| (amplitude * (TAU * frequency * i as f64 / f64::from(RATE)).sin()) as f32).collect()
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

fn peak(x: &[f32]) -> f64 {
    x.iter().fold(0f64, |m, &s| m.max(f64::from(s).abs()))
}

fn db(x: f64) -> f64 {
    20.0 * x.log10()
}

/// The last `seconds` of a signal (after the stage has settled).
fn tail(x: &[f32], seconds: f64) -> &[f32] {
    &x[x.len() - (seconds * f64::from(RATE)) as usize..]
}

/// |H| in dB of the analog prototype of an RBJ filter, at the frequency the
/// bilinear transform maps `f` to: s = j tan(pi f / fs) / tan(pi f0 / fs).
/// An independent reference: it never touches the digital coefficients.
fn analog_db(kind: &str, f0: f64, q: f64, gain_db: f64, f: f64) -> f64 {
    let fs = f64::from(RATE);
    let w = (PI * f / fs).tan() / (PI * f0 / fs).tan();
    let a = 10f64.powf(gain_db / 40.0);
    // Complex numbers as (re, im) for s = jw.
    let (s2, s1) = (-w * w, w); // s^2 is real, s is imaginary
    let poly = |c2: f64, c1: f64, c0: f64| -> f64 { ((c2 * s2 + c0).powi(2) + (c1 * s1).powi(2)).sqrt() };
    let h = match kind {
        "low-pass" => 1.0 / poly(1.0, 1.0 / q, 1.0),
        "high-pass" => w * w / poly(1.0, 1.0 / q, 1.0),
        "peaking" => poly(1.0, a / q, 1.0) / poly(1.0, 1.0 / (a * q), 1.0),
        "low-shelf" => a * poly(1.0, a.sqrt() / q, a) / poly(a, a.sqrt() / q, 1.0),
        "high-shelf" => a * poly(a, a.sqrt() / q, 1.0) / poly(1.0, a.sqrt() / q, a),
        other => panic!("unknown kind {other}"),
    };
    db(h)
}

#[test]
fn every_biquad_matches_its_analog_prototype_within_half_a_db() {
    let filters = [
        ("low-pass", 1000.0, 0.707, 0.0),
        ("high-pass", 120.0, 0.707, 0.0),
        ("peaking", 2000.0, 1.5, 9.0),
        ("low-shelf", 300.0, 0.707, -6.0),
        ("high-shelf", 5000.0, 0.707, 6.0),
    ];
    let probes = [50.0, 100.0, 250.0, 600.0, 1000.0, 2000.0, 3500.0, 6000.0, 10_000.0, 16_000.0];
    for (kind, f0, q, gain) in filters {
        let config = format!(r#"{{"kind": "{kind}", "frequency": {f0}, "q": {q}, "gain-db": {gain}}}"#);
        for f in probes {
            let mut filter = stage("biquad", &config);
            let input = sine(f, 0.5, 0.5);
            let output = process(&mut filter, &input);
            let measured = db(rms(tail(&output, 0.2)) / rms(tail(&input, 0.2)));
            let expected = analog_db(kind, f0, q, gain, f);
            // Deep in a stop band both are tiny; compare down to -60 dB.
            let (m, e) = (measured.max(-60.0), expected.max(-60.0));
            assert!((m - e).abs() < 0.5, "{kind} at {f0} Hz, probe {f} Hz: measured {measured:.2} dB, analytic {expected:.2} dB");
        }
    }
}

#[test]
fn gain_is_exact_to_a_millionth() {
    let input = sine(440.0, 0.9, 0.1);
    for gain_db in [-40.0, -6.0, 0.0, 3.5, 12.0] {
        let output = process(&mut stage("gain", &format!(r#"{{"gain-db": {gain_db}}}"#)), &input);
        let factor = 10f64.powf(gain_db / 20.0);
        for (x, y) in input.iter().zip(&output) {
            let want = f64::from(*x) * factor;
            assert!((f64::from(*y) - want).abs() <= 1e-6 * want.abs().max(1.0), "{gain_db} dB: {x} -> {y}, want {want}");
        }
    }
}

/// Output peak level (dB) of a 1 kHz sine at `level_db` peak, once settled.
fn static_level(instance: &mut Instance, level_db: f64) -> f64 {
    let input = sine(1000.0, 10f64.powf(level_db / 20.0), 1.0);
    db(peak(tail(&process(instance, &input), 0.2)))
}

#[test]
fn gate_static_curve_within_half_a_db() {
    let config = r#"{"threshold-db": -40, "range-db": -60, "attack-ms": 1, "hold-ms": 20, "release-ms": 50}"#;
    for level in [-70.0, -55.0, -46.0, -34.0, -20.0, -6.0] {
        let expected = if level > -40.0 { level } else { level - 60.0 };
        let measured = static_level(&mut stage("gate", config), level);
        assert!((measured - expected).abs() < 0.5, "gate at {level} dB: {measured:.2} dB, want {expected:.2}");
    }
}

#[test]
fn compressor_static_curve_within_half_a_db() {
    let (t, r, w, makeup) = (-20.0, 4.0, 6.0, 3.0);
    let config =
        format!(r#"{{"threshold-db": {t}, "ratio": {r}, "knee-db": {w}, "makeup-db": {makeup}, "attack-ms": 5, "release-ms": 200}}"#);
    // The curve of Giannoulis et al., written out again here.
    let curve = |x: f64| {
        let y = if 2.0 * (x - t) < -w {
            x
        } else if 2.0 * (x - t).abs() <= w {
            x + (1.0 / r - 1.0) * (x - t + w / 2.0).powi(2) / (2.0 * w)
        } else {
            t + (x - t) / r
        };
        y + makeup
    };
    for level in [-40.0, -30.0, -23.0, -21.0, -19.0, -17.0, -12.0, -6.0, -1.0] {
        let measured = static_level(&mut stage("compressor", &config), level);
        let expected = curve(level);
        assert!((measured - expected).abs() < 0.5, "compressor at {level} dB: {measured:.2} dB, want {expected:.2}");
    }
}

#[test]
fn limiter_never_exceeds_its_ceiling() {
    let ceiling = 10f64.powf(-1.0 / 20.0);
    // Overs up to +12 dBFS: loud bursts, quiet passages and lone spikes.
    let input: Vec<f32> = (0..RATE as usize * 2)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let loud = (i / 2400) % 3 == 0;
            let burst = if loud { 4.0 } else { 0.3 };
            let spike = if loud && i % 401 == 0 { 3.5 } else { 0.0 };
            (burst * (TAU * 220.0 * t).sin() + spike) as f32
        })
        .collect();
    let output = process(&mut stage("limiter", r#"{"ceiling-db": -1.0, "lookahead-ms": 5, "release-ms": 10}"#), &input);
    let out_peak = peak(&output);
    assert!(out_peak <= ceiling, "peak {out_peak} over the ceiling {ceiling}");
    assert!(out_peak > ceiling * 0.95, "the limiter should reach its ceiling, not crush: {out_peak}");
    // A quiet passage, 75 ms (7.5 release times) after a burst, comes
    // through unchanged but for the look-ahead delay (5 ms = 240 frames).
    for i in 6000..6100 {
        let (x, y) = (f64::from(input[i]), f64::from(output[i + 240]));
        assert!((x - y).abs() < 1e-3, "frame {i}: {x} in, {y} out");
    }
}

#[tokio::test]
async fn the_meter_writes_levels_that_later_stages_and_metrics_see() {
    let text = r#"
        [pipeline]
        pace = "asap"
        [[source]]
        id = "tone"
        kind = "tone"
        amplitude = 0.25
        count = 20
        [[stage]]
        id = "meter"
        plugin = "stock:meter"
        inputs = ["tone"]
        limits = { deadline = "1s" }
        [[stage]]
        id = "after"
        plugin = "stock:gain"
        inputs = ["meter"]
        config = { gain-db = -6 }
        limits = { deadline = "1s" }
        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["after"]
    "#;
    let run = run(text).await;
    let expected_peak = db(0.25);
    for items in &run.channels["out"] {
        let Items::Audio(batch) = items else { panic!("audio expected") };
        for info in &batch.blocks {
            let level = info.level.expect("the meter's level travels with the block");
            assert!((f64::from(level.peak_dbfs) - expected_peak).abs() < 0.1, "{level:?}");
            assert!((f64::from(level.rms_dbfs) - (expected_peak - 3.01)).abs() < 0.1, "{level:?}");
            assert!(level.voice);
        }
    }
    let metrics = run.stats().stage("meter").expect("meter").metrics.snapshot();
    assert!((metrics["level"]["peak_dbfs"].as_f64().expect("peak gauge") - expected_peak).abs() < 0.1, "{metrics}");
}
