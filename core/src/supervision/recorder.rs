//! The flight recorder: each stage's last N actions, kept for crash reports.
//!
//! Records are small `Copy` values in a ring allocated once, so recording on
//! the hot path never allocates.

use super::{FailurePolicy, TrapKind};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Instant;

/// One thing a stage did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A batch went into the plugin and came back.
    Call { items: u32, first_sequence: Option<u64>, micros: u32 },
    /// A call failed.
    Fault { kind: TrapKind, item: Option<u32> },
    /// An input that caused a fault was set aside for good.
    Quarantine { sequence: u64 },
    /// A new instance entered service (`standby`: it was already started).
    Restart { standby: bool, micros: u32 },
    /// A spare instance was started.
    StandbyReady { micros: u32 },
    /// Items met the failure policy because no instance could serve.
    Down { items: u32, policy: FailurePolicy },
    /// The stage gave up restarting.
    GiveUp,
}

/// An action and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Record {
    /// Milliseconds since the stage started.
    pub at_ms: f64,
    #[serde(flatten)]
    pub action: Action,
}

/// A fixed-size ring of the latest records.
#[derive(Debug)]
pub struct FlightRecorder {
    records: VecDeque<Record>,
    capacity: usize,
    started: Instant,
}

impl FlightRecorder {
    pub fn new(capacity: usize, started: Instant) -> FlightRecorder {
        FlightRecorder { records: VecDeque::with_capacity(capacity), capacity, started }
    }

    pub fn record(&mut self, now: Instant, action: Action) {
        if self.capacity == 0 {
            return;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        let at_ms = now.saturating_duration_since(self.started).as_secs_f64() * 1000.0;
        self.records.push_back(Record { at_ms, action });
    }

    /// The records, oldest first.
    pub fn snapshot(&self) -> Vec<Record> {
        self.records.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_latest_records() {
        let t0 = Instant::now();
        let mut r = FlightRecorder::new(3, t0);
        for sequence in 0..5 {
            r.record(t0, Action::Quarantine { sequence });
        }
        let kept: Vec<_> = r.snapshot().iter().map(|r| r.action).collect();
        assert_eq!(kept, (2..5).map(|sequence| Action::Quarantine { sequence }).collect::<Vec<_>>());
    }
}
