//! The wasm runtime: engines, compiled plugins and sandboxed instances.
//!
//! One [`Runtime`] serves a whole node. It owns:
//!
//! - a wasmtime [`Engine`] per distinct wasm stack limit (the stack limit is
//!   an engine setting, and stages may ask for different ones), each with the
//!   pooling allocator (instantiation in microseconds, copy-on-write memory)
//!   and epoch interruption;
//! - one ticker thread that advances every engine's epoch each millisecond,
//!   which is what turns a call's deadline into a trap;
//! - the compiled [`Plugin`]s, keyed by engine and SHA-256 digest, so a
//!   plugin used by many stages is compiled once, and a restart never
//!   compiles at all (it instantiates a cached `InstancePre`). With a cache
//!   directory, compiled code also survives the process (wasmtime's cache).
//!
//! Sandboxing: a plugin gets a closed WASI surface (see `wasi.rs` for the
//! interface-by-interface table): no files, no network, no environment, a
//! wall clock frozen at the epoch (except E2EE stages, whose MLS checks
//! lifetimes against the date), sleeps cut at the call's deadline, and
//! stdout and stderr captured into the stage's budgeted log ([`log`]).
//! Everything else it can do goes through the `host` interface (see
//! `host.rs`), where every resource has a budget in bytes.

mod aead;
mod deadline;
mod host;
mod instance;
mod items;
pub mod log;
mod native;
pub mod stock;
mod wasi;

pub use host::{
    CALL_BUCKETS_US, CallTimes, CrashSummary, HostState, MAX_METRIC_NAME, MAX_METRIC_SERIES, MAX_PANIC_MESSAGE, Metrics, Reload,
    StageShared, StageSpec, StageState, StageStatus, StateStore,
};
pub use instance::{CallLimits, Fault, Instance, TrapKind};
pub use items::{AudioBatch, Items, SAMPLE_RATE};
use native::NativeLibrary;

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::error::Context;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime::{Result, bail};

/// How often the epoch advances: the resolution of every deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Wasm linear memory ceiling per instance that the pool is built for.
pub use medianode_core::supervision::MAX_MEMORY;

/// Bindings generated from `plugins/sdk/wit` for the host side. The inline world
/// gathers every stage kind's export so one `bindgen!` covers them all; an
/// instance only ever loads the one interface its plugin exports.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins/sdk/wit",
        inline: "
            package medianode:node;
            world node {
                import medianode:plugin/host@0.3.0;
                import medianode:plugin/aead@0.3.0;
                export medianode:plugin/dsp@0.3.0;
                export medianode:plugin/transform@0.3.0;
                export medianode:plugin/forward@0.3.0;
                export medianode:plugin/signal@0.3.0;
                export medianode:plugin/e2ee@0.3.0;
            }
        ",
        world: "medianode:node/node",
        additional_derives: [PartialEq],
    });
    // `self::` because the WIT namespace shares this crate's name.
    pub use self::exports::medianode::plugin::{dsp, e2ee, forward, signal, transform};
    pub use self::medianode::plugin::types::{
        self as types, AudioLevel, BlockInfo, E2eeEvent, E2eeSeat, E2eeStatus, ForwardBatch, FrameBatch, FrameInfo, MediaKind, PacketMeta,
        ReceiverState, RouteChange, RouteMember, Seat, SeatGrant, SignalAction, SignalEvent, SignalMessage, SignalPeer,
    };
    pub use self::medianode::plugin::{aead, host};
}

pub use medianode_core::plugin::StageKind;

/// Node-wide runtime settings.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where compiled plugins are cached across runs; `None` disables it.
    pub cache_dir: Option<PathBuf>,
}

/// A compiled plugin, ready to instantiate many times.
pub struct Plugin {
    /// Where it came from: `stock:NAME` or a file path.
    pub source: String,
    /// SHA-256 of the component bytes, hex.
    pub digest: String,
    /// The interface it exports.
    pub kind: StageKind,
    code: Code,
}

