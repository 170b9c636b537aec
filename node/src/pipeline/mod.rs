//! A running pipeline: sources, supervised stages and sinks in one graph.
//!
//! [`Pipeline::build`] turns a checked [`PipelineConfig`] into nodes in
//! topological order: it compiles (or fetches from cache) every plugin,
//! learns each stage's kind from the interface its plugin exports, checks
//! that every link joins matching port types, and starts each stage's
//! supervisor (active instance plus standby).
//!
//! [`Pipeline::run`] then ticks: each tick, every source makes one batch,
//! which flows through the stages to the sinks. A stage's output goes to
//! every node that lists it as an input (cloned for all but the last
//! reader).
//!
//! Threads: sources, built-in stages and sinks run on the pipeline's driver
//! thread; each plugin stage runs on a stage thread of its own
//! ([`crate::supervisor::thread`]), and builds its instances on its builder
//! thread. The driver hands a stage its input as soon as the input is ready,
//! so stages that do not depend on each other run side by side, and a
//! stage that is slow or down delays only the nodes downstream of it. The
//! tick's schedule comes from tokio's clock (tests pause it); under `pace =
//! "realtime"`, a tick's work has `budget` of real time, after which every
//! stage that has not answered is late and its failure policy's stand-in
//! (muted audio, dropped frames, its input under `fail-open`) takes its
//! place for that tick. No async thread ever calls a plugin.

mod chain;
mod start_failure;

use chain::{Answer, Chain};
pub use medianode_core::config::graph::{Plan, to_dot};
pub(crate) use start_failure::start_failure;

use crate::builtin::BuiltinStage;
use crate::config::{ConfigError, ConfigErrors, Pace, PipelineConfig, Runs, SinkKind, SourceKind, StageConfig};
use crate::io::{Sink, SinkStats, Source};
use crate::runtime::bindings::FrameBatch;
use crate::runtime::{AudioBatch, Items, Plugin, Runtime, StageShared};
use crate::supervisor::crash_report::CrashReporter;
use crate::supervisor::thread::{SPIN, spin_recv};
use crate::supervisor::{StageSpec, Stopped, Supervisor};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The pipeline's ends of a room's media, on an edge node (`[client]`):
/// the edge fills and drains them (see `crate::edge`).
pub struct Ports {
    /// Frames to publish (the `publish` sink writes here), sealed on the way.
    pub publish: mpsc::Sender<FrameBatch>,
    /// Frames received, opened, with their publisher's name (the
    /// `subscribe` source reads here; taken by the pipeline).
    pub subscribe: Option<mpsc::Receiver<(String, FrameBatch)>>,
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Something in the file is wrong (found once plugins were loaded).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A stage's first instance would not start.
    #[error("stage `{stage}` failed to start ({kind}): {message}")]
    Start { stage: String, kind: &'static str, message: String },
}

enum NodeKind {
    Source(Source),
    /// One or more plugin stages on a stage thread (see [`chain`]).
    Stage(Chain),
    Builtin(Box<dyn BuiltinStage>),
    Sink(Sink),
}

/// A chain's answer for a tick, or the pipeline must stop.
struct Done {
    node: usize,
    tick: u64,
    result: Result<Answer, Stopped>,
}

/// What the driver tells the async side after each realtime tick.
enum Ack {
    More,
    Ended,
}

/// Where the driver's ticks come from.
enum Schedule {
    /// `pace = "realtime"`: from the async side, one at a time, each
    /// answered.
    Ticks(std_mpsc::Receiver<Instant>, mpsc::Sender<Ack>),
    /// `pace = "asap"`: back to back, tick `n` at `start + n * period`,
    /// until `stop`.
    Free { start: Instant, period: Duration, stop: Arc<AtomicBool> },
}

impl Schedule {
    /// The time of tick `n`, or `None`: no more ticks.
    fn next(&self, n: u32) -> Option<Instant> {
        match self {
            Schedule::Ticks(ticks, _) => ticks.recv().ok(),
            Schedule::Free { start, period, stop } => (!stop.load(Ordering::Relaxed)).then(|| *start + period.saturating_mul(n)),
        }
    }

