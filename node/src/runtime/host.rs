//! What the host gives each instance: the `host` interface (log, clock,
//! metrics, state store, item marks), the `aead` interface (see `aead.rs`),
//! a locked-down WASI, and resource limits.
//!
//! [`StageShared`] outlives instances: the state store and metrics belong to
//! the stage, so they survive a plugin trapping and being replaced.
//! [`HostState`] is one instance's `Store` data and dies with it.

use super::bindings::host::{self, Level};
use super::bindings::{AudioLevel, BlockInfo};
use super::lock;
use super::log::{Origin, StageLog};
use super::wasi::PluginOutput;
use medianode_core::supervision::TrapKind;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::StoreContextMut;
use wasmtime::component::{HasSelf, Linker, ResourceTable, WasmList, WasmStr};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The longest metric name a plugin may use, in bytes.
pub const MAX_METRIC_NAME: usize = 64;
/// The most metric series (counters and gauges) a stage may have.
pub const MAX_METRIC_SERIES: usize = 64;
/// How much of a plugin's panic message is kept.
pub const MAX_PANIC_MESSAGE: usize = 4 * 1024;

/// What belongs to a stage rather than to one of its instances.
pub struct StageShared {
    /// The stage id from the pipeline file.
    pub id: String,
    /// Key-value bytes that survive re-instantiation.
    pub state: Mutex<StateStore>,
    /// Host and plugin metrics.
    pub metrics: Metrics,
    /// What the plugin says (log calls, stdout, stderr), within its budget.
    pub log: Arc<StageLog>,
    /// What the stage is doing, for operators (the admin API).
    pub status: Mutex<StageStatus>,
    /// An operator asked for a fresh instance (`POST /stages/{id}/restart`);
    /// the supervisor swaps one in between two calls.
    pub restart_requested: AtomicBool,
    /// A reload waiting for the supervisor to pick it up.
    pub reload: Mutex<Option<Reload>>,
}

/// Everything needed to run one stage.
#[derive(Clone)]
pub struct StageSpec {
    pub id: String,
    pub plugin: Arc<super::Plugin>,
    /// The `[stage.config]` table as JSON.
    pub config_json: String,
    pub limits: medianode_core::supervision::Limits,
    pub restart: medianode_core::supervision::backoff::RestartConfig,
    pub failure: medianode_core::supervision::FailurePolicy,
    /// Flight recorder length.
    pub recorder: usize,
    /// Seed for the backoff jitter.
    pub seed: u64,
}

/// A reload of one stage, in two steps so that a reload of several stages
/// is all or nothing: the stage's supervisor builds an instance of `spec`
/// beside the one serving (off the data path) and says so on `prepared`;
/// then `commit` says whether to swap it in (between two calls, then
/// `swapped`) or throw it away.
pub struct Reload {
    pub spec: StageSpec,
    pub prepared: tokio::sync::oneshot::Sender<Result<(), String>>,
    pub commit: std::sync::mpsc::Receiver<bool>,
    pub swapped: tokio::sync::oneshot::Sender<()>,
}

/// A stage's condition as operators see it. The supervisor writes it at
/// each change (a start, a fault, a restart: rare), the admin API reads it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageStatus {
    pub state: StageState,
    /// The plugin's source (a path, or `stock:NAME`) and SHA-256 digest.
    pub plugin: String,
    pub digest: String,
    pub failure_policy: &'static str,
    /// When the stage may serve again (Unix ms), while it is restarting.
    pub next_retry_unix_ms: Option<u64>,
    pub last_crash: Option<CrashSummary>,
}

/// Where a stage is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageState {
    /// Its first instance is being built.
    #[default]
    Starting,
    /// An instance is serving.
    Serving,
    /// Its instance faulted; another serves after the backoff delay.
    Restarting,
    /// It gave up: too many faults in the restart window.
    Down,
}

impl StageState {
    pub const ALL: [StageState; 4] = [StageState::Starting, StageState::Serving, StageState::Restarting, StageState::Down];

    pub fn name(self) -> &'static str {
        match self {
            StageState::Starting => "starting",
            StageState::Serving => "serving",
            StageState::Restarting => "restarting",
            StageState::Down => "down",
        }
    }
}