/// What a plugin runs.
enum Code {
    /// A compiled component, and the runtime's epoch count (what the
    /// ticker has counted so far).
    Wasm { pre: InstancePre<HostState>, epochs: Arc<AtomicU64> },
    /// A native library: not sandboxed (`native.rs`).
    Native(Arc<NativeLibrary>),
}

impl Plugin {
    /// Whether it is a native library, which runs unsandboxed.
    pub fn is_native(&self) -> bool {
        matches!(self.code, Code::Native(_))
    }
}

/// The node's wasm runtime. Cheap to clone; all clones share engines and
/// compiled plugins.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    /// Epochs the ticker has counted: the engines' clock in
    /// [`EPOCH_TICK`]s, readable for the price of an atomic load.
    epochs: Arc<AtomicU64>,
    options: RuntimeOptions,
    /// Engines by max wasm stack in bytes.
    engines: Mutex<HashMap<usize, Engine>>,
    /// Compiled plugins by (stack, digest).
    plugins: Mutex<HashMap<(usize, String), Arc<Plugin>>>,
}

impl Runtime {
    /// Creates a runtime and starts its epoch ticker.
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        let inner = Arc::new(Inner {
            epochs: Arc::new(AtomicU64::new(0)),
            options,
            engines: Mutex::new(HashMap::new()),
            plugins: Mutex::new(HashMap::new()),
        });
        spawn_ticker(Arc::downgrade(&inner))?;
        Ok(Runtime { inner })
    }

    /// Compiles (or fetches from the caches) the plugin in `bytes` for an
    /// engine with the given wasm stack limit.
    pub fn load(&self, source: &str, bytes: &[u8], max_stack: usize) -> Result<Arc<Plugin>> {
        let digest = hex(&Sha256::digest(bytes));
        let key = (max_stack, digest.clone());
        if let Some(plugin) = lock(&self.inner.plugins).get(&key) {
            return Ok(plugin.clone());
        }
        let engine = self.engine(max_stack)?;
        let component = Component::new(&engine, bytes).with_context(|| format!("{source} is not a valid WebAssembly component"))?;
        let kind = exported_kind(&engine, &component).with_context(|| format!("{source} is not a medianode plugin"))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)?;
        let pre = linker.instantiate_pre(&component).with_context(|| format!("{source} imports something the node does not provide"))?;
        let code = Code::Wasm { pre, epochs: self.inner.epochs.clone() };
        let plugin = Arc::new(Plugin { source: source.to_string(), digest, kind, code });
        lock(&self.inner.plugins).insert(key, plugin.clone());
        Ok(plugin)
    }

    /// The interfaces a component exports and imports, by name (without
    /// linking it: `load` says whether this node can run it).
    pub fn interfaces(&self, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
        let engine = self.engine(medianode_core::supervision::Limits::default().stack)?;
        let component = Component::new(&engine, bytes).context("it is not a valid WebAssembly component")?;
        let ty = component.component_type();
        let exports = ty.exports(&engine).map(|(name, _)| name.to_string()).collect();
        let imports = ty.imports(&engine).map(|(name, _)| name.to_string()).collect();
        Ok((exports, imports))
    }

    /// Loads the native plugin library at `path` (whose bytes are `bytes`)
    /// and checks its handshake. Not sandboxed: only for stages that say
    /// `trust = "native"`.
    pub fn load_native(&self, source: &str, path: &std::path::Path, bytes: &[u8]) -> Result<Arc<Plugin>> {
        let library = NativeLibrary::load(path).map_err(|e| wasmtime::Error::msg(format!("{source}: {e}")))?;
        let digest = hex(&Sha256::digest(bytes));
        Ok(Arc::new(Plugin { source: source.to_string(), digest, kind: StageKind::AudioDsp, code: Code::Native(Arc::new(library)) }))
    }

    fn engine(&self, max_stack: usize) -> Result<Engine> {
        let mut engines = lock(&self.inner.engines);
        if let Some(engine) = engines.get(&max_stack) {
            return Ok(engine.clone());
        }
        let engine = build_engine(&self.inner.options, max_stack)?;
        engines.insert(max_stack, engine.clone());
        Ok(engine)
    }
}

