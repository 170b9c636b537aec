//! Pipelines as a whole: the shipped files, data integrity, batches, fan-in
//! and fan-out.

use crate::common::run;
use medianode::config::{SinkKind, SourceKind};
use medianode::pipeline::to_dot;
use medianode::runtime::Items;
use medianode::supervisor::crash_report::CrashReporter;

/// `medianode run` with no file: the SFU, its page and its WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_default_serves_the_sfu_and_its_page() {
    use futures_util::{SinkExt, StreamExt};
    let mut config = medianode::config::default_pipeline().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.name, "sfu");
    let server = config.server.as_mut().expect("a [server]");
    assert_eq!(server.listen.to_string(), "127.0.0.1:8080");
    server.listen.set_port(0);
    let running =
        medianode::server::start(crate::common::runtime(), &config, &CrashReporter::new(None)).await.unwrap_or_else(|e| panic!("{e}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", running.server.addr)).await.expect("connects");
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"join","room":"r","user":"u"}"#)).await.expect("sends");
    let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(reply))) = ws.next().await else { panic!("no reply") };
    assert!(reply.contains("\"joined\""), "{reply}");
}

#[test]
fn every_shipped_pipeline_builds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = medianode::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            // Pipelines with audio devices are built and run against test
            // devices in `devices::the_live_pipeline_runs_on_test_devices`.
            let uses_devices = config.sources.iter().any(|s| matches!(s.kind, SourceKind::Device { .. }))
                || config.sinks.iter().any(|s| matches!(s.kind, SinkKind::Device { .. }));
            if !uses_devices {
                // An edge node's media ends (here going nowhere).
                let ports = config.client.as_ref().map(|_| medianode::pipeline::Ports {
                    publish: tokio::sync::mpsc::channel(1).0,
                    subscribe: Some(tokio::sync::mpsc::channel(1).1),
                });
                let reporter = medianode::supervisor::crash_report::CrashReporter::new(None);
                medianode::pipeline::Pipeline::build_with(crate::common::runtime(), &config, &reporter, ports)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

#[tokio::test]
async fn frames_pass_through_a_plugin_byte_for_byte() {
    let text = r#"
        [pipeline]
        pace = "asap"
        [[source]]
        id = "frames"
        kind = "frames"
        size = "1200B"
        per-tick = 16
        count = 320
        [[stage]]
        id = "pass"
        plugin = "stock:passthrough"
        inputs = ["frames"]
        limits = { deadline = "1s" }
        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["pass"]
        capacity = 1000
    "#;
    let run = run(text).await;
    assert_eq!(run.sequences("out"), (0..320).collect::<Vec<_>>());
    for batch in &run.channels["out"] {
        let Items::Frames(frames) = batch else { panic!("frames expected") };
        assert_eq!(frames.frames.len(), 16);
        for (f, payload) in frames.iter() {
            let expected: Vec<u8> = (0..1200).map(|i| (f.sequence as usize + i) as u8).collect();
            assert_eq!(payload, expected, "frame {} changed", f.sequence);
        }
    }
    assert_eq!(run.metric("pass", "calls"), 20, "one call per 16-frame batch");
}

#[tokio::test]
async fn gain_changes_the_level_and_fan_out_feeds_every_reader() {
    let text = r#"
        [pipeline]
        pace = "asap"
        [[source]]
        id = "tone"
        kind = "tone"
        amplitude = 0.5
        count = 50
        [[stage]]
        id = "quieter"
        plugin = "stock:gain"
        inputs = ["tone"]
        config = { gain-db = -6.0206 }
        limits = { deadline = "1s" }
        [[sink]]
        id = "raw"
        kind = "channel"
        inputs = ["tone"]
        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["quieter"]
    "#;
    let run = run(text).await;
    assert_eq!(run.sequences("raw").len(), 50);
    for (raw, out) in run.channels["raw"].iter().zip(&run.channels["out"]) {
        let (Items::Audio(raw), Items::Audio(out)) = (raw, out) else { panic!("audio expected") };
        assert_eq!(raw.pcm().len(), out.pcm().len());
        for (a, b) in raw.pcm().iter().zip(out.pcm()) {
            assert!((a * 0.5 - b).abs() < 1e-6, "{a} * 0.5 != {b}");
        }
    }
}

/// Two sources into one stage make two-block batches. When the second block
/// of a batch is poison, the first (already processed by the instance that
/// trapped) is processed again by the next instance and delivered once; only
/// the poison is muted.
#[tokio::test(start_paused = true)]
async fn in_a_batch_only_the_poison_is_muted() {
    let text = r#"
        [pipeline]
        pace = "realtime"
        [[source]]
        id = "clean"
        kind = "tone"
        count = 100
        [[source]]
        id = "dirty"
        kind = "tone"
        count = 100
        poison-every = 25
        [[stage]]
        id = "strict"
        plugin = "stock:faulty"
        inputs = ["clean", "dirty"]
        config = { fault = "panic", on-poison = true }
        limits = { deadline = "1s" }
        restart = { healthy-after = "50ms" }
        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["strict"]
        capacity = 1000
    "#;
    let run = run(text).await;
    let seqs = run.sequences("out");
    for s in 0..100u64 {
        assert_eq!(seqs.iter().filter(|&&x| x == s).count(), 2, "sequence {s}");
    }
    assert_eq!(run.silent("out"), [24, 49, 74, 99]);
    for report in &run.reports {
        assert_eq!(report.batch_size, 2);
        assert_eq!(report.poison.as_ref().unwrap()["non_finite_samples"], 1);
    }
    assert_eq!(run.reports.len(), 4);
}

#[test]
fn graph_is_dot_with_every_link() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/demo.toml");
    let config = medianode::config::load(&path).unwrap();
    let dot = to_dot(&config);
    assert!(dot.starts_with("digraph \"demo\" {"), "{dot}");
    for edge in ["\"tone\" -> \"gain\"", "\"gain\" -> \"flaky\"", "\"flaky\" -> \"meter\""] {
        assert!(dot.contains(edge), "missing {edge} in\n{dot}");
    }
}