/// The last fault, in brief (the crash report has the rest).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrashSummary {
    pub kind: TrapKind,
    pub message: String,
    pub unix_ms: u64,
}

impl StageShared {
    /// A stage with the default limits but for its state quota.
    pub fn new(id: &str, state_quota: u64) -> StageShared {
        StageShared::with_limits(id, &medianode_core::supervision::Limits { state: state_quota, ..Default::default() })
    }

    pub fn with_limits(id: &str, limits: &medianode_core::supervision::Limits) -> StageShared {
        StageShared {
            id: id.to_string(),
            state: Mutex::new(StateStore::new(limits.state)),
            metrics: Metrics::default(),
            log: Arc::new(StageLog::new(id, limits.log_lines, limits.log_bytes)),
            status: Mutex::new(StageStatus::default()),
            restart_requested: AtomicBool::new(false),
            reload: Mutex::new(None),
        }
    }

    /// Metrics and log counters as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        let mut all = self.metrics.snapshot();
        if let (Some(all), serde_json::Value::Object(log)) = (all.as_object_mut(), self.log.snapshot()) {
            all.extend(log);
        }
        all
    }
}

/// A stage's state store: bytes by key, bounded by a quota on keys + values.
#[derive(Debug, Default)]
pub struct StateStore {
    entries: HashMap<String, Vec<u8>>,
    used: u64,
    quota: u64,
    /// Changes so far: an instance built at one version and promoted at
    /// another started from state that is no longer the stage's.
    version: u64,
}

impl StateStore {
    pub fn new(quota: u64) -> StateStore {
        StateStore { entries: HashMap::new(), used: 0, quota, version: 0 }
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Stores `value` under `key`, refusing writes past the quota.
    pub fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let old = self.entries.get(&key).map_or(0, |v| (key.len() + v.len()) as u64);
        let new = (key.len() + value.len()) as u64;
        let used = self.used - old + new;
        if used > self.quota {
            return Err(format!("state quota exceeded: {used} bytes would be stored, the stage's limits.state is {}", self.quota));
        }
        self.used = used;
        self.entries.insert(key, value);
        self.version += 1;
        Ok(())
    }

    pub fn delete(&mut self, key: &str) {
        if let Some(v) = self.entries.remove(key) {
            self.used -= (key.len() + v.len()) as u64;
            self.version += 1;
        }
    }

    /// A new quota (a reload); what is stored stays, even above it.
    pub fn set_quota(&mut self, quota: u64) {
        self.quota = quota;
    }

    /// The most bytes (keys + values) it may hold.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Bytes in use (keys + values).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// How many changes the store has seen.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// Counters the host keeps for every stage, plus whatever the plugin reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Items handed to the stage.
    pub items_in: AtomicU64,
    /// Items the stage produced.
    pub items_out: AtomicU64,
    /// Calls into the plugin.
    pub calls: AtomicU64,
    /// Traps (and other faults) of the plugin.
    pub faults: AtomicU64,
    /// The same, by kind (indexed by `TrapKind as usize`).
    pub faults_by_kind: [AtomicU64; TrapKind::ALL.len()],
    /// How long each call into the plugin took.
    pub call_time: CallTimes,
    /// The largest linear memory an instance of the stage has had, in
    /// bytes (what the system monitor names when memory runs high).
    pub memory_peak: AtomicU64,
    /// Instances brought into service after a fault.
    pub restarts: AtomicU64,
    /// Inputs that caused a fault and were set aside, never to be retried.
    pub quarantined: AtomicU64,
    /// Items dropped because the stage was down (fail-closed).
    pub dropped: AtomicU64,
    /// Items passed around the stage because it was down (fail-open).
    pub bypassed: AtomicU64,
    /// Audio blocks replaced by silence: quarantined, or the stage was down.
    pub muted: AtomicU64,
    /// Items whose output came too late for their tick (a slow stage, or a
    /// stage behind): the failure policy's stand-in took their place.
    pub late: AtomicU64,
    /// Audio blocks a plugin returned with NaN or infinite samples,
    /// replaced by silence.
    pub non_finite: AtomicU64,
    /// Standby instances thrown away because the state store changed after
    /// their `init` read it (a fresh one was built instead).
    pub stale: AtomicU64,
    /// The level the stage last wrote on an audio block (a meter does).
    pub level: LevelGauge,
    /// The plugin's own counters and gauges (at most
    /// [`MAX_METRIC_SERIES`], names of at most [`MAX_METRIC_NAME`] bytes).
    pub plugin: Mutex<BTreeMap<String, f64>>,
    /// Plugin metric updates refused: a name too long or not
    /// `[A-Za-z0-9_.:-]`, or a new series past the limit.
    pub metrics_dropped: AtomicU64,
}

