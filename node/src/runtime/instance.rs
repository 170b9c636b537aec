//! One plugin instance. A wasm one is sandboxed: its own `Store`, limits
//! and deadline. (A native one is not: see `native.rs`.)
//!
//! Every call arms the epoch deadline first, so a call that runs past it
//! traps. Any failure comes back as a [`Fault`] describing what happened and
//! which batch item was being processed; the caller must then drop the
//! instance. (Wasmtime also refuses to re-enter a component instance that
//! trapped; [`Instance`] makes that a type-level habit: a faulted call
//! consumes nothing, but the supervisor never keeps a faulted instance.)

use super::bindings::{self, E2eeEvent, E2eeStatus, ForwardBatch, FrameBatch, PacketMeta, RouteChange, SignalAction, SignalEvent};
use super::deadline::thread_cpu_time;
use super::host::MAX_PANIC_MESSAGE;
use super::log::escape_cut;
use super::native::NativeStage;
use super::{AudioBatch, Code, HostState, Items, Plugin, StageKind, StageShared};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use wasmtime::component::InstancePre;
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};

pub use medianode_core::supervision::TrapKind;

/// A failed call, with everything the crash report needs.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: TrapKind,
    /// Human-readable cause, from the host.
    pub message: String,
    /// What the plugin said about it (its panic message), escaped and cut
    /// to [`super::host::MAX_PANIC_MESSAGE`] bytes: plugin text, never to
    /// be read as the host's.
    pub plugin_message: Option<String>,
    /// The batch item being processed, when the plugin had marked one.
    pub item: Option<usize>,
    /// Wasm frames, innermost first (at most [`MAX_FRAMES`], names cut to
    /// [`MAX_FRAME_NAME`] bytes: the names come from the plugin's binary).
    pub backtrace: Vec<String>,
    /// The tail of what the plugin wrote to stderr, escaped.
    pub stderr: String,
}

/// Wasm frames kept in a fault's backtrace.
pub const MAX_FRAMES: usize = 64;
/// Bytes kept of each frame's name.
pub const MAX_FRAME_NAME: usize = 256;

impl Fault {
    pub(crate) fn new(kind: TrapKind, message: impl Into<String>) -> Fault {
        Fault { kind, message: message.into(), plugin_message: None, item: None, backtrace: Vec::new(), stderr: String::new() }
    }
}

/// The typed exports of one instance, by stage kind.
enum Exports {
    Dsp(bindings::dsp::Guest),
    Transform(bindings::transform::Guest),
    Signal(bindings::signal::Guest),
    Forward(bindings::forward::Guest),
    E2ee(bindings::e2ee::Guest),
}

/// Per-call settings.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// How long one processing call may run.
    pub deadline: Duration,
    /// How long instantiation plus `init` may run.
    pub init_deadline: Duration,
}

/// A live plugin instance: a wasm one in a store of its own, or a
/// native one (unsandboxed; see `native.rs`).
pub struct Instance {
    backend: Backend,
    /// Whether the supervisor's caller has brought this instance up to date
    /// (a forwarding stage is told the current rooms, for instance).
    pub primed: bool,
}

enum Backend {
    Wasm(Wasm),
    Native(NativeStage),
}

impl Instance {
    /// Starts an instance of `plugin`: instantiates it and runs its `init`.
    pub fn start(
        plugin: &Plugin,
        stage: Arc<StageShared>,
        config_json: &str,
        memory_limit: u64,
        limits: CallLimits,
    ) -> Result<Instance, Fault> {
        let backend = match &plugin.code {
            Code::Wasm { pre, epochs } => Backend::Wasm(Wasm::start(pre, epochs, plugin.kind, stage, config_json, memory_limit, limits)?),
            Code::Native(library) => Backend::Native(NativeStage::start(library.clone(), stage, config_json)?),
        };
        Ok(Instance { backend, primed: false })
    }

