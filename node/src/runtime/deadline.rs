//! A call's deadline, forgiving the time the machine took away.
//!
//! Wasmtime interrupts a call when the engine's epoch (advanced every
//! [`EPOCH_TICK`] by the runtime's ticker thread) passes the store's
//! deadline: wall-clock time. On a busy machine, or a virtual machine whose
//! host takes its CPU away, a call that needs microseconds can be
//! descheduled past a 5 ms deadline; trapping it then counts a fault
//! against a healthy plugin, and enough of them make its supervisor give up
//! for good (seen: an SFU's forwarding stage given up in a loaded test run).
//!
//! So the first time the call is seen past its deadline,
//! [`CallClock::overrun`] notes its thread's CPU time (plus the sleeps it
//! asked the host for) and lets it go on, looking again every tick: it is
//! stopped once it has used [`AFTER`] more of either, or [`GRACE`] of wall
//! clock past its deadline, whichever comes first. A call the machine
//! descheduled is seen past its deadline only when it runs again, and then
//! finishes; a call that computes, loops or sleeps past its deadline is
//! stopped between the deadline and a tick (1 ms) past it, as a wall-clock
//! deadline stopped it (a stage that is always slow must not hold its
//! thread longer than before: a realtime pipeline's tick waits for it); a
//! call blocked in the host without using the CPU still ends.
//!
//! Reading a thread's CPU clock is a system call (0.5 µs on a VM, as much as
//! an empty plugin call), so it happens only past a deadline, never per
//! call. The logic is pure (times in, verdict out).

use super::EPOCH_TICK;
use std::time::Duration;
use wasmtime::UpdateDeadline;

/// CPU time (or sleep) a call may use once it is seen at its deadline,
/// looked at again every tick.
pub const AFTER: Duration = Duration::from_micros(500);

/// Wall-clock time a call may take past its deadline, however little it
/// used.
pub const GRACE: Duration = Duration::from_millis(100);

/// The call in progress: its deadline, and what it used once past it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallClock {
    /// The epoch past which the call stops whatever it used.
    last_epoch: u64,
    /// Sleeps the call asked for.
    slept: Duration,
    /// CPU time plus sleeps when the call was first seen past its deadline.
    past: Option<Duration>,
}

impl CallClock {
    /// A call starting at `epoch`; returns the epoch deadline to set, in
    /// ticks from now.
    pub fn arm(&mut self, deadline: Duration, epoch: u64) -> u64 {
        *self = CallClock { last_epoch: epoch + ticks(deadline + GRACE) + 1, slept: Duration::ZERO, past: None };
        ticks(deadline)
    }

    /// Counts a sleep the call asked for as time it used.
    pub fn slept(&mut self, wanted: Duration) {
        self.slept = self.slept.saturating_add(wanted);
    }

    /// The epoch deadline passed at `epoch`, the thread having used `cpu`
    /// (read now): stop the call, or let it go on (for so many ticks).
    pub fn overrun(&mut self, epoch: u64, cpu: Duration) -> UpdateDeadline {
        if epoch >= self.last_epoch {
            return UpdateDeadline::Interrupt;
        }
        let used = cpu.saturating_add(self.slept);
        let more = used.saturating_sub(*self.past.get_or_insert(used));
        if more >= AFTER {
            return UpdateDeadline::Interrupt;
        }
        UpdateDeadline::Continue(1)
    }
}

/// `d` in whole epoch ticks (at least one). The first look comes within
/// the tick before `d` has passed (the current tick may be almost over),
/// and the look a tick later stops a call that ran through it: so a call
/// that computes is stopped between `d` and one tick past it.
fn ticks(d: Duration) -> u64 {
    (d.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64).max(1)
}

/// The CPU time the calling thread has used (zero if the clock cannot be
/// read, which stops a call at its first look past the deadline, as a
/// wall-clock deadline would).
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
    fn a_call_that_computes_past_its_deadline_stops_a_tick_later() {
        let mut clock = CallClock::default();
        assert_eq!(clock.arm(5 * MS, 100), 5);
        // First seen at epoch 105, having used 45 ms in all.
        assert!(matches!(clock.overrun(105, 45 * MS), UpdateDeadline::Continue(1)));
        assert!(stopped(clock.overrun(106, 46 * MS)));
    }

    #[test]
    fn a_descheduled_call_goes_on_while_it_does_not_run() {
        let mut clock = CallClock::default();
        clock.arm(5 * MS, 100);
        assert!(matches!(clock.overrun(140, 41 * MS), UpdateDeadline::Continue(1)));
        // Descheduled again: 0.2 ms used since.
        assert!(matches!(clock.overrun(150, 41 * MS + MS / 5), UpdateDeadline::Continue(1)));
        assert!(stopped(clock.overrun(151, 41 * MS + MS / 2)));
    }

    #[test]
    fn sleeps_count_as_time_used() {
        let mut clock = CallClock::default();
        clock.arm(5 * MS, 0);
        assert!(matches!(clock.overrun(6, MS), UpdateDeadline::Continue(1)));
        clock.slept(MS);
        assert!(stopped(clock.overrun(7, MS)));
    }

    #[test]
    fn past_the_grace_a_call_stops_whatever_it_used() {
        let mut clock = CallClock::default();
        clock.arm(5 * MS, 0);
        // Blocked without CPU: let go on, but never past deadline + grace.
        assert!(matches!(clock.overrun(5, Duration::ZERO), UpdateDeadline::Continue(1)));
        assert!(matches!(clock.overrun(105, Duration::ZERO), UpdateDeadline::Continue(1)));
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
