//! The guest SDK for medianode plugins.
//!
//! A plugin is a Rust type that implements [`Stage`] (how it starts from its
//! `[stage.config]` table) and the trait of its kind, plus one export macro:
//!
//! ```
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
//!     fn process(&mut self, block: &mut AudioBlock<'_>) {
//!         block.samples.iter_mut().for_each(|s| *s *= self.factor);
//!     }
//! }
//!
//! medianode_sdk::export_audio_dsp!(Gain);
//!
//! // Natively, the SDK runs the stage as the node's glue does:
//! let mut gain: Gain = medianode_sdk::start(r#"{"gain-db": -6.0}"#)?;
//! let mut samples = [1.0f32; 480];
//! let mut blocks = [medianode_sdk::BlockInfo { sequence: 0, sample_rate: 48_000, channels: 1, frames: 480, level: None }];
//! medianode_sdk::process_batch(&mut gain, &mut blocks, &mut samples);
//! assert!((samples[0] - 0.501).abs() < 0.001);
//! # Ok::<(), String>(())
//! ```
//!
//! With `medianode-sdk` and `serde` (feature `derive`) as dependencies in
//! the plugin's `Cargo.toml`, `crate-type = ["cdylib", "rlib"]`, and a
//! build for `--target wasm32-wasip2`, which emits a component directly.
//! `medianode plugin new NAME` writes such a crate (see the node's
//! `docs/plugins.md`).
//!
//! Stage kinds with SDK support: audio DSP ([`AudioDsp`],
//! [`export_audio_dsp!`]), frame transform ([`FrameTransform`],
//! [`export_frame_transform!`]), packet forwarding ([`Forwarding`],
//! [`export_forwarding!`]), signaling ([`Signaling`],
//! [`export_signaling!`]) and end-to-end encryption ([`Encryption`],
//! [`export_encryption!`]).
//!
//! The same crate builds natively too: the export macro then expands to
//! nothing and [`host`] falls back to in-process shims, so a plugin's logic
//! can be unit-tested and benchmarked without wasm. And an audio DSP stage
//! can be a *native plugin*, a shared library the node loads unsandboxed
//! when a pipeline says `trust = "native"`: see [`native`] and
//! [`export_native_audio_dsp!`].
//!
//! What the SDK does for you: it parses the config JSON into your `Config`
//! type (a bad key or type becomes an `init` error the user sees), loops over
//! each batch calling your per-item method ([`process_batch`],
//! [`transform_batch`]), tells the host which item it is on (so that an item
//! that makes the plugin trap is quarantined and the rest of the batch is
//! processed by a fresh instance), and routes panic messages to the host log
//! so that they end up in the crash report.

pub mod aead;
pub mod flat;
pub mod host;
#[cfg(not(target_os = "wasi"))]
pub mod native;
pub mod room;
mod types;
#[cfg(all(test, not(target_os = "wasi")))]
mod wit_mirror;

#[doc(hidden)]
pub mod export;

pub use types::*;

/// The message types a signaling stage handles (docs/protocol.md); the
/// host sends `offer`, `answer` and `candidate` to the SFU and answers
/// `ping` itself. The stock signaling stage refuses any other type, and
/// the host's metrics count messages by these names.
pub const SIGNALING_TYPES: &[&str] = &[
    "join",
    "leave",
    "publish",
    "unpublish",
    "subscribe",
    "typing",
    "message",
    "ack",
    "read",
    "mute",
    "unmute",
    "mls-key-package",
    "mls-commit",
];

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
    fn process(&mut self, block: &mut AudioBlock<'_>);
}

