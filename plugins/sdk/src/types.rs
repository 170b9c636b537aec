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

/// RTP packet metadata, never the payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PacketMeta {
    pub publisher: u32,
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub size: u32,
    /// RFC 6464 level: 0 loudest, 127 silence.
    pub audio_level: Option<u8>,
}

/// Where one packet goes; no subscribers means drop.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ForwardDecision {
    pub subscribers: Vec<u32>,
}

/// A connection event seen by a signaling stage.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalEvent {
    Connected(u64),
    Message { connection: u64, text: String },
    Disconnected(u64),
}

/// An action a signaling stage asks of the host.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalAction {
    Send { connection: u64, text: String },
    Close { connection: u64, reason: String },
}
