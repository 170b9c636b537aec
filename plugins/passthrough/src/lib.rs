//! The passthrough stage: every frame out exactly as it came in.
//!
//! The smallest possible plugin, and the yardstick of the host's per-call and
//! per-item cost (see `node/benches/core.rs`).

use medianode_sdk::{Frame, FrameTransform, NoConfig, Stage};

/// Forwards every frame unchanged.
#[derive(Debug)]
pub struct Passthrough;

impl Stage for Passthrough {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Passthrough)
    }
}

impl FrameTransform for Passthrough {
    fn transform(&mut self, frame: Frame) -> Option<Frame> {
        Some(frame)
    }
}

medianode_sdk::export_frame_transform!(Passthrough);