/// Frame transform: each frame in gives at most one frame out.
pub trait FrameTransform: Stage {
    /// Transforms one frame: write the payload to emit to `out` (empty on
    /// entry) and return [`Verdict::Keep`], or return [`Verdict::Drop`].
    /// `meta` may be changed for the frame emitted.
    fn transform(&mut self, meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict;
}

/// End-to-end encryption: keeps the room's MLS group through signaling
/// messages and seals and opens frames with its keys. A frame that cannot
/// be sealed is dropped: media never leaves in the clear.
pub trait Encryption: Stage {
    /// Handles a room event, pushing signaling messages (JSON) to `out`.
    fn control(&mut self, event: E2eeEvent, out: &mut Vec<String>);
    /// Seals one outbound frame into `out`, or drops it.
    fn seal(&mut self, meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict;
    /// Opens one inbound frame into `out`, or drops (or holds) it.
    fn open(&mut self, meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict;
    /// Frames held by earlier `open` calls that open now, in order; called
    /// before each batch of `open`.
    fn released(&mut self) -> Vec<(FrameMeta, Vec<u8>)>;
    fn status(&self) -> E2eeStatus;
}

/// Signaling: connection events in, actions out. The host owns the
/// connections; the stage owns what the messages mean (rooms, presence),
/// and keeps what must survive a crash in the host state store.
pub trait Signaling: Stage {
    /// Handles one event, pushing the actions it causes to `out`.
    fn handle(&mut self, event: SignalEvent, out: &mut Vec<SignalAction>);
}

/// Packet forwarding: decides which participants receive each packet. The
/// host owns payloads, sockets and SSRC/sequence rewriting.
pub trait Forwarding: Stage {
    /// Room membership changed. A new instance is told the whole table
    /// before its first packet.
    fn update(&mut self, change: RouteChange);
    /// Pushes the participants that get `packet` to `out` (nothing = drop).
    fn forward(&mut self, packet: &PacketMeta, out: &mut Vec<u64>);
    /// After each batch: the keyframes the stage wants (simulcast layers it
    /// is about to move subscribers to). None by default.
    fn keyframes(&mut self, wanted: &mut Vec<KeyframeRequest>) {
        let _ = wanted;
    }
}

/// A keyframe a forwarding stage wants: of `layer` of stream `ssrc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyframeRequest {
    pub ssrc: u32,
    pub layer: u8,
}

impl KeyframeRequest {
    /// As it crosses the boundary: the SSRC in the low 32 bits, the layer in
    /// bits 32-39.
    pub fn pack(self) -> u64 {
        u64::from(self.ssrc) | (u64::from(self.layer) << 32)
    }

