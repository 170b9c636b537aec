//! Which sans-IO WebRTC core should the SFU's shards drive? Both
//! candidates do the same work here, on one thread, with no sockets: two
//! peers of one core connected in memory (real ICE, DTLS and SRTP), one
//! sending 1000-byte RTP packets to the other. Timed separately:
//!
//! - **send**: writing a packet to the sending peer and taking the
//!   encrypted datagram out (what an SFU pays once per subscriber);
//! - **receive**: handing a datagram to the receiving peer and taking the
//!   decrypted packet out (once per published packet).
//!
//! Each core as an SFU would set it up: `rtc` with its default codecs and
//! interceptors (NACK, reports, TWCC: the node's `peer::open`); str0m in
//! RTP mode with its defaults (NACK, reports, TWCC), both on RustCrypto.
//!
//! Run: `cargo run --release --manifest-path tests/webrtc-cores/Cargo.toml`

mod rtc_core;
mod str0m_core;

use std::time::{Duration, Instant};

/// Packets per timed run, and payload bytes per packet.
pub const PACKETS: usize = 20_000;
pub const PAYLOAD: usize = 1000;

/// The two costs of a core, ns per packet.
pub struct Costs {
    pub send_ns: f64,
    pub receive_ns: f64,
}

/// A connected pair of one core.
pub trait Pair {
    /// Writes `n` packets at the sender; returns the datagrams it made.
    fn send(&mut self, n: usize, now: Instant) -> Vec<Vec<u8>>;
    /// Hands `datagrams` to the receiver; returns the RTP packets it gave.
    fn receive(&mut self, datagrams: Vec<Vec<u8>>, now: Instant) -> usize;
}

fn measure(name: &str, pair: &mut dyn Pair) -> Costs {
    // Warm up (and check that packets arrive whole).
    let datagrams = pair.send(1000, Instant::now());
    let got = pair.receive(datagrams, Instant::now());
    assert!(got >= 990, "{name}: only {got} of 1000 packets arrived");
    let (mut send, mut receive) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        let datagrams = pair.send(PACKETS, started);
        let sent = started.elapsed();
        assert!(datagrams.len() >= PACKETS, "{name}: {} datagrams for {PACKETS} packets", datagrams.len());
        let started = Instant::now();
        let got = pair.receive(datagrams, started);
        let received = started.elapsed();
        assert!(got >= PACKETS * 99 / 100, "{name}: {got} of {PACKETS} packets arrived");
        send.push(per_packet(sent));
        receive.push(per_packet(received));
    }
    let costs = Costs { send_ns: median(&mut send), receive_ns: median(&mut receive) };
    println!("{name:>6}: send {:>5.0} ns/packet, receive {:>5.0} ns/packet (median of 5 runs of {PACKETS})", costs.send_ns, costs.receive_ns);
    costs
}

fn per_packet(d: Duration) -> f64 {
    d.as_nanos() as f64 / PACKETS as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rtc = measure("rtc", &mut rtc_core::connect());
    let str0m = measure("str0m", &mut str0m_core::connect());
    // An SFU forwarding to 4 subscribers: one receive and four sends a packet.
    let forward = |c: &Costs| (c.receive_ns + 4.0 * c.send_ns) / 4.0;
    println!(
        "per forwarded packet at 1x4 (receive/4 + send): rtc {:.0} ns, str0m {:.0} ns; rtc/str0m {:.2}",
        forward(&rtc),
        forward(&str0m),
        forward(&rtc) / forward(&str0m)
    );
}
