//! A per-connection message budget: a token bucket.
//!
//! The bucket holds up to `burst` tokens and refills at `rate` per second;
//! each message takes one. A client may send a burst (joining sends several
//! messages at once), but not sustain more than `rate`. Over budget, the
//! host answers with a `rate-limited` error instead of passing the message
//! on; the connection stays open.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Instant, rate_per_second: f64, burst: u32) -> TokenBucket {
        TokenBucket { rate: rate_per_second.max(0.0), burst: f64::from(burst), tokens: f64::from(burst), last: now }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.take(now, 1.0)
    }

    /// Takes `cost` tokens if there are as many (a byte budget takes one per
    /// byte).
    pub fn take(&mut self, now: Instant, cost: f64) -> bool {
        let enough = self.has(now, cost);
        if enough {
            self.tokens -= cost;
        }
        enough
    }

    /// Whether `cost` tokens are there, taking none (for spending from two
    /// buckets only when both have enough).
    pub fn has(&mut self, now: Instant, cost: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens >= cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0, 10.0, 20);
        let burst = (0..100).filter(|_| bucket.allow(t0)).count();
        assert_eq!(burst, 20);
        // A flood of 1000 messages over 10 s passes ~100 (10/s).
        let passed = (0..1000).filter(|i| bucket.allow(t0 + Duration::from_millis(10 * i + 10))).count();
        assert!((95..=101).contains(&passed), "{passed}");
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut bucket = TokenBucket::new(t0, 1.0, 1);
        assert!(bucket.allow(t0));
        assert!(!bucket.allow(t0 - Duration::from_secs(50)));
        assert!(!bucket.allow(t0));
    }
}
