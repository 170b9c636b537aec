//! Core benchmarks. Each prints a ratio against a baseline measured in the
//! same run, then criterion's own statistics for the same functions.
//!
//! (a) Per-item cost of the passthrough stage in wasm vs the same Rust code
//!     compiled natively, for batches of 1, 16 and 64 frames of 1200 bytes.
//!     The native baseline runs the SDK's batch loop on the same flat batch
//!     into fresh output lists, as the export glue does inside wasm; the
//!     wasm side adds the copies across the boundary, the call, and one
//!     `begin-item` host call per item. Target: <= 2x native per item at
//!     batch 64.
//! (b) Time from a trap to the next item served: the call after a trapped
//!     one, with a standby instance and without (a cold start). Target:
//!     p99 < 1 ms with standby.
//! (c) Start-up of a 10-stage pipeline (each stage with its standby) with a
//!     warm on-disk code cache, against a cold start. Target: < 200 ms.
//!
//! Run: `cargo bench -p medianode --bench core`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Better;
use criterion::{Criterion, criterion_group};
use medianode::pipeline::Pipeline;
use medianode::runtime::AudioBatch;
use medianode::runtime::bindings::{BlockInfo, FrameBatch, FrameInfo};
use medianode::runtime::{CallLimits, Instance, Items, Runtime, RuntimeOptions, StageShared, stock};
use medianode::supervisor::crash_report::CrashReporter;
use medianode::supervisor::{StageSpec, Supervisor};
use medianode_core::supervision::backoff::RestartConfig;
use medianode_core::supervision::{FailurePolicy, Limits};
use medianode_passthrough::Passthrough;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAME: usize = 1200;
const BATCHES: [usize; 3] = [1, 16, 64];

fn frames(n: usize) -> FrameBatch {
    let mut batch = FrameBatch::new();
    for i in 0..n as u64 {
        batch.push(FrameInfo { stream: 0, sequence: i, timestamp: i * 960, size: 0 }, &[i as u8; FRAME]);
    }
    batch
}

/// The batch as the SDK's native types.
fn sdk_frames(batch: &FrameBatch) -> Vec<medianode_sdk::FrameInfo> {
    let info = |f: &FrameInfo| medianode_sdk::FrameInfo { stream: f.stream, sequence: f.sequence, timestamp: f.timestamp, size: f.size };
    batch.frames.iter().map(info).collect()
}

fn wasm_passthrough(runtime: &Runtime) -> Instance {
    let plugin = runtime.load("stock:passthrough", stock::bytes("passthrough").unwrap(), 512 << 10).unwrap();
    let stage = Arc::new(StageShared::new("bench", 1 << 20));
    Instance::start(&plugin, stage, "{}", 64 << 20, CallLimits { deadline: Duration::from_secs(1), init_deadline: Duration::from_secs(1) })
        .unwrap()
}

/// The native baseline: the plugin's own code, run the way the SDK's export
/// glue runs it in wasm (output into fresh lists sized like the input).
fn native_passthrough(
    stage: &mut Passthrough,
    frames: &[medianode_sdk::FrameInfo],
    payloads: &[u8],
) -> (Vec<medianode_sdk::FrameInfo>, Vec<u8>) {
    let mut out_frames = Vec::with_capacity(frames.len());
    let mut out_payloads = Vec::with_capacity(payloads.len());
    medianode_sdk::transform_batch(stage, frames, payloads, &mut out_frames, &mut out_payloads);
    (out_frames, out_payloads)
}

