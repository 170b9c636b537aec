//! `medianode check`: everything that can be known about a pipeline
//! without running it, every error at once.
//!
//! 1. The file's text ([`medianode_core::config`]): keys, units, ranges,
//!    ids, links, cycles, each kind's settings.
//! 2. What it names outside itself ([`crate::config::load`]): plugin files
//!    and digests, WAV inputs, secrets.
//! 3. Its plugins ([`crate::pipeline::compile`]): each one compiles, its
//!    kind fits where it stands, every link joins matching types.
//! 4. Each plugin stage's `init` with its config, in its sandbox, once.
//!
//! Nothing else starts: no socket is bound, no device or output file is
//! opened, no SFU or signaling server runs. Steps 3 and 4 run only when the
//! ones before found nothing.

use crate::config::{ConfigError, ConfigErrors, PipelineConfig, Runs, Span, StageConfig};
use crate::pipeline::{self, Compiled};
use crate::runtime::{CallLimits, Fault, Instance, Runtime, StageShared, TrapKind};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Why a pipeline does not check out: errors located in the file (a
/// plugin whose `init` refused its config points at the setting it named).
#[derive(Debug)]
pub enum CheckError {
    Config(ConfigErrors),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Config(errors) => write!(f, "{errors}"),
        }
    }
}

/// Checks the pipeline file at `path`; on success, a one-line summary.
pub fn check_file(runtime: &Runtime, path: &Path) -> Result<String, CheckError> {
    let config = crate::config::load(path).map_err(CheckError::Config)?;
    check(runtime, &config)
}

/// Checks a loaded pipeline (steps 3 and 4).
pub fn check(runtime: &Runtime, config: &PipelineConfig) -> Result<String, CheckError> {
    let compiled = pipeline::compile(runtime, config).map_err(CheckError::Config)?;
    start_each(config, &compiled)?;
    Ok(summary(config, &compiled))
}

/// Starts one instance of each plugin stage and drops it; a stage that
/// fails is an error located in the file ([`start_failure`]).
fn start_each(config: &PipelineConfig, compiled: &Compiled) -> Result<(), CheckError> {
    let mut failed = Vec::new();
    for stage in &config.stages {
        let Runs::Plugin(_) = &stage.runs else { continue };
        let Some(plugin) = compiled.plugins.get(&stage.id) else { continue };
        let shared = Arc::new(StageShared::with_limits(&stage.id, &stage.limits));
        let limits = CallLimits { deadline: stage.limits.deadline, init_deadline: stage.limits.init_deadline };
        let Err(fault) = Instance::start(plugin, shared, &stage.config_json, stage.limits.memory, limits) else { continue };
        failed.push(start_failure(config, stage, &fault));
    }
    match ConfigErrors::new(failed) {
        Some(errors) => Err(CheckError::Config(errors)),
        None => Ok(()),
    }
}

/// Why plugin stage `stage` did not start, located in the file: an
/// `init` that refused its config at the setting it names (or the config
/// table), anything else at the stage's plugin.
pub(crate) fn start_failure(config: &PipelineConfig, stage: &StageConfig, fault: &Fault) -> ConfigError {
    let plugin_span = match &stage.runs {
        Runs::Plugin(plugin) => plugin.span.clone(),
        Runs::Builtin(_) => stage.span.clone(),
    };
    match (fault.kind, &fault.plugin_message, &stage.config_span) {
        (TrapKind::InitError, Some(said), config_span) => {
            let span = config_span.clone().map(|table| named_key(&config.file.text, table, said)).unwrap_or(stage.span.clone());
            let hint = match config_span {
                Some(_) => "the plugin's init refused its [stage.config]: fix or remove the setting it names",
                None => "the plugin needs settings: add config = { ... } to this stage",
            };
            ConfigError::at(&config.file, span, format!("stage `{}`: {}", stage.id, without_json_position(said)), hint)
        }
        _ => {
            let said = fault.plugin_message.as_ref().map(|said| format!(": {said}")).unwrap_or_default();
            let message = format!("stage `{}` failed to start ({}): {}{said}", stage.id, fault.kind.name(), fault.message);
            ConfigError::at(&config.file, plugin_span, message, "see the stage's limits (init-deadline, memory) and its plugin")
        }
    }
}

/// A serde_json message without its " at line L column C": that is a
/// position in the JSON the host made, not in the file.
fn without_json_position(said: &str) -> &str {
    match said.rfind(" at line ") {
        Some(at)
            if said[at..].split_whitespace().skip(2).step_by(2).all(|n| n.parse::<u32>().is_ok()) && said[at..].contains(" column ") =>
        {
            &said[..at]
        }
        _ => said,
    }
}

/// Where in `[stage.config]` (at `table` in `text`) the key a plugin's
/// complaint names is written (serde's "unknown field `x`"), else the
/// whole table.
fn named_key(text: &str, table: Span, said: &str) -> Span {
    let named = said.split('`').nth(1).filter(|key| !key.is_empty());
    let written = text.get(table.clone()).unwrap_or_default();
    let found = named.and_then(|key| {
        written.match_indices(key).map(|(at, _)| at).find(|&at| {
            let before = written[..at].trim_end_matches([' ', '\t', '"']);
            let after = written[at + key.len()..].trim_start_matches([' ', '\t', '"']);
            (before.is_empty() || before.ends_with(['{', ',', '\n'])) && after.starts_with('=')
        })
    });
    match (found, named) {
        (Some(at), Some(key)) => table.start + at..table.start + at + key.len(),
        _ => table,
    }
}

fn summary(config: &PipelineConfig, compiled: &Compiled) -> String {
    let order: Vec<&str> = compiled.plan.order.iter().map(|&i| config.stages[i].id.as_str()).collect();
    let mut line = format!(
        "ok: pipeline `{}`: {} sources, {} stages ({} serving the server or client), {} sinks; stage order: {}",
        config.name,
        config.sources.len(),
        config.stages.len(),
        config.stages.iter().filter(|s| s.serves()).count(),
        config.sinks.len(),
        if order.is_empty() { "(none)".to_string() } else { order.join(" -> ") },
    );
    if let Some(server) = &config.server {
        line.push_str(&format!("\nok: server would listen on {} (media on {})", server.listen, server.media_ip));
    }
    if let Some(client) = &config.client {
        line.push_str(&format!("\nok: would join room `{}` as `{}` at {}", client.room, client.user, client.url));
    }
    for stage in &config.stages {
        if compiled.plugins.get(&stage.id).is_some_and(|p| p.is_native()) {
            line.push_str(&format!(
                "\nwarning: stage `{}` is a native plugin (trust = \"native\"): NOT isolated. It runs in the node's process \
                 with no deadline or memory limit; its panics are caught, but a crash or a hang in it takes the whole node",
                stage.id
            ));
        }
    }
    line
}
