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

use crate::config::{ConfigErrors, PipelineConfig, Runs};
use crate::pipeline::{self, Compiled};
use crate::runtime::{CallLimits, Instance, Runtime, StageShared};
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
/// fails is an error located in the file ([`pipeline::start_failure`]).
fn start_each(config: &PipelineConfig, compiled: &Compiled) -> Result<(), CheckError> {
    let mut failed = Vec::new();
    for stage in &config.stages {
        let Runs::Plugin(_) = &stage.runs else { continue };
        let Some(plugin) = compiled.plugins.get(&stage.id) else { continue };
        let shared = Arc::new(StageShared::with_limits(&stage.id, &stage.limits));
        let limits = CallLimits { deadline: stage.limits.deadline, init_deadline: stage.limits.init_deadline };
        let Err(fault) = Instance::start(plugin, shared, &stage.config_json, stage.limits.memory, limits) else { continue };
        failed.push(pipeline::start_failure(config, stage, &fault));
    }
    match ConfigErrors::new(failed) {
        Some(errors) => Err(CheckError::Config(errors)),
        None => Ok(()),
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
        line.push_str(&format!("\nok: would join room `{}` as `{}` at {}", client.room, client.user, client.servers.join(" or ")));
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
