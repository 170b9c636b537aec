//! E2EE benchmarks: the stock E2EE stage in wasm against the same Rust
//! code run natively, in one process.
//!
//! (a) SFrame seal + open (AES_128_GCM_SHA256_128) of 100- and 1200-byte
//!     frames, one frame per call (audio: a frame every 20 ms) and 16 per
//!     call (a video frame's packets, or a batch): the plugin with the host's AEAD (`aead = "host"`), the
//!     plugin with AES-GCM inside wasm (`aead = "wasm"`), and natively.
//! (b) MLS in a group of 2, 10 and 50: the stage commits the add of one
//!     member (from its key package to the merge after `mls-accepted`),
//!     and processes another member's commit; plugin vs native. Both
//!     include what the stage does around openmls: JSON, base64, and
//!     saving its state to the host state store after every change.
//!
//! Run: `cargo bench -p medianode-tests --bench e2ee` (the ratios go to
//! `target/bench-results/e2ee.json` too); `-- mls` or `-- sframe` runs one
//! part alone, e.g. under `perf` with `MEDIANODE_PROFILER=perfmap`.

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../node/benches/common/mod.rs"]
mod results;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use medianode::runtime::bindings::{E2eeEvent, E2eeSeat, FrameBatch, FrameInfo};
use medianode::runtime::{CallLimits, Instance, Runtime, RuntimeOptions, StageShared, stock};
use medianode_e2ee::membership::Member;
use medianode_e2ee::stage::E2ee;
use medianode_sdk::{Encryption, FrameInfo as SdkFrameInfo};
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stage, in wasm or native, behind one interface.
trait Stage {
    fn control(&mut self, event: E2eeEvent) -> Vec<String>;
    fn seal(&mut self, batch: &FrameBatch) -> FrameBatch;
    fn open(&mut self, batch: &FrameBatch) -> FrameBatch;
}

struct Wasm(Instance);

impl Stage for Wasm {
    fn control(&mut self, event: E2eeEvent) -> Vec<String> {
        self.0.e2ee_control(&[event]).expect("control")
    }
    fn seal(&mut self, batch: &FrameBatch) -> FrameBatch {
        self.0.seal(batch).expect("seal")
    }
    fn open(&mut self, batch: &FrameBatch) -> FrameBatch {
        self.0.open(batch).expect("open")
    }
}

/// The plugin's code natively, driven the way its export glue drives it.
struct Native(E2ee);

fn sdk_frames(batch: &FrameBatch) -> Vec<SdkFrameInfo> {
    batch.frames.iter().map(|f| SdkFrameInfo { stream: f.stream, sequence: f.sequence, timestamp: f.timestamp, size: f.size }).collect()
}

fn wit_batch(frames: Vec<SdkFrameInfo>, payloads: Vec<u8>) -> FrameBatch {
    FrameBatch {
        frames: frames.iter().map(|f| FrameInfo { stream: f.stream, sequence: f.sequence, timestamp: f.timestamp, size: f.size }).collect(),
        payloads,
    }
}

impl Stage for Native {
    fn control(&mut self, event: E2eeEvent) -> Vec<String> {
        let event = match event {
            E2eeEvent::Seated(s) => medianode_sdk::E2eeEvent::Seated { room: s.room, user: s.user, others: s.others, rejoined: s.rejoined },
            E2eeEvent::Message(m) => medianode_sdk::E2eeEvent::Message(m),
        };
        medianode_sdk::control_batch(&mut self.0, vec![event])
    }
    fn seal(&mut self, batch: &FrameBatch) -> FrameBatch {
        let (mut frames, mut payloads) = (Vec::new(), Vec::new());
        let stage = &mut self.0;
        medianode_sdk::frame_batch(&sdk_frames(batch), &batch.payloads, &mut frames, &mut payloads, |m, p, o| stage.seal(m, p, o));
        wit_batch(frames, payloads)
    }
    fn open(&mut self, batch: &FrameBatch) -> FrameBatch {
        let (mut frames, mut payloads) = (Vec::new(), Vec::new());
        medianode_sdk::open_batch(&mut self.0, &sdk_frames(batch), &batch.payloads, &mut frames, &mut payloads);
        wit_batch(frames, payloads)
    }
}