    /// Changes this instance made to its stage's state store.
    pub fn state_writes(&self) -> u64 {
        match &self.backend {
            Backend::Wasm(wasm) => wasm.store.data().state_writes,
            Backend::Native(_) => 0,
        }
    }

    /// Processes a batch. The output has the input's type; an audio stage
    /// returns as many blocks as it got, each of the same length.
    pub fn call(&mut self, items: &Items) -> Result<Items, Fault> {
        match (&mut self.backend, items) {
            // Audio, wasm or native, goes the one way `call_audio` goes.
            (_, Items::Audio(batch)) => {
                let mut out = AudioBatch::new();
                self.call_audio(batch, &mut out)?;
                Ok(Items::Audio(out))
            }
            (Backend::Wasm(wasm), _) => wasm.call(items),
            (Backend::Native(_), _) => Err(Fault::new(TrapKind::Contract, "the batch type does not match the stage kind")),
        }
    }

    /// Runs an audio batch through a DSP plugin into `output`, whose buffers
    /// are swapped with the instance's own: after the first calls, nothing
    /// is allocated.
    pub fn call_audio(&mut self, input: &AudioBatch, output: &mut AudioBatch) -> Result<(), Fault> {
        match &mut self.backend {
            Backend::Wasm(wasm) => wasm.call_audio(input, output),
            Backend::Native(native) => {
                native.call_audio(input, output)?;
                finish_audio(native.shared(), input, output)
            }
        }
    }

    /// Hands connection events to a signaling plugin; returns its actions.
    pub fn handle_signals(&mut self, events: &[SignalEvent]) -> Result<Vec<SignalAction>, Fault> {
        self.wasm()?.handle_signals(events)
    }

    /// Tells a forwarding plugin who is in which room now.
    pub fn update_routes(&mut self, changes: &[RouteChange]) -> Result<(), Fault> {
        self.wasm()?.update_routes(changes)
    }

    /// Asks a forwarding plugin where each packet goes. The answer is
    /// checked: one count per packet, and as many subscribers as counted.
    pub fn forward(&mut self, packets: &[PacketMeta]) -> Result<ForwardBatch, Fault> {
        self.wasm()?.forward(packets)
    }

    /// Hands room events to an E2EE plugin; returns the signaling messages
    /// it wants sent.
    pub fn e2ee_control(&mut self, events: &[E2eeEvent]) -> Result<Vec<String>, Fault> {
        self.wasm()?.e2ee_control(events)
    }

    /// Seals outbound frames (at most one out per frame in).
    pub fn seal(&mut self, batch: &FrameBatch) -> Result<FrameBatch, Fault> {
        self.wasm()?.seal(batch)
    }

    /// Opens inbound frames (plus, first, any held earlier that open now).
    pub fn open(&mut self, batch: &FrameBatch) -> Result<FrameBatch, Fault> {
        self.wasm()?.open(batch)
    }

    /// What an E2EE plugin reports about its group.
    pub fn e2ee_status(&mut self) -> Result<E2eeStatus, Fault> {
        self.wasm()?.e2ee_status()
    }

    /// The wasm instance (native plugins are audio DSP stages only).
    fn wasm(&mut self) -> Result<&mut Wasm, Fault> {
        match &mut self.backend {
            Backend::Wasm(wasm) => Ok(wasm),
            Backend::Native(_) => Err(Fault::new(TrapKind::Contract, "a call for another stage kind than a native plugin's (audio DSP)")),
        }
    }
}

/// A wasm instance: its store, typed exports and call limits.
struct Wasm {
    store: Store<HostState>,
    exports: Exports,
    limits: CallLimits,
    /// Frame headers or packet metadata packed for the boundary, reused
    /// from call to call.
    headers: Vec<u64>,
}

