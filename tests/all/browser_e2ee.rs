//! The room page in end-to-end encrypted rooms (`?e2ee=1`), in headless
//! Chromium: its E2EE worker (the edge node's E2EE stage compiled for the
//! browser) joins the room's MLS group through the node's delivery service
//! and seals and opens every encoded frame (RTCRtpScriptTransform).
//!
//! What the node forwards is watched by a plain WebRTC participant of the
//! room outside the group (an `observer`), and compared with plaintext
//! frames each page's worker keeps as a sample: no 16-byte run of any of
//! them may show up in what the node forwards.

use crate::browser::{DevTools, PAGE_LOADED, SETTLE, Tab, forwarded, is, launch};
use crate::edge_nodes::leaked;
use crate::webrtc_peers::{Seen, peer_at};
use medianode::supervisor::crash_report::CrashReporter;
use serde_json::{Value, json};
use std::time::Instant;

/// The node on its built-in default pipeline (the SFU and its page), on a
/// free port.
/// The built-in default pipeline's node on a free port.
pub(crate) async fn default_node() -> medianode::server::Running {
    let mut config = medianode::config::default_pipeline().unwrap_or_else(|e| panic!("{e}"));
    if let Some(server) = config.server.as_mut() {
        server.listen.set_port(0);
    }
    medianode::server::start(crate::common::runtime(), &config, &CrashReporter::new(None)).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A page's encryption as it reports it.
pub(crate) const E2EE: &str = "(() => { const e = window.medianode && window.medianode.e2ee; if (!e) return null; \
    return {state: e.state, epoch: e.epoch, safety: e.safetyNumber, members: e.members.slice().sort().join(','), \
    restarts: e.restarts, counters: e.counters, failures: e.failures, shown: document.getElementById('e2ee-status').textContent}; })()";

/// Video frames decoded and audio energy received, from `getStats()`.
pub(crate) const RECEIVED: &str = "(async () => { const m = window.medianode.media; if (!m || !m.pc) return null; \
    const s = await m.pc.getStats(); let frames = 0, energy = 0; \
    s.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded || 0; \
    if (r.type === 'inbound-rtp' && r.kind === 'audio') energy += r.totalAudioEnergy || 0; }); return {frames, energy}; })()";

/// In the group with exactly `members` (sorted, comma-separated).
pub(crate) fn in_group(members: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["state"] == "encrypted" && v["members"] == members
}

/// Frames opened of `kind` by the page's worker, at least `n`.
pub(crate) fn opened(kind: &'static str, n: u64) -> impl Fn(&Value) -> bool {
    move |v| v["counters"]["opened"][kind].as_u64().is_some_and(|o| o >= n)
}

pub(crate) fn count(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// The plaintext frames the page's worker kept, audio and video.
async fn plaintext(dt: &mut DevTools, tab: &Tab) -> Vec<Vec<u8>> {
    let sample = dt.eval(tab, "window.medianode.e2ee.ask('sample').then(r => r && r.sample)").await;
    let frames = ["audio", "video"].iter().flat_map(|kind| sample[kind].as_array().cloned().unwrap_or_default());
    frames.map(|f| f.as_array().into_iter().flatten().filter_map(Value::as_u64).map(|b| b as u8).collect()).collect()
}

/// Both pages on one epoch with one safety number, shown on each page.
async fn agree(dt: &mut DevTools, a: &Tab, b: &Tab) -> (u64, String) {
    let (x, y) = (dt.eval(a, E2EE).await, dt.eval(b, E2EE).await);
    if (&x["epoch"], &x["safety"]) != (&y["epoch"], &y["safety"]) {
        let logs = "window.medianode.e2ee.log.join('\\n')";
        let (la, lb) = (dt.eval(a, logs).await, dt.eval(b, logs).await);
        panic!(
            "not one epoch and safety number: {x} / {y}\n{}'s log:\n{}\n{}'s log:\n{}",
            a.name,
            la.as_str().unwrap_or(""),
            b.name,
            lb.as_str().unwrap_or("")
        );
    }
    let safety = x["safety"].as_str().unwrap_or_else(|| panic!("a safety number: {x}")).to_string();
    for v in [&x, &y] {
        assert!(v["shown"].as_str().is_some_and(|s| s.contains(&safety) && s.contains("end-to-end encrypted")), "the page shows it: {v}");
    }
    (x["epoch"].as_u64().unwrap_or_else(|| panic!("an epoch: {x}")), safety)
}

fn payloads(seen: &Seen) -> Vec<Vec<u8>> {
    seen.payloads.lock().expect("lock").clone()
}

/// Two windows in an encrypted room see and hear each other while the node
/// forwards only ciphertext; five members join and leave around them in
/// quick succession (some before they were added), with duplicate and
/// unknown leaves: both stay on one epoch and safety number, no worker
/// restarted. Then ann's worker is terminated: nothing of hers is
/// forwarded while it is down, a fresh worker rejoins the group, and bob
/// hears her again; the gap is measured. The worker's per-frame cost is
/// measured in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "the test holds every core for its whole length; no task of its runtime takes the lock")]
async fn two_windows_in_an_encrypted_room_through_churn_and_a_killed_worker() {
    let node = default_node().await;
    let _cores = crate::common::loading_every_core();
    let browser = launch();
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    let base = format!("http://{}/?room=secret&autojoin=1&e2ee=1", node.server.addr);

    // A participant outside the group sees what the node forwards. It is
    // there first: a plain participant adds nobody, so ann, the first with
    // E2EE, makes the group, and bob's key package brings him in.
    let observer = peer_at(node.server.addr, "secret", "observer", false).await;
    let ann = dt.open("ann", &format!("{base}&user=ann")).await;
    dt.until(&ann, "ann's group", E2EE, SETTLE, in_group("ann")).await;
    let marks = "document.querySelector('[aria-label=participants] li[data-user=observer] .marks').textContent";
    dt.until(&ann, "the observer marked", marks, SETTLE, is("not encrypted: cannot see or hear you")).await;
    let bob = dt.open("bob", &format!("{base}&user=bob")).await;
    for tab in [&ann, &bob] {
        dt.until(tab, "ann and bob in one group", E2EE, SETTLE, in_group("ann,bob")).await;
    }
    let (epoch, safety) = agree(&mut dt, &ann, &bob).await;
    eprintln!("ann and bob: epoch {epoch}, safety number {safety}");

    for tab in [&ann, &bob] {
        dt.until(tab, "decrypted audio and video", E2EE, SETTLE, |v| opened("audio", 100)(v) && opened("video", 30)(v)).await;
        dt.until(tab, "video decoded and audio heard", RECEIVED, SETTLE, |v| {
            v["frames"].as_u64().is_some_and(|f| f > 30) && v["energy"].as_f64().is_some_and(|e| e > 0.0)
        })
        .await;
    }
    dt.screenshot(&ann, "e2ee-ann").await;
    observer.seen.until("500 forwarded packets", SETTLE, |s| s.payloads.lock().expect("lock").len() >= 500).await;
    let mut plain = plaintext(&mut dt, &ann).await;
    plain.extend(plaintext(&mut dt, &bob).await);

    // Churn: five members join and leave, two of them before being added.
    let churn = dt.open("churn", &format!("http://{}/?room=lobby", node.server.addr)).await;
    dt.until(&churn, "the page loaded", PAGE_LOADED, SETTLE, is("complete")).await;
    let script = r#"(async () => { try {
        const m = await import('/e2ee/medianode_e2ee_web.js');
        await m.default();
        const pause = (ms) => new Promise(r => setTimeout(r, ms));
        const stays = [0, 400, 0, 250, 150];
        await Promise.all(stays.map(async (stay, i) => {
            await pause(i * 100);
            const user = `c${i}`;
            const me = new m.Member('secret', user, '{"aead": "wasm"}');
            const ws = new WebSocket(`ws://${location.host}/ws`);
            await new Promise(r => { ws.onopen = r; });
            ws.onmessage = (e) => { for (const out of me.signal(e.data)) if (ws.readyState === 1) ws.send(out); };
            ws.send(JSON.stringify({type: 'join', room: 'secret', user, e2ee: true}));
            await pause(stay);
            ws.close();
        }));
        return 'done';
    } catch (e) { return String(e); } })()"#;
    assert_eq!(dt.eval(&churn, script).await, json!("done"));
    for (user, times) in [("c0", 2), ("c3", 1), ("nobody", 2)] {
        for _ in 0..times {
            let leave = format!("window.medianode.e2ee.signal({{type: 'presence', state: 'left', user: '{user}'}})");
            dt.eval(&ann, &leave).await;
            dt.eval(&bob, &leave).await;
        }
    }
    for tab in [&ann, &bob] {
        dt.until(tab, "ann and bob alone in the group again", E2EE, SETTLE, |v| {
            in_group("ann,bob")(v) && v["epoch"].as_u64() > Some(epoch)
        })
        .await;
    }
    let (epoch, safety) = agree(&mut dt, &ann, &bob).await;
    let now = dt.eval(&bob, E2EE).await;
    assert_eq!(now["restarts"], json!(0), "no worker restarted for churn: {now}");
    assert_eq!(dt.eval(&ann, E2EE).await["restarts"], json!(0));
    let heard = count(&now, &["counters", "opened", "audio"]);
    dt.until(&bob, "ann's audio after the churn", E2EE, SETTLE, opened("audio", heard + 100)).await;
    eprintln!(
        "after 10 joins and leaves: epoch {epoch}, safety number {safety}; bob's worker: {} frames held and released, {} did not open",
        count(&now, &["counters", "released"]),
        count(&now, &["counters", "unopened"])
    );
    plain.extend(plaintext(&mut dt, &ann).await);

    // Ann's worker is terminated. Nothing of hers leaves until a new
    // worker is back in the group; then bob hears her again.
    let watcher = peer_at(node.server.addr, "secret", "watcher", false).await;
    watcher.seen.until("the watcher gets media", SETTLE, |s| s.payloads.lock().expect("lock").len() >= 50).await;
    let sent_before = forwarded(&node.sfu, "ann", "audio").await;
    let killed =
        dt.eval(&ann, "(() => { window.killedAt = performance.now(); window.medianode.e2ee.worker.terminate(); return true; })()").await;
    assert_eq!(killed, json!(true));
    let killed_at = Instant::now();
    let right_after = forwarded(&node.sfu, "ann", "audio").await;
    dt.until(&ann, "the page notices", "window.medianode.e2ee.state", SETTLE, is("restarting")).await;
    let at_detection = forwarded(&node.sfu, "ann", "audio").await;
    dt.until(&ann, "a new worker in the group", E2EE, SETTLE, |v| in_group("ann,bob")(v) && v["restarts"] == 1).await;
    let back = dt.eval(&ann, E2EE).await;
    let at_rejoin = forwarded(&node.sfu, "ann", "audio").await;
    // How long after the new worker had its key the count above was read
    // (two DevTools round trips): what ann sent meanwhile was sealed.
    let read_at = dt.eval(&ann, "performance.now()").await.as_f64().unwrap_or(f64::NAN);
    let heard = count(&dt.eval(&bob, E2EE).await, &["counters", "opened", "audio"]);
    dt.until(&bob, "ann's audio again", E2EE, SETTLE, opened("audio", heard + 50)).await;
    let resumed = killed_at.elapsed();
    let bob_after = dt.eval(&bob, E2EE).await;
    let failure = &back["failures"][0];
    let timing = dt.eval(&ann, "window.killedAt").await.as_f64().unwrap_or(f64::NAN);
    let detect_ms = failure["at"].as_f64().unwrap_or(f64::NAN) - timing;
    let rejoin_ms = failure["back"].as_f64().unwrap_or(f64::NAN) - failure["at"].as_f64().unwrap_or(f64::NAN);
    let gap = bob_after["counters"]["longestAudioGapMs"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "ann's worker killed: noticed after {detect_ms:.0} ms, back in the group {rejoin_ms:.0} ms later (epoch {}); \
         bob's longest audio gap {gap:.0} ms; resumed at bob within {resumed:?}; ann's audio packets forwarded: \
         {sent_before} before, +{} during the kill, +{} until noticed, +{} until back",
        back["epoch"],
        right_after - sent_before,
        at_detection - right_after,
        at_rejoin - at_detection
    );
    // Frames the dead worker took were never sent: at most the packets
    // already on their way when it was terminated (counted once per
    // subscriber: bob, the observer and the watcher; a second of leaked
    // audio would be 150).
    assert!(at_detection - right_after <= 10, "{} packets of ann's left while her worker was dead", at_detection - right_after);
    // One 20 ms audio frame per subscriber (three) for each 20 ms after
    // the key came and before the count was read.
    let since_key = (read_at - back["failures"][0]["back"].as_f64().unwrap_or(read_at)).max(0.0);
    let sealed_since = 3 * (since_key / 20.0).ceil() as u64;
    assert!(
        at_rejoin - at_detection <= 10 + sealed_since,
        "{} packets of ann's left before her new worker had the key ({sealed_since} allowed for the {since_key:.0} ms after it)",
        at_rejoin - at_detection
    );
    assert!(gap < 2500.0, "bob's audio gap {gap} ms");
    agree(&mut dt, &ann, &bob).await;
    plain.extend(plaintext(&mut dt, &ann).await);
    plain.extend(plaintext(&mut dt, &bob).await);

    // Ciphertext only, before and after the kill.
    let mut observed = payloads(&observer.seen);
    observed.extend(payloads(&watcher.seen));
    assert!(plain.len() > 100 && observed.len() > 500, "{} plaintext frames, {} observed packets", plain.len(), observed.len());
    assert_eq!(leaked(&plain, &observed), 0, "plaintext frames showed up in what the node forwarded");
    eprintln!("no 16-byte run of {} plaintext frames in {} forwarded packets", plain.len(), observed.len());

    // The worker's cost per 1200-byte frame, sealed and opened in Chromium.
    let bench = dt.eval(&bob, "window.medianode.e2ee.ask('bench', {size: 1200, count: 2000}).then(r => r.result)").await;
    assert_eq!(bench["ok"], json!(2000), "{bench}");
    eprintln!(
        "the E2EE worker in Chromium, 1200-byte frame: seal + open {:.1} us, seal {:.1} us",
        bench["sealAndOpenUs"].as_f64().unwrap_or(f64::NAN),
        bench["sealUs"].as_f64().unwrap_or(f64::NAN)
    );
}