/// Median time per call of `f`, over a few ~100 ms samples.
fn per_call(mut f: impl FnMut()) -> Duration {
    let warm = Instant::now();
    let mut calls = 0u64;
    while warm.elapsed() < Duration::from_millis(100) {
        f();
        calls += 1;
    }
    let per_sample = calls.max(1);
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_sample {
                f();
            }
            t.elapsed() / per_sample as u32
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Returns the wasm/native ratio per item at batches 1 and 64.
fn summary_wasm_vs_native() -> (f64, f64) {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut wasm = wasm_passthrough(&runtime);
    let mut native: Passthrough = medianode_sdk::start("{}").unwrap();
    println!("\n(a) passthrough stage, {FRAME}-byte frames: wasm vs native, per item");
    let mut ratios = Vec::new();
    for n in BATCHES {
        let raw = frames(n);
        let infos = sdk_frames(&raw);
        let batch = Items::Frames(raw);
        let Items::Frames(raw) = &batch else { unreachable!() };
        let w = per_call(|| {
            black_box(wasm.call(black_box(&batch)).unwrap());
        }) / n as u32;
        let nat = per_call(|| {
            black_box(native_passthrough(&mut native, black_box(&infos), black_box(&raw.payloads)));
        }) / n as u32;
        println!(
            "    batch {n:>2}: wasm {:>7.0} ns/item, native {:>6.0} ns/item, ratio {:.2}x",
            w.as_nanos() as f64,
            nat.as_nanos() as f64,
            w.as_secs_f64() / nat.as_secs_f64()
        );
        ratios.push(w.as_secs_f64() / nat.as_secs_f64());
    }
    (ratios[0], ratios[ratios.len() - 1])
}

fn faulty_supervisor(runtime: &Runtime, standby: bool) -> Supervisor {
    let plugin = runtime.load("stock:faulty", stock::bytes("faulty").unwrap(), 512 << 10).unwrap();
    let spec = StageSpec {
        id: "bench".into(),
        plugin,
        config_json: r#"{"fault": "unreachable", "on-poison": true}"#.into(),
        limits: Limits::default(),
        restart: RestartConfig {
            max_restarts: u32::MAX,
            long_max_restarts: u32::MAX,
            healthy_after: Duration::ZERO,
            jitter: 0.0,
            standby,
            ..RestartConfig::default()
        },
        failure: FailurePolicy::FailClosed,
        recorder: 50,
        seed: 1,
    };
    Supervisor::start(spec, CrashReporter::new(None), Instant::now()).unwrap()
}

fn block(sequence: u64, poison: bool) -> Items {
    let mut samples = [0.1f32; 480];
    if poison {
        samples[0] = f32::NAN;
    }
    let mut batch = AudioBatch::new();
    batch.push(BlockInfo { sequence, sample_rate: 48_000, channels: 1, frames: 0, level: None }, &samples);
    Items::Audio(batch)
}

/// Times the call right after a trap, `rounds` times.
fn failover_times(supervisor: &mut Supervisor, standby: bool, rounds: usize) -> Vec<Duration> {
    supervisor.wait_for_builds_until(Some(Instant::now() + Duration::from_secs(3600)));
    let (poison, good) = (block(0, true), block(1, false));
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            // The standby (or, without one, nothing) is ready before the
            // trap, off the clock; without one, the call after the trap
            // waits for an instance built on the spot (a cold start).
            if standby {
                assert!(supervisor.wait_for_standby(Instant::now(), Duration::from_secs(5)), "standby ready");
            }
            let out = supervisor.process(Instant::now(), poison.clone()).unwrap();
            let Items::Audio(muted) = out else { unreachable!() };
            assert!(muted.pcm().iter().all(|&s| s == 0.0), "the poison block comes out muted");
            let t = Instant::now();
            let out = supervisor.process(Instant::now(), good.clone()).unwrap();
            let elapsed = t.elapsed();
            assert_eq!(out.len(), 1);
            elapsed
        })
        .collect();
    times.sort();
    times
}

/// Returns the p99 of the call after a trap, with a standby, in µs.
fn summary_failover() -> f64 {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut healthy = faulty_supervisor(&runtime, true);
    let good = block(1, false);
    let normal = per_call(|| {
        black_box(healthy.process(Instant::now(), good.clone()).unwrap());
    });
    println!("\n(b) trap -> next item served (the call after a trap, 2000 traps each)");
    println!("    normal call (no trap):  {:>7.1} us", normal.as_secs_f64() * 1e6);
    let mut p99_standby = 0.0;
    for standby in [true, false] {
        let mut supervisor = faulty_supervisor(&runtime, standby);
        let times = failover_times(&mut supervisor, standby, 2000);
        println!(
            "    {:<24} p50 {:>7.1} us, p99 {:>7.1} us, max {:>7.1} us",
            if standby { "with standby:" } else { "without standby (cold):" },
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            times[times.len() - 1].as_secs_f64() * 1e6,
        );
        if standby {
            p99_standby = percentile(&times, 0.99).as_secs_f64() * 1e6;
        }
    }
    p99_standby
}

