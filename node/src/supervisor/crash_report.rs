//! Crash reports: one JSON document per fault, logged and written to disk.
//!
//! The supervisor builds the report on the pipeline thread (a copy of the
//! flight recorder and the fault); serializing and writing happen on a
//! writer thread so that a fault never puts file I/O on the hot path. The
//! queue is bounded: if faults outrun the disk, reports are counted as lost
//! rather than piling up in memory.

use super::recorder::Record;
use crate::config::FailurePolicy;
use crate::runtime::{TrapKind, lock};
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many reports wait for the writer before new ones are lost.
const QUEUE: usize = 64;
/// How many recent reports stay in memory for inspection.
const RECENT: usize = 64;

/// Everything known about one fault.
#[derive(Debug, Clone, Serialize)]
pub struct CrashReport {
    pub stage: String,
    /// `stock:NAME` or the plugin file's path.
    pub plugin: String,
    /// SHA-256 of the plugin component.
    pub digest: String,
    pub trap_kind: TrapKind,
    pub message: String,
    /// Wasm frames, innermost first.
    pub backtrace: Vec<String>,
    /// The tail of the plugin's stderr.
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

struct Inner {
    tx: Option<SyncSender<Job>>,
    recent: Mutex<VecDeque<Arc<CrashReport>>>,
    lost: AtomicU64,
}

impl CrashReporter {
    /// Writes reports into `dir` (created when needed); `None` keeps them in
    /// memory and the log only.
    pub fn new(dir: Option<PathBuf>) -> CrashReporter {
        let tx = dir.and_then(|dir| {
            let (tx, rx) = sync_channel(QUEUE);
            std::thread::Builder::new()
                .name("medianode-crash-reports".into())
                .spawn(move || write_reports(&dir, rx))
                .map_err(|e| tracing::error!("crash reports will not be written: no writer thread: {e}"))
                .ok()
                .map(|_| tx)
        });
        CrashReporter { inner: Arc::new(Inner { tx, recent: Mutex::new(VecDeque::new()), lost: AtomicU64::new(0) }) }
    }

    /// Logs `report` and queues it for writing.
    pub fn report(&self, report: CrashReport) {
        tracing::error!(
            stage = %report.stage,
            trap = report.trap_kind.name(),
            item = report.poison.as_ref().and_then(|p| p["sequence"].as_u64()),
            decision = report.decision,
            next_delay_ms = report.next_delay_ms,
            "stage fault: {}",
            report.message.replace('\n', " ")
        );
        let report = Arc::new(report);
        {
            let mut recent = lock(&self.inner.recent);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(report.clone());
        }
        if let Some(tx) = &self.inner.tx
            && tx.try_send(Job::Write(report)).is_err()
        {
            self.inner.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The latest reports, oldest first.
    pub fn recent(&self) -> Vec<Arc<CrashReport>> {
        lock(&self.inner.recent).iter().cloned().collect()
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

fn write_reports(dir: &Path, rx: Receiver<Job>) {
    let mut written = 0u64;
    for job in rx {
        match job {
            Job::Write(report) => {
                written += 1;
                let name = format!("{}-{}-{written}.json", report.unix_ms, sanitize(&report.stage));
                let path = dir.join(name);
                let result = std::fs::create_dir_all(dir)
                    .and_then(|_| serde_json::to_vec_pretty(&*report).map_err(std::io::Error::other))
                    .and_then(|json| std::fs::write(&path, json));
                match result {
                    Ok(()) => tracing::info!(stage = %report.stage, "crash report written to {}", path.display()),
                    Err(e) => tracing::error!(stage = %report.stage, "could not write crash report {}: {e}", path.display()),
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Keeps file names to `[A-Za-z0-9_-]`.
fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