    /// Tells the async side a tick is done (and whether more will come).
    fn ack(&self, more: bool) {
        if let Schedule::Ticks(_, ack) = self {
            let _ = ack.try_send(if more { Ack::More } else { Ack::Ended });
        }
    }
}

struct Node {
    id: String,
    kind: NodeKind,
    /// Indices of the nodes this one reads, all earlier in `nodes`.
    inputs: Vec<usize>,
    /// How many nodes read this one's output.
    readers: usize,
}

/// Why a second subscribe or room source cannot be built.
const ONE_ROOM_SOURCE: &str = "a node has one subscribe or room source, fed by its [client]";

/// Live views of a pipeline's stages and sinks, usable while it runs.
#[derive(Clone, Default)]
pub struct PipelineStats {
    pub stages: Vec<Arc<StageShared>>,
    pub sinks: Vec<(String, Arc<SinkStats>)>,
    /// A room source's mix: its voices' levels and counts.
    pub mix: Option<Arc<crate::io::mix::MixStats>>,
}

impl PipelineStats {
    pub fn stage(&self, id: &str) -> Option<&Arc<StageShared>> {
        self.stages.iter().find(|s| s.id == id)
    }

    pub fn sink(&self, id: &str) -> Option<&Arc<SinkStats>> {
        self.sinks.iter().find(|(s, _)| s == id).map(|(_, s)| s)
    }

    /// Everything as JSON, for logs and reports.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stages": self.stages.iter().map(|s| (s.id.clone(), s.snapshot())).collect::<serde_json::Map<_, _>>(),
            "sinks": self.sinks.iter().map(|(id, s)| (id.clone(), serde_json::json!(s.get()))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// A built pipeline, ready to run.
pub struct Pipeline {
    pub name: String,
    pace: Pace,
    tick: Duration,
    nodes: Vec<Node>,
    channels: HashMap<String, mpsc::Receiver<Items>>,
    stats: PipelineStats,
    budget: Duration,
    ticks: u64,
    scratch: TickScratch,
}

/// A tick's bookkeeping, one entry per node, kept from tick to tick so
/// that a tick allocates none of it.
#[derive(Default)]
struct TickScratch {
    outputs: Vec<Option<Items>>,
    unread: Vec<usize>,
    started: Vec<bool>,
    resolved: Vec<bool>,
    /// Audio batches the sinks were done with, for the sources to fill
    /// again (a few: one per source and tick in flight is enough).
    recycled: Vec<AudioBatch>,
}

/// Batches kept for reuse at most.
const RECYCLED: usize = 8;

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e.into())
    }
}

/// A pipeline's plugins, compiled, and its checked graph.
pub struct Compiled {
    /// Each plugin stage's plugin, by stage id.
    pub plugins: HashMap<String, Arc<Plugin>>,
    pub plan: Plan,
}

impl Compiled {
    /// Starts the supervision of plugin stage `index` of the config: its
    /// first instance, its standby. A stage that will not start is an error
    /// located in the file, as `check` finds it.
    pub(crate) fn supervise(
        &self,
        config: &PipelineConfig,
        index: usize,
        reporter: &CrashReporter,
        now: Instant,
    ) -> Result<Supervisor, BuildError> {
        let stage = &config.stages[index];
        let Some(plugin) = self.plugins.get(&stage.id) else {
            // `compile` returns an error for every plugin it did not compile.
            return Err(config.error(stage.span.clone(), "the stage's plugin was not compiled", "report this as a bug").into());
        };
        if plugin.is_native() {
            tracing::warn!(stage = %stage.id, plugin = %plugin.source, "a native plugin: NOT isolated (no deadline, no memory limit; a crash or a hang in it takes the node)");
        }
        Supervisor::start(spec(stage, plugin.clone()), reporter.clone(), now)
            .map_err(|fault| BuildError::Config(start_failure(config, stage, &fault).into()))
    }
}

