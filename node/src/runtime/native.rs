//! Native plugins: audio DSP stages built as shared libraries with
//! `medianode_sdk::export_native_audio_dsp!` and loaded with `libloading`,
//! for trusted stages whose authors want native speed or cannot target
//! wasm. The C ABI is `medianode_sdk::native`.
//!
//! **Not sandboxed.** A native plugin runs in the node's process with the
//! node's rights, and nothing here can stop a segfault, an abort or a loop
//! that never returns: each takes the whole node. What the host does do:
//! - refuses to load one unless its stage says `trust = "native"`
//!   (config), and `check` says plainly that it is not isolated;
//! - checks the handshake before it calls anything else: ABI version
//!   first (the one field whose place never changes), then the stage kind
//!   and the SDK version, each refusal saying what to rebuild;
//! - turns a panic, caught by the plugin's side of the boundary, into a
//!   [`Fault`] of kind `panic`, which the supervisor handles like a wasm
//!   trap (crash report, quarantine, destroy and re-create);
//! - routes the plugin's log into the stage's budgeted log;
//! - checks what `process` hands back as it checks a wasm stage's output
//!   (same blocks, non-finite samples silenced).
//!
//! No deadline and no memory limit apply: the stage's `limits` are ignored
//! (check says so).

use super::host::MAX_PANIC_MESSAGE;
use super::instance::Fault;
use super::log::{Origin, StageLog, escape_cut};
use super::{AudioBatch, StageShared, TrapKind, bindings};
use libloading::Library;
use medianode_sdk::native::{
    ABI_VERSION, ENTRY_SYMBOL, ERROR_CAPACITY, KIND_AUDIO_DSP, NativeBlock, NativeError, NativeHost, NativePlugin, NativeStr, OK, PANICKED,
    REFUSED, SDK_VERSION,
};
use std::cell::Cell;
use std::ffi::c_void;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A loaded native plugin library, checked by its handshake.
pub struct NativeLibrary {
    /// Points into `_library`'s static data; valid while it stays loaded.
    table: *const NativePlugin,
    _library: Library,
}

// SAFETY: the table is immutable static data of a library that stays
// loaded as long as this value; its functions are called with the
// stage's own pointers, one thread at a time per stage.
unsafe impl Send for NativeLibrary {}
// SAFETY: as above; nothing here is mutated after loading.
unsafe impl Sync for NativeLibrary {}

impl NativeLibrary {
    /// Loads the library at `path` and checks its handshake.
    pub fn load(path: &Path) -> Result<NativeLibrary, String> {
        // SAFETY: loading runs the library's initializers: this is the
        // trust that `trust = "native"` grants, and why it is opt-in.
        let library = unsafe { Library::new(path) }.map_err(|e| format!("cannot load it as a native library: {e}"))?;
        // SAFETY: the type is the one the SDK's export macro defines.
        let entry = unsafe { library.get::<unsafe extern "C" fn() -> *const NativePlugin>(ENTRY_SYMBOL.as_bytes()) }.map_err(|_| {
            format!("it is a shared library without `{ENTRY_SYMBOL}`: build it with medianode_sdk::export_native_audio_dsp!")
        })?;
        // SAFETY: the entry point takes nothing and returns a pointer to
        // static data.
        let table = unsafe { entry() };
        if table.is_null() {
            return Err(format!("its `{ENTRY_SYMBOL}` returned nothing"));
        }
        // The version first, alone: the rest of the table's layout is only
        // known once it matches.
        // SAFETY: every version of the ABI starts with a u32 version.
        let abi = unsafe { std::ptr::addr_of!((*table).abi_version).read_unaligned() };
        if abi != ABI_VERSION {
            return Err(format!(
                "it speaks native plugin ABI version {abi}; this node speaks version {ABI_VERSION}: rebuild it against medianode-sdk {SDK_VERSION}"
            ));
        }
        // SAFETY: same ABI version, so the same layout.
        let plugin = unsafe { &*table };
        // SAFETY: a static string of the library's.
        let sdk_version = unsafe { plugin.sdk_version.as_str() }.unwrap_or("?");
        if plugin.kind != KIND_AUDIO_DSP {
            return Err(format!("it exports a stage of kind {}; native plugins can be audio DSP stages only", plugin.kind));
        }
        if !compatible(sdk_version, SDK_VERSION) {
            return Err(format!(
                "it was built with medianode-sdk {sdk_version}; this node's is {SDK_VERSION}: rebuild it against medianode-sdk {SDK_VERSION}"
            ));
        }
        Ok(NativeLibrary { table, _library: library })
    }

