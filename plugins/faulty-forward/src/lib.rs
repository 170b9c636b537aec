//! The stock forwarding stage, made to fail on purpose (tests and demos).
//!
//! `[stage.config]`: `panic-every = N` panics on every Nth packet it is asked
//! about (counted across instances in the host state store, so a fresh
//! instance does not fail on the packet after the poison); with
//! `hang = true` it loops forever there instead (its deadline ends it). The
//! rest is the stock stage's (`medianode-forward`).

use medianode_forward::RoomForwarder;
use medianode_sdk::{Forwarding, PacketMeta, RouteChange, Stage, host};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub panic_every: u64,
    #[serde(default)]
    pub hang: bool,
}

pub struct FaultyForward {
    inner: RoomForwarder,
    every: u64,
    hang: bool,
    seen: u64,
}

const COUNT_KEY: &str = "faulty-count";

impl Stage for FaultyForward {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if config.panic_every == 0 {
            return Err("panic-every must be at least 1".into());
        }
        let seen = host::state_get(COUNT_KEY).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
        let inner = RoomForwarder::new(Default::default())?;
        Ok(FaultyForward { inner, every: config.panic_every, hang: config.hang, seen })
    }
}

impl Forwarding for FaultyForward {
    fn update(&mut self, change: RouteChange) {
        self.inner.update(change);
    }

    fn forward(&mut self, packet: &PacketMeta, out: &mut Vec<u64>) {
        self.seen += 1;
        if self.seen.is_multiple_of(self.every) {
            let _ = host::state_put(COUNT_KEY, &self.seen.to_le_bytes());
            if self.hang {
                // Until the deadline interrupts it.
                loop {
                    std::hint::black_box(&mut self.seen);
                }
            }
            panic!("asked to fail on packet {}", self.seen);
        }
        self.inner.forward(packet, out);
    }

    fn keyframes(&mut self, wanted: &mut Vec<medianode_sdk::KeyframeRequest>) {
        self.inner.keyframes(wanted);
    }
}

medianode_sdk::export_forwarding!(FaultyForward);
