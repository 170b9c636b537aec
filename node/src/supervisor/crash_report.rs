//! Crash reports: one JSON document per fault, logged and written to disk.
//!
//! The supervisor builds the report on the stage thread (a copy of the
//! flight recorder and the fault); serializing and writing happen on a
//! writer thread so that a fault never puts file I/O on the hot path.
//!
//! A plugin decides what goes into its reports (its panic message, its
//! stderr, its function names) and how often it faults, so everything here
//! has a budget ([`ReportBudget`]): the plugin's text is cut and kept apart
//! from the host's fields (`plugin_message`, `stderr`); a report is at most
//! `max_report` bytes on disk; the writer's queue is bounded (reports past
//! it are counted as lost); the reports kept in memory are bounded by count
//! and bytes; and the crash directory by bytes, oldest report removed
//! first.

use crate::runtime::{TrapKind, lock};
use medianode_core::supervision::FailurePolicy;
use medianode_core::supervision::recorder::Record;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many reports wait for the writer before new ones are lost.
const QUEUE: usize = 16;

/// What crash reports may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportBudget {
    /// Largest report on disk, in bytes (fields are cut to fit).
    pub max_report: usize,
    /// Reports kept in memory, and their total size.
    pub recent_count: usize,
    pub recent_bytes: usize,
    /// The crash directory's total size: the oldest reports go first.
    pub disk_bytes: u64,
}

impl Default for ReportBudget {
    fn default() -> Self {
        ReportBudget { max_report: 64 << 10, recent_count: 32, recent_bytes: 1 << 20, disk_bytes: 16 << 20 }
    }
}

/// Everything known about one fault.
#[derive(Debug, Clone, Serialize)]
pub struct CrashReport {
    pub stage: String,
    /// `stock:NAME` or the plugin file's path.
    pub plugin: String,
    /// SHA-256 of the plugin component.
    pub digest: String,
    pub trap_kind: TrapKind,
    /// The host's description of the fault.
    pub message: String,
    /// What the plugin said (its panic message): plugin text, escaped, cut.
    pub plugin_message: Option<String>,
    /// Wasm frames, innermost first (names from the plugin's binary).
    pub backtrace: Vec<String>,
    /// The tail of the plugin's stderr: plugin text, escaped, cut.
    pub stderr: String,
    /// The quarantined input, if the fault was tied to one.
    pub poison: Option<serde_json::Value>,
    /// Items in the batch that faulted.
    pub batch_size: usize,
    /// Faults of this stage so far, this one included.
    pub fault_count: u64,
    /// What happens next: `restart` or `give-up`.
    pub decision: &'static str,
    /// Delay before the next instance serves, when restarting.
    pub next_delay_ms: Option<f64>,
    pub failure_policy: FailurePolicy,
    /// The stage's last actions, oldest first.
    pub recorded: Vec<Record>,
    /// Wall-clock time of the fault.
    pub unix_ms: u64,
}

enum Job {
    Write(Arc<CrashReport>),
    Flush(SyncSender<()>),
}

/// Hands crash reports to the log, to memory and to the writer thread.
#[derive(Clone)]
pub struct CrashReporter {
    inner: Arc<Inner>,
}

/// Recent reports with their (estimated) sizes, and the sizes' sum.
#[derive(Default)]
struct Recent {
    reports: VecDeque<(Arc<CrashReport>, usize)>,
    bytes: usize,
}

struct Inner {
    tx: Option<SyncSender<Job>>,
    budget: ReportBudget,
    recent: Mutex<Recent>,
    lost: AtomicU64,
}

impl CrashReporter {
    /// Writes reports into `dir` (created when needed); `None` keeps them in
    /// memory and the log only. Default budgets.
    pub fn new(dir: Option<PathBuf>) -> CrashReporter {
        CrashReporter::with_budget(dir, ReportBudget::default())
    }

    /// [`CrashReporter::new`] with the given budgets.
    pub fn with_budget(dir: Option<PathBuf>, budget: ReportBudget) -> CrashReporter {
        let tx = dir.and_then(|dir| {
            let (tx, rx) = sync_channel(QUEUE);
            std::thread::Builder::new()
                .name("medianode-crash-reports".into())
                .spawn(move || write_reports(&dir, rx, budget))
                .map_err(|e| tracing::error!("crash reports will not be written: no writer thread: {e}"))
                .ok()
                .map(|_| tx)
        });
        let recent = Mutex::new(Recent::default());
        CrashReporter { inner: Arc::new(Inner { tx, budget, recent, lost: AtomicU64::new(0) }) }
    }

