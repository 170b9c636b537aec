//! A running pipeline: sources, supervised stages and sinks in one graph.
//!
//! [`Pipeline::build`] turns a checked [`PipelineConfig`] into nodes in
//! topological order: it compiles (or fetches from cache) every plugin,
//! learns each stage's kind from the interface its plugin exports, checks
//! that every link joins matching port types, and starts each stage's
//! supervisor (active instance plus standby).
//!
//! [`Pipeline::run`] then ticks: each tick, every source makes one batch,
//! which flows through the stages in order to the sinks. A stage's output
//! goes to every node that lists it as an input (cloned for all but the
//! last reader). After each tick, supervisors get idle time to start spare
//! instances. All timing comes from tokio's clock, so tests can pause it.

mod graph;

pub use graph::to_dot;

use crate::builtin::BuiltinStage;
use crate::config::{ConfigError, Pace, PipelineConfig, PluginRef, Runs, SinkKind, SourceKind, StageConfig};
use crate::io::{Sink, SinkStats, Source};
use crate::runtime::{AudioBatch, Items, Plugin, Runtime, StageKind, StageShared};
use crate::supervisor::crash_report::CrashReporter;
use crate::supervisor::{StageSpec, Stopped, Supervisor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The type of items on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortType {
    Audio,
    Frames,
}

impl PortType {
    fn describe(self) -> &'static str {
        match self {
            PortType::Audio => "audio blocks",
            PortType::Frames => "frames",
        }
    }
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Something in the file is wrong (found once plugins were loaded).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A stage's first instance would not start.
    #[error("stage `{stage}` failed to start ({kind}): {message}")]
    Start { stage: String, kind: &'static str, message: String },
}

enum NodeKind {
    Source(Source),
    /// A plugin stage, with the audio buffers its next output will use (the
    /// previous input's, recycled: the stage allocates nothing per block).
    Stage(Supervisor, AudioBatch),
    Builtin(Box<dyn BuiltinStage>),
    Sink(Sink),
}

struct Node {
    id: String,
    kind: NodeKind,
    /// Indices of the nodes this one reads, all earlier in `nodes`.
    inputs: Vec<usize>,
    /// How many nodes read this one's output.
    readers: usize,
}

/// Live views of a pipeline's stages and sinks, usable while it runs.
#[derive(Clone, Default)]
pub struct PipelineStats {
    pub stages: Vec<Arc<StageShared>>,
    pub sinks: Vec<(String, Arc<SinkStats>)>,
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
            "stages": self.stages.iter().map(|s| (s.id.clone(), s.metrics.snapshot())).collect::<serde_json::Map<_, _>>(),
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
}

/// Compiles (or finds in the cache) a stage's plugin.
pub(crate) fn load_plugin(runtime: &Runtime, config: &PipelineConfig, stage: &StageConfig, plugin: &PluginRef) -> Result<Arc<Plugin>, BuildError> {
    let hint = "check that the file is a component built with medianode-sdk for wasm32-wasip2";
    Ok(runtime.load(&plugin.name, &plugin.bytes, stage.limits.stack).map_err(|e| config.error(plugin.span.clone(), format!("{e:#}"), hint))?)
}

/// Starts a stage's first instance, its standby and its supervision.
pub(crate) fn supervise(stage: &StageConfig, plugin: Arc<Plugin>, reporter: &CrashReporter, now: Instant) -> Result<Supervisor, BuildError> {
    let spec = StageSpec {
        id: stage.id.clone(),
        plugin,
        config_json: stage.config_json.clone(),
        limits: stage.limits.clone(),
        restart: stage.restart.clone(),
        failure: stage.failure,
        recorder: stage.recorder,
        seed: rand::random(),
    };
    Supervisor::start(spec, reporter.clone(), now)
        .map_err(|fault| BuildError::Start { stage: stage.id.clone(), kind: fault.kind.name(), message: fault.message })
}

impl Pipeline {
    /// Loads plugins, checks links and starts every stage.
    pub fn build(runtime: &Runtime, config: &PipelineConfig, reporter: &CrashReporter) -> Result<Pipeline, BuildError> {
        Pipeline::build_with(runtime, config, reporter, None)
    }

    /// [`Pipeline::build`], with an edge node's media for the `subscribe`
    /// source and `publish` sinks.
    pub fn build_with(runtime: &Runtime, config: &PipelineConfig, reporter: &CrashReporter, mut ports: Option<crate::edge::Ports>) -> Result<Pipeline, BuildError> {
        let now = tokio::time::Instant::now().into_std();
        let mut nodes = Vec::new();
        let mut index: HashMap<&str, (usize, PortType)> = HashMap::new();
        let mut channels = HashMap::new();
        let mut stats = PipelineStats::default();

        for source in &config.sources {
            let ty = if source.kind.is_audio() { PortType::Audio } else { PortType::Frames };
            let made = match &source.kind {
                SourceKind::Subscribe { publisher } => match ports.as_mut().and_then(|p| p.subscribe.take()) {
                    Some(from) => Ok(Source::subscribe(publisher, from)),
                    None => Err("a node has one subscribe source, fed by its [client]".to_string()),
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
            index.insert(&source.id, (nodes.len(), ty));
            nodes.push(Node {
                id: source.id.clone(),
                kind: NodeKind::Source(made),
                inputs: Vec::new(),
                readers: 0,
            });
        }

        // Stages in dependency order (the config check ruled out cycles).
        // (Stages without inputs serve `[server]`: see `crate::server`.)
        let mut pending: Vec<_> = config.stages.iter().filter(|s| !s.serves()).collect();
        while !pending.is_empty() {
            let ready = pending.iter().position(|s| s.inputs.iter().all(|i| index.contains_key(i.from.as_str())));
            let Some(ready) = ready else {
                return Err(config.error(pending[0].span.clone(), "stage inputs cannot be ordered", "remove the cycle among these stages").into());
            };
            let stage = pending.remove(ready);
            let plugin_ref = match &stage.runs {
                Runs::Plugin(p) => p,
                Runs::Builtin(builtin) => {
                    let (takes_audio, makes_audio) = builtin.ports();
                    let port = |audio| if audio { PortType::Audio } else { PortType::Frames };
                    let inputs = link(config, &index, &stage.id, &stage.inputs, Some(port(takes_audio)), builtin.name())?;
                    let running = builtin.start().map_err(|message| BuildError::Start { stage: stage.id.clone(), kind: "builtin", message })?;
                    index.insert(&stage.id, (nodes.len(), port(makes_audio)));
                    nodes.push(Node { id: stage.id.clone(), kind: NodeKind::Builtin(running), inputs, readers: 0 });
                    continue;
                }
            };
            let plugin = load_plugin(runtime, config, stage, plugin_ref)?;
            let ty = match plugin.kind {
                StageKind::AudioDsp => PortType::Audio,
                StageKind::FrameTransform => PortType::Frames,
                other => {
                    let serves = if other == StageKind::Encryption { "[client]" } else { "[server]" };
                    let message = format!("{} plugins serve the {serves}, not a pipeline of sources and sinks", other.name());
                    let hint = format!("remove this stage's `inputs` and add a {serves} table");
                    return Err(config.error(plugin_ref.span.clone(), message, hint).into());
                }
            };
            let inputs = link(config, &index, &stage.id, &stage.inputs, Some(ty), plugin.kind.name())?;
            let supervisor = supervise(stage, plugin, reporter, now)?;
            stats.stages.push(supervisor.shared().clone());
            index.insert(&stage.id, (nodes.len(), ty));
            nodes.push(Node { id: stage.id.clone(), kind: NodeKind::Stage(supervisor, AudioBatch::new()), inputs, readers: 0 });
        }

        for sink_config in &config.sinks {
            let wants = match sink_config.kind {
                SinkKind::Meter { .. } | SinkKind::Wav { .. } | SinkKind::Device { .. } => Some(PortType::Audio),
                SinkKind::Publish => Some(PortType::Frames),
                SinkKind::Null | SinkKind::Channel { .. } => None,
            };
            let inputs = link(config, &index, &sink_config.id, &sink_config.inputs, wants, "sink")?;
            let (sink, reader) = match (&sink_config.kind, &ports) {
                (SinkKind::Publish, Some(ports)) => Ok((Sink::publish(sink_config, ports.publish.clone()), None)),
                _ => Sink::new(sink_config),
            }
            .map_err(|message| config.error(sink_config.span.clone(), message, "list the audio devices with `medianode devices`"))?;
            stats.sinks.push((sink_config.id.clone(), sink.stats().clone()));
            if let Some(reader) = reader {
                channels.insert(sink_config.id.clone(), reader);
            }
            nodes.push(Node { id: sink_config.id.clone(), kind: NodeKind::Sink(sink), inputs, readers: 0 });
        }

        for i in 0..nodes.len() {
            for j in nodes[i].inputs.clone() {
                nodes[j].readers += 1;
            }
        }
        Ok(Pipeline { name: config.name.clone(), pace: config.pace, tick: config.tick, nodes, channels, stats })
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
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<PipelineStats, Stopped> {
        tracing::info!(pipeline = %self.name, nodes = self.nodes.len(), "pipeline running");
        tokio::pin!(shutdown);
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let result = loop {
            match self.pace {
                Pace::Realtime => tokio::select! {
                    biased;
                    _ = &mut shutdown => break Ok(()),
                    _ = interval.tick() => {}
                },
                Pace::Asap => tokio::select! {
                    biased;
                    _ = &mut shutdown => break Ok(()),
                    _ = tokio::task::yield_now() => {}
                },
            }
            let now = tokio::time::Instant::now().into_std();
            match self.tick(now) {
                Ok(true) => self.maintain(now),
                Ok(false) => break Ok(()),
                Err(stopped) => break Err(stopped),
            }
        };
        for node in &mut self.nodes {
            if let NodeKind::Sink(sink) = &mut node.kind {
                sink.finish();
            }
        }
        tracing::info!(pipeline = %self.name, stats = %self.stats.to_json(), "pipeline stopped");
        result.map(|()| self.stats)
    }

    /// One tick: every source makes a batch that flows to the sinks. Returns
    /// false once all sources have ended.
    pub fn tick(&mut self, now: Instant) -> Result<bool, Stopped> {
        let mut outputs: Vec<Option<Items>> = (0..self.nodes.len()).map(|_| None).collect();
        let mut unread: Vec<usize> = self.nodes.iter().map(|n| n.readers).collect();
        let mut any_source = false;
        for i in 0..self.nodes.len() {
            let input = gather(&self.nodes[i].inputs, &mut outputs, &mut unread);
            match &mut self.nodes[i].kind {
                NodeKind::Source(source) => {
                    outputs[i] = source.next();
                    any_source |= outputs[i].is_some();
                }
                NodeKind::Stage(supervisor, spare) => {
                    outputs[i] = match input.filter(|items| !items.is_empty()) {
                        Some(Items::Audio(batch)) => {
                            let mut out = std::mem::replace(spare, batch);
                            supervisor.process_audio(now, spare, &mut out)?;
                            Some(Items::Audio(out))
                        }
                        Some(items) => Some(supervisor.process(now, items)?),
                        None => None,
                    };
                }
                NodeKind::Builtin(stage) => {
                    if let Some(items) = input.filter(|items| !items.is_empty()) {
                        outputs[i] = Some(stage.process(items));
                    }
                }
                NodeKind::Sink(sink) => {
                    if let Some(items) = input {
                        sink.deliver(items);
                    }
                }
            }
        }
        Ok(any_source)
    }

    /// Idle-time work for every stage.
    pub fn maintain(&mut self, now: Instant) {
        for node in &mut self.nodes {
            if let NodeKind::Stage(supervisor, _) = &mut node.kind {
                supervisor.maintain(now);
            }
        }
    }

    /// Node ids in execution order.
    pub fn order(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.id.as_str()).collect()
    }
}

/// Resolves a node's inputs to indices, checking their port types.
fn link(
    config: &PipelineConfig,
    index: &HashMap<&str, (usize, PortType)>,
    id: &str,
    inputs: &[crate::config::Input],
    wants: Option<PortType>,
    what: &str,
) -> Result<Vec<usize>, ConfigError> {
    let mut seen: Option<(PortType, &str)> = None;
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let Some(&(i, ty)) = index.get(input.from.as_str()) else {
            return Err(config.error(input.span.clone(), format!("unknown input `{}`", input.from), "name a source or a stage"));
        };
        if let Some(want) = wants
            && ty != want
        {
            return Err(config.error(
                input.span.clone(),
                format!("type mismatch: `{}` produces {}, but `{id}` ({what}) takes {}", input.from, ty.describe(), want.describe()),
                "link nodes whose port types match: audio into audio stages, frames into frame stages",
            ));
        }
        if let Some((first, first_id)) = seen
            && first != ty
        {
            return Err(config.error(
                input.span.clone(),
                format!("type mismatch: `{}` produces {}, but `{first_id}` produces {}", input.from, ty.describe(), first.describe()),
                "all inputs of one node carry the same type",
            ));
        }
        seen = Some((ty, input.from.as_str()));
        out.push(i);
    }
    Ok(out)
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