/// A histogram of call durations: fixed buckets of atomic counters, so
/// the data path records a call without a lock or an allocation.
#[derive(Debug, Default)]
pub struct CallTimes {
    /// Calls that took at most `CALL_BUCKETS_US[i]` µs (not cumulative);
    /// the last counts the rest.
    buckets: [AtomicU64; CALL_BUCKETS_US.len() + 1],
    sum_micros: AtomicU64,
}

/// Upper bounds of the call-time buckets, in µs: 10 µs to 1 s.
pub const CALL_BUCKETS_US: [u64; 11] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 100_000, 1_000_000];

impl CallTimes {
    pub fn record(&self, took: Duration) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = CALL_BUCKETS_US.iter().position(|&le| micros <= le).unwrap_or(CALL_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// (sum in seconds, count, cumulative buckets as (upper bound in
    /// seconds, count)), as Prometheus histograms have them.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(CALL_BUCKETS_US.len() + 1);
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = CALL_BUCKETS_US.get(i).map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((le, cumulative));
        }
        (self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, cumulative, buckets)
    }
}

/// An audio DSP plugin's answer, in buffers reused from call to call.
#[derive(Debug, Default)]
pub(crate) struct DspOutput {
    pub blocks: Vec<BlockInfo>,
    pub samples: Vec<u32>,
    /// Whether the plugin called `output` during this call.
    pub given: bool,
}

/// The latest block level a stage measured: lock-free, so the audio path
/// can publish it every block without allocating or waiting.
#[derive(Debug, Default)]
pub struct LevelGauge {
    /// f32 bits of the RMS and peak dBFS.
    rms_dbfs: AtomicU32,
    peak_dbfs: AtomicU32,
    voice: AtomicBool,
    set: AtomicBool,
}

impl LevelGauge {
    pub fn publish(&self, level: &AudioLevel) {
        self.rms_dbfs.store(level.rms_dbfs.to_bits(), Ordering::Relaxed);
        self.peak_dbfs.store(level.peak_dbfs.to_bits(), Ordering::Relaxed);
        self.voice.store(level.voice, Ordering::Relaxed);
        self.set.store(true, Ordering::Release);
    }

    pub fn get(&self) -> Option<AudioLevel> {
        self.set.load(Ordering::Acquire).then(|| AudioLevel {
            rms_dbfs: f32::from_bits(self.rms_dbfs.load(Ordering::Relaxed)),
            peak_dbfs: f32::from_bits(self.peak_dbfs.load(Ordering::Relaxed)),
            voice: self.voice.load(Ordering::Relaxed),
        })
    }
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Applies `update` to the plugin metric `name`, if the name is
    /// acceptable and the series exists or there is room for it.
    fn plugin_metric(&self, name: String, update: impl FnOnce(&mut f64)) {
        let valid =
            !name.is_empty() && name.len() <= MAX_METRIC_NAME && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        let mut plugin = lock(&self.plugin);
        let room = plugin.len() < MAX_METRIC_SERIES || plugin.contains_key(&name);
        if !(valid && room) {
            drop(plugin);
            Metrics::add(&self.metrics_dropped, 1);
            return;
        }
        update(plugin.entry(name).or_default());
    }

    /// A consistent-enough copy for reports and tests.
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "items_in": get(&self.items_in),
            "items_out": get(&self.items_out),
            "calls": get(&self.calls),
            "faults": get(&self.faults),
            "restarts": get(&self.restarts),
            "quarantined": get(&self.quarantined),
            "dropped": get(&self.dropped),
            "bypassed": get(&self.bypassed),
            "muted": get(&self.muted),
            "late": get(&self.late),
            "metrics_dropped": get(&self.metrics_dropped),
            "non_finite": get(&self.non_finite),
            "stale": get(&self.stale),
            "level": self.level.get().map(|l| serde_json::json!({
                "rms_dbfs": l.rms_dbfs, "peak_dbfs": l.peak_dbfs, "voice": l.voice,
            })),
            "plugin": *lock(&self.plugin),
        })
    }
}

