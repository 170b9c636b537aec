//! Loading a pipeline file: the pure checks of [`medianode_core::config`]
//! (re-exported here), then what needs the machine.
//!
//! [`load`] reads the file, runs every check of the text, and then
//! resolves what the file names outside itself, collecting those errors too:
//! - each plugin's bytes (`stock:NAME` from the binary, or a file relative
//!   to the pipeline file) and its pinned `sha256`;
//! - each WAV source's file (readable, a PCM or float WAV);
//! - the `[server]`'s token secret, from the environment;
//! - the `[admin]` bearer token, from the environment or its file.
//!
//! Nothing is started: no socket, no device, no output file. Compiling the
//! plugins and checking the graph's types is [`crate::pipeline::check`].

pub use medianode_core::config::*;

use crate::io::wav;
use crate::runtime::{hex, stock};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads, checks and resolves a pipeline file.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole(path, format!("cannot read the pipeline file: {e}"), "check the path and its permissions"))?;
    load_str(path, text)
}

/// Checks and resolves a pipeline given as text; `path` names it in errors
/// and anchors relative paths.
pub fn load_str(path: impl Into<PathBuf>, text: String) -> Result<PipelineConfig, ConfigErrors> {
    // The machine's checks run on the tables that passed the text's, so
    // that both kinds of error are reported together.
    let (mut config, mut errors) = PipelineConfig::parse_partly(path, text)?;
    resolve(&mut config, &mut errors);
    match ConfigErrors::new(errors) {
        Some(errors) => Err(errors),
        None => Ok(config),
    }
}

/// The built-in default pipeline (checked by the tests like any file).
pub fn default_pipeline() -> Result<PipelineConfig, ConfigErrors> {
    load_str(DEFAULT_PIPELINE_NAME, DEFAULT_PIPELINE.to_string())
}

/// Fills in what the text names outside itself.
fn resolve(config: &mut PipelineConfig, errors: &mut Vec<ConfigError>) {
    let file = config.file.clone();
    for stage in &mut config.stages {
        if let Runs::Plugin(plugin) = &mut stage.runs {
            match plugin_bytes(&file, plugin) {
                Ok(bytes) => plugin.bytes = bytes,
                Err(e) => errors.push(e),
            }
        }
    }
    for source in &config.sources {
        if let SourceKind::Wav { path, path_span, .. } = &source.kind
            && let Err(e) = wav::probe(path)
        {
            let hint = "paths are relative to the pipeline file; give a PCM or float WAV file";
            errors.push(ConfigError::at(&file, path_span.clone(), e, hint));
        }
    }
    if let Some((source, span)) = &config.admin.token {
        match admin_token(source) {
            Ok(token) => config.admin.token_value = Some(token),
            Err((message, hint)) => errors.push(ConfigError::at(&file, span.clone(), message, hint)),
        }
    }
    if let Some(server) = &mut config.server
        && let Some((var, span)) = &server.token_secret_env
    {
        match std::env::var(var) {
            Ok(secret) if secret.len() >= 16 => server.options.token_secret = Some(secret.into_bytes()),
            Ok(_) => errors.push(ConfigError::at(
                &file,
                span.clone(),
                format!("the secret in ${var} is shorter than 16 bytes"),
                "use a long random secret, e.g. `openssl rand -hex 32`",
            )),
            Err(_) => errors.push(ConfigError::at(
                &file,
                span.clone(),
                format!("${var} is not set"),
                "export the room token secret in that variable, or remove token-secret-env to admit everyone",
            )),
        }
    }
}

/// The admin bearer token: at least 16 bytes, surrounding whitespace
/// (a file's newline) trimmed.
fn admin_token(source: &TokenSource) -> Result<String, (String, &'static str)> {
    let hint = "put a long random token there, e.g. `openssl rand -hex 32`";
    let token = match source {
        TokenSource::Env(var) => std::env::var(var).map_err(|_| (format!("${var} is not set"), hint))?,
        TokenSource::File(path) => {
            std::fs::read_to_string(path).map_err(|e| (format!("cannot read the admin token file {}: {e}", path.display()), hint))?
        }
    };
    let token = token.trim();
    if token.len() < 16 {
        return Err(("the admin token is shorter than 16 bytes".to_string(), hint));
    }
    Ok(token.to_string())
}

/// Whether `bytes` start like a shared library: ELF, Mach-O or PE.
pub(crate) fn is_native_library(bytes: &[u8]) -> bool {
    const MAGICS: [&[u8]; 5] = [b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"MZ"];
    MAGICS.iter().any(|magic| bytes.starts_with(magic))
}

/// A plugin's bytes, checked against its pin.
fn plugin_bytes(file: &Arc<SourceFile>, plugin: &PluginRef) -> Result<Arc<[u8]>, ConfigError> {
    let bytes: Arc<[u8]> = match plugin.stock_name() {
        Some(name) => stock::bytes(name).map(Arc::from).ok_or_else(|| {
            let names: Vec<_> = stock::names().collect();
            let hint = format!("stock plugins are: {}", names.join(", "));
            ConfigError::at(file, plugin.span.clone(), format!("unknown stock plugin `{name}`"), hint)
        })?,
        None => {
            let path = file.dir().join(&plugin.name);
            std::fs::read(&path).map(Arc::from).map_err(|e| {
                ConfigError::at(
                    file,
                    plugin.span.clone(),
                    format!("cannot read plugin file {}: {e}", path.display()),
                    "paths are relative to the pipeline file; build the plugin with `cargo build --target wasm32-wasip2`, or use a stock plugin like \"stock:gain\"",
                )
            })?
        }
    };
    // The file's first bytes say what it is, whatever its name.
    let is_wasm = bytes.starts_with(b"\0asm");
    match &plugin.native {
        None if !is_wasm && is_native_library(&bytes) => {
            return Err(ConfigError::at(
                file,
                plugin.span.clone(),
                format!("`{}` is a native library, which would run unsandboxed in the node's process", plugin.name),
                "if you trust it with the whole node (a crash or a hang in it takes the node down), add trust = \"native\" to the stage",
            ));
        }
        Some(trust) if is_wasm => {
            return Err(ConfigError::at(
                file,
                trust.clone(),
                format!("`{}` is a wasm component; trust = \"native\" is for native libraries", plugin.name),
                "remove trust: wasm plugins always run sandboxed",
            ));
        }
        _ => {}
    }
    if let Some((want, span)) = &plugin.sha256 {
        let have = hex(&Sha256::digest(&bytes));
        if have != *want {
            return Err(ConfigError::at(
                file,
                span.clone(),
                format!("digest mismatch: the plugin's sha256 is {have}"),
                "the plugin changed since it was pinned; if the change is expected, update sha256",
            ));
        }
    }
    Ok(bytes)
}
