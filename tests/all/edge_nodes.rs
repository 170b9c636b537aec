//! One SFU node and three edge nodes, each edge node on a runtime (and
//! thread) of its own running a pipeline file: alice publishes speech
//! (WAV -> Opus -> E2EE -> WebRTC), bob and carol subscribe to her
//! (WebRTC -> E2EE -> Opus -> WAV). A plain WebRTC participant, who is not
//! in the MLS group, receives what the SFU forwards: it stands for the SFU's
//! view of the media.

use crate::common::runtime;
use crate::webrtc_peers::{Seen, node, peer};
use medianode::edge::Edge;
use medianode::pipeline::{Pipeline, PipelineStats};
use medianode::runtime::Items;
use medianode::runtime::bindings::{FrameBatch, FrameInfo};
use medianode::supervisor::crash_report::CrashReporter;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An edge node running in a thread of its own.
pub(crate) struct EdgeNode {
    pub(crate) edge: Edge,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What its channel sink (if any) received.
    channel: Option<mpsc::Receiver<Items>>,
    /// Its pipeline's stats (a room source's mix among them).
    pub(crate) stats: PipelineStats,
}

impl EdgeNode {
    pub(crate) fn start(toml: String, dir: &Path) -> EdgeNode {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("medianode=info,plugin=info").try_init();
        let file = dir.join(format!("edge-{}.toml", rand::random::<u32>()));
        std::fs::write(&file, &toml).expect("write the pipeline file");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let config = medianode::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
                let reporter = CrashReporter::new(None);
                let (edge, ports) = medianode::edge::start(runtime(), &config, &reporter).unwrap_or_else(|e| panic!("{e}"));
                let mut pipeline = Pipeline::build_with(runtime(), &config, &reporter, Some(ports)).unwrap_or_else(|e| panic!("{e}"));
                let channel = pipeline.take_channel("plain");
                let _ = ready_tx.send((edge, channel, pipeline.stats()));
                let mut until_stopped = stopped.clone();
                let _ = pipeline.run(async move { drop(until_stopped.wait_for(|s| *s).await) }).await;
                // A source that ended (a WAV file) does not end the node:
                // it stays in the room until told.
                let _ = stopped.wait_for(|s| *s).await;
            });
        });
        let (edge, channel, stats) = ready_rx.recv_timeout(Duration::from_secs(30)).expect("the edge node starts");
        EdgeNode { edge, stop, thread: Some(thread), channel, stats }
    }

    /// Stops the pipeline (its WAV sink finishes its file).
    pub(crate) fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The room, and the E2EE stage (`plugin` with `config`, inline TOML).
pub(crate) fn client(url: &str, user: &str, plugin: &str, config: &str) -> String {
    format!(
        "[client]\nserver = \"{url}\"\nroom = \"call\"\nuser = \"{user}\"\n\n\
         [[stage]]\nid = \"e2ee\"\nplugin = \"{plugin}\"\nconfig = {config}\nlimits = {{ deadline = \"200ms\" }}\n\
         restart = {{ healthy-after = \"200ms\", max-restarts = 1000 }}\n\n"
    )
}

/// Alice: speech, encoded, published (sealed by `plugin`); her Opus frames
/// also go to a channel sink (`plain`) so the test knows what plaintext
/// looks like.
fn alice(url: &str, speech: &Path, plugin: &str, config: &str) -> String {
    format!(
        "[pipeline]\nname = \"alice\"\npace = \"realtime\"\n\n{}[[source]]\nid = \"speech\"\nkind = \"wav\"\npath = {:?}\n\n\
         [[stage]]\nid = \"opus\"\nbuiltin = \"opus-encoder\"\ninputs = [\"speech\"]\n\n\
         [[sink]]\nid = \"room\"\nkind = \"publish\"\ninputs = [\"opus\"]\n\n\
         [[sink]]\nid = \"plain\"\nkind = \"channel\"\ninputs = [\"opus\"]\ncapacity = 100000\n",
        client(url, "alice", plugin, config),
        speech.display().to_string()
    )
}

