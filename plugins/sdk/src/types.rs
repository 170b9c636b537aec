//! Plain Rust mirrors of the WIT `types` interface.
//!
//! Plugins see these rather than the generated bindings so that the same code
//! compiles natively; on wasm the SDK converts by moving fields (no copies).

/// A block of interleaved f32 PCM, normally 48 kHz and 10 ms long.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioBlock {
    /// Position of this block in its stream, counting from 0.
    pub sequence: u64,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u8,
    /// Interleaved samples.
    pub samples: Vec<f32>,
}

/// An opaque media frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    /// Host-assigned stream id.
    pub stream: u32,
    /// Position of this frame in its stream.
    pub sequence: u64,
    /// Media timestamp in the stream's clock rate.
    pub timestamp: u64,
    /// The frame's bytes.
    pub payload: Vec<u8>,
}