    fn table(&self) -> &NativePlugin {
        // SAFETY: checked at load; the library is still loaded.
        unsafe { &*self.table }
    }
}

/// Semver compatibility: the same major, and for 0.x the same minor.
fn compatible(theirs: &str, ours: &str) -> bool {
    let key = |v: &str| {
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or("");
        let minor = parts.next().unwrap_or("");
        if major == "0" { format!("0.{minor}") } else { major.to_string() }
    };
    key(theirs) == key(ours)
}

thread_local! {
    /// The log of the stage whose native code runs on this thread now
    /// (null outside a call): set by [`with_log`] for the call's length,
    /// while the stage's `Arc<StageLog>` keeps it alive.
    static CURRENT_LOG: Cell<*const StageLog> = const { Cell::new(std::ptr::null()) };
}

/// The host's `log` for native plugins: to the log of the stage that is
/// calling out on this thread.
unsafe extern "C" fn host_log(level: u32, message: NativeStr) {
    let level = match level {
        0 => tracing::Level::TRACE,
        1 => tracing::Level::DEBUG,
        2 => tracing::Level::INFO,
        3 => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    };
    let bytes: &[u8] = if message.len == 0 {
        &[]
    } else {
        // SAFETY: the plugin's text, valid during this call.
        unsafe { std::slice::from_raw_parts(message.ptr, message.len) }
    };
    let log = CURRENT_LOG.get();
    // SAFETY: non-null only inside `with_log`, whose caller holds the Arc.
    if let Some(log) = unsafe { log.as_ref() } {
        log.line_at(Instant::now(), Origin::Log(level), bytes, 0);
    }
}

static HOST: NativeHost = NativeHost { log: host_log };

/// Runs `f` with the stage's log as the one native log calls reach.
fn with_log<R>(log: &Arc<StageLog>, f: impl FnOnce() -> R) -> R {
    let before = CURRENT_LOG.replace(Arc::as_ptr(log));
    let result = f();
    CURRENT_LOG.set(before);
    result
}

/// The node's buffer for an error message from the plugin.
struct ErrorBuffer {
    bytes: Box<[u8; ERROR_CAPACITY]>,
    error: NativeError,
}

impl ErrorBuffer {
    fn new() -> ErrorBuffer {
        ErrorBuffer { bytes: Box::new([0u8; ERROR_CAPACITY]), error: NativeError { buf: std::ptr::null_mut(), capacity: 0, len: 0 } }
    }

    /// The buffer, empty, to lend for one call.
    fn lend(&mut self) -> &mut NativeError {
        self.error = NativeError { buf: self.bytes.as_mut_ptr(), capacity: ERROR_CAPACITY, len: 0 };
        &mut self.error
    }

    /// What the plugin wrote in it.
    fn message(&self) -> String {
        escape_cut(&self.bytes[..self.error.len.min(ERROR_CAPACITY)], MAX_PANIC_MESSAGE)
    }
}

/// One native stage instance.
pub struct NativeStage {
    library: Arc<NativeLibrary>,
    stage: *mut c_void,
    shared: Arc<StageShared>,
    /// Headers in the ABI's form, and the error buffer, reused from call
    /// to call.
    headers: Vec<NativeBlock>,
    error: ErrorBuffer,
}

// SAFETY: a stage is used by one thread at a time (the supervisor's
// worker owns it); the plugin's type is `Stage: 'static` and moved, not
// shared.
unsafe impl Send for NativeStage {}