impl Wasm {
    fn start(
        pre: &InstancePre<HostState>,
        epochs: &Arc<AtomicU64>,
        kind: StageKind,
        stage: Arc<StageShared>,
        config_json: &str,
        memory_limit: u64,
        limits: CallLimits,
    ) -> Result<Wasm, Fault> {
        let state = HostState::new(stage, epochs.clone(), memory_limit, kind == StageKind::Encryption);
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| state);
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            let epoch = state.epochs.load(std::sync::atomic::Ordering::Relaxed);
            let verdict = state.clock.overrun(epoch, thread_cpu_time());
            if let UpdateDeadline::Continue(ticks) = verdict {
                state.call_ends = epoch + ticks;
            }
            Ok(verdict)
        });
        arm(&mut store, limits.init_deadline);
        let instance = pre.instantiate(&mut store).map_err(|e| classify(&mut store, e, TrapKind::Instantiate))?;
        let exports = match kind {
            StageKind::AudioDsp => bindings::dsp::GuestIndices::new(pre).and_then(|ix| ix.load(&mut store, &instance)).map(Exports::Dsp),
            StageKind::FrameTransform => {
                bindings::transform::GuestIndices::new(pre).and_then(|ix| ix.load(&mut store, &instance)).map(Exports::Transform)
            }
            StageKind::Signaling => {
                bindings::signal::GuestIndices::new(pre).and_then(|ix| ix.load(&mut store, &instance)).map(Exports::Signal)
            }
            StageKind::PacketForwarding => {
                bindings::forward::GuestIndices::new(pre).and_then(|ix| ix.load(&mut store, &instance)).map(Exports::Forward)
            }
            StageKind::Encryption => {
                bindings::e2ee::GuestIndices::new(pre).and_then(|ix| ix.load(&mut store, &instance)).map(Exports::E2ee)
            }
        }
        .map_err(|e| Fault::new(TrapKind::Instantiate, format!("{e:#}")))?;

        let mut this = Wasm { store, exports, limits, headers: Vec::new() };
        let result = match &this.exports {
            Exports::Dsp(g) => g.call_init(&mut this.store, config_json),
            Exports::Transform(g) => g.call_init(&mut this.store, config_json),
            Exports::Signal(g) => g.call_init(&mut this.store, config_json),
            Exports::Forward(g) => g.call_init(&mut this.store, config_json),
            Exports::E2ee(g) => g.call_init(&mut this.store, config_json),
        };
        match result {
            Ok(Ok(())) => Ok(this),
            Ok(Err(message)) => Err(Fault {
                plugin_message: Some(escape_cut(message.as_bytes(), MAX_PANIC_MESSAGE)),
                ..Fault::new(TrapKind::InitError, "init returned an error")
            }),
            Err(e) => Err(classify(&mut this.store, e, TrapKind::OtherTrap)),
        }
    }

    /// Processes a batch. The output has the input's type; an audio stage
    /// returns as many blocks as it got, each of the same length.
    fn call(&mut self, items: &Items) -> Result<Items, Fault> {
        match (&self.exports, items) {
            (Exports::Transform(g), Items::Frames(batch)) => {
                arm(&mut self.store, self.limits.deadline);
                self.store.data_mut().current_item = None;
                pack(&batch.frames, &mut self.headers);
                let output = g
                    .call_transform(&mut self.store, &self.headers, &batch.payloads)
                    .map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))?;
                let output = unpack(output)?;
                check_frames(batch, &output, 0)?;
                Ok(Items::Frames(output))
            }
            _ => Err(Fault::new(TrapKind::Contract, "the batch type does not match the stage kind")),
        }
    }

    /// Hands connection events to a signaling plugin; returns its actions.
    fn handle_signals(&mut self, events: &[SignalEvent]) -> Result<Vec<SignalAction>, Fault> {
        let Exports::Signal(g) = &self.exports else {
            return Err(Fault::new(TrapKind::Contract, "signal events for a stage that is not a signaling stage"));
        };
        arm(&mut self.store, self.limits.deadline);
        self.store.data_mut().current_item = None;
        g.call_handle(&mut self.store, events).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))
    }

    /// Tells a forwarding plugin who is in which room now.
    fn update_routes(&mut self, changes: &[RouteChange]) -> Result<(), Fault> {
        let Exports::Forward(g) = &self.exports else {
            return Err(Fault::new(TrapKind::Contract, "route changes for a stage that is not a forwarding stage"));
        };
        arm(&mut self.store, self.limits.deadline);
        self.store.data_mut().current_item = None;
        g.call_update(&mut self.store, changes).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))
    }

    /// Asks a forwarding plugin where each packet goes. The answer is
    /// checked: one count per packet, and as many subscribers as counted.
    fn forward(&mut self, packets: &[PacketMeta]) -> Result<ForwardBatch, Fault> {
        let Exports::Forward(g) = &self.exports else {
            return Err(Fault::new(TrapKind::Contract, "packets for a stage that is not a forwarding stage"));
        };
        arm(&mut self.store, self.limits.deadline);
        self.store.data_mut().current_item = None;
        self.headers.clear();
        self.headers.extend(packets.iter().flat_map(|p| medianode_sdk::flat::pack_packet(&super::sdk_packet(p))));
        let batch = g.call_forward(&mut self.store, &self.headers).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))?;
        let counted: u64 = batch.counts.iter().map(|&c| u64::from(c)).sum();
        if batch.counts.len() != packets.len() || counted != batch.subscribers.len() as u64 {
            let message = format!(
                "forward returned {} counts summing to {counted} for {} packets and {} subscribers",
                batch.counts.len(),
                packets.len(),
                batch.subscribers.len()
            );
            return Err(Fault::new(TrapKind::Contract, message));
        }
        Ok(batch)
    }

    /// Hands room events to an E2EE plugin; returns the signaling messages
    /// it wants sent.
    fn e2ee_control(&mut self, events: &[E2eeEvent]) -> Result<Vec<String>, Fault> {
        let g = self.e2ee()?;
        g.call_control(&mut self.store, events).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))
    }

    /// Seals outbound frames (at most one out per frame in).
    fn seal(&mut self, batch: &FrameBatch) -> Result<FrameBatch, Fault> {
        let g = self.e2ee()?;
        pack(&batch.frames, &mut self.headers);
        let output =
            g.call_seal(&mut self.store, &self.headers, &batch.payloads).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))?;
        let output = unpack(output)?;
        check_frames(batch, &output, 0)?;
        Ok(output)
    }

    /// Opens inbound frames (plus, first, any held earlier that open now).
    fn open(&mut self, batch: &FrameBatch) -> Result<FrameBatch, Fault> {
        let g = self.e2ee()?;
        pack(&batch.frames, &mut self.headers);
        let output =
            g.call_open(&mut self.store, &self.headers, &batch.payloads).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))?;
        let output = unpack(output)?;
        check_frames(batch, &output, MAX_HELD_FRAMES)?;
        Ok(output)
    }

    /// What an E2EE plugin reports about its group.
    fn e2ee_status(&mut self) -> Result<E2eeStatus, Fault> {
        let g = self.e2ee()?;
        g.call_status(&mut self.store).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))
    }

    /// The E2EE exports, with the deadline armed for a call.
    fn e2ee(&mut self) -> Result<bindings::e2ee::Guest, Fault> {
        let Exports::E2ee(g) = &self.exports else {
            return Err(Fault::new(TrapKind::Contract, "an E2EE call for a stage that is not an E2EE stage"));
        };
        let g = g.clone();
        arm(&mut self.store, self.limits.deadline);
        self.store.data_mut().current_item = None;
        Ok(g)
    }

    /// Runs an audio batch through a DSP plugin into `output`, whose buffers
    /// are swapped with the instance's own: after the first calls, nothing
    /// is allocated.
    fn call_audio(&mut self, input: &AudioBatch, output: &mut AudioBatch) -> Result<(), Fault> {
        let Exports::Dsp(g) = &self.exports else {
            return Err(Fault::new(TrapKind::Contract, "the batch type does not match the stage kind"));
        };
        arm(&mut self.store, self.limits.deadline);
        let state = self.store.data_mut();
        state.current_item = None;
        state.dsp_output.given = false;
        g.call_process(&mut self.store, &input.blocks, &input.samples).map_err(|e| classify(&mut self.store, e, TrapKind::OtherTrap))?;
        let state = self.store.data_mut();
        if !state.dsp_output.given {
            return Err(Fault::new(TrapKind::Contract, "process returned without handing its output to dsp-output.output"));
        }
        std::mem::swap(&mut output.blocks, &mut state.dsp_output.blocks);
        std::mem::swap(&mut output.samples, &mut state.dsp_output.samples);
        finish_audio(&state.stage, input, output)
    }
}

