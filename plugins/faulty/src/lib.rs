//! The faulty stage: an audio pass-through that fails on purpose, for tests
//! and demos of the node's isolation.
//!
//! `[stage.config]`:
//! - `fault`: how it fails — `"panic"`, `"unreachable"`, `"loop"` (never
//!   returns), `"slow"` (returns after `slow-ms`, past any sane deadline),
//!   `"memory-bomb"` (allocates until the memory limit), `"stack-overflow"`.
//! - `every = N`: fail on each block whose `sequence % N == N - 1`.
//! - `on-poison = true`: fail on each block that holds a NaN sample (the
//!   "poison" input).
//! - `init-failures = N`: the first `init` succeeds; the next N fail with
//!   `fault`. The count lives in the host state store, so it survives the
//!   re-instantiations it causes.
//!
//! Blocks that trigger nothing pass through unchanged.

use medianode_sdk::{AudioBlock, AudioDsp, Stage, host};
use serde::Deserialize;
use std::hint::black_box;

/// How the stage fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Panic,
    Unreachable,
    Loop,
    Slow,
    MemoryBomb,
    StackOverflow,
}

/// The stage's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub fault: Fault,
    #[serde(default)]
    pub every: Option<u64>,
    #[serde(default)]
    pub on_poison: bool,
    #[serde(default)]
    pub init_failures: u32,
    #[serde(default = "default_slow_ms")]
    pub slow_ms: u64,
}

fn default_slow_ms() -> u64 {
    50
}

/// Passes audio through, failing as configured.
#[derive(Debug)]
pub struct Faulty {
    config: Config,
}

const INITS_KEY: &str = "inits";

impl Stage for Faulty {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if config.every == Some(0) {
            return Err("every = 0 would fail on nothing; use every = 1 or more".into());
        }
        let inits = host::state_count(INITS_KEY)?;
        if inits > 1 && inits <= 1 + config.init_failures {
            fail(config.fault, config.slow_ms, "in init");
        }
        Ok(Faulty { config })
    }
}

impl AudioDsp for Faulty {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        let scheduled = self.config.every.is_some_and(|n| block.sequence % n == n - 1);
        let poisoned = self.config.on_poison && block.samples.iter().any(|s| s.is_nan());
        if scheduled || poisoned {
            fail(self.config.fault, self.config.slow_ms, &format!("on block {}", block.sequence));
        }
    }
}

fn fail(fault: Fault, slow_ms: u64, when: &str) {
    match fault {
        Fault::Panic => panic!("faulty stage: planned panic {when}"),
        Fault::Unreachable => unreachable_instruction(),
        Fault::Loop => loop {
            black_box(when);
        },
        Fault::Slow => {
            let until = host::monotonic_now() + slow_ms * 1_000_000;
            while host::monotonic_now() < until {
                black_box(when);
            }
        }
        Fault::MemoryBomb => {
            // Reserve without touching: growth, not page faults, is the point.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(Vec::with_capacity(1 << 20));
                black_box(&hoard);
            }
        }
        Fault::StackOverflow => {
            black_box(recurse(black_box(1)));
        }
    }
}

/// Recurses without end; `black_box` and the addition after the call keep
/// the optimizer from turning it into a loop.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    recurse(black_box(depth + 1)).wrapping_add(depth)
}

#[cfg(target_arch = "wasm32")]
fn unreachable_instruction() {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn unreachable_instruction() {
    std::process::abort()
}

medianode_sdk::export_audio_dsp!(Faulty);
