//! The host's ends of a pipeline: sources that make items and sinks that
//! consume them. Devices, files and network endpoints live here, never in
//! plugins.

pub mod device;
mod sinks;
mod sources;
pub mod wav;

pub use sinks::{Sink, SinkStats};
pub use sources::Source;

/// The node's audio format: 48 kHz.
pub const SAMPLE_RATE: u32 = 48_000;