/// Compiles (or finds in the cache) every plugin of the pipeline, learns
/// each one's kind, and checks the graph's link types with them. Every
/// error at once; nothing is started.
pub fn compile(runtime: &Runtime, config: &PipelineConfig) -> Result<Compiled, ConfigErrors> {
    let mut errors = Vec::new();
    let mut plugins = HashMap::new();
    for stage in &config.stages {
        let Runs::Plugin(plugin) = &stage.runs else { continue };
        let loaded = match plugin.native {
            Some(_) => runtime.load_native(&plugin.name, &config.file.dir().join(&plugin.name), &plugin.bytes),
            None => runtime.load(&plugin.name, &plugin.bytes, stage.limits.stack),
        };
        match loaded {
            Ok(loaded) => {
                plugins.insert(stage.id.clone(), loaded);
            }
            Err(e) => errors.push(config.error(
                plugin.span.clone(),
                format!("{e:#}"),
                match plugin.native {
                    Some(_) => "check that the file is a library built with medianode_sdk::export_native_audio_dsp! for this machine",
                    None => "check that the file is a component built with medianode-sdk for wasm32-wasip2",
                },
            )),
        }
    }
    let kinds = plugins.iter().map(|(id, plugin)| (id.as_str(), plugin.kind)).collect();
    let plan = medianode_core::config::graph::plan(config, &kinds);
    if let Err(plan_errors) = &plan {
        errors.extend(plan_errors.iter().cloned());
    }
    // A failed plan added its errors above, so past this point it is `Ok`.
    if let Some(errors) = ConfigErrors::new(errors) {
        return Err(errors);
    }
    plan.map(|plan| Compiled { plugins, plan })
}

/// What a supervisor needs of a stage of the file: its plugin and settings.
pub(crate) fn spec(stage: &StageConfig, plugin: Arc<Plugin>) -> StageSpec {
    StageSpec {
        id: stage.id.clone(),
        plugin,
        config_json: stage.config_json.clone(),
        limits: stage.limits.clone(),
        restart: stage.restart.clone(),
        failure: stage.failure,
        recorder: stage.recorder,
        seed: rand::random(),
    }
}

impl Pipeline {
    /// Loads plugins, checks links and starts every stage.
    pub fn build(runtime: &Runtime, config: &PipelineConfig, reporter: &CrashReporter) -> Result<Pipeline, BuildError> {
        Pipeline::build_with(runtime, config, reporter, None)
    }

