//! SFU benchmarks, with real WebRTC peers (webrtc-rs) on loopback. Each
//! figure comes with its baseline from the same run.
//!
//! (a) The forwarding decision alone: the stock forwarding plugin in wasm
//!     vs the same Rust code natively, per packet, batches of 64, a room of
//!     1 publisher + 5 subscribers.
//! (b) Forwarded packets per second through the node, N publishers x M
//!     subscribers, publishers sending as fast as the stack takes packets:
//!     per wall-clock second, and per CPU-second of the node alone (the
//!     node runs on a runtime of its own whose threads are counted in
//!     /proc; the peers run on another), with the plugin and with the
//!     native decision.
//! (c) Latency: publisher write -> subscriber receive through the node vs
//!     a direct peer-to-peer connection in the same process (the difference
//!     is what the node adds), 200-byte packets at 500/s.
//!
//! Run: `cargo bench -p medianode-tests --bench sfu`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../all/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../node/benches/common/mod.rs"]
mod results;
#[path = "../all/webrtc_peers.rs"]
#[allow(dead_code)]
mod webrtc_peers;

use medianode::runtime::bindings::{ForwardBatch, MediaKind, PacketMeta, RouteChange, RouteMember};
use medianode::runtime::{CallLimits, Instance, StageShared, stock};
use medianode::sfu::SfuOptions;
use medianode::sfu::router::{Decide, NativeDecider, PluginDecider};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc_peers::{Peer, direct_pair, node_deciding, peer_at};

/// The decision per packet, plugin (on its stage thread, awaited) against
/// the same code native (inline).
fn decisions() {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(decisions_async()),
        Err(e) => eprintln!("(a) skipped: no runtime: {e}"),
    }
}

