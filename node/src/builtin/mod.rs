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

pub use medianode_core::config::builtin::Builtin;

/// Creates the running stage.
pub fn start(builtin: &Builtin) -> Result<Box<dyn BuiltinStage>, String> {
    Ok(match builtin {
        Builtin::OpusEncoder(c) => Box::new(opus::OpusEncoder::new(c)?),
        Builtin::OpusDecoder(c) => Box::new(opus::OpusDecoder::new(c)?),
    })
}

/// A running built-in stage.
pub trait BuiltinStage: Send {
    /// Processes one batch.
    fn process(&mut self, items: Items) -> Items;
}
