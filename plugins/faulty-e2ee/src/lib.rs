//! The stock E2EE stage, made to fail on purpose (tests and demos).
//!
//! `[stage.config]`: `panic-every = N` panics on every Nth frame it is asked
//! to seal (counted across instances in the host state store, so a fresh
//! instance does not fail on the frame after the poison); every other key
//! is the stock stage's (`medianode-e2ee`).

use medianode_e2ee::stage::E2ee;
use medianode_sdk::{E2eeEvent, E2eeStatus, Encryption, FrameMeta, Payload, Stage, Verdict, host};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    pub panic_every: u64,
    /// The stock stage's own keys.
    #[serde(flatten)]
    pub stock: serde_json::Map<String, serde_json::Value>,
}

pub struct FaultyE2ee {
    inner: E2ee,
    every: u64,
    seen: u64,
}

const COUNT_KEY: &str = "faulty-count";

impl Stage for FaultyE2ee {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if config.panic_every == 0 {
            return Err("panic-every must be at least 1".into());
        }
        let seen = host::state_get(COUNT_KEY).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
        let inner = medianode_sdk::start::<E2ee>(&serde_json::Value::Object(config.stock).to_string())?;
        Ok(FaultyE2ee { inner, every: config.panic_every, seen })
    }
}

impl Encryption for FaultyE2ee {
    fn control(&mut self, event: E2eeEvent, out: &mut Vec<String>) {
        self.inner.control(event, out);
    }

    fn seal(&mut self, meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict {
        self.seen += 1;
        if self.seen.is_multiple_of(self.every) {
            let _ = host::state_put(COUNT_KEY, &self.seen.to_le_bytes());
            panic!("asked to fail on frame {}", self.seen);
        }
        self.inner.seal(meta, payload, out)
    }

    fn open(&mut self, meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict {
        self.inner.open(meta, payload, out)
    }

    fn released(&mut self) -> Vec<(FrameMeta, Vec<u8>)> {
        self.inner.released()
    }

    fn status(&self) -> E2eeStatus {
        self.inner.status()
    }
}

medianode_sdk::export_encryption!(FaultyE2ee);
