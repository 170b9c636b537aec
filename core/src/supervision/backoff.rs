//! When to bring a failed stage back, and when to stop trying.
//!
//! A sans-IO state machine: it never sleeps or reads a clock; every call
//! takes `now`. The supervisor asks it after each failure and before each
//! restart, and tests drive it with made-up instants.
//!
//! The rules, after Erlang/OTP supervisors and Kubernetes' CrashLoopBackOff:
//! - the first failure after a healthy period restarts at once;
//! - each further failure waits `base * 2^(n-2)`, capped at `cap`, spread by
//!   ±`jitter` so that many stages failing together do not restart together;
//! - an instance that served for `healthy_after` resets the sequence;
//! - more than `max_restarts` failures within `window` gives up: the stage's
//!   failure policy then applies for good;
//! - so does more than `long_max_restarts` within `long_window` (by default
//!   30 in 10 minutes): a slow crash loop, one fault every few seconds, that
//!   the short window never sees.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The restart settings of one stage (`[stage.restart]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RestartConfig {
    /// How many failures `window` may hold before the stage gives up.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts`.
    pub window: Duration,
    /// The second restart's delay; later ones double it.
    pub backoff_base: Duration,
    /// The longest delay.
    pub backoff_cap: Duration,
    /// The slow crash loop's limit: failures within `long_window`.
    pub long_max_restarts: u32,
    pub long_window: Duration,
    /// Serving this long without failing resets the backoff.
    pub healthy_after: Duration,
    /// Each delay is multiplied by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Keep a started spare instance for instant failover.
    pub standby: bool,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            max_restarts: 5,
            window: Duration::from_secs(10),
            long_max_restarts: 30,
            long_window: Duration::from_secs(600),
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_secs(5),
            healthy_after: Duration::from_secs(10),
            jitter: 0.2,
            standby: true,
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Bring a new instance into service at `at` (`delay` after the failure).
    Restart { at: Instant, delay: Duration, attempt: u32 },
    /// Too many failures in the window: apply the failure policy for good.
    GiveUp { failures: usize },
}

/// The restart state of one stage.
#[derive(Debug)]
pub struct Backoff {
    config: RestartConfig,
    /// Failure times within the window, oldest first.
    recent: VecDeque<Instant>,
    /// Failure times within the long window, oldest first.
    recent_long: VecDeque<Instant>,
    /// Failures since the stage was last healthy.
    consecutive: u32,
    /// When the current instance entered service.
    serving_since: Option<Instant>,
    /// No instance may start before this.
    retry_at: Option<Instant>,
    gave_up: bool,
    rng: StdRng,
}

