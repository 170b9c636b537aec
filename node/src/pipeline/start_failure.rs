//! Where in the pipeline file a stage's start failure belongs, for `check`
//! and `run` alike: an `init` that refused its config points at the
//! setting it names (or at the config table), anything else at the
//! stage's plugin.

use crate::config::{ConfigError, PipelineConfig, Runs, Span, StageConfig};
use crate::runtime::{Fault, TrapKind};

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