/// The power of `frequency` (Hz) in 48 kHz `samples` (a Goertzel filter).
fn power_at(samples: &[f32], frequency: f64) -> f64 {
    let w = std::f64::consts::TAU * frequency / 48_000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / samples.len() as f64
}

/// One Chromium window and one edge node in an encrypted room: the edge
/// node (a tone of 440 Hz, sealed by its E2EE plugin) and the page (a
/// 660 Hz tone from Chromium's fake microphone, sealed by its worker) are
/// one MLS group; the edge node's recording of the page has its tone, and
/// the page opens and plays the edge node's audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "the test holds every core for its whole length; no task of its runtime takes the lock")]
async fn a_window_and_an_edge_node_hear_each_other_encrypted() {
    const PAGE_TONE: f64 = 660.0;
    const EDGE_TONE: f64 = 440.0;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = default_node().await;
    let _cores = crate::common::loading_every_core();
    let url = format!("ws://{}/ws", node.server.addr);

    // The page's microphone: the tone in beeps (300 ms on, 200 ms off,
    // looped by Chromium), which Chromium's noise suppression leaves alone
    // (a steady tone it learns as noise and fades out).
    let tone_wav = dir.path().join("tone.wav");
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(&tone_wav, spec).expect("tone file");
    for i in 0..48_000 * 2 {
        let t = f64::from(i % 24_000) / 48_000.0; // within a 500 ms beep period
        let ramp = (t / 0.005).min((0.3 - t) / 0.005).clamp(0.0, 1.0); // 5 ms fades, silent after 300 ms
        let x = (std::f64::consts::TAU * PAGE_TONE * f64::from(i) / 48_000.0).sin() * 0.5 * ramp;
        writer.write_sample((x * 32767.0) as i16).expect("sample");
    }
    writer.finalize().expect("tone file written");

    // The edge node first: alone, it makes the group (in room `call`, with
    // the E2EE stage the edge node tests use: a deadline an MLS commit
    // meets on a loaded machine, which the 5 ms default does not).
    let heard_wav = dir.path().join("heard.wav");
    let pipeline = format!(
        "[pipeline]\nname = \"edge\"\npace = \"realtime\"\n\n{}\
         [[source]]\nid = \"tone\"\nkind = \"tone\"\nfrequency = {EDGE_TONE}\namplitude = 0.5\n\n\
         [[stage]]\nid = \"encode\"\nbuiltin = \"opus-encoder\"\ninputs = [\"tone\"]\n\n\
         [[sink]]\nid = \"room\"\nkind = \"publish\"\ninputs = [\"encode\"]\n\n\
         [[source]]\nid = \"ann\"\nkind = \"subscribe\"\npublisher = \"ann\"\n\n\
         [[stage]]\nid = \"decode\"\nbuiltin = \"opus-decoder\"\ninputs = [\"ann\"]\n\n\
         [[sink]]\nid = \"heard\"\nkind = \"wav\"\ninputs = [\"decode\"]\npath = {:?}\n",
        crate::edge_nodes::client(&url, "edge", "stock:e2ee", "{}"),
        heard_wav.display().to_string()
    );
    let mut edge = crate::edge_nodes::EdgeNode::start(pipeline, dir.path());
    crate::edge_nodes::until("the edge node's group", SETTLE, || edge.edge.status().and_then(|s| s.epoch).is_some()).await;

    let browser = crate::browser::launch_with(&[&format!("--use-file-for-fake-audio-capture={}", tone_wav.display())]);
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    let ann = dt.open("ann", &format!("http://{}/?room=call&autojoin=1&e2ee=1&user=ann", node.server.addr)).await;
    dt.until(&ann, "ann and the edge node in one group", E2EE, SETTLE, in_group("ann,edge")).await;
    let page = dt.eval(&ann, E2EE).await;
    let status = edge.edge.status().expect("the edge node's status");
    let edge_safety: Vec<String> = status.safety_number.chunks(2).map(|p| p.iter().map(|b| format!("{b:02x}")).collect()).collect();
    assert_eq!(page["epoch"].as_u64(), status.epoch, "one epoch: {page}");
    assert_eq!(page["safety"].as_str(), Some(edge_safety.join(" ").as_str()), "one safety number: {page}");

    // The page opens the edge node's audio and plays it; the edge node
    // records two more seconds of the page's tone (100 frames it sealed).
    dt.until(&ann, "the edge node's audio, opened", E2EE, SETTLE, opened("audio", 200)).await;
    dt.until(&ann, "the edge node's audio, heard", RECEIVED, SETTLE, |v| v["energy"].as_f64().is_some_and(|e| e > 0.01)).await;
    let sealed = count(&dt.eval(&ann, E2EE).await, &["counters", "sealed", "audio"]);
    dt.until(&ann, "two more seconds of the page's tone", E2EE, SETTLE, |v| count(v, &["counters", "sealed", "audio"]) >= sealed + 100)
        .await;
    edge.stop();
    drop(edge);

    // The whole recording but its first half second (the group forming).
    let heard = crate::edge_nodes::samples(&heard_wav);
    assert!(heard.len() >= 72_000, "the edge node recorded {} samples of ann", heard.len());
    let last = &heard[24_000..];
    let (tone, other) = (power_at(last, PAGE_TONE), power_at(last, EDGE_TONE));
    let peak = (20..200).map(|i| f64::from(i) * 10.0).max_by(|a, b| power_at(last, *a).total_cmp(&power_at(last, *b))).unwrap_or(0.0);
    eprintln!("the edge node heard ann: strongest at {peak} Hz; power at {PAGE_TONE} Hz {tone:.2e}, at {EDGE_TONE} Hz {other:.2e}");
    assert!((peak - PAGE_TONE).abs() <= 10.0, "the edge node's recording of ann peaks at {peak} Hz, not {PAGE_TONE} Hz");
}

