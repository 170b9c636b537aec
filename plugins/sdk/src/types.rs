//! Plain Rust mirrors of the WIT `types` interface, and the views a plugin
//! works on.
//!
//! Batches cross the boundary flat: one list of headers and one list of all
//! samples (or payload bytes), so a batch costs two copies in and two out
//! however many items it holds. A plugin never sees that layout: the SDK
//! hands it one [`AudioBlock`] or one frame at a time. The same code compiles
//! natively, where the mirrors below stand in for the generated bindings
//! (`wit_mirror.rs` checks, at compile time, that they still match the WIT).

/// The level of an audio block, set by a meter stage and readable by every
/// stage after it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AudioLevel {
    /// Root-mean-square level in dBFS.
    pub rms_dbfs: f32,
    /// Highest absolute sample in dBFS.
    pub peak_dbfs: f32,
    /// Whether the block holds voice by the meter's rule.
    pub voice: bool,
}

/// The header of one audio block in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BlockInfo {
    pub sequence: u64,
    pub sample_rate: u32,
    pub channels: u8,
    /// Frames (samples per channel).
    pub frames: u32,
    pub level: Option<AudioLevel>,
}

impl BlockInfo {
    /// How many samples of the batch this block owns.
    pub fn len(&self) -> usize {
        self.frames as usize * self.channels as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One block of interleaved f32 PCM, normally 48 kHz and 10 ms long, that a
/// DSP stage transforms in place.
#[derive(Debug, PartialEq)]
pub struct AudioBlock<'a> {
    /// Position of this block in its stream, counting from 0.
    pub sequence: u64,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u8,
    /// Interleaved samples; change them in place.
    pub samples: &'a mut [f32],
    /// The block's level, if a meter before this stage measured it; a meter
    /// sets it.
    pub level: Option<AudioLevel>,
}

impl AudioBlock<'_> {
    /// Frames (samples per channel) in this block.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }
}

/// The header of one frame in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    pub stream: u32,
    pub sequence: u64,
    pub timestamp: u64,
    /// Payload bytes.
    pub size: u32,
}

/// Where a frame came from and where it sits in its stream. A transform may
/// change these for the frame it emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameMeta {
    /// Host-assigned stream id.
    pub stream: u32,
    /// Position of this frame in its stream.
    pub sequence: u64,
    /// Media timestamp in the stream's clock rate.
    pub timestamp: u64,
}

/// What becomes of a frame after [`crate::FrameTransform::transform`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Emit the frame with the payload written to `out`.
    Keep,
    /// Drop the frame (anything written to `out` is discarded).
    Drop,
}

/// The payload a frame transform emits, written straight into the batch's
/// output list (no copy per frame). Starts empty for every frame.
#[derive(Debug)]
pub struct Payload<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Payload<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Payload<'a> {
        let start = buf.len();
        Payload { buf, start }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, byte: u8) {
        self.buf.push(byte);
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Grows (with `value`) or shrinks the payload to `len` bytes.
    pub fn resize(&mut self, len: usize, value: u8) {
        self.buf.resize(self.start + len, value);
    }

    /// The bytes written so far, to change in place (encrypt, for instance).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    pub(crate) fn discard(self) {
        self.buf.truncate(self.start);
    }
}

/// Something that happened on a signaling connection (host-assigned ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalEvent {
    /// A connection was accepted. When the node checks room access tokens,
    /// `grant` is the room and user the token allows; a join anywhere else
    /// must be refused.
    Connected { connection: u64, grant: Option<Grant> },
    /// A text message arrived on a connection.
    Message { connection: u64, text: String },
    /// A connection closed (by the peer, the heartbeat or the host).
    Disconnected(u64),
}

/// The room and user a connection's access token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub room: String,
    pub user: String,
}

/// What a signaling stage asks the host to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalAction {
    /// Send a text message on a connection.
    Send { connection: u64, text: String },
    /// Close a connection, with a reason the peer sees.
    Close { connection: u64, reason: String },
    /// The connection is now `user` in `room`: the host carries its media.
    Seated { connection: u64, room: String, user: String },
    /// The connection left its room: the host tears its media down.
    Unseated(u64),
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// What the forwarding stage sees of one RTP packet (never its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// The publishing participant (its signaling connection id).
    pub publisher: u64,
    pub kind: MediaKind,
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// Payload bytes.
    pub size: u32,
    /// RFC 6464 level in -dBov (0 loudest, 127 silence), when sent.
    pub audio_level: Option<u8>,
    /// Simulcast: the packet's layer (0 = the lowest). Every layer of a
    /// stream carries the stream's `ssrc`; a subscriber gets one at a time.
    pub layer: Option<u8>,
    /// Whether the packet starts a keyframe: where a subscriber can switch
    /// layers.
    pub keyframe: bool,
}

/// A change in who is in which room, or in what a member can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// A participant entered a room (one room at a time).
    Joined { participant: u64, room: String },
    /// A participant left its room.
    Left(u64),
    /// What a participant can receive now: the estimated bandwidth to it in
    /// bits per second (0 = not known yet) and the highest simulcast layer
    /// it asked for (255 = no limit).
    Receiver { participant: u64, bitrate: u64, max_layer: u8 },
}

/// `max_layer` of a [`RouteChange::Receiver`] that asked for no limit.
pub const ANY_LAYER: u8 = u8::MAX;

/// Something the E2EE stage learns about its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum E2eeEvent {
    /// This node sits in `room` as `user` with `others` there. Sent to
    /// every new instance (`rejoined` false: only the instance is new) and
    /// after every (re)join of the signaling connection (`rejoined` true:
    /// the others may have dropped this member from the group meanwhile).
    Seated { room: String, user: String, others: Vec<String>, rejoined: bool },
    /// A message from the signaling server (JSON text).
    Message(String),
}

/// What the E2EE stage reports about its group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct E2eeStatus {
    /// The MLS epoch, once in a group.
    pub epoch: Option<u64>,
    /// The epoch authenticator (equal for every member on the same epoch).
    pub safety_number: Vec<u8>,
    /// The group's members, this one included.
    pub members: Vec<String>,
}
