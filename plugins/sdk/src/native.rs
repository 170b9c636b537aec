//! Native plugins: the same [`AudioDsp`](crate::AudioDsp) stage, built as a
//! shared library (`crate-type = ["cdylib"]`) for the host's own target
//! and loaded by the node through `libloading`, with one export macro:
//!
//! ```
//! # use medianode_sdk::{AudioBlock, AudioDsp, NoConfig, Stage};
//! # pub struct Tremolo;
//! # impl Stage for Tremolo { type Config = NoConfig; fn new(_: NoConfig) -> Result<Self, String> { Ok(Tremolo) } }
//! # impl AudioDsp for Tremolo { fn process(&mut self, _: &mut AudioBlock<'_>) {} }
//! medianode_sdk::export_native_audio_dsp!(Tremolo);
//! ```
//!
//! **A native plugin is not sandboxed.** It runs in the node's process with
//! the node's rights: no deadline, no memory limit, no WASI gate. A panic
//! is caught at the boundary (every entry point runs under
//! `catch_unwind`) and becomes a fault that the supervisor handles as it
//! does a wasm trap (crash report, quarantine, restart = destroy and
//! create). A segfault, an abort or a loop that never returns takes the
//! node. The node loads one only with `trust = "native"` on the stage.
//!
//! The boundary is a C ABI, so that the node and the plugin need not be
//! built by the same compiler: the library exports one symbol,
//! [`ENTRY_SYMBOL`], a function returning a pointer to a static
//! [`NativePlugin`]. Its first field, `abi_version`, keeps its place in
//! every version: the node reads it first and refuses any other version
//! than its own [`ABI_VERSION`] before it reads anything else. Then it
//! checks the stage kind and the SDK version the plugin was built with.
//! Strings and buffers cross as pointer and length; error messages are
//! written into a buffer the node owns, so no allocation crosses the
//! boundary.
//!
//! What a native plugin has of the host: its log (routed to the stage's
//! log by the node). The state store and metrics are the SDK's in-process
//! stand-ins, as in a native unit test: they do not survive a restart and
//! do not reach the node's metrics.

use std::ffi::c_void;

/// The version of this C ABI. Any change to the structs below or to the
/// meaning of a call bumps it.
pub const ABI_VERSION: u32 = 1;

/// The symbol a native plugin exports: `extern "C" fn() -> *const NativePlugin`.
pub const ENTRY_SYMBOL: &str = "medianode_native_plugin";

/// [`NativePlugin::kind`] of an audio DSP stage (the only native kind so far).
pub const KIND_AUDIO_DSP: u32 = 1;

/// The version of this SDK, which a native plugin reports.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bytes the node lends for an error message.
pub const ERROR_CAPACITY: usize = 4096;

/// Borrowed UTF-8 text: pointer and length.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NativeStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl NativeStr {
    pub fn new(text: &str) -> NativeStr {
        NativeStr { ptr: text.as_ptr(), len: text.len() }
    }

    /// The text, or `None` if it is not UTF-8.
    ///
    /// # Safety
    /// `ptr` must point at `len` readable bytes for the returned lifetime.
    pub unsafe fn as_str<'a>(self) -> Option<&'a str> {
        if self.len == 0 {
            return Some("");
        }
        // SAFETY: the caller vouches for ptr and len.
        std::str::from_utf8(unsafe { std::slice::from_raw_parts(self.ptr, self.len) }).ok()
    }
}

/// A buffer the node lends for an error message; the plugin writes at most
/// `capacity` bytes and sets `len`.
#[repr(C)]
pub struct NativeError {
    pub buf: *mut u8,
    pub capacity: usize,
    pub len: usize,
}

impl NativeError {
    /// Writes `message`, cut at a character boundary to fit.
    ///
    /// # Safety
    /// `buf` must point at `capacity` writable bytes.
    pub unsafe fn write(&mut self, message: &str) {
        let cut = &message[..message.floor_char_boundary(self.capacity)];
        // SAFETY: cut.len() <= capacity, which the caller vouches for.
        unsafe { std::ptr::copy_nonoverlapping(cut.as_ptr(), self.buf, cut.len()) };
        self.len = cut.len();
    }
}

/// What the node offers a native plugin.
#[repr(C)]
pub struct NativeHost {
    /// Writes a log record (level: 0 trace … 4 error) to the stage's log.
    pub log: unsafe extern "C" fn(level: u32, message: NativeStr),
}

/// One audio block's header, as it crosses the C ABI.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NativeBlock {
    pub sequence: u64,
    pub sample_rate: u32,
    pub frames: u32,
    pub channels: u8,
    /// 1 if `rms_dbfs`, `peak_dbfs` and `voice` hold a level.
    pub has_level: u8,
    pub voice: u8,
    pub _reserved: u8,
    pub rms_dbfs: f32,
    pub peak_dbfs: f32,
}