/// Ann asks into the group of the room's only other E2EE member, who
/// leaves without adding her: no welcome will come. Her page asks again
/// (after 5 s), finds itself alone, and makes the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "the test holds every core for its whole length; no task of its runtime takes the lock")]
async fn a_page_whose_welcome_never_comes_asks_again() {
    use futures_util::SinkExt;
    let node = default_node().await;
    let _cores = crate::common::loading_every_core();
    let (mut ghost, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.server.addr)).await.expect("connects");
    let join = json!({"type": "join", "room": "lost", "user": "ghost", "e2ee": true}).to_string();
    ghost.send(tokio_tungstenite::tungstenite::Message::text(join)).await.expect("joins");
    let browser = launch();
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    let ann = dt.open("ann", &format!("http://{}/?room=lost&autojoin=1&e2ee=1&user=ann", node.server.addr)).await;
    let asked = "window.medianode.e2ee ? window.medianode.e2ee.log.filter(l => l.startsWith('out mls-key-package')).length : 0";
    dt.until(&ann, "ann's key package", asked, SETTLE, |v| v.as_u64() == Some(1)).await;
    ghost.close(None).await.expect("the ghost leaves");
    let took = dt.until(&ann, "ann's own group", E2EE, SETTLE, in_group("ann")).await;
    let state = dt.eval(&ann, E2EE).await;
    assert_eq!(state["restarts"], json!(0), "{state}");
    eprintln!("no welcome: ann made the group {took:?} after the ghost left");
}

