//! Audio benchmarks: the 4-stage DSP chain (gate -> high-pass -> compressor
//! -> gain) on 10 ms blocks of 48 kHz mono.
//!
//! Prints, measured in the same run:
//! (a) time per block through the chain as wasm plugins under their
//!     supervisors (the node's real path), against the same DSP code
//!     compiled natively and run by the SDK's batch loop. Target ratio <= 1.5.
//! (b) the realtime factor of the wasm chain on one core: 10 ms of audio
//!     over the time to process it. Target >= 1000x.
//! (c) heap allocations per block on the pipeline thread in steady state
//!     (the chain on reused batches through `Supervisor::process_audio`),
//!     counted by a global allocator that counts. Target 0.
//!
//! Run: `cargo bench -p medianode --bench audio`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Better;
use medianode::pipeline::Pipeline;
use medianode::runtime::AudioBatch;
use medianode::runtime::bindings::BlockInfo;
use medianode::runtime::{Items, Runtime, RuntimeOptions, stock};
use medianode::supervisor::crash_report::CrashReporter;
use medianode::supervisor::{StageSpec, Supervisor};
use medianode_core::supervision::backoff::RestartConfig;
use medianode_core::supervision::{FailurePolicy, Limits};
use medianode_dsp::{biquad::Biquad, compressor::Compressor, gain::Gain, gate::Gate};
use medianode_sdk::start;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts every allocation, then defers to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: usize = 480;