impl NativeBlock {
    pub fn from_info(info: &crate::BlockInfo) -> NativeBlock {
        let level = info.level.unwrap_or(crate::AudioLevel { rms_dbfs: 0.0, peak_dbfs: 0.0, voice: false });
        NativeBlock {
            sequence: info.sequence,
            sample_rate: info.sample_rate,
            frames: info.frames,
            channels: info.channels,
            has_level: u8::from(info.level.is_some()),
            voice: u8::from(level.voice),
            _reserved: 0,
            rms_dbfs: level.rms_dbfs,
            peak_dbfs: level.peak_dbfs,
        }
    }

    pub fn to_info(self) -> crate::BlockInfo {
        crate::BlockInfo {
            sequence: self.sequence,
            sample_rate: self.sample_rate,
            channels: self.channels,
            frames: self.frames,
            level: (self.has_level != 0).then_some(crate::AudioLevel {
                rms_dbfs: self.rms_dbfs,
                peak_dbfs: self.peak_dbfs,
                voice: self.voice != 0,
            }),
        }
    }
}

/// A call's outcome.
pub const OK: u32 = 0;
/// The stage refused its config (`create` only); the message says why.
pub const REFUSED: u32 = 1;
/// The plugin panicked; the message is the panic's.
pub const PANICKED: u32 = 2;

/// The table a native plugin exports. `abi_version` comes first and stays
/// first in every version of the ABI.
#[repr(C)]
pub struct NativePlugin {
    pub abi_version: u32,
    pub kind: u32,
    /// The medianode-sdk version the plugin was built with.
    pub sdk_version: NativeStr,
    /// Builds a stage from its config JSON into `*stage`. Returns [`OK`],
    /// [`REFUSED`] or [`PANICKED`], with a message in `error`.
    pub create: unsafe extern "C" fn(config: NativeStr, host: *const NativeHost, stage: *mut *mut c_void, error: *mut NativeError) -> u32,
    /// Processes `blocks` (headers) over `samples` (interleaved f32, each
    /// block's share in order) in place. Returns [`OK`] or [`PANICKED`].
    pub process: unsafe extern "C" fn(
        stage: *mut c_void,
        blocks: *mut NativeBlock,
        block_count: usize,
        samples: *mut f32,
        sample_count: usize,
        error: *mut NativeError,
    ) -> u32,
    /// Drops a stage. A panic in its drop is swallowed.
    pub destroy: unsafe extern "C" fn(stage: *mut c_void),
}

// SAFETY: the table is immutable static data: a version, a kind, a pointer
// to a static string and function pointers.
unsafe impl Sync for NativePlugin {}

/// What the export macro expands to. Not for direct use.
#[doc(hidden)]
pub mod glue {
    use super::*;
    use crate::{AudioDsp, BlockInfo};
    use std::cell::RefCell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Once;
    use std::sync::atomic::{AtomicPtr, Ordering};

    /// The node's log function (set by the first `create`).
    static HOST_LOG: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

