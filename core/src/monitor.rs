//! The system monitor's judgement: given a reading of the process, which
//! thresholds are crossed, and what changed since the last reading (an
//! alert raised, or one cleared). The host takes the readings on its
//! schedule, logs the changes and shows the alerts (`/health`, metrics).

use crate::config::MonitorConfig;

/// One reading of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub rss_bytes: u64,
    pub tasks: u64,
}

/// What a threshold is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Rss,
    Tasks,
}

impl Limit {
    pub const ALL: [Limit; 2] = [Limit::Rss, Limit::Tasks];

    pub fn name(self) -> &'static str {
        match self {
            Limit::Rss => "rss",
            Limit::Tasks => "tasks",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Limit::Rss => "resident memory",
            Limit::Tasks => "async tasks",
        }
    }
}

/// An alert raised or cleared by a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub limit: Limit,
    /// True: now above its threshold; false: back at or below it.
    pub raised: bool,
    pub value: u64,
    pub threshold: u64,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (value, threshold) = match self.limit {
            Limit::Rss => (format!("{:.1} MB", self.value as f64 / 1e6), format!("{:.1} MB", self.threshold as f64 / 1e6)),
            Limit::Tasks => (self.value.to_string(), self.threshold.to_string()),
        };
        match self.raised {
            true => write!(f, "{} is {value}, above the threshold of {threshold}", self.limit.what()),
            false => write!(f, "{} is back to {value}, within the threshold of {threshold}", self.limit.what()),
        }
    }
}

/// The thresholds and which of them are crossed now.
#[derive(Debug, Clone)]
pub struct Monitor {
    config: MonitorConfig,
    /// The change that raised each alert still up, by [`Limit::ALL`] order.
    raised: [Option<Change>; 2],
}

impl Monitor {
    pub fn new(config: MonitorConfig) -> Monitor {
        Monitor { config, raised: [None, None] }
    }

    /// Judges a reading: the alerts it raises and clears.
    pub fn observe(&mut self, reading: Reading) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, limit) in Limit::ALL.into_iter().enumerate() {
            let (value, threshold) = match limit {
                Limit::Rss => (reading.rss_bytes, self.config.max_rss),
                Limit::Tasks => (reading.tasks, self.config.max_tasks),
            };
            let above = value > threshold;
            if above != self.raised[i].is_some() {
                let change = Change { limit, raised: above, value, threshold };
                self.raised[i] = above.then(|| change.clone());
                changes.push(change);
            }
        }
        changes
    }

    /// The alerts up now, each as the change that raised it.
    pub fn alerts(&self) -> impl Iterator<Item = &Change> {
        self.raised.iter().flatten()
    }

    pub fn every(&self) -> std::time::Duration {
        self.config.every
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn raises_once_and_clears_once() {
        let mut m = Monitor::new(MonitorConfig { every: Duration::from_secs(30), max_rss: 500_000_000, max_tasks: 1000 });
        assert!(m.observe(Reading { rss_bytes: 100_000_000, tasks: 10 }).is_empty());
        let up = m.observe(Reading { rss_bytes: 600_000_000, tasks: 10 });
        assert_eq!(up, [Change { limit: Limit::Rss, raised: true, value: 600_000_000, threshold: 500_000_000 }]);
        assert_eq!(up[0].to_string(), "resident memory is 600.0 MB, above the threshold of 500.0 MB");
        // Still above: nothing new, the alert stays up.
        assert!(m.observe(Reading { rss_bytes: 700_000_000, tasks: 10 }).is_empty());
        assert_eq!(m.alerts().count(), 1);
        let both = m.observe(Reading { rss_bytes: 400_000_000, tasks: 1001 });
        assert_eq!(both.iter().map(|c| (c.limit, c.raised)).collect::<Vec<_>>(), [(Limit::Rss, false), (Limit::Tasks, true)]);
        assert_eq!(both[0].to_string(), "resident memory is back to 400.0 MB, within the threshold of 500.0 MB");
        assert_eq!(m.alerts().map(|c| c.limit).collect::<Vec<_>>(), [Limit::Tasks]);
    }
}
