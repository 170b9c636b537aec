//! Pipeline files: parse, check, and explain what is wrong.
//!
//! A pipeline file describes a graph: `[[source]]`s make items, `[[stage]]`s
//! (plugins) transform them, `[[sink]]`s consume them, and every stage and
//! sink lists its `inputs` by id. For example:
//!
//! ```toml
//! [pipeline]
//! name = "demo"
//! pace = "realtime"        # or "asap"
//! tick = "10ms"
//! budget = "10ms"          # real time a tick's work may take (default: the tick)
//!
//! [[source]]
//! id = "tone"
//! kind = "tone"            # or "sweep", "wav", "device", "frames"
//! frequency = 440.0
//!
//! [[stage]]
//! id = "gain"
//! plugin = "stock:gain"    # or a path to a .wasm component, or
//!                          # builtin = "opus-encoder" (native, in the host)
//! inputs = ["tone"]
//! config = { gain-db = -6.0 }
//! limits = { memory = "16MiB", deadline = "2ms" }
//! failure = "fail-open"    # fail-closed (default) | fail-open | stop
//!
//! [[sink]]
//! id = "out"
//! kind = "meter"           # or "wav", "device", "null", "channel"
//! inputs = ["gain"]
//! ```
//!
//! A file with a `[server]` table also runs the signaling server and the
//! SFU; its stages without `inputs` serve it (see [`ServerConfig`]), and it
//! needs no sources or sinks.
//!
//! Loading is strict: unknown keys, bad units, dangling or cyclic links,
//! duplicate ids, missing plugins and digest mismatches are all errors, and
//! every error names file, line and column with a hint ([`ConfigError`]).
//! Checks that need the compiled plugins (which kind of stage each is, and
//! so whether a link's types match) run when the pipeline is built, with the
//! same kind of error.

mod error;
mod schema;
mod validation;

pub use error::{ConfigError, SourceFile};

use crate::supervisor::Limits;
use crate::supervisor::backoff::RestartConfig;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The pipeline the node runs when `medianode run` is given no file: the
/// SFU with its web page on 127.0.0.1.
pub const DEFAULT_PIPELINE: &str = include_str!("../../../pipelines/sfu.toml");

/// A checked pipeline file.
#[derive(Debug)]
pub struct PipelineConfig {
    /// The file it came from, for errors found later.
    pub file: Arc<SourceFile>,
    pub name: String,
    pub pace: Pace,
    /// How often sources produce a batch.
    pub tick: Duration,
    /// `pace = "realtime"`: how much real time a tick's work may take. A
    /// stage that has not answered by then is late: its output for the tick
    /// is its failure policy's stand-in (muted audio, dropped frames, or the
    /// input under `fail-open`), so the other chains keep their timing.
    pub budget: Duration,
    pub sources: Vec<SourceConfig>,
    pub stages: Vec<StageConfig>,
    pub sinks: Vec<SinkConfig>,
    /// The signaling server and SFU, when the file has `[server]`.
    pub server: Option<ServerConfig>,
    /// The room this node joins as a participant, when the file has `[client]`.
    pub client: Option<ClientConfig>,
}

/// `[client]`: the room this node joins on an SFU node (an edge node). The
/// stage without `inputs` serves it: an E2EE stage, which seals what the
/// node publishes and opens what it receives.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub span: Span,
    /// `ws://host:port/ws`
    pub url: String,
    pub room: String,
    pub user: String,
    pub media_ip: std::net::IpAddr,
}

/// `[server]`: where the node serves its page, signaling and media. The
/// stages without `inputs` serve it: one signaling stage (required) and at
/// most one packet-forwarding stage (without one, every packet goes to the
/// rest of its room).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub span: Span,
    pub listen: std::net::SocketAddr,
    pub media_ip: std::net::IpAddr,
    pub options: crate::signaling::server::ServerOptions,
}

/// How fast the pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One tick per `tick` of (tokio) time: live media.
    Realtime,
    /// Ticks back to back: files, tests, benchmarks.
    Asap,
}

/// What a stage does when no instance can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Drop the items (the default; the only choice for E2EE stages besides `stop`).
    FailClosed,
    /// Pass the items around the stage unchanged.
    FailOpen,
    /// Drop the items while restarting; stop the pipeline when the stage gives up.
    Stop,
}

impl FailurePolicy {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "fail-closed",
            FailurePolicy::FailOpen => "fail-open",
            FailurePolicy::Stop => "stop",
        }
    }
}

/// A byte range in the pipeline file.
pub type Span = Range<usize>;

/// A link from another node's output into this one's input.
#[derive(Debug, Clone)]
pub struct Input {
    pub from: String,
    pub span: Span,
}

