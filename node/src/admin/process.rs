//! The process as the kernel sees it (resident memory, CPU time, open file
//! descriptors, threads, from `/proc/self`) and the async runtime's live
//! tasks. Read at a scrape and by the system monitor; a field the platform
//! does not offer reads as zero.

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcessSample {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub threads: u64,
    /// Live tokio tasks of the runtime the caller is on (0 off any).
    pub tasks: u64,
}

/// [`sample`] for async code: the file reads on a blocking thread, the
/// task count from the caller's runtime.
pub async fn sample_off_async() -> ProcessSample {
    let tasks = tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks() as u64);
    let sample = tokio::task::spawn_blocking(sample).await.unwrap_or_default();
    ProcessSample { tasks, ..sample }
}

/// Reads `/proc/self` (small, memory-backed files: no disk is touched).
pub fn sample() -> ProcessSample {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok())
    };
    let tasks = tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks() as u64);
    ProcessSample {
        rss_bytes: field("VmRSS:").unwrap_or(0) * 1024,
        cpu_seconds: cpu_seconds().unwrap_or(0.0),
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        threads: field("Threads:").unwrap_or(0),
        tasks,
    }
}

/// User plus system CPU time, from `/proc/self/stat` (fields 14 and 15, in
/// clock ticks; the command name before them may hold spaces, so fields
/// are counted from its closing parenthesis).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (user + system) as f64 / ticks as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample();
        assert!(s.rss_bytes > 1 << 20, "{s:?}");
        assert!(s.threads >= 1 && s.open_fds >= 3, "{s:?}");
        // Burn a little CPU so the reading cannot be a constant.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(super::sample().cpu_seconds > 0.0);
    }
}