fn build_engine(options: &RuntimeOptions, max_stack: usize) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // Sized for a node of tens of stages, each with an active instance, a
    // standby and a few being torn down. Slots are virtual address space
    // until used.
    pool.total_component_instances(256)
        .total_core_instances(256 * 8)
        .total_memories(256)
        .total_tables(256 * 4)
        .max_memory_size(MAX_MEMORY as usize)
        .max_core_instances_per_component(32);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(max_stack)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true);
    // `MEDIANODE_PROFILER=perfmap`: compiled plugin code is named in
    // /tmp/perf-PID.map, so `perf record`/`perf report` show a plugin's own
    // functions rather than bare JIT addresses (docs/plugins.md).
    if std::env::var_os("MEDIANODE_PROFILER").is_some_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Some(dir) = &options.cache_dir {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(wasmtime::Cache::new(cache)?));
    }
    Engine::new(&config).context("creating the wasmtime engine")
}

/// Reads which stage interface a component exports. Exactly one is allowed.
fn exported_kind(engine: &Engine, component: &Component) -> Result<StageKind> {
    let ty = component.component_type();
    let exported: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let kinds: Vec<StageKind> =
        StageKind::ALL.iter().filter(|(_, name)| exported.iter().any(|e| e == name)).map(|(kind, _)| *kind).collect();
    // A plugin built against another version of the contract names it.
    let other_version = exported.iter().find_map(|e| e.strip_prefix("medianode:plugin/")?.split_once('@').map(|(_, v)| v.to_string()));
    match (kinds.as_slice(), other_version) {
        ([kind], _) => Ok(*kind),
        ([], Some(version)) => bail!(
            "it was built for the plugin contract medianode:plugin@{version}; this node runs medianode:plugin@{}: \
             rebuild it against this node's medianode-sdk",
            medianode_core::plugin::CONTRACT_VERSION
        ),
        ([], None) => bail!(
            "it exports none of the stage interfaces (it exports: {}); build it with medianode-sdk \
             against one of the worlds in plugins/sdk/wit",
            if exported.is_empty() { "nothing".to_string() } else { exported.join(", ") }
        ),
        (many, _) => bail!("it exports {} stage interfaces; a plugin must export exactly one", many.len()),
    }
}

/// Advances every engine's epoch once per [`EPOCH_TICK`] until the runtime
/// is dropped.
fn spawn_ticker(inner: Weak<Inner>) -> Result<()> {
    std::thread::Builder::new()
        .name("medianode-epoch".into())
        .spawn(move || {
            while let Some(inner) = inner.upgrade() {
                for engine in lock(&inner.engines).values() {
                    engine.increment_epoch();
                }
                inner.epochs.fetch_add(1, Ordering::Relaxed);
                drop(inner);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("starting the epoch ticker thread")?;
    Ok(())
}

/// The host's view of a packet as the SDK's: what the forwarding plugin's
/// glue sees on the other side of the boundary, and what the SFU's native
/// decision takes.
pub(crate) fn sdk_packet(p: &bindings::PacketMeta) -> medianode_sdk::PacketMeta {
    medianode_sdk::PacketMeta {
        publisher: p.publisher,
        kind: match p.kind {
            bindings::MediaKind::Audio => medianode_sdk::MediaKind::Audio,
            bindings::MediaKind::Video => medianode_sdk::MediaKind::Video,
        },
        ssrc: p.ssrc,
        sequence: p.sequence,
        timestamp: p.timestamp,
        payload_type: p.payload_type,
        marker: p.marker,
        size: p.size,
        audio_level: p.audio_level,
        layer: p.layer,
        keyframe: p.keyframe,
    }
}

/// Locks a mutex, recovering it if a panic elsewhere poisoned it: every map
/// guarded here stays consistent across a panic (single inserts and reads).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