fn wasm(runtime: &Runtime, config: &str, id: &str) -> Wasm {
    let plugin = runtime.load("stock:e2ee", stock::bytes("e2ee").expect("stock e2ee"), 512 << 10).expect("load");
    let shared = Arc::new(StageShared::new(id, 64 << 20));
    let limits = CallLimits { deadline: Duration::from_secs(5), init_deadline: Duration::from_secs(5) };
    Wasm(Instance::start(&plugin, shared, config, 256 << 20, limits).expect("instance"))
}

fn native(config: &str, id: &str) -> Native {
    medianode_sdk::host::use_state_store(id);
    Native(medianode_sdk::start::<E2ee>(config).expect("native stage"))
}

fn seated(others: Vec<String>) -> E2eeEvent {
    E2eeEvent::Seated(E2eeSeat { room: "bench".into(), user: "stage".into(), others, rejoined: true })
}

/// (a) ns per frame for seal + open, `per_call` frames per call.
fn sframe_round(stage: &mut dyn Stage, size: usize, per_call: usize) -> f64 {
    stage.control(seated(Vec::new()));
    let batch = FrameBatch {
        frames: (0..per_call).map(|i| FrameInfo { stream: 1, sequence: i as u64, timestamp: 0, size: size as u32 }).collect(),
        payloads: vec![0x42; size * per_call],
    };
    let rounds = 20_000 / per_call;
    for _ in 0..1000 {
        let sealed = stage.seal(&batch);
        black_box(stage.open(&sealed));
    }
    let started = Instant::now();
    for _ in 0..rounds {
        let sealed = stage.seal(black_box(&batch));
        let opened = stage.open(&sealed);
        assert_eq!(opened.payloads.len(), size * per_call);
    }
    started.elapsed().as_nanos() as f64 / (rounds * per_call) as f64
}

