//! Audio devices through cpal on a machine without a sound card.
//!
//! Each test writes an ALSA configuration whose default device is ALSA's
//! `file` plugin over its `null` device: capture reads samples from a raw
//! file we wrote, playback writes what it plays to another raw file. ALSA
//! reads its configuration once per process (from `ALSA_CONFIG_PATH`), so
//! each test runs the node in a child process: this same test binary,
//! running one `#[ignore]`d child test with the variable set. The parent
//! then checks the signal itself, sample by sample.
//!
//! The `null` device keeps no time: it runs faster than real time. That
//! is a good test of the rings between callbacks and pipeline: capture must
//! not lose or reorder samples while the pipeline keeps up, and playback
//! must fill with silence (counted) rather than stall when it outruns the
//! pipeline.

use crate::common::{run, runtime};
use medianode::io::wav;
use medianode::pipeline::Pipeline;
use medianode::supervisor::crash_report::CrashReporter;
use std::path::Path;
use std::process::Command;

const DIR_VAR: &str = "MEDIANODE_ALSA_TEST_DIR";

fn alsa_config(dir: &Path) -> String {
    format!(
        r#"
pcm.!default {{
    type asym
    playback.pcm "medianode_out"
    capture.pcm "medianode_in"
}}
pcm.medianode_out {{
    type file
    slave.pcm "medianode_null"
    file "{dir}/out.raw"
    format "raw"
}}
pcm.medianode_in {{
    type file
    slave.pcm "medianode_null"
    file "/dev/null"
    infile "{dir}/in.raw"
    format "raw"
}}
pcm.medianode_null {{
    type null
}}
"#,
        dir = dir.display()
    )
}

/// Never exactly zero (so played silence is told apart), in (-1, 1).
fn test_signal(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.3 + 0.2 * (i as f32 * 0.0573).sin()).collect()
}

fn write_raw(path: &Path, samples: &[f32]) {
    std::fs::write(path, samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn read_raw(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Runs child test `name` with its own ALSA configuration in `dir`.
fn run_child(name: &str, dir: &Path) {
    std::fs::write(dir.join("asound.conf"), alsa_config(dir)).unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("ALSA_CONFIG_PATH", dir.join("asound.conf"))
        .env(DIR_VAR, dir)
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && text.contains("1 passed"), "child {name} failed:\n{text}");
}

fn child_dir() -> std::path::PathBuf {
    std::env::var_os(DIR_VAR).expect("a child test: run by its parent test with its own ALSA config").into()
}

#[test]
fn capture_delivers_every_sample_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = test_signal(48_000 * 3);
    write_raw(&dir.path().join("in.raw"), &input);
    run_child("devices::capture_child", dir.path());
    // The pipeline halved the microphone signal with a gain stage.
    let got = wav::load(&dir.path().join("captured.wav"), None).unwrap().samples;
    assert_eq!(got.len(), 150 * 480, "150 blocks of 10 ms");
    for (i, (x, y)) in input.iter().zip(&got).enumerate() {
        assert!((x * 0.5 - y).abs() < 1e-6, "sample {i}: captured {x}, after -6.02 dB got {y}");
    }
}

#[tokio::test]
#[ignore = "a child of capture_delivers_every_sample_in_order, with its own ALSA config"]
async fn capture_child() {
    let dir = child_dir();
    let text = format!(
        r#"
        [pipeline]
        pace = "asap"
        [[source]]
        id = "mic"
        kind = "device"
        count = 150
        [[stage]]
        id = "half"
        plugin = "stock:gain"
        inputs = ["mic"]
        config = {{ gain-db = -6.0206, smoothing-ms = 0 }}
        limits = {{ deadline = "1s" }}
        [[sink]]
        id = "file"
        kind = "wav"
        path = "{}/captured.wav"
        inputs = ["half"]
        "#,
        dir.display()
    );
    assert_eq!(run(&text).await.stats().sink("file").unwrap().get().missing, 0);
}

#[test]
fn playback_plays_every_block_in_order_and_fills_gaps_with_silence() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(&dir.path().join("in.raw"), &[]);
    let sent = test_signal(48_000);
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut w = hound::WavWriter::create(dir.path().join("play.wav"), spec).unwrap();
    sent.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    run_child("devices::playback_child", dir.path());

    let played = read_raw(&dir.path().join("out.raw"));
    let silence = played.iter().filter(|&&s| s == 0.0).count();
    let sound: Vec<f32> = played.into_iter().filter(|&s| s != 0.0).collect();
    // Every sample that was played is the next one sent (times the gain):
    // nothing reordered, doubled or corrupted.
    assert!(sound.len() >= sent.len() * 9 / 10, "only {} of {} samples reached the device", sound.len(), sent.len());
    for (i, (x, y)) in sent.iter().zip(&sound).enumerate() {
        assert!((x * 0.5 - y).abs() < 1e-6, "sample {i}: sent {x}, played {y}");
    }
    // The null device outruns real time, so the callback filled silence.
    assert!(silence > 0, "expected underrun silence from a device faster than real time");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a child of playback_plays_every_block_in_order_and_fills_gaps_with_silence, with its own ALSA config"]
async fn playback_child() {
    let dir = child_dir();
    let text = format!(
        r#"
        [pipeline]
        pace = "realtime"
        [[source]]
        id = "file"
        kind = "wav"
        path = "{}/play.wav"
        [[stage]]
        id = "half"
        plugin = "stock:gain"
        inputs = ["file"]
        config = {{ gain-db = -6.0206, smoothing-ms = 0 }}
        limits = {{ deadline = "1s" }}
        [[sink]]
        id = "speaker"
        kind = "device"
        channels = 1
        inputs = ["half"]
        "#,
        dir.display()
    );
    run(&text).await.stats();
}

#[test]
fn the_live_pipeline_runs_on_test_devices() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(&dir.path().join("in.raw"), &test_signal(48_000 * 4));
    run_child("devices::live_child", dir.path());
    let played = read_raw(&dir.path().join("out.raw"));
    let frames: Vec<&[f32]> = played.chunks_exact(2).collect();
    assert!(frames.iter().all(|f| f[0] == f[1]), "mono spread to both speakers");
    let loud = frames.iter().filter(|f| f[0].abs() > 0.01).count();
    assert!(loud > 4800, "the microphone's signal reached the speakers through the chain ({loud} loud frames)");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a child of the_live_pipeline_runs_on_test_devices, with its own ALSA config"]
async fn live_child() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/dsp-live.toml");
    let config = medianode::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let pipeline = Pipeline::build(runtime(), &config, &CrashReporter::new(None)).unwrap_or_else(|e| panic!("{e}"));
    let stats = pipeline.run(tokio::time::sleep(std::time::Duration::from_millis(600))).await.unwrap();
    // Every block captured reached the speakers (a stage missing its 3 ms
    // deadline on a loaded machine passes its block through: no gap either).
    let speakers = stats.sink("speakers").unwrap().get();
    assert!(speakers.items > 20 && speakers.missing == 0, "{speakers:?}");
}