/// A browser without `RTCRtpScriptTransform` (Chromium with the feature
/// turned off): the page hands each sender's and receiver's encoded
/// streams to the worker (`createEncodedStreams`) instead, and two windows
/// see and hear each other encrypted the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "the test holds every core for its whole length; no task of its runtime takes the lock")]
async fn without_script_transforms_the_page_uses_encoded_streams() {
    let node = default_node().await;
    let _cores = crate::common::loading_every_core();
    let browser = crate::browser::launch_with(&["--disable-blink-features=RTCRtpScriptTransform"]);
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    let base = format!("http://{}/?room=legacy&autojoin=1&e2ee=1", node.server.addr);
    let ann = dt.open("ann", &format!("{base}&user=ann")).await;
    dt.until(&ann, "ann's group", E2EE, SETTLE, in_group("ann")).await;
    assert_eq!(dt.eval(&ann, "typeof RTCRtpScriptTransform").await, json!("undefined"), "the feature is off");
    let bob = dt.open("bob", &format!("{base}&user=bob")).await;
    for tab in [&ann, &bob] {
        dt.until(tab, "ann and bob in one group", E2EE, SETTLE, in_group("ann,bob")).await;
        dt.until(tab, "decrypted audio and video", E2EE, SETTLE, |v| opened("audio", 100)(v) && opened("video", 30)(v)).await;
        dt.until(tab, "video decoded", RECEIVED, SETTLE, |v| v["frames"].as_u64().is_some_and(|f| f > 30)).await;
    }
    agree(&mut dt, &ann, &bob).await;
}
