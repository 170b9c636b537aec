//! A stage's log: everything its plugin says, within a budget.
//!
//! A plugin speaks through the `host.log` call and through WASI stdout and
//! stderr (`println!`, `eprintln!`, the default panic hook). All three end
//! here, as lines in the node's log under the `plugin` target, labelled
//! with the stage and where the line came from. Plugin text is data:
//!
//! - control characters (newlines, carriage returns, ANSI escapes) and
//!   quotes are escaped, so a plugin cannot start a line of its own or pose
//!   as a host field, in the text format or in JSON;
//! - a line longer than [`MAX_LINE`] bytes is cut, and says how much was cut;
//! - lines and bytes per second are budgeted per stage (`limits.log-lines`,
//!   `limits.log`, with a burst of [`BURST_SECONDS`] seconds' worth): over
//!   budget, lines are dropped and counted, and the host says so at most
//!   once a second.
//!
//! The counters are part of the stage's metrics (`log_lines`, `log_bytes`,
//! `log_dropped_lines`, `log_dropped_bytes`, `log_truncated`).

use medianode_core::signaling::rate_limit::TokenBucket;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest line kept, in bytes of plugin text (before escaping).
pub const MAX_LINE: usize = 1024;

/// Seconds of budget a quiet stage may spend at once.
pub const BURST_SECONDS: u32 = 4;

/// How often the host reports that a stage's log is over budget.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The `host.log` call, at this level.
    Log(tracing::Level),
    Stdout,
    Stderr,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Log(_) => "log",
            Origin::Stdout => "stdout",
            Origin::Stderr => "stderr",
        }
    }
}

/// Counters of what a stage's plugin logged and what was dropped.
#[derive(Debug, Default)]
pub struct LogCounters {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped_lines: AtomicU64,
    pub dropped_bytes: AtomicU64,
    pub truncated: AtomicU64,
}

struct Budget {
    lines: TokenBucket,
    bytes: TokenBucket,
    /// Drops since the host last said so, and when it did.
    unreported: (u64, u64),
    reported_at: Option<Instant>,
}

/// One stage's log.
pub struct StageLog {
    stage: String,
    budget: Mutex<Budget>,
    pub counters: LogCounters,
}

impl StageLog {
    /// A log for `stage` allowing `lines` lines and `bytes` bytes a second.
    pub fn new(stage: &str, lines: u32, bytes: u64) -> StageLog {
        let now = Instant::now();
        let burst = |per_second: u64| u32::try_from(per_second.saturating_mul(u64::from(BURST_SECONDS))).unwrap_or(u32::MAX);
        StageLog {
            stage: stage.to_string(),
            budget: Mutex::new(Budget {
                lines: TokenBucket::new(now, f64::from(lines), burst(u64::from(lines))),
                bytes: TokenBucket::new(now, bytes as f64, burst(bytes)),
                unreported: (0, 0),
                reported_at: None,
            }),
            counters: LogCounters::default(),
        }
    }

    /// Logs one line of plugin text (a line break in it is escaped, not
    /// obeyed: split lines first, see [`LineSplitter`]).
    pub fn line(&self, origin: Origin, text: &[u8]) {
        self.line_at(Instant::now(), origin, text, 0);
    }

    /// [`StageLog::line`] at a given time (tests drive the budget with it),
    /// for a line that was already cut by `cut` bytes.
    pub fn line_at(&self, now: Instant, origin: Origin, text: &[u8], cut: usize) {
        let kept = text.len().min(MAX_LINE);
        let cut = text.len() - kept + cut;
        let allowed = {
            let mut budget = crate::runtime::lock(&self.budget);
            let allowed = budget.lines.has(now, 1.0) && budget.bytes.has(now, kept as f64);
            if allowed {
                budget.lines.take(now, 1.0);
                budget.bytes.take(now, kept as f64);
            }
            if !allowed {
                budget.unreported.0 += 1;
                budget.unreported.1 += (kept + cut) as u64;
                let due = budget.reported_at.is_none_or(|at| now.saturating_duration_since(at) >= DROP_REPORT_EVERY);
                if due {
                    let (lines, bytes) = std::mem::take(&mut budget.unreported);
                    budget.reported_at = Some(now);
                    tracing::warn!(
                        stage = %self.stage,
                        dropped_lines = lines,
                        dropped_bytes = bytes,
                        "the plugin's log is over its budget (limits.log-lines, limits.log); lines are being dropped"
                    );
                }
            }
            allowed
        };
        let c = &self.counters;
        if !allowed {
            c.dropped_lines.fetch_add(1, Ordering::Relaxed);
            c.dropped_bytes.fetch_add((kept + cut) as u64, Ordering::Relaxed);
            return;
        }
        c.lines.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(kept as u64, Ordering::Relaxed);
        if cut > 0 {
            c.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let text = escape(&text[..kept]);
        let stage = self.stage.as_str();
        let from = origin.name();
        macro_rules! emit {
            ($level:ident) => {
                match cut {
                    0 => tracing::$level!(target: "plugin", stage, from, text = %text),
                    cut => tracing::$level!(target: "plugin", stage, from, text = %text, cut_bytes = cut),
                }
            };
        }
        match origin {
            Origin::Log(tracing::Level::TRACE) => emit!(trace),
            Origin::Log(tracing::Level::DEBUG) => emit!(debug),
            Origin::Log(tracing::Level::INFO) | Origin::Stdout => emit!(info),
            Origin::Log(tracing::Level::WARN) | Origin::Stderr => emit!(warn),
            Origin::Log(_) => emit!(error),
        }
    }

    /// The counters as JSON, for the stage's metrics.
    pub fn snapshot(&self) -> serde_json::Value {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "log_lines": get(&c.lines),
            "log_bytes": get(&c.bytes),
            "log_dropped_lines": get(&c.dropped_lines),
            "log_dropped_bytes": get(&c.dropped_bytes),
            "log_truncated": get(&c.truncated),
        })
    }
}

