//! Liveness of one connection, as a sans-IO state machine.
//!
//! Anything received from the peer (a message or a pong) proves it alive.
//! After `interval` without hearing from it, the host sends a ping; after
//! `timeout` without hearing from it, the connection is dead and closed.
//! The driver asks [`Heartbeat::poll`] what to do at `now` and when to ask
//! again, so no timer lives in here.

use std::time::{Duration, Instant};

/// The defaults: ping every 10 s, dead after 30 s of silence.
pub const INTERVAL: Duration = Duration::from_secs(10);
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What the driver should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing until this instant.
    WaitUntil(Instant),
    /// Send a ping now (then poll again).
    Ping,
    /// The peer has been silent too long: close the connection.
    Dead,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    last_heard: Instant,
    last_ping: Option<Instant>,
}

impl Heartbeat {
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Heartbeat {
        Heartbeat { interval, timeout, last_heard: now, last_ping: None }
    }

    /// The peer sent something (a message, a pong).
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    pub fn poll(&mut self, now: Instant) -> Beat {
        let dead_at = self.last_heard + self.timeout;
        if now >= dead_at {
            return Beat::Dead;
        }
        // The next ping is due `interval` after the later of what we heard
        // and what we last sent.
        let since = self.last_ping.map_or(self.last_heard, |p| p.max(self.last_heard));
        let ping_at = since + self.interval;
        if now >= ping_at {
            self.last_ping = Some(now);
            return Beat::Ping;
        }
        Beat::WaitUntil(ping_at.min(dead_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the heartbeat second by second; returns what happened when.
    fn run(heard_at: &[u64], until: u64) -> Vec<(u64, Beat)> {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, INTERVAL, TIMEOUT);
        let mut events = Vec::new();
        for s in 0..=until {
            let now = t0 + Duration::from_secs(s);
            if heard_at.contains(&s) {
                hb.heard(now);
            }
            match hb.poll(now) {
                Beat::WaitUntil(_) => {}
                other => {
                    events.push((s, other));
                    if other == Beat::Dead {
                        break;
                    }
                }
            }
        }
        events
    }

    #[test]
    fn a_silent_peer_is_pinged_every_10s_and_dead_at_30s() {
        assert_eq!(run(&[], 60), vec![(10, Beat::Ping), (20, Beat::Ping), (30, Beat::Dead)]);
    }

    #[test]
    fn a_peer_that_answers_stays_alive() {
        // It answers each ping a second later.
        let events = run(&[11, 22, 33, 44, 55], 60);
        assert!(events.iter().all(|(_, b)| *b == Beat::Ping), "{events:?}");
        assert_eq!(events.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![10, 21, 32, 43, 54]);
    }

    #[test]
    fn wait_until_names_the_next_deadline() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, INTERVAL, TIMEOUT);
        assert_eq!(hb.poll(t0), Beat::WaitUntil(t0 + INTERVAL));
    }
}