    thread_local! {
        /// The last panic's message and place, from the panic hook.
        static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Keeps panic messages for the error buffer instead of printing them
    /// (the hook is this library's own: a cdylib has its own std).
    fn install_panic_hook() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string());
                let at = info.location().map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
                PANIC.set(Some(format!("panicked{at}: {message}")));
            }));
        });
    }

    fn panic_message() -> String {
        PANIC.take().unwrap_or_else(|| "panicked".to_string())
    }

    /// The log record's way to the node, if a node is there.
    pub fn log(level: crate::host::Level, message: &str) -> bool {
        let f = HOST_LOG.load(Ordering::Acquire);
        if f.is_null() {
            return false;
        }
        // SAFETY: HOST_LOG only ever holds the node's `log` function
        // pointer, stored from `NativeHost::log` below.
        let log: unsafe extern "C" fn(u32, NativeStr) = unsafe { std::mem::transmute::<*mut (), unsafe extern "C" fn(u32, NativeStr)>(f) };
        // SAFETY: the node's log reads `message` during the call only.
        unsafe { log(level as u32, NativeStr::new(message)) };
        true
    }

    /// `create` for stage type `S`.
    ///
    /// # Safety
    /// The pointers are the node's, valid for the call.
    pub unsafe fn create<S: AudioDsp>(config: NativeStr, host: *const NativeHost, stage: *mut *mut c_void, error: *mut NativeError) -> u32 {
        install_panic_hook();
        // SAFETY: the node passes a valid host table, or null.
        if let Some(host) = unsafe { host.as_ref() } {
            HOST_LOG.store(host.log as *mut (), Ordering::Release);
        }
        // SAFETY: the node passes a valid, exclusively borrowed error buffer.
        let error = unsafe { &mut *error };
        // SAFETY: the node's config text lives for the call.
        let Some(config) = (unsafe { config.as_str() }) else {
            // SAFETY: as above.
            unsafe { error.write("the config is not UTF-8") };
            return REFUSED;
        };
        match catch_unwind(|| crate::start::<S>(config)) {
            Ok(Ok(built)) => {
                // SAFETY: `stage` is the node's out-pointer.
                unsafe { *stage = Box::into_raw(Box::new(built)).cast() };
                OK
            }
            Ok(Err(refused)) => {
                // SAFETY: as above.
                unsafe { error.write(&refused) };
                REFUSED
            }
            Err(_) => {
                // SAFETY: as above.
                unsafe { error.write(&panic_message()) };
                PANICKED
            }
        }
    }

    /// `process` for stage type `S`.
    ///
    /// # Safety
    /// `stage` came from `create::<S>`; the buffers are the node's, valid
    /// and exclusively borrowed for the call.
    pub unsafe fn process<S: AudioDsp>(
        stage: *mut c_void,
        blocks: *mut NativeBlock,
        block_count: usize,
        samples: *mut f32,
        sample_count: usize,
        error: *mut NativeError,
    ) -> u32 {
        // SAFETY: the caller's contract.
        let (stage, headers, samples, error) = unsafe {
            (
                &mut *stage.cast::<S>(),
                std::slice::from_raw_parts_mut(blocks, block_count),
                std::slice::from_raw_parts_mut(samples, sample_count),
                &mut *error,
            )
        };
        let run = catch_unwind(AssertUnwindSafe(|| {
            SCRATCH.with_borrow_mut(|infos| {
                infos.clear();
                infos.extend(headers.iter().map(|h| h.to_info()));
                crate::process_batch(stage, infos, samples);
                for (header, info) in headers.iter_mut().zip(infos.iter()) {
                    *header = NativeBlock::from_info(info);
                }
            });
        }));
        match run {
            Ok(()) => OK,
            Err(_) => {
                // SAFETY: the caller's contract.
                unsafe { error.write(&panic_message()) };
                PANICKED
            }
        }
    }

    thread_local! {
        /// Headers in the SDK's form, reused from call to call.
        static SCRATCH: RefCell<Vec<BlockInfo>> = const { RefCell::new(Vec::new()) };
    }

    /// `destroy` for stage type `S`.
    ///
    /// # Safety
    /// `stage` came from `create::<S>` and is not used after.
    pub unsafe fn destroy<S: AudioDsp>(stage: *mut c_void) {
        // SAFETY: the caller's contract; a panic in drop is not the node's.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(stage.cast::<S>()) })));
    }
}

/// Exports an [`AudioDsp`](crate::AudioDsp) stage from a native plugin
/// (a `cdylib` built for the host's target). See the [module docs](self).
#[macro_export]
macro_rules! export_native_audio_dsp {
    ($stage:ty) => {
        const _: () = {
            use $crate::native::{self as n, glue};
            unsafe extern "C" fn create(
                config: n::NativeStr,
                host: *const n::NativeHost,
                stage: *mut *mut ::std::ffi::c_void,
                error: *mut n::NativeError,
            ) -> u32 {
                // SAFETY: the node keeps the ABI's contract.
                unsafe { glue::create::<$stage>(config, host, stage, error) }
            }
            unsafe extern "C" fn process(
                stage: *mut ::std::ffi::c_void,
                blocks: *mut n::NativeBlock,
                block_count: usize,
                samples: *mut f32,
                sample_count: usize,
                error: *mut n::NativeError,
            ) -> u32 {
                // SAFETY: the node keeps the ABI's contract.
                unsafe { glue::process::<$stage>(stage, blocks, block_count, samples, sample_count, error) }
            }
            unsafe extern "C" fn destroy(stage: *mut ::std::ffi::c_void) {
                // SAFETY: the node keeps the ABI's contract.
                unsafe { glue::destroy::<$stage>(stage) }
            }
            static PLUGIN: n::NativePlugin = n::NativePlugin {
                abi_version: n::ABI_VERSION,
                kind: n::KIND_AUDIO_DSP,
                sdk_version: n::NativeStr { ptr: n::SDK_VERSION.as_ptr(), len: n::SDK_VERSION.len() },
                create,
                process,
                destroy,
            };
            #[unsafe(no_mangle)]
            pub extern "C" fn medianode_native_plugin() -> *const n::NativePlugin {
                &PLUGIN
            }
        };
    };
}