/// What the host does with an audio stage's output, wasm or native: checks
/// it, silences non-finite blocks, and publishes a level the plugin wrote
/// (rather than one it passed on) as the stage's level gauge.
fn finish_audio(stage: &StageShared, input: &AudioBatch, output: &mut AudioBatch) -> Result<(), Fault> {
    check_audio(input, output)?;
    let silenced = silence_non_finite(output);
    if silenced > 0 {
        super::Metrics::add(&stage.metrics.non_finite, silenced);
    }
    if let (Some(i), Some(o)) = (input.blocks.last(), output.blocks.last())
        && let Some(level) = o.level.filter(|l| Some(*l) != i.level)
    {
        stage.metrics.level.publish(&level);
    }
    Ok(())
}

/// Sets the epoch deadline for the next call (see [`super::deadline`]:
/// past it, a call the machine descheduled goes on).
fn arm(store: &mut Store<HostState>, deadline: Duration) {
    let state = store.data_mut();
    let epoch = state.epochs.load(std::sync::atomic::Ordering::Relaxed);
    let ticks = state.clock.arm(deadline, epoch);
    state.call_ends = epoch + ticks;
    store.set_epoch_deadline(ticks);
}

/// An audio stage answers with its input's blocks, each as long as before.
/// Only the samples and the level are the plugin's to change: the headers
/// are restored from the input, so a plugin cannot renumber the stream.
fn check_audio(input: &AudioBatch, output: &mut AudioBatch) -> Result<(), Fault> {
    if output.blocks.len() != input.blocks.len() || output.samples.len() != input.samples.len() {
        return Err(Fault::new(
            TrapKind::Contract,
            format!(
                "an audio stage must return the blocks it got ({} blocks, {} samples), not {} blocks, {} samples",
                input.blocks.len(),
                input.samples.len(),
                output.blocks.len(),
                output.samples.len()
            ),
        ));
    }
    for (out, inp) in output.blocks.iter_mut().zip(&input.blocks) {
        *out = bindings::BlockInfo { level: out.level, ..*inp };
    }
    Ok(())
}