/// A plugin named by path is read relative to the pipeline file, and a pin
/// of its digest is checked.
#[test]
fn plugin_files_are_found_relative_to_the_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let wasm = std::fs::read(medianode::runtime::stock::path("gain").unwrap()).unwrap();
    std::fs::write(dir.path().join("plugins/my-gain.wasm"), &wasm).unwrap();
    let digest = crate::common::runtime().load("x", &wasm, 512 << 10).unwrap().digest.clone();
    let text = format!(
        "[[source]]\nid = \"tone\"\nkind = \"tone\"\n[[stage]]\nid = \"g\"\nplugin = \"plugins/my-gain.wasm\"\nsha256 = \"{digest}\"\ninputs = [\"tone\"]\n[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"g\"]\n"
    );
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    let config = medianode::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let pipeline = medianode::pipeline::Pipeline::build(
        crate::common::runtime(),
        &config,
        &medianode::supervisor::crash_report::CrashReporter::new(None),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pipeline.order(), vec!["tone", "g", "out"]);
}

/// A WAV file whose disk stalls (here a FIFO that nobody reads: its writer
/// cannot even open it) costs a realtime pipeline nothing: every block
/// reaches the channel beside, none late, and what the file's queue
/// (`wav::QUEUE_BYTES`) cannot hold is dropped and counted.
#[tokio::test(start_paused = true)]
async fn a_stalled_wav_file_costs_a_realtime_pipeline_nothing() {
    use medianode::io::wav::QUEUE_BYTES;
    const BLOCKS: u64 = 3000; // 30 s of mono f32: 5.8 MB, past the queue
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("stalled.wav");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let text = format!(
        r#"
        [pipeline]
        pace = "realtime"
        tick = "10ms"
        [[source]]
        id = "tone"
        kind = "tone"
        count = {BLOCKS}
        [[stage]]
        id = "gain"
        plugin = "stock:gain"
        inputs = ["tone"]
        limits = {{ deadline = "1s" }}
        [[sink]]
        id = "file"
        kind = "wav"
        path = "{}"
        inputs = ["gain"]
        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["gain"]
        capacity = 10000
        "#,
        fifo.display()
    );
    let run = run(&text).await;
    assert_eq!(run.sequences("out"), (0..BLOCKS).collect::<Vec<_>>());
    assert!(run.silent("out").is_empty());
    assert_eq!(run.metric("gain", "late"), 0);
    let file = run.stats().sink("file").expect("the file's stats").get();
    assert_eq!(file.items, BLOCKS);
    let queued = (QUEUE_BYTES / (480 * 4)) as u64;
    assert_eq!(file.overflowed, BLOCKS - queued, "every block past the queue is dropped and counted");
    // Lets the writer thread open the FIFO and fail on a pipe nobody
    // reads, so that it ends.
    use std::os::unix::fs::OpenOptionsExt;
    drop(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo));
}