#[derive(Debug)]
pub struct SourceConfig {
    pub id: String,
    pub span: Span,
    pub kind: SourceKind,
    /// Items to produce; `None` = endless.
    pub count: Option<u64>,
    /// Every Nth item is poison.
    pub poison_every: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A sine tone: 48 kHz f32 blocks, one per tick.
    Tone { frequency: f64, amplitude: f64, channels: u8 },
    /// A sine sweeping exponentially from `from` to `to` Hz over `period`,
    /// then again.
    Sweep { from: f64, to: f64, period: Duration, amplitude: f64, channels: u8 },
    /// A WAV file, converted to 48 kHz f32 with `channels` (the file's own
    /// count when `None`); ends with the file.
    Wav { path: PathBuf, path_span: Span, channels: Option<u8> },
    /// An audio input device (`None`: the default one).
    Device { device: Option<String>, channels: u8 },
    /// Numbered frames of `size` bytes, `per_tick` per tick.
    Frames { size: usize, per_tick: u32 },
    /// The frames an edge node receives from `publisher` (opened by its
    /// E2EE stage): needs a `[client]`.
    Subscribe { publisher: String },
}

impl SourceKind {
    /// The `kind` as written in pipeline files.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Tone { .. } => "tone",
            SourceKind::Sweep { .. } => "sweep",
            SourceKind::Wav { .. } => "wav",
            SourceKind::Device { .. } => "device",
            SourceKind::Frames { .. } => "frames",
            SourceKind::Subscribe { .. } => "subscribe",
        }
    }

    /// Whether it makes audio (or else frames).
    pub fn is_audio(&self) -> bool {
        !matches!(self, SourceKind::Frames { .. } | SourceKind::Subscribe { .. })
    }
}

#[derive(Debug)]
pub struct StageConfig {
    pub id: String,
    pub span: Span,
    /// What runs the stage.
    pub runs: Runs,
    pub config_json: String,
    pub limits: Limits,
    pub restart: RestartConfig,
    /// Flight recorder length.
    pub recorder: usize,
    pub failure: FailurePolicy,
    /// Encrypts or decrypts media: never bypassed (`fail-open` is refused).
    pub e2ee: bool,
    /// Empty for a stage that serves `[server]`.
    pub inputs: Vec<Input>,
}

/// What runs a stage.
#[derive(Debug)]
pub enum Runs {
    /// A wasm plugin, supervised.
    Plugin(PluginRef),
    /// Native code in the host (see [`crate::builtin`]); `limits`, `restart`
    /// and `failure` do not apply.
    Builtin(crate::builtin::Builtin),
}

/// A stage's plugin.
#[derive(Debug)]
pub struct PluginRef {
    /// `stock:NAME` or the file path as written.
    pub name: String,
    pub span: Span,
    /// The component's bytes (read once, checked against `sha256`).
    pub bytes: Arc<[u8]>,
}

impl StageConfig {
    /// Whether the stage serves `[server]` (it has no `inputs`).
    pub fn serves(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The plugin name, or `builtin:NAME`.
    pub fn runs_name(&self) -> String {
        match &self.runs {
            Runs::Plugin(p) => p.name.clone(),
            Runs::Builtin(b) => format!("builtin:{}", b.name()),
        }
    }
}

#[derive(Debug)]
pub struct SinkConfig {
    pub id: String,
    pub span: Span,
    pub kind: SinkKind,
    pub inputs: Vec<Input>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// Logs level, count and gaps of audio every `report_every` of stream time.
    Meter { report_every: Duration },
    /// Counts and discards.
    Null,
    /// Hands batches to an in-process reader ([`crate::pipeline::Pipeline::take_channel`]).
    Channel { capacity: usize },
    /// Writes audio to a WAV file at 48 kHz.
    Wav { path: PathBuf, format: crate::io::wav::WavFormat },
    /// Plays audio on an output device (`None`: the default one).
    Device { device: Option<String>, channels: u8 },
    /// Publishes frames (Opus) to the room of the `[client]`, sealed by
    /// its E2EE stage.
    Publish,
}

impl SinkKind {
    /// The `kind` as written in pipeline files.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Meter { .. } => "meter",
            SinkKind::Null => "null",
            SinkKind::Channel { .. } => "channel",
            SinkKind::Wav { .. } => "wav",
            SinkKind::Device { .. } => "device",
            SinkKind::Publish => "publish",
        }
    }
}

impl PipelineConfig {
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole(path, format!("cannot read the pipeline file: {e}"), "check the path and its permissions"))?;
        Self::parse(path, text)
    }

    /// Checks a pipeline given as text; `path` names it in errors and anchors
    /// relative plugin paths.
    pub fn parse(path: impl Into<PathBuf>, text: String) -> Result<PipelineConfig, ConfigError> {
        validation::check(Arc::new(SourceFile { path: path.into(), text }))
    }

    /// The built-in default pipeline (checked by the tests like any file).
    pub fn default_pipeline() -> Result<PipelineConfig, ConfigError> {
        Self::parse("<built-in default pipeline>", DEFAULT_PIPELINE.to_string())
    }

    /// An error pointing at `span` of this file.
    pub fn error(&self, span: Span, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, span, message, hint)
    }
}
