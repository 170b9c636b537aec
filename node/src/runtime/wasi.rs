//! The WASI surface a plugin sees, closed on purpose.
//!
//! wasmtime-wasi links every WASI 0.2 interface; this module decides what
//! each one gives a plugin (the table is also in `docs/plugins.md`):
//!
//! | interface | a plugin gets |
//! |---|---|
//! | `wasi:cli/stdout`, `stderr` | captured into the stage's log, line by line, within its budget ([`super::log`]); the stderr tail goes into crash reports |
//! | `wasi:cli/stdin` | an empty stream (end of file at once) |
//! | `wasi:cli/environment` | no variables, no arguments, no working directory |
//! | `wasi:cli/exit` | the call traps (a fault like any other) |
//! | `wasi:cli/terminal-*` | no terminal |
//! | `wasi:clocks/monotonic-clock` | the node's clock (nanoseconds since the instance started); a sleep (`subscribe-duration`, `subscribe-instant`) that would outlast the call's deadline traps at once, as the deadline would: a sleeping plugin is a slow plugin |
//! | `wasi:clocks/wall-clock` | 1970-01-01 (E2EE stages: the real date, which MLS needs) |
//! | `wasi:filesystem/*` | no preopened directories: every path fails |
//! | `wasi:sockets/*` | creating a TCP or UDP socket and name lookups fail with `access-denied` |
//! | `wasi:random/*` | random bytes (harmless, and `HashMap` needs them) |
//! | `wasi:io/*` | streams and polls over the above |
//!
//! Every blocking WASI call runs on the stage's own thread, outside any
//! async runtime: at worst it delays that stage.

use super::HostState;
use super::log::{LineSplitter, Origin, StageLog};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError, StreamResult};

/// How much of a plugin's stderr is kept for its crash report.
pub const STDERR_TAIL: usize = 8 * 1024;

/// What one instance wrote to stdout and stderr: lines in progress, and the
/// tail of stderr.
#[derive(Default)]
struct Written {
    stdout: LineSplitter,
    stderr: LineSplitter,
    tail: VecDeque<u8>,
}

/// One instance's stdout and stderr, both into its stage's log.
#[derive(Clone)]
pub(crate) struct PluginOutput {
    origin: Origin,
    written: Arc<Mutex<Written>>,
    log: Arc<StageLog>,
}

impl PluginOutput {
    /// The instance's stdout and stderr.
    pub(crate) fn pair(log: Arc<StageLog>) -> (PluginOutput, PluginOutput) {
        let written = Arc::new(Mutex::new(Written::default()));
        let out = PluginOutput { origin: Origin::Stdout, written: written.clone(), log: log.clone() };
        (out, PluginOutput { origin: Origin::Stderr, written, log })
    }

    fn write(&self, bytes: &[u8]) {
        let mut written = super::lock(&self.written);
        let written = &mut *written;
        let (splitter, origin) = match self.origin {
            Origin::Stderr => {
                let cut = bytes.len().saturating_sub(STDERR_TAIL);
                written.tail.extend(&bytes[cut..]);
                let excess = written.tail.len().saturating_sub(STDERR_TAIL);
                written.tail.drain(..excess);
                (&mut written.stderr, Origin::Stderr)
            }
            _ => (&mut written.stdout, Origin::Stdout),
        };
        let log = &self.log;
        splitter.feed(bytes, |line, cut| log_line(log, origin, line, cut));
    }

    /// The last [`STDERR_TAIL`] bytes the instance wrote to stderr.
    pub(crate) fn stderr_tail(&self) -> Vec<u8> {
        super::lock(&self.written).tail.iter().copied().collect()
    }

    /// Logs lines still in progress (the instance is going away).
    pub(crate) fn flush(&self) {
        let mut written = super::lock(&self.written);
        let log = &self.log;
        written.stdout.flush(|line, cut| log_line(log, Origin::Stdout, line, cut));
        written.stderr.flush(|line, cut| log_line(log, Origin::Stderr, line, cut));
    }
}

fn log_line(log: &StageLog, origin: Origin, line: &[u8], cut: usize) {
    log.line_at(Instant::now(), origin, line, cut);
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for PluginOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        PluginOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always room: what the budget cannot take is dropped and counted.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for PluginOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        PluginOutput::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A sleep within the call's deadline.
struct CappedSleep(tokio::time::Instant);

#[async_trait::async_trait]
impl Pollable for CappedSleep {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

/// Replaces wasmtime-wasi's `wasi:clocks/monotonic-clock` with the node's:
/// the same readings (nanoseconds since the instance started, never going
/// back), and no sleep past the deadline of the call in progress.
pub(super) fn add_monotonic_clock(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap("now", |store: StoreContextMut<'_, HostState>, (): ()| Ok((store.data().monotonic_nanos(),)))?;
    clock.func_wrap("resolution", |_: StoreContextMut<'_, HostState>, (): ()| Ok((1u64,)))?;
    clock.func_wrap("subscribe-duration", |mut store: StoreContextMut<'_, HostState>, (nanos,): (u64,)| {
        Ok((sleep(store.data_mut(), Duration::from_nanos(nanos))?,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, HostState>, (when,): (u64,)| {
        let state = store.data_mut();
        let wait = Duration::from_nanos(when.saturating_sub(state.monotonic_nanos()));
        Ok((sleep(state, wait)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A sleep that would outlast the call's deadline is the call running past
/// it: it traps now, as the deadline would (`deadline` in the report),
/// rather than after holding the stage's thread.
fn sleep(state: &mut HostState, wanted: Duration) -> wasmtime::Result<Resource<DynPollable>> {
    let now = Instant::now();
    let epoch = state.epochs.load(std::sync::atomic::Ordering::Relaxed);
    let left = super::EPOCH_TICK.saturating_mul(u32::try_from(state.call_ends.saturating_sub(epoch)).unwrap_or(u32::MAX));
    if wanted > left {
        return Err(wasmtime::Trap::Interrupt.into());
    }
    state.clock.slept(wanted);
    let until = tokio::time::Instant::from_std(now + wanted);
    let table = wasmtime_wasi::WasiView::ctx(state).table;
    let sleep = table.push(CappedSleep(until))?;
    wasmtime_wasi::p2::subscribe(table, sleep)
}