/// Returns the plugin (host AEAD) / native ratio for 1200 B, 1 and 16 per call.
fn sframe(runtime: &Runtime) -> (f64, f64) {
    println!("(a) SFrame AES-128-GCM seal + open, ns per frame:");
    let (mut one, mut sixteen) = (f64::NAN, f64::NAN);
    for (size, per_call) in [(100usize, 1usize), (1200, 1), (100, 16), (1200, 16)] {
        let host = sframe_round(&mut wasm(runtime, "{}", "host"), size, per_call);
        let in_wasm = sframe_round(&mut wasm(runtime, r#"{"aead": "wasm"}"#, "wasm"), size, per_call);
        let native = sframe_round(&mut native(r#"{"aead": "wasm"}"#, "native"), size, per_call);
        println!(
            "  {size:>5} B, {per_call:>2} per call: plugin + host AEAD {host:>7.0} ({:.2}x native) | plugin, AES in wasm {in_wasm:>7.0} ({:.2}x) | native {native:>6.0} ({:.0} MB/s)",
            host / native,
            in_wasm / native,
            size as f64 * 2.0 / native * 1e3
        );
        match (size, per_call) {
            (1200, 1) => one = host / native,
            (1200, 16) => sixteen = host / native,
            _ => {}
        }
    }
    (one, sixteen)
}

fn message(text: &str) -> Value {
    serde_json::from_str(text).expect("the stage sends JSON")
}

/// A group of `n`: the stage created it and added `n - 1` native members.
fn group(stage: &mut dyn Stage, n: usize) -> Vec<Member> {
    stage.control(seated(Vec::new()));
    let mut members: Vec<Member> = Vec::new();
    for i in 1..n {
        let joiner = Member::new(&format!("m{i}")).expect("member");
        let (epoch, commit, welcome) = add(stage, &joiner);
        for m in &mut members {
            m.process(&commit).expect("process");
        }
        let mut joiner = joiner;
        joiner.join(&welcome).expect("join");
        let _ = epoch;
        members.push(joiner);
    }
    members
}

/// The stage commits the add of `joiner` and merges it: (epoch, commit, welcome).
fn add(stage: &mut dyn Stage, joiner: &Member) -> (u64, Vec<u8>, Vec<u8>) {
    let package = B64.encode(joiner.key_package().expect("kp"));
    let kp = json!({"type": "mls-key-package", "user": joiner.user(), "package": package}).to_string();
    let out = stage.control(E2eeEvent::Message(kp));
    let commit = message(out.first().expect("a commit"));
    let epoch = commit["epoch"].as_u64().expect("epoch");
    stage.control(E2eeEvent::Message(json!({"type": "mls-accepted", "epoch": epoch}).to_string()));
    let bytes = |key: &str| B64.decode(commit[key].as_str().expect("base64")).expect("base64");
    (epoch, bytes("commit"), bytes("welcome"))
}

/// (b) ms per commit (made by the stage) and per process (by the stage).
fn mls_round(stage: &mut dyn Stage, n: usize) -> (f64, f64) {
    let mut members = group(stage, n);
    let rounds = if n >= 50 { 10 } else { 20 };
    let (mut commit_time, mut process_time) = (Duration::ZERO, Duration::ZERO);
    for r in 0..rounds {
        let joiner = Member::new(&format!("j{r}")).expect("member");
        let started = Instant::now();
        let (_, commit, _) = add(stage, &joiner);
        commit_time += started.elapsed();
        for m in &mut members {
            m.process(&commit).expect("process");
        }
        // A member removes the joiner again; the stage processes that.
        let removal = members[0].remove(&[joiner.user()]).expect("remove").expect("commit");
        members[0].confirm().expect("merge");
        for m in members.iter_mut().skip(1) {
            m.process(&removal.commit).expect("process");
        }
        let text = json!({"type": "mls-commit", "from": "m1", "epoch": removal.epoch, "commit": B64.encode(&removal.commit)}).to_string();
        let started = Instant::now();
        let out = stage.control(E2eeEvent::Message(text));
        process_time += started.elapsed();
        assert!(out.is_empty(), "the stage processed the commit quietly: {out:?}");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(rounds);
    (ms(commit_time), ms(process_time))
}

/// Returns the largest plugin/native ratio of commit and of process.
fn mls(runtime: &Runtime) -> (f64, f64) {
    println!("(b) MLS in the stage (JSON, base64 and the state save included), ms:");
    let (mut commit, mut process) = (0f64, 0f64);
    for n in [2usize, 10, 50] {
        let (wasm_commit, wasm_process) = mls_round(&mut wasm(runtime, "{}", &format!("mls{n}")), n);
        let (native_commit, native_process) = mls_round(&mut native("{}", &format!("mls-native{n}")), n);
        println!(
            "  group of {n:>2}: commit (add one) plugin {wasm_commit:.2} vs native {native_commit:.2} ({:.1}x) | process plugin {wasm_process:.2} vs native {native_process:.2} ({:.1}x)",
            wasm_commit / native_commit,
            wasm_process / native_process
        );
        commit = commit.max(wasm_commit / native_commit);
        process = process.max(wasm_process / native_process);
    }
    (commit, process)
}

fn main() {
    use results::Better::Lower;
    let runtime = Runtime::new(RuntimeOptions::default()).expect("runtime");
    // `-- mls` or `-- sframe` runs one part alone (to profile it); the
    // figures are written only when both ran.
    let only = std::env::args().skip(1).find(|a| a == "mls" || a == "sframe");
    if only.as_deref() == Some("mls") {
        mls(&runtime);
        return;
    }
    let (one, sixteen) = sframe(&runtime);
    if only.is_some() {
        return;
    }
    let (commit, process) = mls(&runtime);
    results::write(
        "e2ee",
        &[
            ("sframe_1200b_1_per_call_plugin_vs_native", one, 1.5, Lower),
            ("sframe_1200b_16_per_call_plugin_vs_native", sixteen, 1.3, Lower),
            ("mls_commit_plugin_vs_native_worst_group", commit, 2.0, Lower),
            ("mls_process_plugin_vs_native_worst_group", process, 2.0, Lower),
        ],
    );
}
