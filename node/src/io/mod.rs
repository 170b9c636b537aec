//! The host's ends of a pipeline: sources that make items and sinks that
//! consume them. Devices, files and network endpoints live here, never in
//! plugins.

pub mod device;
pub mod mix;
mod sinks;
mod sources;
pub mod wav;

pub use sinks::{Sink, SinkStats};
pub use sources::Source;

pub use crate::runtime::SAMPLE_RATE;
