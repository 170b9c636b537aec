//! What the host offers a plugin: log, clock, metrics and a state store.
//!
//! In the node's sandbox (wasm32-wasip2) these call the
//! `medianode:plugin/host` imports. Elsewhere (unit tests, benchmarks, a
//! native plugin, a stage embedded in a browser) they fall back to shims:
//! log to stderr, a real monotonic clock, no-op metrics, and per-thread
//! in-memory state stores ([`use_state_store`] picks one); [`embed`]
//! gives them another clock and log.

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(target_os = "wasi")]
pub(crate) mod wit {
    wit_bindgen::generate!({
        path: "wit",
        inline: "package medianode:sdk; world imports { import medianode:plugin/host@0.3.0; import medianode:plugin/aead@0.3.0; }",
        world: "medianode:sdk/imports",
        generate_all,
    });
    pub use medianode::plugin::host::*;
}

#[cfg(target_os = "wasi")]
mod imp {
    use super::{Level, wit};

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
    pub fn monotonic_now() -> u64 {
        wit::monotonic_now()
    }
    pub fn counter_add(name: &str, delta: u64) {
        wit::counter_add(name, delta)
    }
    pub fn gauge_set(name: &str, value: f64) {
        wit::gauge_set(name, value)
    }
    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        wit::state_get(key)
    }
    pub fn state_put(key: &str, value: &[u8]) -> Result<(), String> {
        wit::state_put(key, value)
    }
    pub fn state_delete(key: &str) {
        wit::state_delete(key)
    }
    pub fn begin_item(index: u32) {
        wit::begin_item(index)
    }
}

#[cfg(not(target_os = "wasi"))]
mod imp {
    use super::Level;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::time::Instant;

    type Store = HashMap<String, Vec<u8>>;

    thread_local! {
        /// State stores by name, and the one in use.
        static STATE: RefCell<(String, HashMap<String, Store>)> = RefCell::new(Default::default());
    }

    pub fn use_state_store(name: &str) {
        STATE.with_borrow_mut(|(current, _)| *current = name.to_owned());
    }

    fn with_store<R>(f: impl FnOnce(&mut Store) -> R) -> R {
        STATE.with_borrow_mut(|(current, stores)| f(stores.entry(current.clone()).or_default()))
    }

    /// An embedder's clock (monotonic ns) and log (see [`super::embed`]).
    pub type Embedding = (fn() -> u64, fn(Level, &str));
    pub static EMBEDDED: OnceLock<Embedding> = OnceLock::new();

    pub fn log(level: Level, message: &str) {
        if let Some((_, log)) = EMBEDDED.get() {
            return log(level, message);
        }
        // In a native plugin that a node loaded, the node's log.
        if !crate::native::glue::log(level, message) {
            eprintln!("[{level:?}] {message}");
        }
    }
    pub fn monotonic_now() -> u64 {
        if let Some((clock, _)) = EMBEDDED.get() {
            return clock();
        }
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
    pub fn counter_add(_name: &str, _delta: u64) {}
    pub fn gauge_set(_name: &str, _value: f64) {}
    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        with_store(|s| s.get(key).cloned())
    }
    pub fn state_put(key: &str, value: &[u8]) -> Result<(), String> {
        with_store(|s| s.insert(key.to_owned(), value.to_vec()));
        Ok(())
    }
    pub fn state_delete(key: &str) {
        with_store(|s| s.remove(key));
    }
    pub fn begin_item(_index: u32) {}
}

/// Writes a log record, tagged by the host with the stage id.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Monotonic nanoseconds; only differences are meaningful.
pub fn monotonic_now() -> u64 {
    imp::monotonic_now()
}

/// Adds `delta` to the stage's counter `name`.
pub fn counter_add(name: &str, delta: u64) {
    imp::counter_add(name, delta);
}

/// Sets the stage's gauge `name`.
pub fn gauge_set(name: &str, value: f64) {
    imp::gauge_set(name, value);
}

/// Reads from the stage's state store, which survives re-instantiation.
pub fn state_get(key: &str) -> Option<Vec<u8>> {
    imp::state_get(key)
}

/// Writes to the stage's state store; fails past the stage's state quota.
pub fn state_put(key: &str, value: &[u8]) -> Result<(), String> {
    imp::state_put(key, value)
}

/// Removes a key from the stage's state store.
pub fn state_delete(key: &str) {
    imp::state_delete(key);
}

/// Adds one to the counter kept under `key` in the state store and returns
/// it (1 the first time): how a plugin counts what survives its own
/// restarts, such as how many times it has started.
pub fn state_count(key: &str) -> Result<u32, String> {
    let count = state_get(key).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes) + 1;
    state_put(key, &count.to_le_bytes())?;
    Ok(count)
}

/// Natively only: makes the state store named `name` (each starts empty)
/// the one the state calls use on this thread, so that a test can run
/// several stages side by side, each with a store of its own, as the host
/// gives them.
#[cfg(not(target_os = "wasi"))]
pub fn use_state_store(name: &str) {
    imp::use_state_store(name);
}

/// Outside the node, where a stage's clock and log go: for a stage embedded
/// somewhere `std::time::Instant` does not run (a browser, where the clock
/// is `performance.now()`) or whose log has a place of its own (the
/// console). `clock` returns monotonic nanoseconds. The first call wins;
/// false if an embedding was already set.
#[cfg(not(target_os = "wasi"))]
pub fn embed(clock: fn() -> u64, log: fn(Level, &str)) -> bool {
    imp::EMBEDDED.set((clock, log)).is_ok()
}

/// Marks the start of batch item `index`; the export glue calls this.
#[doc(hidden)]
pub fn begin_item(index: u32) {
    imp::begin_item(index);
}
