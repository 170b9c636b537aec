//! The system monitor: every `[admin] monitor-every` (30 s by default) it
//! reads the process ([`super::process`]) and hands the reading to the
//! core's [`Monitor`], whose thresholds (`max-rss`, 500 MB; `max-tasks`,
//! 1000) come from the pipeline file. An alert raised is logged as a
//! warning naming the stages with the most memory, sets
//! `medianode_monitor_alert{limit}` and marks `/health` degraded; its
//! clearing is logged too.

use super::process;
use super::view::NodeView;
use medianode_core::config::MonitorConfig;
use medianode_core::monitor::{Limit, Monitor, Reading};

/// Runs the monitor on the current runtime (whose tasks it counts) until
/// the returned task is aborted or dropped with the node.
pub fn spawn(config: MonitorConfig, view: NodeView) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut monitor = Monitor::new(config);
        let mut ticks = tokio::time::interval(monitor.every());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let sample = process::sample_off_async().await;
            for change in monitor.observe(Reading { rss_bytes: sample.rss_bytes, tasks: sample.tasks }) {
                match (change.raised, change.limit) {
                    (true, Limit::Rss) => tracing::warn!(limit = "rss", "{change}; the most memory: {}", biggest_stages(&view)),
                    (true, Limit::Tasks) => {
                        tracing::warn!(limit = "tasks", "{change}; {} threads, {} open fds", sample.threads, sample.open_fds);
                    }
                    (false, limit) => tracing::info!(limit = limit.name(), "{change}"),
                }
            }
            view.set_alerts(monitor.alerts().cloned().collect());
        }
    })
}

/// The three stages whose instances have had the most linear memory.
fn biggest_stages(view: &NodeView) -> String {
    let mut stages: Vec<(u64, String)> =
        view.stages().iter().map(|s| (s.metrics.memory_peak.load(std::sync::atomic::Ordering::Relaxed), s.id.clone())).collect();
    stages.sort_by(|a, b| b.cmp(a));
    let named: Vec<String> = stages.iter().take(3).map(|(bytes, id)| format!("stage '{id}' {:.1} MB", *bytes as f64 / 1e6)).collect();
    if named.is_empty() { "no plugin stages".to_string() } else { named.join(", ") }
}