    /// [`Pipeline::build`], with an edge node's media for the `subscribe`
    /// source and `publish` sinks.
    pub fn build_with(
        runtime: &Runtime,
        config: &PipelineConfig,
        reporter: &CrashReporter,
        mut ports: Option<Ports>,
    ) -> Result<Pipeline, BuildError> {
        let now = tokio::time::Instant::now().into_std();
        let compiled = compile(runtime, config)?;
        let mut nodes = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut channels = HashMap::new();
        let mut stats = PipelineStats::default();

        for source in &config.sources {
            let made = match &source.kind {
                SourceKind::Subscribe { publisher } => match ports.as_mut().and_then(|p| p.subscribe.take()) {
                    Some(from) => Ok(Source::subscribe(publisher, from)),
                    None => Err(ONE_ROOM_SOURCE.to_string()),
                },
                SourceKind::Room { channels } => match ports.as_mut().and_then(|p| p.subscribe.take()) {
                    Some(from) => Ok(Source::room(*channels, config.tick, from)),
                    None => Err(ONE_ROOM_SOURCE.to_string()),
                },
                _ => Source::new(source, config.tick),
            };
            let made = made.map_err(|message| {
                let span = match &source.kind {
                    SourceKind::Wav { path_span, .. } => path_span.clone(),
                    _ => source.span.clone(),
                };
                let hint = match &source.kind {
                    SourceKind::Device { .. } => "list the audio devices with `medianode devices`",
                    _ => "check the file: a PCM or float WAV",
                };
                config.error(span, message, hint)
            })?;
            if let Some(mix) = made.mix_stats() {
                stats.mix = Some(mix);
            }
            index.insert(&source.id, nodes.len());
            nodes.push(Node { id: source.id.clone(), kind: NodeKind::Source(made), inputs: Vec::new(), readers: 0 });
        }

        // Stages in dependency order. (Stages without inputs serve
        // `[server]` or `[client]`: see `crate::server` and `crate::edge`.)
        for &i in &compiled.plan.order {
            let stage = &config.stages[i];
            let inputs = link(&index, &stage.inputs);
            let kind = match &stage.runs {
                Runs::Builtin(builtin) => NodeKind::Builtin(crate::builtin::start(builtin).map_err(|message| BuildError::Start {
                    stage: stage.id.clone(),
                    kind: "builtin",
                    message,
                })?),
                Runs::Plugin(_) => {
                    let supervisor = compiled.supervise(config, i, reporter, now)?;
                    stats.stages.push(supervisor.shared().clone());
                    let build_wait = stage.limits.init_deadline.saturating_mul(2) + Duration::from_secs(1);
                    NodeKind::Stage(Chain::new(&stage.id, supervisor, stage.failure, build_wait, now))
                }
            };
            index.insert(&stage.id, nodes.len());
            nodes.push(Node { id: stage.id.clone(), kind, inputs, readers: 0 });
        }

        for sink_config in &config.sinks {
            let inputs = link(&index, &sink_config.inputs);
            let (sink, reader) = match (&sink_config.kind, &ports) {
                (SinkKind::Publish, Some(ports)) => Ok((Sink::publish(sink_config, ports.publish.clone()), None)),
                _ => Sink::new(sink_config, config.pace),
            }
            .map_err(|message| config.error(sink_config.span.clone(), message, "list the audio devices with `medianode devices`"))?;
            stats.sinks.push((sink_config.id.clone(), sink.stats().clone()));
            if let Some(reader) = reader {
                channels.insert(sink_config.id.clone(), reader);
            }
            nodes.push(Node { id: sink_config.id.clone(), kind: NodeKind::Sink(sink), inputs, readers: 0 });
        }

        count_readers(&mut nodes);
        let mut nodes = chain::fuse(nodes);
        count_readers(&mut nodes);
        for node in &mut nodes {
            if let NodeKind::Stage(chain) = &mut node.kind {
                let message = |e: std::io::Error| format!("cannot start the stage thread: {e}");
                chain.start().map_err(|e| BuildError::Start { stage: node.id.clone(), kind: "thread", message: message(e) })?;
            }
        }
        Ok(Pipeline {
            name: config.name.clone(),
            pace: config.pace,
            tick: config.tick,
            nodes,
            channels,
            stats,
            budget: config.budget,
            ticks: 0,
            scratch: TickScratch::default(),
        })
    }

    /// The reader of channel sink `id` (once).
    pub fn take_channel(&mut self, id: &str) -> Option<mpsc::Receiver<Items>> {
        self.channels.remove(id)
    }

    /// Live stats of every stage and sink.
    pub fn stats(&self) -> PipelineStats {
        self.stats.clone()
    }

