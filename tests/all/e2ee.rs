//! End-to-end encryption between edge nodes: real E2EE plugins (the stock
//! `e2ee` component, with host AEAD) on edge nodes whose signaling clients
//! talk to a real node over WebSockets; the node's signaling stage is the
//! MLS delivery service.

use crate::common::stock_stage;
use medianode::edge::{Edge, EncryptionStage};
use medianode::runtime::bindings::{E2eeStatus, FrameBatch, FrameInfo};
use medianode::signaling::server::{Server, ServerOptions};
use medianode::supervisor::thread::StageThread;

use medianode::signaling::client::{ClientEvent, ClientOptions};
use medianode::signaling::connections::Outgoing;
use std::time::{Duration, Instant};

fn edge(url: &str, user: &str, plugin: &str, config: &str) -> Edge {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("medianode=debug,plugin=debug").try_init();
    let (outbox, reader) = Edge::outbox();
    let stage = EncryptionStage::new(stock_stage(plugin, config), outbox);
    let mut options = ClientOptions::new(url, "room", user);
    options.reconnect.jitter = 0.0;
    // On the paused clock time leaps whenever the runtime waits for the
    // node's stage thread: keep the backoff's reset, its attempt window and
    // the heartbeat out of the leaps' reach.
    options.reconnect.healthy_after = Duration::from_secs(3600);
    options.reconnect.window = Duration::from_secs(3600);
    options.heartbeat_interval = Duration::from_secs(600);
    options.heartbeat_timeout = Duration::from_secs(3600);
    Edge::start(options, None, Some((stage, reader))).0
}

/// A node serving signaling only (no media here), whose heartbeat stays
/// out of the paused clock's leaps.
async fn node() -> Server {
    let options = ServerOptions {
        heartbeat_interval: Duration::from_secs(600),
        heartbeat_timeout: Duration::from_secs(3600),
        ..ServerOptions::default()
    };
    Server::start("127.0.0.1:0".parse().expect("addr"), options, stock_stage("signaling", "{}"), Default::default(), None, None)
        .await
        .expect("the node starts")
}

/// Waits (real time, up to 20 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every edge in one group of `n` on one epoch with one safety number.
fn agreed(edges: &[&Edge], n: usize) -> Option<E2eeStatus> {
    let statuses: Vec<E2eeStatus> = edges.iter().map(|e| e.status()).collect::<Option<_>>()?;
    let first = statuses.first()?.clone();
    let same = statuses.iter().all(|s| s.epoch == first.epoch && s.safety_number == first.safety_number && s.members.len() == n);
    (same && first.epoch.is_some()).then_some(first)
}

fn frames(payloads: &[&[u8]]) -> FrameBatch {
    FrameBatch {
        frames: payloads
            .iter()
            .enumerate()
            .map(|(i, p)| FrameInfo { stream: 1, sequence: i as u64, timestamp: 0, size: p.len() as u32 })
            .collect(),
        payloads: payloads.concat(),
    }
}

fn seal(edge: &Edge, batch: &FrameBatch) -> FrameBatch {
    let batch = batch.clone();
    let stage = edge.stage().expect("stage");
    stage.call_blocking(Duration::from_secs(10), move |s| s.seal(Instant::now(), &batch)).expect("stage thread").expect("stage running")
}

fn open(edge: &Edge, batch: &FrameBatch) -> FrameBatch {
    open_with(edge.stage().expect("stage"), batch)
}

fn open_with(stage: &StageThread<EncryptionStage>, batch: &FrameBatch) -> FrameBatch {
    let batch = batch.clone();
    stage.call_blocking(Duration::from_secs(10), move |s| s.open(Instant::now(), &batch)).expect("stage thread").expect("stage running")
}