    /// Logs `report` and queues it for writing. Cheap: the report's fields
    /// are bounded where they are made; serializing it (and cutting it to
    /// `max_report`) happens on the writer thread.
    pub fn report(&self, report: CrashReport) {
        let size = estimate(&report);
        tracing::error!(
            stage = %report.stage,
            trap = report.trap_kind.name(),
            item = report.poison.as_ref().and_then(|p| p["sequence"].as_u64()),
            decision = report.decision,
            next_delay_ms = report.next_delay_ms,
            plugin_said = report.plugin_message.as_deref().map(|m| &m[..m.floor_char_boundary(200)]),
            "stage fault: {}",
            crate::runtime::log::escape(report.message.as_bytes())
        );
        let report = Arc::new(report);
        {
            let budget = &self.inner.budget;
            let mut recent = lock(&self.inner.recent);
            recent.reports.push_back((report.clone(), size));
            recent.bytes += size;
            while recent.reports.len() > budget.recent_count || recent.bytes > budget.recent_bytes {
                match recent.reports.pop_front() {
                    Some((_, size)) => recent.bytes -= size,
                    None => break,
                }
            }
        }
        if let Some(tx) = &self.inner.tx
            && tx.try_send(Job::Write(report)).is_err()
        {
            self.inner.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The latest reports, oldest first.
    pub fn recent(&self) -> Vec<Arc<CrashReport>> {
        lock(&self.inner.recent).reports.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Reports that could not be queued for writing.
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Waits until every queued report is on disk.
    pub fn flush(&self) {
        if let Some(tx) = &self.inner.tx {
            let (done_tx, done_rx) = sync_channel(1);
            if tx.send(Job::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }
}

/// About how many bytes `report` takes, for the in-memory budget (its
/// strings and a generous allowance per record, without serializing it).
fn estimate(report: &CrashReport) -> usize {
    let texts = report.message.len() + report.plugin_message.as_ref().map_or(0, String::len) + report.stderr.len();
    let frames: usize = report.backtrace.iter().map(|f| f.len() + 8).sum();
    1024 + texts + frames + report.recorded.len() * 128
}

/// The report as JSON of at most `max` bytes where it can be: the plugin's
/// texts are cut first, then the host's details.
fn json_within(report: &mut CrashReport, max: usize) -> serde_json::Result<Vec<u8>> {
    loop {
        let json = serde_json::to_vec_pretty(report)?;
        if json.len() <= max {
            return Ok(json);
        }
        if report.stderr.len() > 64 {
            report.stderr = format!("[cut: {} bytes]", report.stderr.len());
        } else if let Some(m) = report.plugin_message.as_mut().filter(|m| m.len() > 64) {
            *m = format!("{}... [cut: {} bytes]", &m[..m.floor_char_boundary(64)], m.len());
        } else if !report.backtrace.is_empty() {
            report.backtrace.clear();
        } else if !report.recorded.is_empty() {
            report.recorded.clear();
        } else if report.message.len() > 256 {
            report.message.truncate(report.message.floor_char_boundary(256));
        } else {
            return Ok(json);
        }
    }
}

fn write_reports(dir: &Path, rx: Receiver<Job>, budget: ReportBudget) {
    // The directory's reports, oldest first, with their sizes.
    let mut files: VecDeque<(PathBuf, u64)> = existing_reports(dir);
    let mut total: u64 = files.iter().map(|(_, size)| size).sum();
    let mut written = 0u64;
    for job in rx {
        match job {
            Job::Write(report) => {
                written += 1;
                let mut report = CrashReport::clone(&report);
                let name = format!("{:013}-{}-{written}.json", report.unix_ms, sanitize(&report.stage));
                let path = dir.join(name);
                let json = match json_within(&mut report, budget.max_report) {
                    Ok(json) => json,
                    Err(e) => {
                        tracing::error!(stage = %report.stage, "could not serialize a crash report: {e}");
                        continue;
                    }
                };
                let size = json.len() as u64;
                // Room first: the oldest reports go.
                while total + size > budget.disk_bytes {
                    let Some((old, old_size)) = files.pop_front() else { break };
                    total -= old_size;
                    if let Err(e) = std::fs::remove_file(&old) {
                        tracing::warn!("could not remove old crash report {}: {e}", old.display());
                    }
                }
                if total + size > budget.disk_bytes {
                    tracing::warn!(stage = %report.stage, "a crash report larger than the crash directory's budget was not written");
                    continue;
                }
                let result = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, json));
                match result {
                    Ok(()) => {
                        total += size;
                        files.push_back((path.clone(), size));
                        tracing::info!(stage = %report.stage, "crash report written to {}", path.display());
                    }
                    Err(e) => tracing::error!(stage = %report.stage, "could not write crash report {}: {e}", path.display()),
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Crash reports already in `dir` (from earlier runs), oldest first: their
/// names start with the time they were written.
fn existing_reports(dir: &Path) -> VecDeque<(PathBuf, u64)> {
    let mut found: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into()
}

/// Keeps file names to `[A-Za-z0-9_-]`.
fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