impl Backoff {
    /// A fresh policy; `seed` makes the jitter reproducible.
    pub fn new(config: RestartConfig, seed: u64) -> Backoff {
        Backoff {
            recent: VecDeque::with_capacity((config.max_restarts as usize).saturating_add(1).min(64)),
            recent_long: VecDeque::with_capacity((config.long_max_restarts as usize).saturating_add(1).min(64)),
            config,
            consecutive: 0,
            serving_since: None,
            retry_at: None,
            gave_up: false,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn config(&self) -> &RestartConfig {
        &self.config
    }

    /// Records that an instance entered service at `now`.
    pub fn on_started(&mut self, now: Instant) {
        self.serving_since = Some(now);
        self.retry_at = None;
    }

    /// Records a failure at `now` and decides what follows. `serving_lost`
    /// says whether the instance in service died; otherwise an instance
    /// failed to start (a standby, say) while the serving one carries on.
    pub fn on_failure(&mut self, now: Instant, serving_lost: bool) -> Decision {
        let healthy = self.serving_since.is_some_and(|since| now.saturating_duration_since(since) >= self.config.healthy_after);
        if healthy {
            self.consecutive = 0;
        }
        // A start failure restarts the healthy clock, so that repeated start
        // failures back off instead of each counting as the first.
        self.serving_since = match (serving_lost, healthy) {
            (true, _) => None,
            (false, true) => Some(now),
            (false, false) => self.serving_since,
        };
        while self.recent.front().is_some_and(|&t| now.saturating_duration_since(t) >= self.config.window) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        while self.recent_long.front().is_some_and(|&t| now.saturating_duration_since(t) >= self.config.long_window) {
            self.recent_long.pop_front();
        }
        self.recent_long.push_back(now);
        // Each deque holds one more than its limit at most: past it, we stop.
        let short = self.recent.len() > self.config.max_restarts as usize;
        let long = self.recent_long.len() > self.config.long_max_restarts as usize;
        if self.gave_up || short || long {
            self.gave_up = true;
            let failures = if short { self.recent.len() } else { self.recent_long.len() };
            return Decision::GiveUp { failures };
        }
        self.consecutive += 1;
        let delay = self.delay(self.consecutive);
        let at = now + delay;
        self.retry_at = Some(at);
        Decision::Restart { at, delay, attempt: self.consecutive }
    }

    /// Whether a new instance may be brought into service at `now`.
    pub fn may_start(&self, now: Instant) -> bool {
        !self.gave_up && self.retry_at.is_none_or(|at| now >= at)
    }

    /// Whether the stage has given up for good.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Failures since the stage was last healthy.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// The delay before restart number `attempt` (1 = the first).
    fn delay(&mut self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let exp = (attempt - 2).min(30);
        let base = self.config.backoff_base.saturating_mul(1 << exp).min(self.config.backoff_cap);
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 { self.rng.random_range(1.0 - jitter..=1.0 + jitter) } else { 1.0 };
        base.mul_f64(factor).min(self.config.backoff_cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RestartConfig {
        RestartConfig {
            max_restarts: 4,
            window: Duration::from_secs(10),
            long_max_restarts: 1000,
            long_window: Duration::from_secs(600),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(350),
            healthy_after: Duration::from_secs(5),
            jitter: 0.0,
            standby: true,
        }
    }

    fn delay_of(d: Decision) -> Duration {
        match d {
            Decision::Restart { delay, .. } => delay,
            Decision::GiveUp { .. } => panic!("gave up"),
        }
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::new(config(), 1);
        let ms = |n| Duration::from_millis(n);
        assert_eq!(delay_of(b.on_failure(t0, true)), ms(0));
        assert_eq!(delay_of(b.on_failure(t0 + ms(1), true)), ms(100));
        assert!(!b.may_start(t0 + ms(100)));
        assert!(b.may_start(t0 + ms(101)));
        assert_eq!(delay_of(b.on_failure(t0 + ms(200), true)), ms(200));
        assert_eq!(delay_of(b.on_failure(t0 + ms(500), true)), ms(350));
    }

    #[test]
    fn a_healthy_period_resets_the_backoff() {
        let t0 = Instant::now();
        let mut b = Backoff::new(config(), 1);
        b.on_failure(t0, true);
        b.on_started(t0);
        assert_eq!(delay_of(b.on_failure(t0 + Duration::from_secs(1), true)), Duration::from_millis(100));
        b.on_started(t0 + Duration::from_secs(2));
        // Served 5 s without failing: the next failure restarts at once.
        assert_eq!(delay_of(b.on_failure(t0 + Duration::from_secs(7), true)), Duration::ZERO);
    }

    #[test]
    fn too_many_failures_in_the_window_give_up_for_good() {
        let t0 = Instant::now();
        let mut b = Backoff::new(config(), 1);
        for i in 0..4 {
            assert!(matches!(b.on_failure(t0 + Duration::from_secs(i), true), Decision::Restart { .. }));
        }
        assert_eq!(b.on_failure(t0 + Duration::from_secs(4), true), Decision::GiveUp { failures: 5 });
        assert!(!b.may_start(t0 + Duration::from_secs(100)));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut b = Backoff::new(config(), 1);
        for i in 0..20 {
            let d = b.on_failure(t0 + Duration::from_secs(3 * i), true);
            assert!(matches!(d, Decision::Restart { .. }), "failure {i}: {d:?}");
        }
    }

    #[test]
    fn start_failures_back_off_without_stopping_the_healthy_clock() {
        let t0 = Instant::now();
        let mut b = Backoff::new(config(), 1);
        b.on_started(t0);
        // A standby fails to start twice while the active instance serves.
        assert_eq!(delay_of(b.on_failure(t0 + Duration::from_secs(6), false)), Duration::ZERO);
        assert_eq!(delay_of(b.on_failure(t0 + Duration::from_secs(7), false)), Duration::from_millis(100));
        // The active instance has now served 5 s since the first start failure.
        assert_eq!(delay_of(b.on_failure(t0 + Duration::from_secs(11), true)), Duration::ZERO);
    }

    #[test]
    fn a_slow_crash_loop_trips_the_long_window() {
        let t0 = Instant::now();
        let mut b = Backoff::new(RestartConfig { long_max_restarts: 5, long_window: Duration::from_secs(60), ..config() }, 1);
        // One fault every 3 s: the 10 s window never holds more than 4.
        for i in 0..5 {
            assert!(matches!(b.on_failure(t0 + Duration::from_secs(3 * i), true), Decision::Restart { .. }), "fault {i}");
        }
        assert_eq!(b.on_failure(t0 + Duration::from_secs(15), true), Decision::GiveUp { failures: 6 });
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let t0 = Instant::now();
        let mut b = Backoff::new(RestartConfig { jitter: 0.5, max_restarts: 100, ..config() }, 7);
        b.on_failure(t0, true);
        for i in 1..50 {
            let d = delay_of(b.on_failure(t0 + Duration::from_millis(i), true));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(350), "{d:?}");
        }
    }
}