/// A listener: alice's audio, decoded, into a WAV file; the frames it
/// received (opened) also go to a channel sink (`plain`).
fn listener(url: &str, user: &str, wav: &Path) -> String {
    format!(
        "[pipeline]\nname = \"{user}\"\npace = \"realtime\"\n\n{}[[source]]\nid = \"alice\"\nkind = \"subscribe\"\npublisher = \"alice\"\n\n\
         [[stage]]\nid = \"opus\"\nbuiltin = \"opus-decoder\"\ninputs = [\"alice\"]\n\n\
         [[sink]]\nid = \"out\"\nkind = \"wav\"\ninputs = [\"opus\"]\npath = {:?}\n\n\
         [[sink]]\nid = \"plain\"\nkind = \"channel\"\ninputs = [\"alice\"]\ncapacity = 100000\n",
        client(url, user, "stock:e2ee", "{}"),
        wav.display().to_string()
    )
}

/// Every frame a channel sink received.
pub(crate) fn drain(node: &mut EdgeNode) -> Vec<Items> {
    let mut out = Vec::new();
    if let Some(channel) = node.channel.as_mut() {
        while let Ok(items) = channel.try_recv() {
            out.push(items);
        }
    }
    out
}

/// Whether no 16-byte run of any of `plain` appears in `observed`.
pub(crate) fn leaked(plain: &[Vec<u8>], observed: &[Vec<u8>]) -> usize {
    let windows: HashSet<&[u8]> = observed.iter().flat_map(|p| p.windows(16)).collect();
    plain.iter().filter(|f| f.len() >= 16 && f.windows(16).any(|w| windows.contains(w))).count()
}

/// Waits (real time) until `done` holds.
pub(crate) async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn agreed(edges: &[&Edge], n: usize) -> Option<u64> {
    let statuses: Vec<_> = edges.iter().map(|e| e.status()).collect::<Option<Vec<_>>>()?;
    let first = statuses.first()?;
    let same = statuses.iter().all(|s| s.epoch == first.epoch && s.safety_number == first.safety_number && s.members.len() == n);
    if same { first.epoch } else { None }
}

/// The speech as alice's WAV source reads it (converted to 48 kHz).
fn speech_48k(path: &Path) -> Vec<f32> {
    medianode::io::wav::load(path, Some(1)).unwrap_or_else(|e| panic!("{e}")).samples
}

pub(crate) fn samples(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match reader.spec().sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().map(|s| s.expect("sample")).collect(),
        hound::SampleFormat::Int => reader.samples::<i32>().map(|s| s.expect("sample") as f32 / 32768.0).collect(),
    }
}

