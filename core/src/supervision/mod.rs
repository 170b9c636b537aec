//! What supervision of a stage decides, apart from running it: the limits a
//! stage runs under, what happens to its items while it is down, how it is
//! restarted ([`backoff`]), and what it remembers for crash reports
//! ([`recorder`]).
//!
//! The host's supervisor (`medianode::supervisor`) owns the instances and the
//! threads; everything here is plain data and sans-IO state machines that
//! take `now`.

pub mod backoff;
pub mod recorder;

use std::time::Duration;

/// The largest linear memory a stage may ask for (`limits.memory`); the
/// host's instance pool is built for it.
pub const MAX_MEMORY: u64 = 4 << 30;

/// Resource limits of one stage (`[stage.limits]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Linear memory ceiling in bytes.
    pub memory: u64,
    /// Longest a single processing call may run (wall-clock time). A call
    /// the machine descheduled past it goes on while it does not run, up
    /// to 100 ms of wall clock past the deadline (the node's
    /// `runtime::deadline`).
    pub deadline: Duration,
    /// Longest instantiation plus `init` may run (start-up does more work
    /// than a call, and happens off the hot path).
    pub init_deadline: Duration,
    /// Wasm stack ceiling in bytes.
    pub stack: usize,
    /// State store quota in bytes.
    pub state: u64,
    /// Plugin log (log calls, stdout, stderr): bytes per second, with a
    /// burst of four seconds' worth.
    pub log_bytes: u64,
    /// Plugin log lines per second, with a burst of four seconds' worth.
    pub log_lines: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            deadline: Duration::from_millis(5),
            init_deadline: Duration::from_secs(1),
            stack: 512 << 10,
            state: 1 << 20,
            log_bytes: 16 << 10,
            log_lines: 50,
        }
    }
}

/// What a stage does when no instance can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Drop the items (the default; the only choice for E2EE stages besides `stop`).
    FailClosed,
    /// Pass the items around the stage unchanged.
    FailOpen,
    /// Drop the items while restarting; stop the pipeline when the stage gives up.
    Stop,
}

impl FailurePolicy {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "fail-closed",
            FailurePolicy::FailOpen => "fail-open",
            FailurePolicy::Stop => "stop",
        }
    }
}

/// Why a call into a plugin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrapKind {
    /// A Rust panic (the plugin logged `panicked at` before trapping).
    Panic,
    /// An `unreachable` instruction without a panic message.
    Unreachable,
    /// The call ran past its deadline (a slow or endless loop).
    Deadline,
    /// The plugin tried to grow memory (or a table) past its limit.
    MemoryLimit,
    /// The wasm call stack ran out.
    StackOverflow,
    /// Any other trap (out-of-bounds access, bad cast, division by zero...).
    OtherTrap,
    /// `init` returned an error.
    InitError,
    /// The plugin answered with the wrong shape (e.g. fewer audio blocks).
    Contract,
    /// The instance could not be created at all.
    Instantiate,
}

impl TrapKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [TrapKind; 9] = [
        TrapKind::Panic,
        TrapKind::Unreachable,
        TrapKind::Deadline,
        TrapKind::MemoryLimit,
        TrapKind::StackOverflow,
        TrapKind::OtherTrap,
        TrapKind::InitError,
        TrapKind::Contract,
        TrapKind::Instantiate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TrapKind::Panic => "panic",
            TrapKind::Unreachable => "unreachable",
            TrapKind::Deadline => "deadline",
            TrapKind::MemoryLimit => "memory-limit",
            TrapKind::StackOverflow => "stack-overflow",
            TrapKind::OtherTrap => "trap",
            TrapKind::InitError => "init-error",
            TrapKind::Contract => "contract",
            TrapKind::Instantiate => "instantiate",
        }
    }
}