/// The chain as (stock plugin, config JSON).
const CHAIN: [(&str, &str); 4] = [
    ("gate", r#"{"threshold-db": -50}"#),
    ("biquad", r#"{"kind": "high-pass", "frequency": 80}"#),
    ("compressor", r#"{"threshold-db": -20, "ratio": 4}"#),
    ("gain", r#"{"gain-db": 3}"#),
];

/// A speech-like test block: a 150 Hz voice with harmonics, varying level.
fn block(sequence: u64) -> Vec<f32> {
    (0..FRAMES)
        .map(|i| {
            let t = (sequence as usize * FRAMES + i) as f32 / 48_000.0;
            let envelope = 0.3 + 0.25 * (t * 4.0 * std::f32::consts::TAU).sin();
            let voice: f32 = (1..6).map(|h| (t * 150.0 * h as f32 * std::f32::consts::TAU).sin() / h as f32).sum();
            envelope * voice * 0.5
        })
        .collect()
}

fn supervisors(runtime: &Runtime) -> Vec<Supervisor> {
    CHAIN
        .iter()
        .map(|(name, config)| {
            let plugin = runtime.load(&format!("stock:{name}"), stock::bytes(name).unwrap(), 512 << 10).unwrap();
            let spec = StageSpec {
                id: name.to_string(),
                plugin,
                config_json: config.to_string(),
                limits: Limits { deadline: Duration::from_millis(50), ..Limits::default() },
                restart: RestartConfig::default(),
                failure: FailurePolicy::FailOpen,
                recorder: 50,
                seed: 1,
            };
            Supervisor::start(spec, CrashReporter::new(None), Instant::now()).unwrap()
        })
        .collect()
}

/// The same DSP, natively, run block by block the way the SDK runs it.
struct NativeChain {
    gate: Gate,
    filter: Biquad,
    compressor: Compressor,
    gain: Gain,
}

impl NativeChain {
    fn new() -> NativeChain {
        NativeChain {
            gate: start(CHAIN[0].1).unwrap(),
            filter: start(CHAIN[1].1).unwrap(),
            compressor: start(CHAIN[2].1).unwrap(),
            gain: start(CHAIN[3].1).unwrap(),
        }
    }

    fn process(&mut self, info: &mut [medianode_sdk::BlockInfo], samples: &mut [f32]) {
        medianode_sdk::process_batch(&mut self.gate, info, samples);
        medianode_sdk::process_batch(&mut self.filter, info, samples);
        medianode_sdk::process_batch(&mut self.compressor, info, samples);
        medianode_sdk::process_batch(&mut self.gain, info, samples);
    }
}

/// A one-block batch, for the stage-by-stage figures.
fn wasm_batch(sequence: u64, samples: &[f32]) -> Items {
    let mut batch = AudioBatch::new();
    batch.push(BlockInfo { sequence, sample_rate: 48_000, channels: 1, frames: 0, level: None }, samples);
    Items::Audio(batch)
}

fn main() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut chain = supervisors(&runtime);
    let mut native = NativeChain::new();
    let input: Vec<Vec<f32>> = (0..100).map(block).collect();
    let rounds = 3000u64;

    // Two batches, reused: each stage reads one and answers into the other.
    let (mut front, mut back) = (AudioBatch::new(), AudioBatch::new());
    let mut run_wasm = |chain: &mut Vec<Supervisor>, n: u64| {
        front.clear();
        let info = BlockInfo { sequence: n, sample_rate: 48_000, channels: 1, frames: 0, level: None };
        front.push(info, &input[(n % 100) as usize]);
        let now = Instant::now();
        for stage in chain.iter_mut() {
            stage.process_audio(now, &front, &mut back).unwrap();
            std::mem::swap(&mut front, &mut back);
        }
        black_box(&front);
    };
    let mut scratch = vec![0f32; FRAMES];
    let mut run_native = |native: &mut NativeChain, n: u64| {
        scratch.copy_from_slice(&input[(n % 100) as usize]);
        let mut info = [medianode_sdk::BlockInfo { sequence: n, sample_rate: 48_000, channels: 1, frames: FRAMES as u32, level: None }];
        native.process(&mut info, &mut scratch);
        black_box(&scratch);
    };

    // Warm up both, then alternate samples so that machine noise hits both.
    for n in 0..500 {
        run_wasm(&mut chain, n);
        run_native(&mut native, n);
    }
    let (mut wasm_times, mut native_times) = (Vec::new(), Vec::new());
    for sample in 0..9 {
        let t = Instant::now();
        for n in 0..rounds {
            run_wasm(&mut chain, sample * rounds + n);
        }
        wasm_times.push(t.elapsed() / rounds as u32);
        let t = Instant::now();
        for n in 0..rounds {
            run_native(&mut native, sample * rounds + n);
        }
        native_times.push(t.elapsed() / rounds as u32);
    }
    wasm_times.sort();
    native_times.sort();
    let (w, nat) = (wasm_times[4], native_times[4]);
    println!("\n(a) 4-stage chain (gate, high-pass, compressor, gain), 10 ms mono blocks at 48 kHz");
    println!(
        "    wasm (supervised): {:>6.2} us/block, native: {:>6.2} us/block, ratio {:.2}x",
        w.as_secs_f64() * 1e6,
        nat.as_secs_f64() * 1e6,
        w.as_secs_f64() / nat.as_secs_f64()
    );
    println!("(b) realtime factor on one core: wasm {:.0}x, native {:.0}x", 0.010 / w.as_secs_f64(), 0.010 / nat.as_secs_f64());

    // Where the native time goes, stage by stage.
    let mut scratch_block = input[0].clone();
    let mut per_stage = |name: &str, f: &mut dyn FnMut(&mut [medianode_sdk::BlockInfo], &mut [f32])| {
        let t = Instant::now();
        for n in 0..20_000u64 {
            scratch_block.copy_from_slice(&input[(n % 100) as usize]);
            let mut info = [medianode_sdk::BlockInfo { sequence: n, sample_rate: 48_000, channels: 1, frames: FRAMES as u32, level: None }];
            f(&mut info, &mut scratch_block);
        }
        println!("    native {name}: {:.2} us/block", t.elapsed().as_secs_f64() * 1e6 / 20_000.0);
    };
    let mut n2 = NativeChain::new();
    per_stage("gate", &mut |i, s| medianode_sdk::process_batch(&mut n2.gate, i, s));
    per_stage("biquad", &mut |i, s| medianode_sdk::process_batch(&mut n2.filter, i, s));
    per_stage("compressor", &mut |i, s| medianode_sdk::process_batch(&mut n2.compressor, i, s));
    per_stage("gain", &mut |i, s| medianode_sdk::process_batch(&mut n2.gain, i, s));

    // And in wasm, stage by stage, on the allocation-free path.
    let mut stages = supervisors(&runtime);
    let mut out = AudioBatch::new();
    for (stage, (name, _)) in stages.iter_mut().zip(CHAIN) {
        let batch = {
            let mut b = AudioBatch::new();
            b.push(BlockInfo { sequence: 0, sample_rate: 48_000, channels: 1, frames: 0, level: None }, &input[0]);
            b
        };
        let t = Instant::now();
        for _ in 0..20_000 {
            stage.process_audio(Instant::now(), &batch, &mut out).unwrap();
        }
        println!("    wasm {name}: {:.2} us/block", t.elapsed().as_secs_f64() * 1e6 / 20_000.0);
    }

    // Where a stage's time goes: one gain stage, called directly, with a
    // full block and with an empty one (the fixed cost of a call).
    let mut gain = supervisors(&runtime).pop().unwrap();
    for (label, samples) in [("480 samples", &input[0][..]), ("0 samples", &[][..])] {
        let batch = wasm_batch(0, samples);
        let t = Instant::now();
        for _ in 0..20_000 {
            black_box(gain.process(Instant::now(), batch.clone()).unwrap());
        }
        println!("    one gain stage, {label}: {:.2} us/call", t.elapsed().as_secs_f64() * 1e6 / 20_000.0);
    }

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for n in 0..1000 {
        run_wasm(&mut chain, n);
    }
    let wasm_allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for n in 0..1000 {
        run_native(&mut native, n);
    }
    let native_allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "(c) heap allocations per block, steady state: wasm chain {:.2}, native chain {:.2}",
        wasm_allocs as f64 / 1000.0,
        native_allocs as f64 / 1000.0
    );

    let (per_tick, allocs_per_tick) = pipeline_per_tick(&runtime);
    println!(
        "(d) the same chain as a pipeline (tone source, null sink, pace asap): {:.2} us/tick, {:.1} allocations/tick; \
         pipeline/supervised chain {:.2}x",
        per_tick.as_secs_f64() * 1e6,
        allocs_per_tick,
        per_tick.as_secs_f64() / w.as_secs_f64()
    );
    common::write(
        "audio",
        &[
            ("chain_wasm_vs_native", w.as_secs_f64() / nat.as_secs_f64(), 1.5, Better::Lower),
            ("chain_realtime_factor", 0.010 / w.as_secs_f64(), 1000.0, Better::Higher),
            ("chain_allocations_per_block", wasm_allocs as f64 / 1000.0, 0.0, Better::Lower),
            ("pipeline_us_per_tick", per_tick.as_secs_f64() * 1e6, 0.0, Better::Lower),
            ("pipeline_allocations_per_tick", allocs_per_tick, 0.0, Better::Lower),
        ],
    );
}

/// The chain in a pipeline, as `medianode run` runs it (pace asap): the
/// median time per tick over five runs of 2000 ticks, and the heap
/// allocations per tick (source and sink included).
fn pipeline_per_tick(runtime: &Runtime) -> (Duration, f64) {
    const TICKS: u64 = 2000;
    let mut text = format!("[pipeline]\npace = \"asap\"\n[[source]]\nid = \"tone\"\nkind = \"tone\"\ncount = {TICKS}\n");
    let mut input = "tone".to_string();
    for (name, config) in CHAIN {
        text.push_str(&format!(
            "[[stage]]\nid = \"{name}\"\nplugin = \"stock:{name}\"\ninputs = [\"{input}\"]\nconfig = {}\n",
            toml_inline(config)
        ));
        input = name.to_string();
    }
    text.push_str(&format!("[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"{input}\"]\n"));
    let config = medianode::config::load_str("bench.toml", text).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut times = Vec::new();
    let mut allocs = 0;
    for _ in 0..5 {
        let pipeline = Pipeline::build(runtime, &config, &CrashReporter::new(None)).unwrap();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let t = Instant::now();
        rt.block_on(pipeline.run(std::future::pending())).unwrap();
        times.push(t.elapsed() / TICKS as u32);
        allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
    }
    times.sort();
    (times[2], allocs as f64 / TICKS as f64)
}

/// A JSON object as a TOML inline table (the chain's configs are flat).
fn toml_inline(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let fields: Vec<String> = value.as_object().unwrap().iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", fields.join(", "))
}