/// One instance's `Store` data.
pub struct HostState {
    pub(crate) stage: std::sync::Arc<StageShared>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// Stdout and stderr, captured into the stage's log.
    pub(crate) output: (PluginOutput, PluginOutput),
    /// The runtime's epoch count, and the epoch by which the call in
    /// progress must end (its deadline): a WASI sleep may not go past it.
    pub(crate) epochs: Arc<AtomicU64>,
    pub(crate) call_ends: u64,
    /// The call in progress past its deadline (see `runtime::deadline`).
    pub(crate) clock: super::deadline::CallClock,
    /// Changes this instance made to the state store.
    pub(crate) state_writes: u64,
    /// The item index the plugin last marked with `begin-item`.
    pub(crate) current_item: Option<u32>,
    /// The last `panicked at` message the plugin logged.
    pub(crate) panic_message: Option<String>,
    /// Set when a memory or table growth hit the limit (the trap's cause).
    pub(crate) limit_hit: Option<String>,
    /// What an audio DSP plugin handed back through `dsp-output`.
    pub(crate) dsp_output: DspOutput,
    /// Keys an E2EE plugin loaded through `aead`.
    pub(crate) keys: super::aead::Keys,
    memory_limit: u64,
    started: Instant,
}

impl HostState {
    /// `wall_clock`: whether the plugin sees the real date (E2EE stages
    /// do: MLS checks key package lifetimes against it); others see 1970.
    pub fn new(stage: std::sync::Arc<StageShared>, epochs: Arc<AtomicU64>, memory_limit: u64, wall_clock: bool) -> HostState {
        let output = PluginOutput::pair(stage.log.clone());
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.0.clone()).stderr(output.1.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        if !wall_clock {
            wasi.wall_clock(FrozenWallClock);
        }
        let wasi = wasi.build();
        HostState {
            stage,
            wasi,
            table: ResourceTable::new(),
            output,
            epochs,
            call_ends: 0,
            clock: super::deadline::CallClock::default(),
            state_writes: 0,
            current_item: None,
            panic_message: None,
            limit_hit: None,
            dsp_output: DspOutput::default(),
            keys: Default::default(),
            memory_limit,
            started: Instant::now(),
        }
    }
}