/// The highest normalized correlation of `got` against `source` over
/// every alignment (searched at 1/8 rate, refined at full rate).
fn best_correlation(source: &[f32], got: &[f32]) -> f64 {
    let window = got.len().min(48_000);
    let got = &got[got.len() - window..];
    let corr = |lag: usize, step: usize| -> f64 {
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for i in (0..window).step_by(step) {
            let (x, y) = (f64::from(source[lag + i]), f64::from(got[i]));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx == 0.0 || yy == 0.0 { 0.0 } else { xy / (xx * yy).sqrt() }
    };
    let lags = source.len().saturating_sub(window);
    let coarse = (0..lags).step_by(8).max_by(|&a, &b| corr(a, 8).total_cmp(&corr(b, 8))).unwrap_or(0);
    (coarse.saturating_sub(8)..(coarse + 8).min(lags)).map(|lag| corr(lag, 1)).fold(0.0, f64::max)
}

pub(crate) fn frames_of(items: &Items) -> Vec<Vec<u8>> {
    match items {
        Items::Frames(batch) => crate::e2ee::split(batch),
        Items::Audio(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_edge_nodes_hear_alice_and_the_sfu_sees_only_ciphertext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let speech = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/audio/voice.wav");
    let node = node("forward", "{}").await;
    let url = format!("ws://{}/ws", node.server.addr);
    let (bob_wav, carol_wav): (PathBuf, PathBuf) = (dir.path().join("bob.wav"), dir.path().join("carol.wav"));

    // Bob and carol first, so that they hear alice from her first words.
    let mut bob = EdgeNode::start(listener(&url, "bob", &bob_wav), dir.path());
    let mut carol = EdgeNode::start(listener(&url, "carol", &carol_wav), dir.path());
    until("bob and carol agree", Duration::from_secs(20), || agreed(&[&bob.edge, &carol.edge], 2).is_some()).await;
    // The SFU's view: a participant outside the group.
    let observer = peer(&node, "call", "observer", false).await;
    let mut alice = EdgeNode::start(alice(&url, &speech, "stock:e2ee", "{}"), dir.path());
    until("all three agree", Duration::from_secs(20), || agreed(&[&alice.edge, &bob.edge, &carol.edge], 3).is_some()).await;
    let epoch = agreed(&[&alice.edge, &bob.edge, &carol.edge], 3).expect("epoch");

    // Three seconds of speech (10 ms frames through the SFU), then carol leaves.
    let forwarded = |n: usize| move |seen: &Seen| seen.payloads.lock().expect("lock").len() >= n;
    observer.seen.until("3 s of alice's speech", Duration::from_secs(20), forwarded(300)).await;
    let carol_stage = carol.edge.stage().expect("stage").clone();
    carol.stop();
    drop(carol);
    until("alice and bob move on", Duration::from_secs(20), || agreed(&[&alice.edge, &bob.edge], 2).is_some_and(|e| e > epoch)).await;
    let seen_before_leave = observer.seen.payloads.lock().expect("lock").len();
    observer.seen.until("1 s of speech after carol left", Duration::from_secs(20), forwarded(seen_before_leave + 110)).await;
    bob.stop();
    alice.stop();

    // Bob and carol heard alice: their audio matches her speech.
    let source = speech_48k(&speech);
    for (who, wav) in [("bob", &bob_wav), ("carol", &carol_wav)] {
        let got = samples(wav);
        assert!(got.len() >= 48_000, "{who} wrote {} samples", got.len());
        let correlation = best_correlation(&source, &got);
        eprintln!("{who}: {:.2} s of audio, correlation with alice's speech {correlation:.3}", got.len() as f64 / 48_000.0);
        assert!(correlation > 0.8, "{who}'s audio correlates {correlation:.3} with alice's speech");
    }

    // The SFU forwarded only ciphertext: no 16-byte run of any of alice's
    // Opus frames appears in anything the observer received.
    let plain: Vec<Vec<u8>> = drain(&mut alice).iter().flat_map(frames_of).collect();
    let observed = observer.seen.payloads.lock().expect("lock").clone();
    assert!(plain.len() > 300 && observed.len() > 300, "{} plaintext frames, {} observed packets", plain.len(), observed.len());
    assert_eq!(leaked(&plain, &observed), 0, "alice's plaintext Opus showed up in forwarded packets");

    // Carol, who left, opens none of what alice sent after the new epoch
    // (she keeps her stage and every key she had).
    // (The first few may have been sealed before alice moved on.)
    let after: Vec<Vec<u8>> = observed[(seen_before_leave + 10).min(observed.len())..].to_vec();
    assert!(after.len() > 20, "{} packets after carol left", after.len());
    let batch = FrameBatch {
        frames: after
            .iter()
            .enumerate()
            .map(|(i, p)| FrameInfo { stream: 1, sequence: i as u64, timestamp: 0, size: p.len() as u32 })
            .collect(),
        payloads: after.concat(),
    };
    let opened = carol_stage
        .call_blocking(Duration::from_secs(10), move |s| s.open(Instant::now(), &batch))
        .expect("stage thread")
        .expect("stage running");
    assert!(opened.frames.is_empty(), "the leaver opened {} frames sent after she left", opened.frames.len());
}

/// Alice's E2EE plugin panics on every 50th frame it seals (every half
/// second): nothing she sends is ever in the clear, and bob loses exactly
/// the frame each trap was on (10 ms): the standby instance, resumed from
/// the host state store, seals the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_e2ee_plugin_mid_call_leaks_nothing_and_loses_one_frame_per_trap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let speech = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/audio/voice.wav");
    let node = node("forward", "{}").await;
    let url = format!("ws://{}/ws", node.server.addr);
    let bob_wav = dir.path().join("bob.wav");
    let mut bob = EdgeNode::start(listener(&url, "bob", &bob_wav), dir.path());
    until("bob's group", Duration::from_secs(20), || agreed(&[&bob.edge], 1).is_some()).await;
    let observer = peer(&node, "call", "observer", false).await;
    let mut alice = EdgeNode::start(alice(&url, &speech, "stock:faulty-e2ee", "{ panic-every = 50 }"), dir.path());
    until("alice and bob agree", Duration::from_secs(20), || agreed(&[&alice.edge, &bob.edge], 2).is_some()).await;
    // Three seconds of speech: six traps, one per 50 frames.
    let forwarded = |seen: &Seen| seen.payloads.lock().expect("lock").len() >= 300;
    observer.seen.until("3 s of alice's speech", Duration::from_secs(20), forwarded).await;
    bob.stop();
    alice.stop();

    let faults = alice.edge.stage_shared().expect("stage").metrics.snapshot()["faults"].as_u64().expect("faults");
    assert!(faults >= 4, "{faults} traps in 3 s");
    let plain: Vec<Vec<u8>> = drain(&mut alice).iter().flat_map(frames_of).collect();
    let observed = observer.seen.payloads.lock().expect("lock").clone();
    assert!(observed.len() > 200, "{} observed packets", observed.len());
    assert_eq!(leaked(&plain, &observed), 0, "plaintext left alice's node");

    // Bob's frames (opened, in order): each gap is one frame at most.
    let sequences: Vec<u64> = drain(&mut bob).iter().flat_map(|items| items.sequences().collect::<Vec<_>>()).collect();
    assert!(sequences.len() > 200, "bob got {} frames", sequences.len());
    let gaps: Vec<u64> = sequences.windows(2).map(|w| w[1] - w[0] - 1).filter(|&g| g > 0).collect();
    assert!(gaps.iter().all(|&g| g == 1), "gaps of more than the trapped frame: {gaps:?}");
    assert!(gaps.len() as u64 >= faults / 2, "{} one-frame gaps for {faults} traps", gaps.len());
    let correlation = best_correlation(&speech_48k(&speech), &samples(&bob_wav));
    eprintln!("bob, with {faults} traps at alice: {} one-frame gaps, correlation {correlation:.3}", gaps.len());
    assert!(correlation > 0.8, "bob's audio correlates {correlation:.3} with alice's speech");
}

/// A publisher of a tone (Opus, sealed); its plaintext frames also go to a
/// channel sink (`plain`).
fn tone(url: &str, user: &str, frequency: u32) -> String {
    format!(
        "[pipeline]\nname = \"{user}\"\npace = \"realtime\"\n\n{}[[source]]\nid = \"tone\"\nkind = \"tone\"\nfrequency = {frequency}\namplitude = 0.3\n\n\
         [[stage]]\nid = \"opus\"\nbuiltin = \"opus-encoder\"\ninputs = [\"tone\"]\n\n\
         [[sink]]\nid = \"room\"\nkind = \"publish\"\ninputs = [\"opus\"]\n\n\
         [[sink]]\nid = \"plain\"\nkind = \"channel\"\ninputs = [\"opus\"]\ncapacity = 100000\n",
        client(url, user, "stock:e2ee", "{}")
    )
}

/// The power of `frequency` Hz in 48 kHz `samples` (Goertzel), normalized.
pub(crate) fn power(samples: &[f32], frequency: f64) -> f64 {
    let w = std::f64::consts::TAU * frequency / 48_000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        (s2, s1) = (s1, s);
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (samples.len() as f64).powi(2)
}

/// Three publishers, each a tone of its own, in an encrypted room; an edge
/// node with a `room` source writes the mix: the last second of its file
/// holds all three tones, its levels name all three publishers, and the
/// SFU forwarded only ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_node_mixes_three_encrypted_publishers_and_hears_every_tone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node("forward", "{}").await;
    let url = format!("ws://{}/ws", node.server.addr);
    let wav = dir.path().join("mix.wav");
    let ear = format!(
        "[pipeline]\nname = \"ear\"\npace = \"realtime\"\n\n{}[[source]]\nid = \"everyone\"\nkind = \"room\"\n\n\
         [[sink]]\nid = \"out\"\nkind = \"wav\"\ninputs = [\"everyone\"]\npath = {:?}\n",
        client(&url, "ear", "stock:e2ee", "{}"),
        wav.display().to_string()
    );
    let mut ear = EdgeNode::start(ear, dir.path());
    until("the listener's group", Duration::from_secs(20), || agreed(&[&ear.edge], 1).is_some()).await;
    let observer = peer(&node, "call", "observer", false).await;
    let tones = [("low", 400), ("mid", 1000), ("high", 2500)];
    let mut publishers: Vec<EdgeNode> = tones.iter().map(|(user, hz)| EdgeNode::start(tone(&url, user, *hz), dir.path())).collect();
    until("all four agree", Duration::from_secs(30), || {
        let edges: Vec<&Edge> = publishers.iter().map(|p| &p.edge).chain([&ear.edge]).collect();
        agreed(&edges, 4).is_some()
    })
    .await;

    // Every publisher is heard: the mix has three voices, each loud.
    let mix = ear.stats.mix.clone().expect("a room source's mix");
    let loud = || {
        let levels = mix.levels();
        levels.len() == 3 && levels.iter().all(|l| l.level_dbfs > -20.0)
    };
    until("three voices in the mix", Duration::from_secs(20), loud).await;
    let heard = |seen: &Seen| seen.payloads.lock().expect("lock").len() >= 600;
    observer.seen.until("2 s of three publishers", Duration::from_secs(20), heard).await;
    let levels = mix.levels();
    eprintln!("mix levels: {levels:?}");
    let mut names: Vec<&str> = levels.iter().map(|l| l.publisher.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["high", "low", "mid"]);
    for level in &levels {
        // A 0.3 sine is -13.5 dBFS RMS.
        assert!((-17.0..-10.0).contains(&level.level_dbfs), "{level:?}");
    }
    // And in the edge node's /metrics.
    let view = medianode::admin::NodeView::default();
    view.set_mix(Some(mix.clone()));
    let metrics = medianode::admin::metrics::render(&view).await;
    for line in ["medianode_edge_mixed_publishers 3", "medianode_edge_publisher_level_dbfs{publisher=\"mid\"} -1"] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    ear.stop();
    for publisher in &mut publishers {
        publisher.stop();
    }

    // The last second of the mix holds each tone far above the spectrum
    // between them.
    let got = samples(&wav);
    assert!(got.len() >= 96_000, "the mix wrote {} samples", got.len());
    let last = &got[got.len() - 48_000..];
    let between = [700.0, 1700.0, 3300.0].map(|f| power(last, f)).into_iter().fold(0.0, f64::max);
    for (user, hz) in tones {
        let p = power(last, f64::from(hz));
        eprintln!("{user} ({hz} Hz): {:.1} dB over the strongest in-between frequency", 10.0 * (p / between).log10());
        assert!(p > 100.0 * between, "{user}'s {hz} Hz is {p:e}, in-between {between:e}");
    }
    let peak = last.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(peak < 0.9, "the mix peaks at {peak}");

    // The SFU forwarded only ciphertext.
    let plain: Vec<Vec<u8>> = publishers.iter_mut().flat_map(drain).flat_map(|items| frames_of(&items)).collect();
    let observed = observer.seen.payloads.lock().expect("lock").clone();
    assert!(plain.len() > 600 && observed.len() >= 600, "{} plaintext frames, {} observed packets", plain.len(), observed.len());
    assert_eq!(leaked(&plain, &observed), 0, "a publisher's plaintext Opus showed up in forwarded packets");
}