impl NativeStage {
    /// Creates an instance from the config JSON.
    pub fn start(library: Arc<NativeLibrary>, shared: Arc<StageShared>, config_json: &str) -> Result<NativeStage, Fault> {
        let mut error = ErrorBuffer::new();
        let mut stage = std::ptr::null_mut();
        let create = library.table().create;
        // SAFETY: valid config text, host table, out-pointer and buffer.
        let lent = error.lend();
        let code = with_log(&shared.log, || unsafe { create(NativeStr::new(config_json), &HOST, &mut stage, lent) });
        match code {
            OK if !stage.is_null() => Ok(NativeStage { library, stage, shared, headers: Vec::new(), error }),
            REFUSED => Err(Fault { plugin_message: Some(error.message()), ..Fault::new(TrapKind::InitError, "init returned an error") }),
            PANICKED => {
                Err(Fault { plugin_message: Some(error.message()), ..Fault::new(TrapKind::Panic, "the native plugin panicked in create") })
            }
            other => Err(Fault::new(TrapKind::Contract, format!("the native plugin's create returned {other} without a stage"))),
        }
    }

    /// Runs an audio batch: `output` becomes a copy of `input` that the
    /// plugin processes in place.
    pub fn call_audio(&mut self, input: &AudioBatch, output: &mut AudioBatch) -> Result<(), Fault> {
        output.blocks.clone_from(&input.blocks);
        output.samples.clone_from(&input.samples);
        self.headers.clear();
        self.headers.extend(input.blocks.iter().map(to_native));
        // The ABI's samples are f32; the host keeps their bits as u32.
        let samples: &mut [f32] = bytemuck::cast_slice_mut(&mut output.samples);
        let process = self.library.table().process;
        let (stage, headers, error) = (self.stage, &mut self.headers, self.error.lend());
        // SAFETY: the stage came from this library's create; the buffers
        // are ours and exclusively borrowed for the call.
        let code = with_log(&self.shared.log, || unsafe {
            process(stage, headers.as_mut_ptr(), headers.len(), samples.as_mut_ptr(), samples.len(), error)
        });
        match code {
            OK => {
                for (out, native) in output.blocks.iter_mut().zip(&self.headers) {
                    out.level = (native.has_level != 0).then_some(bindings::AudioLevel {
                        rms_dbfs: native.rms_dbfs,
                        peak_dbfs: native.peak_dbfs,
                        voice: native.voice != 0,
                    });
                }
                Ok(())
            }
            PANICKED => {
                Err(Fault { plugin_message: Some(self.error.message()), ..Fault::new(TrapKind::Panic, "the native plugin panicked") })
            }
            other => Err(Fault::new(TrapKind::Contract, format!("the native plugin's process returned {other}"))),
        }
    }

    pub(crate) fn shared(&self) -> &StageShared {
        &self.shared
    }
}

impl Drop for NativeStage {
    fn drop(&mut self) {
        let destroy = self.library.table().destroy;
        let stage = self.stage;
        // SAFETY: the stage came from this library's create and is not
        // used again.
        with_log(&self.shared.log, || unsafe { destroy(stage) });
    }
}

fn to_native(block: &bindings::BlockInfo) -> NativeBlock {
    let level = block.level.unwrap_or(bindings::AudioLevel { rms_dbfs: 0.0, peak_dbfs: 0.0, voice: false });
    NativeBlock {
        sequence: block.sequence,
        sample_rate: block.sample_rate,
        frames: block.frames,
        channels: block.channels,
        has_level: u8::from(block.level.is_some()),
        voice: u8::from(level.voice),
        _reserved: 0,
        rms_dbfs: level.rms_dbfs,
        peak_dbfs: level.peak_dbfs,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sdk_versions_are_compatible_by_semver() {
        assert!(super::compatible("0.1.3", "0.1.0"));
        assert!(!super::compatible("0.2.0", "0.1.0"));
        assert!(super::compatible("1.4.0", "1.0.2"));
        assert!(!super::compatible("2.0.0", "1.0.0"));
    }
}
