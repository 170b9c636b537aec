//! The guest SDK for medianode plugins.
//!
//! A plugin is a Rust type that implements [`Stage`] (how it starts from its
//! `[stage.config]` table) and the trait of its kind, plus one export macro:
//!
//! ```ignore
//! use medianode_sdk::{AudioBlock, AudioDsp, Stage};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields, rename_all = "kebab-case")]
//! pub struct Config { gain_db: f32 }
//!
//! pub struct Gain { factor: f32 }
//!
//! impl Stage for Gain {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Gain { factor: 10f32.powf(config.gain_db / 20.0) })
//!     }
//! }
//!
//! impl AudioDsp for Gain {
//!     fn process(&mut self, block: &mut AudioBlock) {
//!         block.samples.iter_mut().for_each(|s| *s *= self.factor);
//!     }
//! }
//!
//! medianode_sdk::export_audio_dsp!(Gain);
//! ```
//!
//! with `medianode-sdk` as a dependency in the plugin's
//! `Cargo.toml`, `crate-type = ["cdylib", "rlib"]`, and a build for
//! `--target wasm32-wasip2`, which emits a component directly.
//!
//! Stage kinds with SDK support: audio DSP ([`AudioDsp`],
//! [`export_audio_dsp!`]) and frame transform ([`FrameTransform`],
//! [`export_frame_transform!`]). The WIT contract also defines the packet
//! forwarding and signaling worlds; their SDK support comes with the SFU.
//!
//! The same crate builds natively too: the export macro then expands to
//! nothing and [`host`] falls back to in-process shims, so a plugin's logic
//! can be unit-tested and benchmarked without wasm.
//!
//! What the SDK does for you: it parses the config JSON into your `Config`
//! type (a bad key or type becomes an `init` error the user sees), loops over
//! each batch calling your per-item method, tells the host which item it is
//! on (so that an item that makes the plugin trap is quarantined and the rest
//! of the batch is processed by a fresh instance), and routes panic messages
//! to the host log so that they end up in the crash report.

pub mod host;
mod types;

#[doc(hidden)]
pub mod export;

pub use types::*;

/// How a plugin starts: from its typed `[stage.config]` table.
pub trait Stage: Sized + 'static {
    /// The stage's configuration. Use `#[serde(deny_unknown_fields)]` so that a
    /// misspelt key is an error rather than silently ignored. A stage without
    /// configuration can use [`NoConfig`].
    type Config: serde::de::DeserializeOwned;

    /// Builds the stage. An error is shown to the user and the stage does not
    /// start.
    fn new(config: Self::Config) -> Result<Self, String>;
}

/// A stage with no settings: accepts only an empty `[stage.config]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// Audio DSP: transforms one block in place, keeping its length and format.
pub trait AudioDsp: Stage {
    /// Processes one block. Called once per block, in stream order.
    fn process(&mut self, block: &mut AudioBlock);
}

/// Frame transform: each frame in gives at most one frame out.
pub trait FrameTransform: Stage {
    /// Transforms one frame; `None` drops it.
    fn transform(&mut self, frame: Frame) -> Option<Frame>;
}

/// Parses a config JSON document into a stage, as the `init` export does.
///
/// Public so that native tests and benchmarks start a stage exactly the way
/// the host does.
pub fn start<S: Stage>(config_json: &str) -> Result<S, String> {
    let config: S::Config = serde_json::from_str(config_json)
        .map_err(|e| format!("invalid [stage.config]: {e}"))?;
    S::new(config)
}