    pub fn unpack(word: u64) -> KeyframeRequest {
        KeyframeRequest { ssrc: word as u32, layer: (word >> 32) as u8 }
    }
}

/// Runs a forwarding stage over a batch: `counts[i]` of `subscribers` are
/// packet `i`'s. Marks each packet, so one that makes the plugin trap is
/// quarantined alone.
pub fn forward_batch<S: Forwarding>(
    stage: &mut S,
    packets: &[PacketMeta],
    counts: &mut Vec<u32>,
    subscribers: &mut Vec<u64>,
    keyframes: &mut Vec<KeyframeRequest>,
) {
    let mark = packets.len() > 1;
    for (index, packet) in packets.iter().enumerate() {
        if mark {
            host::begin_item(index as u32);
        }
        let before = subscribers.len();
        stage.forward(packet, subscribers);
        counts.push((subscribers.len() - before) as u32);
    }
    stage.keyframes(keyframes);
}

/// Runs a signaling stage over a batch of events, marking each one.
pub fn handle_batch<S: Signaling>(stage: &mut S, events: Vec<SignalEvent>) -> Vec<SignalAction> {
    let mark = events.len() > 1;
    let mut out = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        if mark {
            host::begin_item(index as u32);
        }
        stage.handle(event, &mut out);
    }
    out
}

/// Runs a DSP stage over a flat batch, in place: what the export glue does
/// with each batch, and what native benchmarks call.
///
/// A header that claims more samples than the batch holds ends the batch
/// (logged, not a trap): the rest is left unprocessed.
pub fn process_batch<S: AudioDsp>(stage: &mut S, blocks: &mut [BlockInfo], mut samples: &mut [f32]) {
    let mark = blocks.len() > 1;
    for (index, info) in blocks.iter_mut().enumerate() {
        let Some((mine, rest)) = samples.split_at_mut_checked(info.len()) else {
            host::log(host::Level::Error, "a block header claims more samples than the batch holds");
            return;
        };
        samples = rest;
        // In a one-item batch the host knows the culprit of a trap without
        // a mark, and a mark is a host call.
        if mark {
            host::begin_item(index as u32);
        }
        let mut block = AudioBlock {
            sequence: info.sequence,
            sample_rate: info.sample_rate,
            channels: info.channels,
            samples: mine,
            level: info.level,
        };
        stage.process(&mut block);
        info.level = block.level;
    }
}

/// Runs a frame transform over a flat batch, appending the frames it emits
/// to `out_frames` and their payloads to `out_payloads`.
pub fn transform_batch<S: FrameTransform>(
    stage: &mut S,
    frames: &[FrameInfo],
    payloads: &[u8],
    out_frames: &mut Vec<FrameInfo>,
    out_payloads: &mut Vec<u8>,
) {
    frame_batch(frames, payloads, out_frames, out_payloads, |meta, payload, out| stage.transform(meta, payload, out));
}

/// Runs `each` over a flat batch of frames, marking each one, appending
/// the frames it keeps to `out_frames` and their payloads to `out_payloads`.
/// What [`transform_batch`] and the E2EE stage's seal and open do.
pub fn frame_batch(
    frames: &[FrameInfo],
    mut payloads: &[u8],
    out_frames: &mut Vec<FrameInfo>,
    out_payloads: &mut Vec<u8>,
    mut each: impl FnMut(&mut FrameMeta, &[u8], &mut Payload<'_>) -> Verdict,
) {
    let mark = frames.len() > 1;
    for (index, info) in frames.iter().enumerate() {
        let Some((payload, rest)) = payloads.split_at_checked(info.size as usize) else {
            host::log(host::Level::Error, "a frame header claims more bytes than the batch holds");
            return;
        };
        payloads = rest;
        if mark {
            host::begin_item(index as u32);
        }
        let mut meta = FrameMeta { stream: info.stream, sequence: info.sequence, timestamp: info.timestamp };
        let mut out = Payload::new(out_payloads);
        match each(&mut meta, payload, &mut out) {
            Verdict::Keep => {
                let size = out.len() as u32;
                out_frames.push(FrameInfo { stream: meta.stream, sequence: meta.sequence, timestamp: meta.timestamp, size });
            }
            Verdict::Drop => out.discard(),
        }
    }
}

/// Opens a batch for an E2EE stage: first the frames released from
/// earlier holds, then this batch's.
pub fn open_batch<S: Encryption>(
    stage: &mut S,
    frames: &[FrameInfo],
    payloads: &[u8],
    out_frames: &mut Vec<FrameInfo>,
    out_payloads: &mut Vec<u8>,
) {
    for (meta, payload) in stage.released() {
        out_frames.push(FrameInfo { stream: meta.stream, sequence: meta.sequence, timestamp: meta.timestamp, size: payload.len() as u32 });
        out_payloads.extend_from_slice(&payload);
    }
    frame_batch(frames, payloads, out_frames, out_payloads, |meta, payload, out| stage.open(meta, payload, out));
}

/// Handles room events for an E2EE stage, marking each one.
pub fn control_batch<S: Encryption>(stage: &mut S, events: Vec<E2eeEvent>) -> Vec<String> {
    let mark = events.len() > 1;
    let mut out = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        if mark {
            host::begin_item(index as u32);
        }
        stage.control(event, &mut out);
    }
    out
}

/// Parses a config JSON document into a stage, as the `init` export does.
///
/// Public so that native tests and benchmarks start a stage exactly the way
/// the host does.
pub fn start<S: Stage>(config_json: &str) -> Result<S, String> {
    let config: S::Config = serde_json::from_str(config_json).map_err(|e| format!("invalid [stage.config]: {e}"))?;
    S::new(config)
}
