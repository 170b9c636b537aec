//! Pulses: how the watchdog knows that the threads doing the node's work
//! are not stuck.
//!
//! Every data thread (each [`super::thread::StageThread`], each
//! pipeline's driver) holds a [`Pulse`] and marks it busy while it works
//! and idle between jobs. A thread busy on one job for longer than any job
//! may take (a plugin call is bounded by its deadline, 10 s at most) is
//! stuck: a host bug, a deadlock. The systemd watchdog stops pinging then,
//! and systemd restarts the node.
//!
//! The registry is the process's, not a node's: systemd watches a process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Longer than any one job may take: a thread busy this long is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// One thread's beat.
#[derive(Debug)]
pub struct Pulse {
    name: String,
    /// Microseconds since [`EPOCH`] plus one when the current job started;
    /// 0 while idle.
    busy_since: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static PULSES: Mutex<Vec<Weak<Pulse>>> = Mutex::new(Vec::new());

fn micros_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_micros().min(u128::from(u64::MAX - 1)) as u64
}

impl Pulse {
    /// A pulse for the thread `name`, watched until it is dropped.
    pub fn register(name: &str) -> Arc<Pulse> {
        let pulse = Arc::new(Pulse { name: name.to_string(), busy_since: AtomicU64::new(0) });
        let mut all = PULSES.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|p| p.strong_count() > 0);
        all.push(Arc::downgrade(&pulse));
        pulse
    }

    pub fn busy(&self) {
        self.busy_since.store(micros_since_epoch(Instant::now()) + 1, Ordering::Relaxed);
    }

    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// How long it has been on its current job at `now`, if it is on one.
    fn busy_for(&self, now: Instant) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_micros(micros_since_epoch(now).saturating_sub(since - 1))),
        }
    }
}

/// The threads busy on one job for longer than `after`, and for how long.
pub fn stuck(now: Instant, after: Duration) -> Vec<(String, Duration)> {
    let all = PULSES.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .filter_map(Weak::upgrade)
        .filter_map(|p| p.busy_for(now).filter(|busy| *busy > after).map(|busy| (p.name.clone(), busy)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_busy_too_long_is_stuck_and_an_idle_one_never_is() {
        let worker = Pulse::register("test-worker");
        let mine = |list: Vec<(String, Duration)>| list.into_iter().filter(|(n, _)| n == "test-worker").count();
        let now = Instant::now();
        assert_eq!(mine(stuck(now + Duration::from_secs(3600), STUCK_AFTER)), 0, "idle");
        worker.busy();
        assert_eq!(mine(stuck(now, STUCK_AFTER)), 0, "busy, not for long");
        assert_eq!(mine(stuck(now + Duration::from_secs(61), STUCK_AFTER)), 1, "busy for a minute");
        worker.idle();
        assert_eq!(mine(stuck(now + Duration::from_secs(61), STUCK_AFTER)), 0);
        worker.busy();
        drop(worker);
        assert_eq!(mine(stuck(now + Duration::from_secs(61), STUCK_AFTER)), 0, "gone with its thread");
    }
}