    /// Runs until every source has ended or `shutdown` completes. Fails only
    /// when a stage with the `stop` policy gives up.
    ///
    /// The work happens on the driver thread and the stage threads; this
    /// future keeps the schedule. Under `pace = "realtime"` it hands the
    /// driver one tick per `tick` of tokio time and waits for each tick to
    /// be done (so a paused test clock never runs ahead of the work). Under
    /// `asap` the driver runs ticks back to back on its own, each `now` a
    /// `tick` after the last (media time, not the wall clock). Either way a
    /// shutdown is seen within one tick's work.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<PipelineStats, Stopped> {
        tracing::info!(pipeline = %self.name, nodes = self.nodes.len(), "pipeline running");
        let pace = self.pace;
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (tick_tx, tick_rx) = std_mpsc::sync_channel::<Instant>(1);
        let (ack_tx, mut ack_rx) = mpsc::channel::<Ack>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let schedule = match pace {
            Pace::Realtime => Schedule::Ticks(tick_rx, ack_tx),
            Pace::Asap => Schedule::Free { start: tokio::time::Instant::now().into_std(), period: self.tick, stop: stop.clone() },
        };
        let (finished_tx, mut finished_rx) = tokio::sync::oneshot::channel();
        let name = format!("pipeline-{}", self.name);
        let pulse = crate::supervisor::pulse::Pulse::register(&name);
        let driver = std::thread::Builder::new().name(name).spawn(move || {
            let _ = finished_tx.send(self.drive(schedule, &pulse));
        });
        if let Err(e) = driver {
            tracing::error!("cannot start the pipeline's driver thread: {e}");
            return Ok(PipelineStats::default());
        }
        tokio::pin!(shutdown);
        match pace {
            Pace::Asap => tokio::select! {
                biased;
                _ = &mut shutdown => stop.store(true, Ordering::Relaxed),
                finished = &mut finished_rx => return finished.unwrap_or_else(|_| Ok(PipelineStats::default())),
            },
            Pace::Realtime => loop {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = interval.tick() => {}
                }
                if tick_tx.try_send(tokio::time::Instant::now().into_std()).is_err() {
                    break;
                }
                let ack = tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    ack = ack_rx.recv() => ack,
                };
                if !matches!(ack, Some(Ack::More)) {
                    break;
                }
            },
        }
        drop(tick_tx);
        finished_rx.await.unwrap_or_else(|_| Ok(PipelineStats::default()))
    }

    /// The driver thread: ticks on `schedule` until it ends or the sources do.
    fn drive(mut self, schedule: Schedule, pulse: &crate::supervisor::pulse::Pulse) -> Result<PipelineStats, Stopped> {
        let (done_tx, done_rx) = std_mpsc::sync_channel::<Done>(self.nodes.len().max(1) * 4);
        let mut result = Ok(());
        let mut n = 0u32;
        while let Some(now) = schedule.next(n) {
            n = n.saturating_add(1);
            pulse.busy();
            let ticked = self.tick(now, &done_tx, &done_rx);
            pulse.idle();
            let more = matches!(ticked, Ok(true));
            schedule.ack(more);
            match ticked {
                Ok(true) => {}
                Ok(false) => break,
                Err(stopped) => {
                    result = Err(stopped);
                    break;
                }
            }
        }
        for node in &mut self.nodes {
            if let NodeKind::Sink(sink) = &mut node.kind {
                sink.finish();
            }
        }
        tracing::info!(pipeline = %self.name, stats = %self.stats.to_json(), "pipeline stopped");
        result.map(|()| self.stats.clone())
    }

    /// One tick: every source makes a batch that flows to the sinks. Returns
    /// false once all sources have ended.
    fn tick(&mut self, now: Instant, done_tx: &std_mpsc::SyncSender<Done>, done_rx: &std_mpsc::Receiver<Done>) -> Result<bool, Stopped> {
        self.ticks += 1;
        let tick = self.ticks;
        let budget_end = (self.pace == Pace::Realtime).then(|| Instant::now() + self.budget);
        let n = self.nodes.len();
        // Per node (buffers reused from tick to tick): its output, how many
        // readers have yet to take it, whether it has started (taken its
        // input) and whether its output is known.
        let TickScratch { outputs, unread, started, resolved, recycled } = &mut self.scratch;
        outputs.clear();
        outputs.resize_with(n, || None);
        unread.clear();
        unread.extend(self.nodes.iter().map(|node| node.readers));
        started.clear();
        started.resize(n, false);
        resolved.clear();
        resolved.resize(n, false);
        let mut any_source = false;
        loop {
            // Start every node whose inputs are all known, in order (which
            // is topological), until nothing more can start.
            for i in 0..n {
                if started[i] || !self.nodes[i].inputs.iter().all(|&j| resolved[j]) {
                    continue;
                }
                started[i] = true;
                resolved[i] = true; // all but a stage that is sent its input
                let input = gather(&self.nodes[i].inputs, outputs, unread);
                match &mut self.nodes[i].kind {
                    NodeKind::Source(source) => {
                        source.take_spare(recycled);
                        outputs[i] = source.produce();
                        any_source |= outputs[i].is_some();
                    }
                    NodeKind::Builtin(stage) => {
                        outputs[i] = input.filter(|items| !items.is_empty()).map(|items| stage.process(items));
                    }
                    NodeKind::Sink(sink) => {
                        if let Some(Items::Audio(batch)) = input.and_then(|items| sink.deliver(items))
                            && recycled.len() < RECYCLED
                        {
                            recycled.push(batch);
                        }
                    }
                    NodeKind::Stage(chain) => {
                        let Some(items) = input.filter(|items| !items.is_empty()) else { continue };
                        let wait_until = budget_end.unwrap_or_else(|| Instant::now() + chain.build_wait);
                        let sent = chain.send(chain::Tick { items, now, wait_until, done: done_tx.clone(), node: i, tick });
                        match sent {
                            Ok(()) => resolved[i] = false,
                            Err(_) => outputs[i] = Some(chain.late()),
                        }
                    }
                }
            }
            if resolved.iter().all(|&r| r) {
                return Ok(any_source);
            }
            // Chains usually answer within microseconds: look before sleeping.
            let done = match (spin_recv(done_rx, SPIN), budget_end) {
                (Some(done), _) => Ok(done),
                (None, Some(end)) => done_rx.recv_timeout(end.saturating_duration_since(Instant::now())),
                (None, None) => done_rx.recv().map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
            };
            match done {
                Ok(Done { tick: t, .. }) if t != tick => {} // a late answer to a tick already done
                Ok(Done { node, result, .. }) => {
                    outputs[node] = match (result?, &mut self.nodes[node].kind) {
                        (Answer::Output(output), _) => Some(output),
                        (Answer::Nothing, _) => None,
                        (Answer::Expired, NodeKind::Stage(chain)) => Some(chain.late()),
                        (Answer::Expired, _) => None,
                    };
                    resolved[node] = true;
                }
                // Out of budget: every stage still working is late.
                Err(_) => {
                    for (i, node) in self.nodes.iter_mut().enumerate() {
                        if let (false, NodeKind::Stage(chain)) = (resolved[i], &mut node.kind) {
                            outputs[i] = Some(chain.late());
                            resolved[i] = true;
                        }
                    }
                }
            }
        }
    }

    /// Node ids in execution order (each stage of a chain).
    pub fn order(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .flat_map(|n| match &n.kind {
                NodeKind::Stage(chain) => chain.ids.iter().map(String::as_str).collect(),
                _ => vec![n.id.as_str()],
            })
            .collect()
    }
}

/// Sets each node's number of readers from the others' inputs.
fn count_readers(nodes: &mut [Node]) {
    nodes.iter_mut().for_each(|n| n.readers = 0);
    for i in 0..nodes.len() {
        for j in nodes[i].inputs.clone() {
            nodes[j].readers += 1;
        }
    }
}

/// A node's inputs as indices of the nodes before it (the plan checked
/// that each names one, with the right type).
fn link(index: &HashMap<&str, usize>, inputs: &[crate::config::Input]) -> Vec<usize> {
    inputs.iter().filter_map(|input| index.get(input.from.as_str()).copied()).collect()
}

/// Collects a node's inputs from this tick's outputs, moving each output to
/// its last reader and cloning it for the others.
fn gather(inputs: &[usize], outputs: &mut [Option<Items>], unread: &mut [usize]) -> Option<Items> {
    let mut gathered: Option<Items> = None;
    for &j in inputs {
        unread[j] -= 1;
        let items = if unread[j] == 0 { outputs[j].take() } else { outputs[j].clone() };
        if let Some(items) = items {
            match &mut gathered {
                Some(g) => g.append(&items),
                None => gathered = Some(items),
            }
        }
    }
    gathered
}
