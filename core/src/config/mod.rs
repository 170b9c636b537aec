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
//! Checking has two halves. This crate's [`PipelineConfig::parse`] is pure:
//! it reads the text and checks every rule that needs nothing else (keys,
//! units, ranges, ids, links, cycles, the settings each kind takes), and it
//! reports every error in the file at once, each with file, line, column
//! and a hint ([`ConfigErrors`]). The host's `medianode::config::load` then
//! checks what needs the machine: plugin files and their digests, WAV
//! inputs, secrets in the environment. Once plugins are compiled, each
//! stage's kind is known and [`graph::plan`] checks that links join
//! matching types.
//!
//! Each kind of table owns its settings and their checks: [`source`],
//! [`sink`], [`stage`] (with [`builtin`] for native stages), [`server`],
//! [`client`], [`cluster`], [`admin`].

pub mod admin;
pub mod builtin;
mod check;
pub mod client;
pub mod cluster;
mod error;
pub mod graph;
mod schema;
pub mod server;
pub mod sink;
pub mod source;
pub mod stage;

pub use admin::{AdminConfig, MonitorConfig, TokenSource};
pub use client::ClientConfig;
pub use cluster::ClusterConfig;
pub use error::{ConfigError, ConfigErrors, SourceFile};
pub use server::{ServerConfig, ServerOptions};
pub use sink::{SinkConfig, SinkKind, WavFormat};
pub use source::{SourceConfig, SourceKind};
pub use stage::{PluginRef, Runs, StageConfig};

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The pipeline the node runs when `medianode run` is given no file: the
/// SFU with its web page on 127.0.0.1.
pub const DEFAULT_PIPELINE: &str = include_str!("../../../pipelines/sfu.toml");

/// The name the built-in default pipeline goes by in errors.
pub const DEFAULT_PIPELINE_NAME: &str = "<built-in default pipeline>";

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
    /// The cluster this server node belongs to, when the file has `[cluster]`.
    pub cluster: Option<ClusterConfig>,
    /// The admin listener and the system monitor (`[admin]`, or the defaults).
    pub admin: AdminConfig,
}

/// How fast the pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One tick per `tick` of (tokio) time: live media.
    Realtime,
    /// Ticks back to back: files, tests, benchmarks.
    Asap,
}

/// A byte range in the pipeline file.
pub type Span = Range<usize>;

/// A link from another node's output into this one's input.
#[derive(Debug, Clone)]
pub struct Input {
    pub from: String,
    pub span: Span,
}

impl PipelineConfig {
    /// Checks a pipeline given as text, without touching anything outside
    /// it; `path` names it in errors and anchors relative paths. Plugins are
    /// not read yet ([`PluginRef::bytes`] is empty until the host loads
    /// them).
    pub fn parse(path: impl Into<PathBuf>, text: String) -> Result<PipelineConfig, ConfigErrors> {
        let (config, errors) = Self::parse_partly(path, text)?;
        match ConfigErrors::new(errors) {
            Some(errors) => Err(errors),
            None => Ok(config),
        }
    }

    /// [`PipelineConfig::parse`] for a checker that goes on after errors:
    /// the config of every table that checked out, and the errors of the
    /// others. Only a syntax error (after which nothing can be read) is an
    /// `Err`.
    pub fn parse_partly(path: impl Into<PathBuf>, text: String) -> Result<(PipelineConfig, Vec<ConfigError>), ConfigErrors> {
        check::check(Arc::new(SourceFile { path: path.into(), text }))
    }

    /// An error pointing at `span` of this file.
    pub fn error(&self, span: Span, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, span, message, hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five mistakes in five places: one of each kind of check, and a
    /// table that does not even match its schema. All are reported, in
    /// file order, each where it stands.
    const FIVE_ERRORS: &str = r#"[pipeline]
pace = "fast"

[[source]]
id = "tone"
kind = "tone"
frequency = 99999.0

[[stage]]
id = "gain"
plugin = "stock:gain"
inputs = ["tone"]
limits = { memory = "lots" }

[[sink]]
id = "file"
kind = "wav"
path = "out.wav"
formt = "s16"
inputs = ["gain"]

[[sink]]
id = "meter"
kind = "meter"
inputs = ["gian"]
"#;

    #[test]
    fn every_error_in_a_file_at_once() {
        let errors = PipelineConfig::parse("five.toml", FIVE_ERRORS.to_string()).expect_err("five errors");
        let found: Vec<(usize, usize, &str)> = errors.iter().map(|e| (e.line, e.column, e.message.as_str())).collect();
        assert_eq!(errors.len(), 5, "{errors}");
        let expected = [
            (2, 8, "unknown pace `fast`"),
            (7, 13, "frequency out of range"),
            (13, 21, "bad size `lots`"),
            (19, 1, "unknown field `formt`"),
            (25, 11, "unknown input `gian`"),
        ];
        for ((line, column, message), (want_line, want_column, want)) in found.iter().zip(expected) {
            assert!(message.contains(want), "{message:?} lacks {want:?}\n{errors}");
            assert_eq!((*line, *column), (want_line, want_column), "{want}\n{errors}");
        }
        let shown = errors.to_string();
        assert_eq!(shown.matches("error: five.toml:").count(), 5, "{shown}");
        assert!(shown.ends_with("5 errors in five.toml"), "{shown}");
    }

    #[test]
    fn a_syntax_error_stops_the_check_where_it_is() {
        let errors = PipelineConfig::parse("bad.toml", "[pipeline\npace = \"fast\"\n".to_string()).expect_err("syntax");
        assert_eq!((errors.first().line, errors.first().column), (1, 10), "{errors}");
    }

    #[test]
    fn the_default_pipeline_checks_without_touching_anything() {
        let config = PipelineConfig::parse(DEFAULT_PIPELINE_NAME, DEFAULT_PIPELINE.to_string()).expect("the default checks");
        assert!(config.server.is_some());
        assert!(config.stages.iter().all(|s| matches!(&s.runs, Runs::Plugin(p) if p.bytes.is_empty())), "nothing read yet");
    }

    #[test]
    fn a_link_to_a_table_that_failed_to_read_is_not_a_second_error() {
        let text =
            "[[source]]\nid = \"tone\"\nkind = \"tone\"\nloud = true\n[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"tone\"]\n";
        let errors = PipelineConfig::parse("one.toml", text.to_string()).expect_err("one error");
        assert_eq!(errors.len(), 1, "{errors}");
        assert!(errors.first().message.contains("unknown field `loud`"), "{errors}");
    }
}