/// Payloads of a batch, one by one.
pub fn split(batch: &FrameBatch) -> Vec<Vec<u8>> {
    let mut at = 0;
    batch
        .frames
        .iter()
        .map(|f| {
            let p = batch.payloads[at..at + f.size as usize].to_vec();
            at += f.size as usize;
            p
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Alice (running `alice_plugin`) and then bob join the node at `url`, in
/// that order (connections 1 and 2); returns once they agree.
async fn alice_and_bob(url: &str, alice_plugin: &str, alice_config: &str) -> (Edge, Edge, u64) {
    let a = edge(url, "alice", alice_plugin, alice_config);
    until("alice's group", || agreed(&[&a], 1).is_some()).await;
    let b = edge(url, "bob", "e2ee", "{}");
    until("alice and bob agree", || agreed(&[&a, &b], 2).is_some()).await;
    let epoch = agreed(&[&a, &b], 2).and_then(|s| s.epoch).expect("epoch");
    (a, b, epoch)
}

/// Three edge nodes form one group through the node; each opens the
/// others' frames, which never carry the plaintext; one leaves, the epoch
/// advances, and the leaver (keeping everything it had) opens nothing sent
/// after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_edge_nodes_share_keys_and_a_leaver_reads_nothing_new() {
    let node = node().await;
    let url = format!("ws://{}/ws", node.addr);
    let (a, b, _) = alice_and_bob(&url, "e2ee", "{}").await;
    let c = edge(&url, "carol", "e2ee", r#"{"aead": "wasm"}"#);
    until("all three agree", || agreed(&[&a, &b, &c], 3).is_some()).await;
    let epoch = agreed(&[&a, &b, &c], 3).and_then(|s| s.epoch).expect("epoch");

    let plain: &[u8] = b"an opus frame of alice's, 40 bytes long.";
    let sealed = seal(&a, &frames(&[plain, plain]));
    assert_eq!(sealed.frames.len(), 2);
    for frame in split(&sealed) {
        assert!(!contains(&frame, plain), "the plaintext shows through");
    }
    for reader in [&b, &c] {
        assert_eq!(split(&open(reader, &sealed)), [plain, plain]);
    }

    // Carol leaves (her node goes away); she keeps her stage and keys.
    let carol_stage = c.stage().expect("stage").clone();
    drop(c);
    until("alice and bob move on without carol", || agreed(&[&a, &b], 2).is_some_and(|s| s.epoch > Some(epoch))).await;
    let after = seal(&a, &frames(&[plain]));
    assert_eq!(split(&open(&b, &after)), [plain]);
    let carol_reads = open_with(&carol_stage, &after);
    assert!(carol_reads.frames.is_empty(), "the leaver opened a frame of the next epoch");
}

/// The E2EE plugin panics on every 7th frame it seals: the frame it
/// trapped on is dropped, every other frame is sealed (by the standby
/// instance, which resumed the group from the host state store) and opens
/// at the other end, and no plaintext ever comes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_e2ee_plugin_drops_only_the_frame_it_trapped_on() {
    let node = node().await;
    let url = format!("ws://{}/ws", node.addr);
    let (a, b, epoch) = alice_and_bob(&url, "faulty-e2ee", r#"{"panic-every": 7}"#).await;

    let payloads: Vec<Vec<u8>> = (0..140u32).map(|i| format!("frame {i:04} plaintext").into_bytes()).collect();
    let (mut sealed, mut opened) = (0u64, Vec::new());
    for chunk in payloads.chunks(10) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let out = seal(&a, &frames(&refs));
        for frame in split(&out) {
            assert!(!payloads.iter().any(|p| contains(&frame, p)), "a frame left in the clear");
            sealed += 1;
        }
        opened.extend(split(&open(&b, &out)));
    }
    let faults = a.stage_shared().expect("stage").metrics.snapshot()["faults"].as_u64().expect("faults");
    assert!(faults >= 10, "{faults} traps");
    assert_eq!(sealed + faults, 140, "exactly the frames it trapped on are missing");
    assert_eq!(opened.len() as u64, sealed, "every sealed frame opens");
    assert_eq!(agreed(&[&a, &b], 2).and_then(|s| s.epoch), Some(epoch), "resumed, not rejoined: the group never changed");
}

/// An edge node's signaling connection is cut twice (paused clock): it
/// reconnects at once, then after the 1 s backoff (it had not been healthy
/// for a minute), rejoins each time with a fresh key package, the others
/// take it back, and all end on the room's current epoch.
#[tokio::test(start_paused = true)]
async fn a_cut_signaling_connection_rejoins_the_group_on_the_current_epoch() {
    let node = node().await;
    let url = format!("ws://{}/ws", node.addr);
    let (a, b, epoch) = alice_and_bob(&url, "e2ee", "{}").await;
    // Bob's connections are the second, third... the node accepted.
    for (cut, connection) in [(1, 2), (2, 3)] {
        assert!(node.connections.send(connection, Outgoing::Close("cut".into())));
        let back = epoch + 2 * cut;
        until("bob back in the group", || agreed(&[&a, &b], 2).is_some_and(|s| s.epoch.is_some_and(|e| e >= back))).await;
    }
    let retries: Vec<Duration> = b
        .connection_events()
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Disconnected { retry_in, .. } => Some(retry_in),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [Duration::ZERO, Duration::from_secs(1)], "at once, then after the backoff");
    let plain: &[u8] = b"after the cuts";
    assert_eq!(split(&open(&b, &seal(&a, &frames(&[plain])))), [plain]);
    assert_eq!(split(&open(&a, &seal(&b, &frames(&[plain])))), [plain]);
}