/// Replaces every block that holds a NaN or an infinity with silence (a
/// plugin's arithmetic must not reach a speaker or the next stage as
/// noise or poison); returns how many blocks it replaced.
fn silence_non_finite(output: &mut AudioBatch) -> u64 {
    let mut silenced = 0;
    let mut at = 0;
    for block in &output.blocks {
        let len = (block.frames as usize * usize::from(block.channels)).min(output.samples.len() - at);
        let samples = &mut output.samples[at..at + len];
        // f32 bits with an all-ones exponent are NaN or infinite. A fold
        // rather than `any`: it vectorizes, and the common block has none.
        if samples.iter().fold(false, |bad, &bits| bad | (bits & 0x7f80_0000 == 0x7f80_0000)) {
            samples.fill(0);
            silenced += 1;
        }
        at += len;
    }
    silenced
}

/// Packs frame headers for the boundary (`flat-frames` in the WIT) into
/// `into`.
fn pack(frames: &[bindings::FrameInfo], into: &mut Vec<u64>) {
    into.clear();
    into.extend(frames.iter().flat_map(|f| medianode_sdk::flat::pack_one(f.stream, f.sequence, f.timestamp, f.size)));
}

/// A plugin's packed frames as a batch: its headers must be whole.
fn unpack(flat: bindings::types::FlatFrames) -> Result<FrameBatch, Fault> {
    let (headers, partial) = flat.headers.as_chunks::<{ medianode_sdk::flat::WORDS }>();
    if !partial.is_empty() {
        return Err(Fault::new(TrapKind::Contract, format!("{} header words is not a whole number of frame headers", flat.headers.len())));
    }
    let frames = headers
        .iter()
        .map(|words| {
            let (stream, sequence, timestamp, size) = medianode_sdk::flat::unpack_one(words);
            bindings::FrameInfo { stream, sequence, timestamp, size }
        })
        .collect();
    Ok(FrameBatch { frames, payloads: flat.payloads })
}

