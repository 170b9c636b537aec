//! Running a pipeline from TOML text and collecting what came out.

use medianode::config::{PipelineConfig, SinkKind};
use medianode::pipeline::{BuildError, Pipeline, PipelineStats};
use medianode::runtime::{Items, Runtime, RuntimeOptions};
use medianode::supervisor::Stopped;
use medianode::supervisor::crash_report::{CrashReport, CrashReporter};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tempfile::TempDir;

/// One runtime for the whole test binary, so each plugin compiles once.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeOptions::default()).expect("runtime"))
}

/// Tests that measure a node keeping real time (every block of a 10 ms
/// tick written) share the machine with each other, but not with a test
/// that loads every core (three browsers encoding and decoding video): on
/// two cores, such a measurement would be of the load, not of the node.
static CORES: RwLock<()> = RwLock::new(());

/// Held while a test measures real time.
pub fn measuring_real_time() -> RwLockReadGuard<'static, ()> {
    CORES.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a test loads every core (browsers, a Prometheus server).
pub fn loading_every_core() -> RwLockWriteGuard<'static, ()> {
    CORES.write().unwrap_or_else(PoisonError::into_inner)
}

/// What a finished pipeline left behind.
pub struct Run {
    pub result: Result<PipelineStats, Stopped>,
    /// Batches received by each channel sink.
    pub channels: HashMap<String, Vec<Items>>,
    /// Crash reports, in memory.
    pub reports: Vec<Arc<CrashReport>>,
    /// Crash reports as written to disk.
    pub report_files: Vec<serde_json::Value>,
    _dir: TempDir,
}

impl Run {
    pub fn stats(&self) -> &PipelineStats {
        self.result.as_ref().expect("pipeline stopped with an error")
    }

    /// The sequence numbers a channel sink received, in arrival order.
    pub fn sequences(&self, sink: &str) -> Vec<u64> {
        self.channels[sink].iter().flat_map(|items| items.sequences().collect::<Vec<_>>()).collect()
    }

    /// The sequence numbers of the all-silent audio blocks a channel sink
    /// received (the muted stand-ins; a test tone is never silent).
    pub fn silent(&self, sink: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for items in &self.channels[sink] {
            if let Items::Audio(batch) = items {
                out.extend(batch.iter().filter(|(_, s)| s.iter().all(|&x| x == 0.0)).map(|(b, _)| b.sequence));
            }
        }
        out
    }

    /// A stage's host metric, e.g. `faults`.
    pub fn metric(&self, stage: &str, name: &str) -> u64 {
        self.stats().stage(stage).expect("stage").snapshot()[name].as_u64().expect("metric")
    }

    pub fn report_kinds(&self) -> Vec<&'static str> {
        self.reports.iter().map(|r| r.trap_kind.name()).collect()
    }
}

pub fn parse(toml: &str) -> (PipelineConfig, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = medianode::config::load_str(dir.path().join("test.toml"), toml.to_string())
        .unwrap_or_else(|e| panic!("test pipeline is invalid:\n{e}"));
    (config, dir)
}

pub fn build(toml: &str) -> Result<Pipeline, BuildError> {
    let (config, _dir) = parse(toml);
    Pipeline::build(runtime(), &config, &CrashReporter::new(None))
}

/// Builds and runs `toml` until its sources end.
pub async fn run(toml: &str) -> Run {
    let (config, dir) = parse(toml);
    let crash_dir = dir.path().join("crash-reports");
    let reporter = CrashReporter::new(Some(crash_dir.clone()));
    let mut pipeline = Pipeline::build(runtime(), &config, &reporter).unwrap_or_else(|e| panic!("build failed: {e}"));
    let mut readers: Vec<_> = config
        .sinks
        .iter()
        .filter(|s| matches!(s.kind, SinkKind::Channel { .. }))
        .map(|s| (s.id.clone(), pipeline.take_channel(&s.id).expect("channel")))
        .collect();
    let result = pipeline.run(std::future::pending()).await;
    let mut channels = HashMap::new();
    for (id, rx) in &mut readers {
        let mut batches = Vec::new();
        while let Ok(items) = rx.try_recv() {
            batches.push(items);
        }
        channels.insert(id.clone(), batches);
    }
    reporter.flush();
    let mut report_files: Vec<(String, serde_json::Value)> = std::fs::read_dir(&crash_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let text = std::fs::read_to_string(e.path()).expect("read report");
                    (e.file_name().to_string_lossy().into_owned(), serde_json::from_str(&text).expect("report is JSON"))
                })
                .collect()
        })
        .unwrap_or_default();
    report_files.sort_by_key(|(name, _)| name.rsplit('-').next().and_then(|n| n.trim_end_matches(".json").parse::<u64>().ok()));
    Run { result, channels, reports: reporter.recent(), report_files: report_files.into_iter().map(|(_, v)| v).collect(), _dir: dir }
}

/// A supervised stage running a stock plugin, with a restart policy that
/// always restarts at once (the standby takes over).
pub fn stock_stage(plugin: &str, config_json: &str) -> medianode::supervisor::Supervisor {
    stock_stage_with_deadline(plugin, config_json, std::time::Duration::from_millis(100))
}

/// The same, with the stage's `deadline`.
pub fn stock_stage_with_deadline(plugin: &str, config_json: &str, deadline: std::time::Duration) -> medianode::supervisor::Supervisor {
    use medianode::runtime::stock;
    use medianode::supervisor::{StageSpec, Supervisor};
    use medianode_core::supervision::FailurePolicy;
    use medianode_core::supervision::Limits;
    use medianode_core::supervision::backoff::RestartConfig;
    use std::time::{Duration, Instant};
    let bytes = stock::bytes(plugin).unwrap_or_else(|| panic!("no stock plugin {plugin}"));
    let plugin = runtime().load(&format!("stock:{plugin}"), bytes, 512 << 10).expect("load");
    let spec = StageSpec {
        id: plugin.source.trim_start_matches("stock:").to_string(),
        plugin,
        config_json: config_json.into(),
        limits: Limits { deadline, ..Limits::default() },
        restart: RestartConfig {
            max_restarts: u32::MAX,
            long_max_restarts: u32::MAX,
            healthy_after: Duration::ZERO,
            jitter: 0.0,
            ..RestartConfig::default()
        },
        failure: FailurePolicy::FailClosed,
        recorder: 50,
        seed: 1,
    };
    Supervisor::start(spec, CrashReporter::new(None), Instant::now()).unwrap_or_else(|f| panic!("{}", f.message))
}

/// A pipeline on a paused clock: `blocks` tone blocks (with `source` lines
/// added to the source) into the stage under test (its `[[stage]]` lines
/// after `inputs = ["tone"]`; its output goes to the channel sink `out`),
/// beside a gain stage reading the same tone into `beside-out`. The budget
/// leaves room for traps on slow deadlines: the paused clock's ticks take
/// no time, but a trap on a 50 ms deadline does.
pub fn beside(blocks: u64, source: &str, id: &str, stage: &str) -> String {
    format!(
        r#"
        [pipeline]
        pace = "realtime"
        tick = "10ms"
        budget = "2s"

        [[source]]
        id = "tone"
        kind = "tone"
        count = {blocks}
        {source}

        [[stage]]
        id = "{id}"
        inputs = ["tone"]
        {stage}

        [[stage]]
        id = "beside"
        plugin = "stock:gain"
        inputs = ["tone"]
        limits = {{ deadline = "1s" }}

        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["{id}"]
        capacity = 10000

        [[sink]]
        id = "beside-out"
        kind = "channel"
        inputs = ["beside"]
        capacity = 10000
        "#
    )
}