async fn decisions_async() {
    let mut table = BTreeMap::new();
    let mut deciders: Vec<(&str, Box<dyn Decide>)> = vec![
        ("plugin", Box::new(PluginDecider::new(common::stock_stage("forward", "{}")))),
        ("native", Box::new(NativeDecider::default())),
    ];
    for participant in 1..=6u64 {
        table.insert(participant, "room".to_string());
        let change = RouteChange::Joined(RouteMember { participant, room: "room".into() });
        for (_, d) in deciders.iter_mut() {
            d.update(&change, &table).await;
        }
    }
    let packets: Vec<PacketMeta> = (0..64u16)
        .map(|i| PacketMeta {
            publisher: 1,
            kind: MediaKind::Audio,
            ssrc: 7,
            sequence: i,
            timestamp: u32::from(i) * 960,
            payload_type: 111,
            marker: false,
            size: 120,
            audio_level: Some(30),
        })
        .collect();
    let mut per_packet = Vec::new();
    for (name, decider) in &mut deciders {
        let mut out = ForwardBatch { counts: Vec::new(), subscribers: Vec::new() };
        let rounds = 20_000;
        let started = Instant::now();
        for _ in 0..rounds {
            out.counts.clear();
            out.subscribers.clear();
            decider.decide(&packets, &table, &mut out).await.expect("deciding");
        }
        assert_eq!(out.subscribers.len(), 64 * 5);
        let ns = started.elapsed().as_nanos() as f64 / f64::from(rounds * 64);
        per_packet.push(ns);
        println!("(a) decision, {name}: {ns:.0} ns/packet (batch 64, 5 subscribers)");
    }
    println!("(a) plugin/native: {:.1}x", per_packet[0] / per_packet[1]);

    // The same decision on a bare instance, on this thread: the boundary
    // alone, without the stage thread's round trip (which the plugin line
    // above pays once per batch, and the native line does not).
    let plugin = common::runtime().load("stock:forward", stock::bytes("forward").expect("stock forward"), 512 << 10).expect("load");
    let limits = CallLimits { deadline: Duration::from_millis(50), init_deadline: Duration::from_secs(1) };
    let mut bare = Instance::start(&plugin, Arc::new(StageShared::new("forward", 1 << 20)), "{}", 64 << 20, limits).expect("instance");
    let changes: Vec<RouteChange> =
        (1..=6u64).map(|participant| RouteChange::Joined(RouteMember { participant, room: "room".into() })).collect();
    bare.update_routes(&changes).expect("routes");
    let rounds = 20_000;
    let started = Instant::now();
    for _ in 0..rounds {
        let out = bare.forward(&packets).expect("deciding");
        assert_eq!(out.subscribers.len(), 64 * 5);
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(rounds * 64);
    println!("(a) decision, plugin instance on this thread: {ns:.0} ns/packet, {:.1}x native", ns / per_packet[1]);
    results::write(
        "sfu_decision",
        &[
            ("decision_plugin_vs_native", per_packet[0] / per_packet[1], 3.0, results::Better::Lower),
            ("decision_bare_instance_vs_native", ns / per_packet[1], 3.0, results::Better::Lower),
        ],
    );
}

/// Threads of the node's runtime are named so, and the signaling stage's
/// thread `stage-…`.
const NODE_THREAD: &str = "node-worker";

/// utime + stime of this process's threads whose name starts with one of
/// `prefixes`, from /proc/self/task/*/stat.
fn cpu_time(prefixes: &[&str]) -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let name = stat.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')')).map_or("", |(name, _)| name);
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        ticks += fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_secs_f64(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

async fn throughput(node_rt: &tokio::runtime::Runtime, name: &str, decide: Box<dyn Decide>, publishers: usize, subscribers: usize) -> f64 {
    let options = SfuOptions::new("127.0.0.1".parse().expect("ip"));
    let (server, sfu) = node_rt.spawn(node_deciding(decide, options)).await.expect("node starts");
    let mut pubs = Vec::new();
    for i in 0..publishers {
        pubs.push(peer_at(server.addr, "bench", &format!("p{i}"), true).await);
    }
    let mut subs = Vec::new();
    for i in 0..subscribers {
        subs.push(peer_at(server.addr, "bench", &format!("s{i}"), false).await);
    }
    for p in pubs.iter().chain(&subs) {
        p.connected().await;
    }
    // Until every subscriber receives every publisher.
    for round in 0..200u16 {
        for p in &pubs {
            p.send_audio(round, 1, Duration::ZERO).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        if subs.iter().all(|s| {
            s.seen.unique.lock().expect("lock").iter().map(|(ssrc, _)| *ssrc).collect::<std::collections::HashSet<_>>().len() == publishers
        }) {
            break;
        }
    }
    let node_cpu = || cpu_time(&[NODE_THREAD, "stage-"]);
    let (out0, cpu0, t0) = (sfu.stats().packets_out, node_cpu(), Instant::now());
    let received0: u64 = subs.iter().map(Peer::received).sum();
    let window = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for p in pubs.drain(..) {
        tasks.push(tokio::spawn(async move {
            let mut sequence = 1000u16;
            let until = Instant::now() + window;
            while Instant::now() < until {
                for _ in 0..32 {
                    p.send_timed(sequence, 200).await;
                    sequence = sequence.wrapping_add(1);
                }
                tokio::task::yield_now().await;
            }
            p
        }));
    }
    for t in tasks {
        if let Ok(p) = t.await {
            pubs.push(p);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (out1, cpu1, t1) = (sfu.stats().packets_out, node_cpu(), Instant::now());
    let received: u64 = subs.iter().map(Peer::received).sum::<u64>() - received0;
    let forwarded = (out1 - out0) as f64;
    let wall = (t1 - t0).as_secs_f64();
    let cpu = (cpu1 - cpu0).as_secs_f64();
    // Each packet goes to the subscribers and to the other publishers.
    let to_subscribers = forwarded * subscribers as f64 / (subscribers + publishers - 1) as f64;
    println!(
        "(b) {publishers}x{subscribers} {name}: {:.0} forwarded packets/s, {:.0} per CPU-second of the node ({:.2} cores busy); subscribers received {:.1}% of what was sent to them",
        forwarded / wall,
        forwarded / cpu,
        cpu / wall,
        100.0 * received as f64 / to_subscribers.max(1.0)
    );
    // Closed, so that the node's side of them stops too before the next run.
    for p in pubs.iter().chain(&subs) {
        let _ = p.pc.close().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    forwarded / cpu
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1000.0
}

async fn latency(publisher: &Peer, subscriber: &Peer) -> (f64, f64) {
    publisher.connected().await;
    subscriber.connected().await;
    for round in 0..200u16 {
        publisher.send_audio(round, 1, Duration::from_millis(10)).await;
        if subscriber.received() > 0 {
            break;
        }
    }
    subscriber.seen.latencies.lock().expect("lock").clear();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for i in 0..3000u16 {
        tick.tick().await;
        publisher.send_timed(1000 + i, 200).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut l = subscriber.seen.latencies.lock().expect("lock").clone();
    l.sort_unstable();
    (percentile(&l, 0.5), percentile(&l, 0.99))
}

fn main() {
    decisions();
    // The node on one runtime (one worker: "per core"), the peers on another.
    let node_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(NODE_THREAD).enable_all().build().expect("runtime");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("peers").enable_all().build().expect("runtime");
    rt.block_on(async {
        let options = SfuOptions::new("127.0.0.1".parse().expect("ip"));
        let decide = Box::new(PluginDecider::new(common::stock_stage("forward", "{}")));
        let (server, _sfu) = node_rt.spawn(node_deciding(decide, options)).await.expect("node starts");
        let publisher = peer_at(server.addr, "lat", "pub", true).await;
        let subscriber = peer_at(server.addr, "lat", "sub", false).await;
        let (node50, node99) = latency(&publisher, &subscriber).await;
        let (a, b) = direct_pair().await;
        let (direct50, direct99) = latency(&a, &b).await;
        println!(
            "(c) latency through the node: p50 {node50:.0} us, p99 {node99:.0} us; direct: p50 {direct50:.0} us, p99 {direct99:.0} us"
        );
        println!(
            "(c) the node adds: p50 {:.0} us, p99 {:.0} us (p99 differences of a few hundred us are run-to-run noise)",
            node50 - direct50,
            node99 - direct99
        );
        for (publishers, subscribers) in [(1, 4), (2, 4), (4, 4)] {
            let plugin =
                throughput(&node_rt, "plugin", Box::new(PluginDecider::new(common::stock_stage("forward", "{}"))), publishers, subscribers)
                    .await;
            let native = throughput(&node_rt, "native", Box::new(NativeDecider::default()), publishers, subscribers).await;
            println!("(b) {publishers}x{subscribers} plugin/native per CPU-second: {:.2}", plugin / native);
        }
    });
}