/// Frames an E2EE stage may hold for a key and hand back later (the WIT's
/// bound).
pub const MAX_HELD_FRAMES: usize = 256;

/// A frame transform emits at most one frame per frame in (plus `extra`
/// released from earlier calls), and its headers account for exactly the
/// payload bytes it returned.
fn check_frames(input: &FrameBatch, output: &FrameBatch, extra: usize) -> Result<(), Fault> {
    let declared: u64 = output.frames.iter().map(|f| u64::from(f.size)).sum();
    if output.frames.len() > input.frames.len() + extra || declared != output.payloads.len() as u64 {
        return Err(Fault::new(
            TrapKind::Contract,
            format!(
                "a frame transform must return at most {} frames whose sizes add up to its payload bytes; got {} frames declaring {declared} bytes with {} bytes",
                input.frames.len() + extra,
                output.frames.len(),
                output.payloads.len()
            ),
        ));
    }
    Ok(())
}

/// Turns a wasmtime error into a [`Fault`], reading the store for the
/// context (marked item, panic message, limit hit, stderr).
fn classify(store: &mut Store<HostState>, error: wasmtime::Error, fallback: TrapKind) -> Fault {
    let state = store.data_mut();
    let stderr = state.output.1.stderr_tail();
    // The default panic hook writes to stderr rather than through the SDK.
    if state.panic_message.is_none()
        && let Some(at) = find(&stderr, b"panicked at")
    {
        state.panic_message = Some(escape_cut(&stderr[at..], MAX_PANIC_MESSAGE));
    }
    let trap = error.downcast_ref::<Trap>().copied();
    let kind = if state.limit_hit.is_some() {
        TrapKind::MemoryLimit
    } else if state.panic_message.is_some() {
        TrapKind::Panic
    } else {
        match trap {
            Some(Trap::Interrupt) => TrapKind::Deadline,
            Some(Trap::StackOverflow) => TrapKind::StackOverflow,
            Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
            Some(_) => TrapKind::OtherTrap,
            None => fallback,
        }
    };
    // The host's own words: the limit it enforced, or the trap. (Not the
    // error's full text: its backtrace part is names from the plugin.)
    let message = match (&state.limit_hit, trap) {
        (Some(limit), _) => limit.clone(),
        (None, Some(trap)) => trap.to_string(),
        (None, None) => escape_cut(format!("{error:#}").as_bytes(), MAX_PANIC_MESSAGE),
    };
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .take(MAX_FRAMES)
                .map(|f| {
                    let module = f.module().name().unwrap_or("<module>");
                    let func = f.func_name().map_or("<unknown>".to_string(), |n| format!("{:#}", rustc_demangle::demangle(n)));
                    let frame = format!("{module}!{func}");
                    escape_cut(frame.as_bytes(), MAX_FRAME_NAME)
                })
                .collect()
        })
        .unwrap_or_default();
    Fault {
        kind,
        message,
        plugin_message: state.panic_message.clone(),
        item: state.current_item.map(|i| i as usize),
        backtrace,
        stderr: escape_cut(&stderr, super::wasi::STDERR_TAIL),
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