/// A chain of ten gain stages, each with its standby.
fn ten_stage_pipeline() -> String {
    let mut text = String::from("[pipeline]\npace = \"asap\"\n[[source]]\nid = \"tone\"\nkind = \"tone\"\n");
    let mut input = "tone".to_string();
    for i in 0..10 {
        text.push_str(&format!("[[stage]]\nid = \"s{i}\"\nplugin = \"stock:gain\"\ninputs = [\"{input}\"]\n"));
        input = format!("s{i}");
    }
    text.push_str(&format!("[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"{input}\"]\n"));
    text
}

fn start_up(text: &str, cache_dir: Option<std::path::PathBuf>) -> Duration {
    let t = Instant::now();
    let config = medianode::config::load_str("bench.toml", text.to_string()).unwrap();
    let runtime = Runtime::new(RuntimeOptions { cache_dir }).unwrap();
    let pipeline = Pipeline::build(&runtime, &config, &CrashReporter::new(None)).unwrap();
    let elapsed = t.elapsed();
    drop(pipeline);
    elapsed
}

/// Returns the warm start-up's p50 in ms.
fn summary_start_up() -> f64 {
    let text = ten_stage_pipeline();
    let dir = tempfile::tempdir().unwrap();
    start_up(&text, Some(dir.path().to_path_buf())); // warm the cache
    let mut warm: Vec<Duration> = (0..20).map(|_| start_up(&text, Some(dir.path().to_path_buf()))).collect();
    let mut cold: Vec<Duration> = (0..5).map(|_| start_up(&text, None)).collect();
    warm.sort();
    cold.sort();
    let (w, c) = (percentile(&warm, 0.5), percentile(&cold, 0.5));
    println!("\n(c) start-up of a 10-stage pipeline (parse, runtime, load, 20 instances started)");
    println!(
        "    warm code cache: p50 {:>6.1} ms, max {:>6.1} ms; cold (compiling): p50 {:>6.1} ms; cold/warm {:.1}x",
        w.as_secs_f64() * 1e3,
        warm[warm.len() - 1].as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        c.as_secs_f64() / w.as_secs_f64()
    );
    w.as_secs_f64() * 1e3
}

fn criterion_benches(c: &mut Criterion) {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut wasm = wasm_passthrough(&runtime);
    let mut native: Passthrough = medianode_sdk::start("{}").unwrap();
    let mut group = c.benchmark_group("passthrough");
    for n in BATCHES {
        let raw = frames(n);
        let infos = sdk_frames(&raw);
        let batch = Items::Frames(raw);
        let Items::Frames(raw) = &batch else { unreachable!() };
        group.bench_function(format!("wasm/{n}"), |b| b.iter(|| wasm.call(black_box(&batch)).unwrap()));
        group.bench_function(format!("native/{n}"), |b| {
            b.iter(|| native_passthrough(&mut native, black_box(&infos), black_box(&raw.payloads)));
        });
    }
    group.finish();

    let mut supervisor = faulty_supervisor(&runtime, true);
    c.bench_function("failover/with-standby", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                supervisor.wait_for_standby(Instant::now(), Duration::from_secs(5));
                supervisor.process(Instant::now(), block(0, true)).unwrap();
                let t = Instant::now();
                black_box(supervisor.process(Instant::now(), block(1, false)).unwrap());
                total += t.elapsed();
            }
            total
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = criterion_benches
}

fn main() {
    let (batch1, batch64) = summary_wasm_vs_native();
    let failover = summary_failover();
    let start_up = summary_start_up();
    common::write(
        "core",
        &[
            ("passthrough_wasm_vs_native_batch1", batch1, 4.0, Better::Lower),
            ("passthrough_wasm_vs_native_batch64", batch64, 2.0, Better::Lower),
            ("failover_with_standby_p99_us", failover, 1000.0, Better::Lower),
            ("start_up_10_stages_warm_ms", start_up, 200.0, Better::Lower),
        ],
    );
    println!();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