impl HostState {
    /// The node's monotonic clock as the plugin sees it.
    pub(crate) fn monotonic_nanos(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

impl Drop for HostState {
    /// Lines the instance left unfinished on stdout or stderr still reach
    /// the log (the pair shares one buffer: flushing one flushes both).
    fn drop(&mut self) {
        self.output.0.flush();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Plugins get no wall clock unless their kind needs one: they see 1970.
struct FrozenWallClock;

impl wasmtime_wasi::HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            let message = format!(
                "memory limit hit: the plugin asked to grow its memory from {current} to {desired} bytes, \
                 its limits.memory is {}",
                self.memory_limit
            );
            self.limit_hit = Some(message.clone());
            // An error here traps the guest, which is what we want: a plugin
            // that cannot get memory is broken, and Rust would abort anyway.
            return Err(wasmtime::Error::msg(message));
        }
        self.stage.metrics.memory_peak.fetch_max(desired as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        const MAX_TABLE: usize = 100_000;
        if desired > MAX_TABLE {
            let message = format!("table limit hit: growing a table from {current} to {desired} elements");
            self.limit_hit = Some(message.clone());
            return Err(wasmtime::Error::msg(message));
        }
        Ok(true)
    }
}

impl HostState {
    /// A log call: `head` is the start of the plugin's message, `cut` how
    /// many bytes of it were not copied out of the plugin's memory.
    fn log_head(&mut self, level: Level, head: &[u8], cut: usize) {
        if head.starts_with(b"panicked at") {
            self.panic_message = Some(super::log::escape_cut(head, MAX_PANIC_MESSAGE));
        }
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        // One call, one line: line breaks in it are escaped.
        self.stage.log.line_at(Instant::now(), Origin::Log(level), head, cut);
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log_head(level, message.as_bytes(), 0);
    }

    fn monotonic_now(&mut self) -> u64 {
        self.monotonic_nanos()
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.stage.metrics.plugin_metric(name, |v| *v += delta as f64);
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        self.stage.metrics.plugin_metric(name, |v| *v = value);
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        lock(&self.stage.state).get(&key).map(<[u8]>::to_vec)
    }

    fn state_put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let mut state = lock(&self.stage.state);
        let before = state.version();
        let put = state.put(key, value);
        self.state_writes += state.version() - before;
        put
    }

    fn state_delete(&mut self, key: String) {
        let mut state = lock(&self.stage.state);
        let before = state.version();
        state.delete(&key);
        self.state_writes += state.version() - before;
    }

    fn begin_item(&mut self, index: u32) {
        self.current_item = Some(index);
    }
}

impl super::bindings::medianode::plugin::types::Host for HostState {}

/// Adds the `host` and `aead` interfaces and WASI to a linker.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    super::wasi::add_monotonic_clock(linker)?;
    host::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    super::bindings::aead::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    // `log` and `state-put` by hand too (shadowing the generated ones),
    // for the same reason as `output` below: they read the plugin's memory
    // in place, so a 16 MB log message costs the host the bytes it keeps,
    // and a value past the state quota is refused before it is copied.
    linker.allow_shadowing(true);
    let mut host_calls = linker.instance("medianode:plugin/host@0.3.0")?;
    host_calls.func_wrap("log", |mut store: StoreContextMut<'_, HostState>, (level, message): (Level, WasmStr)| {
        let text = message.to_str(&store)?;
        let head = text.as_bytes()[..text.len().min(MAX_PANIC_MESSAGE)].to_vec();
        let cut = text.len() - head.len();
        store.data_mut().log_head(level, &head, cut);
        Ok(())
    })?;
    host_calls.func_wrap("state-put", |mut store: StoreContextMut<'_, HostState>, (key, value): (WasmStr, WasmList<u8>)| {
        let quota = lock(&store.data().stage.state).quota();
        let wanted = key.to_str(&store)?.len() as u64 + value.len() as u64;
        if wanted > quota {
            let refused = format!("state quota exceeded: {wanted} bytes for one key and value, the stage's limits.state is {quota}");
            return Ok((Err(refused),));
        }
        let key = key.to_str(&store)?.into_owned();
        let value = value.as_le_slice(&store).to_vec();
        Ok((host::Host::state_put(store.data_mut(), key, value),))
    })?;
    linker.allow_shadowing(false);
    // By hand rather than generated: `WasmList` borrows the lists in the
    // plugin's memory for the length of the call, so copying them into the
    // reused buffers allocates nothing (generated code would build Vecs).
    linker.instance("medianode:plugin/dsp-output@0.3.0")?.func_wrap(
        "output",
        |mut store: StoreContextMut<'_, HostState>, (blocks, samples): (WasmList<BlockInfo>, WasmList<u32>)| {
            let mut out = std::mem::take(&mut store.data_mut().dsp_output);
            out.blocks.clear();
            out.samples.clear();
            for block in blocks.iter(&mut store)? {
                out.blocks.push(block?);
            }
            out.samples.extend_from_slice(samples.as_le_slice(&store));
            out.given = true;
            store.data_mut().dsp_output = out;
            Ok(())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::StateStore;

    #[test]
    fn state_store_enforces_its_quota_and_tracks_overwrites() {
        let mut store = StateStore::new(10);
        store.put("k".into(), vec![0; 5]).unwrap();
        assert_eq!(store.used(), 6);
        // Overwriting replaces the old value's share of the quota.
        store.put("k".into(), vec![0; 9]).unwrap();
        assert_eq!(store.used(), 10);
        let err = store.put("j".into(), vec![0; 1]).unwrap_err();
        assert!(err.contains("state quota exceeded"), "{err}");
        assert_eq!(store.get("j"), None, "a refused write stores nothing");
        store.delete("k");
        assert_eq!(store.used(), 0);
        store.delete("missing");
    }
}
