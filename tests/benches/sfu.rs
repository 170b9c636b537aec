//! The forwarding decision alone: the stock forwarding plugin in wasm vs
//! the same Rust code natively, per packet, batches of 64, a room of 1
//! publisher + 5 subscribers; and the plugin on a bare instance on this
//! thread (the boundary alone, without the stage thread's round trip).
//! The SFU under load, end to end, is `sfu_load`.
//!
//! Run: `cargo bench -p medianode-tests --bench sfu`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../all/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../node/benches/common/mod.rs"]
mod results;

use medianode::runtime::bindings::{ForwardBatch, MediaKind, PacketMeta, RouteChange, RouteMember};
use medianode::runtime::{CallLimits, Instance, StageShared, stock};
use medianode::sfu::router::{Decide, NativeDecider, PluginDecider};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The decision per packet, plugin (on its stage thread, awaited) against
/// the same code native (inline).
fn decisions() {
    let mut deciders: Vec<(&str, Box<dyn Decide>)> = vec![
        ("plugin", Box::new(PluginDecider::new(common::stock_stage("forward", "{}")))),
        ("native", Box::new(NativeDecider::default())),
    ];
    for participant in 1..=6u64 {
        let change = RouteChange::Joined(RouteMember { participant, room: "room".into() });
        for (_, d) in deciders.iter_mut() {
            d.update(&change);
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
            layer: None,
            keyframe: false,
        })
        .collect();
    let mut per_packet = Vec::new();
    for (name, decider) in &mut deciders {
        let mut out = ForwardBatch { counts: Vec::new(), subscribers: Vec::new(), keyframes: Vec::new() };
        let rounds = 20_000;
        let started = Instant::now();
        for _ in 0..rounds {
            out.counts.clear();
            out.subscribers.clear();
            decider.decide(&packets, &mut out);
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

fn main() {
    decisions();
}
