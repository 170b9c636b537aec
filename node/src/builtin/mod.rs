//! Built-in stages: trusted native code in the host, for work that has no
//! business in a sandbox or cannot be compiled to wasm (libopus is C).
//!
//! In a pipeline file a built-in stage is a `[[stage]]` with `builtin =
//! "NAME"` instead of `plugin`; it takes `inputs` and `config` like any
//! stage, but no `limits`, `restart` or `failure`: it runs natively, so a
//! crash in it would be a crash of the node. That is why only small,
//! well-tested codec glue lives here, behind APIs that return errors rather
//! than panic, and a bad input item becomes an error log and a dropped
//! (frames) or silent (audio) item, never a panic.

pub mod opus;

use crate::runtime::Items;

/// The built-in stages, with their checked settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Builtin {
    OpusEncoder(opus::EncoderConfig),
    OpusDecoder(opus::DecoderConfig),
}

impl Builtin {
    /// Every `builtin = ...` name, for errors.
    pub const NAMES: &[&str] = &["opus-encoder", "opus-decoder"];

    /// Parses `[stage.config]` (as JSON) for the built-in `name`.
    pub fn parse(name: &str, config_json: &str) -> Result<Builtin, String> {
        let parse_err = |e: serde_json::Error| format!("invalid config for {name}: {e}");
        match name {
            "opus-encoder" => {
                serde_json::from_str(config_json).map_err(parse_err).and_then(opus::EncoderConfig::check).map(Builtin::OpusEncoder)
            }
            "opus-decoder" => {
                serde_json::from_str(config_json).map_err(parse_err).and_then(opus::DecoderConfig::check).map(Builtin::OpusDecoder)
            }
            other => Err(format!("unknown built-in stage `{other}`")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Builtin::OpusEncoder(_) => "opus-encoder",
            Builtin::OpusDecoder(_) => "opus-decoder",
        }
    }

    /// Whether it takes audio (else frames) and whether it makes audio.
    pub fn ports(&self) -> (bool, bool) {
        match self {
            Builtin::OpusEncoder(_) => (true, false),
            Builtin::OpusDecoder(_) => (false, true),
        }
    }

    /// Creates the running stage.
    pub fn start(&self) -> Result<Box<dyn BuiltinStage>, String> {
        Ok(match self {
            Builtin::OpusEncoder(c) => Box::new(opus::OpusEncoder::new(c)?),
            Builtin::OpusDecoder(c) => Box::new(opus::OpusDecoder::new(c)?),
        })
    }
}

/// A running built-in stage.
pub trait BuiltinStage: Send {
    /// Processes one batch.
    fn process(&mut self, items: Items) -> Items;
}
