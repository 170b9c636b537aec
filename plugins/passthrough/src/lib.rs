//! The passthrough stage: every frame out exactly as it came in.
//!
//! The smallest possible plugin, and the yardstick of the host's per-call and
//! per-item cost (see `node/benches/core.rs`).

use medianode_sdk::{FrameMeta, FrameTransform, NoConfig, Payload, Stage, Verdict};

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
    fn transform(&mut self, _meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict {
        out.extend_from_slice(payload);
        Verdict::Keep
    }
}

medianode_sdk::export_frame_transform!(Passthrough);
