//! A call's deadline, counted in the time the call itself used.
//!
//! Wasmtime interrupts a call when the engine's epoch (advanced every
//! [`EPOCH_TICK`] by the runtime's ticker thread) passes the store's
//! deadline: wall-clock time. On a busy machine, or a virtual machine
//! whose host takes its CPU away, a call that needs microseconds can be
//! descheduled past a 5 ms deadline; trapping it then would count a fault
//! against a healthy plugin, and enough of them make its supervisor give
//! up for good (seen: an SFU's forwarding stage given up in a loaded test
//! run). So when the epoch deadline comes, [`CallClock::overrun`] looks at
//! what the call used, its thread's CPU time plus what it asked to sleep,
//! and lets it go on while that is under the deadline. Time the machine
//! took away is forgiven up to [`GRACE`] of wall-clock time past the
//! deadline: a call that blocks in the host without using CPU is still
//! stopped then.
//!
//! The logic is pure (times in, verdict out); [`thread_cpu_time`] is the
//! one clock read, once per call when it is armed (about 0.5 µs on a VM)
//! and again only if the epoch deadline passes.

use super::EPOCH_TICK;
use std::time::Duration;
use wasmtime::UpdateDeadline;

/// Wall-clock time a call may take past its deadline while it has not
/// used its deadline's worth of time itself.
pub const GRACE: Duration = Duration::from_millis(100);

/// The call in progress: what it may use and what it has used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallClock {
    deadline: Duration,
    /// The thread's CPU time when the call was armed.
    cpu_at_start: Duration,
    /// Sleeps the call asked the host for.
    slept: Duration,
    /// The epoch past which the call stops whatever it used.
    last_epoch: u64,
}

impl CallClock {
    /// A call starting at `epoch` on a thread that has used `cpu` so far;
    /// returns the epoch deadline to set, in ticks from now.
    pub fn arm(&mut self, deadline: Duration, epoch: u64, cpu: Duration) -> u64 {
        *self = CallClock { deadline, cpu_at_start: cpu, slept: Duration::ZERO, last_epoch: epoch + ticks(deadline + GRACE) };
        ticks(deadline)
    }

    /// Counts a sleep the call asked for as time it used.
    pub fn slept(&mut self, wanted: Duration) {
        self.slept = self.slept.saturating_add(wanted);
    }

    /// The epoch deadline passed at `epoch`, the thread having used `cpu`:
    /// stop the call, or let it go on for what it has left (in ticks).
    pub fn overrun(&self, epoch: u64, cpu: Duration) -> UpdateDeadline {
        let used = cpu.saturating_sub(self.cpu_at_start).saturating_add(self.slept);
        if used >= self.deadline || epoch >= self.last_epoch {
            return UpdateDeadline::Interrupt;
        }
        UpdateDeadline::Continue(ticks(self.deadline - used).min(self.last_epoch - epoch))
    }
}

/// `d` in epoch ticks, plus one because the current tick may be almost over.
fn ticks(d: Duration) -> u64 {
    (d.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64).saturating_add(1)
}

/// The CPU time the calling thread has used (zero if the clock cannot be
/// read, which makes every deadline wall-clock time again).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which we own.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    match read {
        true => Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0)),
        false => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn stopped(verdict: UpdateDeadline) -> bool {
        matches!(verdict, UpdateDeadline::Interrupt)
    }

    #[test]
    fn a_call_that_computed_its_deadline_stops() {
        let mut clock = CallClock::default();
        assert_eq!(clock.arm(5 * MS, 100, 40 * MS), 6);
        assert!(stopped(clock.overrun(106, 45 * MS)));
    }

    #[test]
    fn a_descheduled_call_goes_on_for_what_it_has_left() {
        let mut clock = CallClock::default();
        clock.arm(5 * MS, 100, 40 * MS);
        // 6 ms of wall clock, 1 ms of CPU: 4 ms left, plus the tick in progress.
        assert!(matches!(clock.overrun(106, 41 * MS), UpdateDeadline::Continue(5)));
        assert!(stopped(clock.overrun(111, 45 * MS)));
    }

    #[test]
    fn sleeps_count_as_time_used() {
        let mut clock = CallClock::default();
        clock.arm(5 * MS, 0, Duration::ZERO);
        clock.slept(3 * MS);
        assert!(matches!(clock.overrun(6, MS), UpdateDeadline::Continue(2)));
        clock.slept(MS);
        assert!(stopped(clock.overrun(8, MS)));
    }

    #[test]
    fn past_the_grace_a_call_stops_whatever_it_used() {
        let mut clock = CallClock::default();
        clock.arm(5 * MS, 0, Duration::ZERO);
        // Blocked without CPU: extended, but never past deadline + grace.
        assert!(matches!(clock.overrun(100, Duration::ZERO), UpdateDeadline::Continue(6)));
        assert!(matches!(clock.overrun(104, Duration::ZERO), UpdateDeadline::Continue(2)));
        assert!(stopped(clock.overrun(106, Duration::ZERO)));
    }

    #[test]
    fn the_thread_s_cpu_time_grows_with_work() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() < before + 2 * MS {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu_time() >= before + 2 * MS);
    }
}