/// Plugin text as a single-line string: invalid UTF-8 replaced, control
/// characters, quotes and backslashes escaped.
pub fn escape(text: &[u8]) -> String {
    String::from_utf8_lossy(text).escape_debug().to_string()
}

/// [`escape`]d plugin text of at most `max` bytes (escaping can make text
/// several times longer, so the cut comes after it), saying how much was
/// cut.
pub fn escape_cut(text: &[u8], max: usize) -> String {
    let mut escaped = escape(&text[..text.len().min(max)]);
    if escaped.len() > max || text.len() > max {
        escaped.truncate(escaped.floor_char_boundary(max));
        escaped.push_str(&format!("... [{} bytes of plugin text in all]", text.len()));
    }
    escaped
}

/// Cuts a byte stream (a plugin's stdout or stderr) into lines, keeping at
/// most [`MAX_LINE`] bytes of a line in progress: the rest of a longer line
/// is counted, not kept, so a plugin writing without newlines cannot grow
/// it.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// Bytes of the line in progress beyond what `partial` keeps.
    overflow: usize,
}

impl LineSplitter {
    /// Feeds bytes; calls `line` with each complete line (without its
    /// newline) and the number of bytes cut from it.
    pub fn feed(&mut self, mut bytes: &[u8], mut line: impl FnMut(&[u8], usize)) {
        while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..at]);
            line(&self.partial, self.overflow);
            self.partial.clear();
            self.overflow = 0;
            bytes = &bytes[at + 1..];
        }
        self.keep(bytes);
    }

    /// The unfinished line, if any (at the end of a call or of the instance).
    pub fn flush(&mut self, line: impl FnOnce(&[u8], usize)) {
        if !self.partial.is_empty() || self.overflow > 0 {
            line(&self.partial, self.overflow);
            self.partial.clear();
            self.overflow = 0;
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        let take = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..take]);
        self.overflow += bytes.len() - take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_cut_without_growing() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        splitter.feed(b"one\ntw", |l, cut| lines.push((l.to_vec(), cut)));
        splitter.feed(b"o\n", |l, cut| lines.push((l.to_vec(), cut)));
        splitter.feed(&vec![b'x'; 10 * MAX_LINE], |l, cut| lines.push((l.to_vec(), cut)));
        assert!(splitter.partial.capacity() <= 2 * MAX_LINE);
        splitter.flush(|l, cut| lines.push((l.to_vec(), cut)));
        assert_eq!(lines[0], (b"one".to_vec(), 0));
        assert_eq!(lines[1], (b"two".to_vec(), 0));
        assert_eq!(lines[2].0.len(), MAX_LINE);
        assert_eq!(lines[2].1, 9 * MAX_LINE);
    }

    #[test]
    fn escaped_text_is_cut_after_escaping() {
        let cut = escape_cut(&[0x1b; 100], 40);
        assert!(cut.starts_with("\\u{1b}"), "{cut}");
        assert!(cut.len() < 40 + 50, "{cut}");
        assert!(cut.ends_with("[100 bytes of plugin text in all]"), "{cut}");
        assert_eq!(escape_cut(b"short", 40), "short");
    }

    #[test]
    fn plugin_text_cannot_break_a_line_or_pose_as_a_field() {
        let escaped = escape(b"ok\nERROR host: fake\r\x1b[31m \"quoted\" \\");
        assert!(!escaped.contains('\n') && !escaped.contains('\r') && !escaped.contains('\x1b'), "{escaped}");
        assert!(escaped.contains("\\\"quoted\\\""), "{escaped}");
    }

    #[test]
    fn over_budget_lines_are_dropped_and_counted() {
        let log = StageLog::new("s", 10, 1 << 20);
        let t0 = Instant::now();
        for _ in 0..1000 {
            log.line_at(t0, Origin::Stdout, b"spam", 0);
        }
        let c = &log.counters;
        assert_eq!(c.lines.load(Ordering::Relaxed), u64::from(10 * BURST_SECONDS));
        assert_eq!(c.dropped_lines.load(Ordering::Relaxed), 1000 - u64::from(10 * BURST_SECONDS));
        // A second later, ten more lines' worth.
        for _ in 0..100 {
            log.line_at(t0 + Duration::from_secs(1), Origin::Stdout, b"spam", 0);
        }
        assert_eq!(c.lines.load(Ordering::Relaxed), u64::from(10 * BURST_SECONDS) + 10);
    }
}
