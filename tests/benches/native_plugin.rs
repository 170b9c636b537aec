//! One DSP stage three ways, in one run: the gain stage
//! (`medianode_dsp::gain::Gain`, the same code each time) on 10 ms blocks
//! of 48 kHz mono,
//! - built into the host: the SDK's batch loop called directly;
//! - as a native plugin (`examples/native-gain`, loaded with libloading)
//!   under its supervisor, the node's real path;
//! - as a wasm plugin (`stock:gain`) under its supervisor.
//!
//! and, to split the plugins' cost into the boundary and the supervisor,
//! each plugin's bare instance (`Instance::call_audio`, no supervisor).
//!
//! Prints microseconds per block and the ratios to the built-in; writes
//! `target/bench-results/native_plugin.json`. Gain is a few hundred
//! multiplications, so the ratios are mostly what each boundary costs.
//!
//! Run: `cargo bench -p medianode-tests --bench native_plugin`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../node/benches/common/mod.rs"]
mod results;

use medianode::runtime::bindings::BlockInfo;
use medianode::runtime::{AudioBatch, CallLimits, Instance, Runtime, RuntimeOptions, StageShared, stock};
use medianode::supervisor::crash_report::CrashReporter;
use medianode::supervisor::{StageSpec, Supervisor};
use medianode_core::supervision::backoff::RestartConfig;
use medianode_core::supervision::{FailurePolicy, Limits};
use medianode_dsp::gain::Gain;
use results::Better;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAMES: usize = 480;
const CONFIG: &str = r#"{"gain-db": -6}"#;
const ROUNDS: u32 = 20_000;

fn supervised(plugin: Arc<medianode::runtime::Plugin>) -> Supervisor {
    let spec = StageSpec {
        id: "gain".to_string(),
        plugin,
        config_json: CONFIG.to_string(),
        limits: Limits { deadline: Duration::from_millis(50), ..Limits::default() },
        restart: RestartConfig::default(),
        failure: FailurePolicy::FailOpen,
        recorder: 50,
        seed: 1,
    };
    Supervisor::start(spec, CrashReporter::new(None), Instant::now()).unwrap()
}

fn main() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let native_path = Path::new(env!("MEDIANODE_NATIVE_GAIN"));
    let native_plugin = runtime.load_native("native-gain", native_path, &std::fs::read(native_path).unwrap()).unwrap();
    let wasm_plugin = runtime.load("stock:gain", stock::bytes("gain").unwrap(), 512 << 10).unwrap();
    let bare = |plugin: &Arc<medianode::runtime::Plugin>| {
        let limits = CallLimits { deadline: Duration::from_millis(50), init_deadline: Duration::from_secs(1) };
        Instance::start(plugin, Arc::new(StageShared::new("gain", 1 << 20)), CONFIG, 64 << 20, limits).unwrap()
    };
    let (mut native_bare, mut wasm_bare) = (bare(&native_plugin), bare(&wasm_plugin));
    let mut native = supervised(native_plugin);
    let mut wasm = supervised(wasm_plugin);
    let mut builtin: Gain = medianode_sdk::start(CONFIG).unwrap();

    let tone: Vec<f32> = (0..FRAMES).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    let (mut input, mut output) = (AudioBatch::new(), AudioBatch::new());
    input.push(BlockInfo { sequence: 0, sample_rate: 48_000, channels: 1, frames: 0, level: None }, &tone);
    let mut scratch = tone.clone();

    let mut run_supervised = |stage: &mut Supervisor| {
        let now = Instant::now();
        for _ in 0..ROUNDS {
            stage.process_audio(now, &input, &mut output).unwrap();
            black_box(&output);
        }
    };
    let (mut bare_in, mut bare_out) = (AudioBatch::new(), AudioBatch::new());
    bare_in.push(BlockInfo { sequence: 0, sample_rate: 48_000, channels: 1, frames: 0, level: None }, &tone);
    let mut run_bare = |instance: &mut Instance| {
        for _ in 0..ROUNDS {
            instance.call_audio(&bare_in, &mut bare_out).unwrap();
            black_box(&bare_out);
        }
    };
    let mut run_builtin = |stage: &mut Gain| {
        for n in 0..ROUNDS {
            scratch.copy_from_slice(&tone);
            let mut info =
                [medianode_sdk::BlockInfo { sequence: u64::from(n), sample_rate: 48_000, channels: 1, frames: FRAMES as u32, level: None }];
            medianode_sdk::process_batch(stage, &mut info, &mut scratch);
            black_box(&scratch);
        }
    };

    // Warm up, then alternate the three so that machine noise hits each.
    run_supervised(&mut native);
    run_supervised(&mut wasm);
    run_builtin(&mut builtin);
    run_bare(&mut native_bare);
    run_bare(&mut wasm_bare);
    // Per run: built-in, native supervised, wasm supervised, native bare, wasm bare.
    let mut times: [Vec<f64>; 5] = Default::default();
    let per_block = |run: &mut dyn FnMut()| {
        let t = Instant::now();
        run();
        t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
    };
    for _ in 0..9 {
        times[0].push(per_block(&mut || run_builtin(&mut builtin)));
        times[1].push(per_block(&mut || run_supervised(&mut native)));
        times[2].push(per_block(&mut || run_supervised(&mut wasm)));
        times[3].push(per_block(&mut || run_bare(&mut native_bare)));
        times[4].push(per_block(&mut || run_bare(&mut wasm_bare)));
    }
    let [b, n, w, nb, wb] = times.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    println!("\ngain stage, one 10 ms block of 48 kHz mono per call (median of 9 x {ROUNDS} blocks)");
    println!("    built into the host:        {b:>6.3} us/block");
    println!("    native plugin (supervised): {n:>6.3} us/block, {:.2}x the built-in", n / b);
    println!("    wasm plugin (supervised):   {w:>6.3} us/block, {:.2}x the built-in, {:.2}x the native plugin", w / b, w / n);
    println!("    native instance (bare):     {nb:>6.3} us/block; the supervisor adds {:.3} us", n - nb);
    println!("    wasm instance (bare):       {wb:>6.3} us/block; the supervisor adds {:.3} us", w - wb);
    results::write(
        "native_plugin",
        &[
            // Both plugin kinds pay the supervisor's per-call cost (metrics,
            // flight recorder, the output copy), which the built-in does not.
            ("native_plugin_vs_builtin", n / b, 2.0, Better::Lower),
            ("wasm_plugin_vs_builtin", w / b, 3.0, Better::Lower),
            // The wasm boundary alone, against the same supervised path: the
            // [boundary] issue's goal for DSP.
            ("wasm_vs_native_plugin", w / n, 1.5, Better::Lower),
        ],
    );
}
