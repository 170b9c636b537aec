//! Supervision of one stage: keep a plugin instance serving, whatever it does.
//!
//! A [`Supervisor`] owns the stage's active instance, an optional started
//! spare (the standby), the restart policy ([`backoff`]), the flight
//! recorder and the link to the crash reporter. The pipeline calls
//! [`Supervisor::process`] with each batch and [`Supervisor::maintain`] when
//! it is idle. Both take `now`, so time-based behaviour is tested with a
//! paused clock.
//!
//! When a call faults:
//! 1. the instance is dropped on the spot (a trapped instance is never
//!    entered again);
//! 2. the item the plugin was working on (it marks each one through the
//!    SDK) is quarantined: counted, described in the crash report, and never
//!    given to a plugin again;
//! 3. the restart policy decides: serve again now (the standby takes over
//!    within microseconds), after a backoff delay, or give up;
//! 4. the rest of the batch goes to the next instance, or, while none may
//!    serve, meets the stage's failure policy: dropped (`fail-closed`),
//!    passed around the stage (`fail-open`), or, once the stage gives up
//!    under `stop`, the pipeline stops.
//!
//! Audio is never dropped: a stream must keep its timing, so where frames
//! would be dropped, an audio block is muted (same length, silence), and the
//! quarantined block itself is muted or, under `fail-open`, passed through.
//! The sink sees every block, in order.
//!
//! Instances are built on the stage's builder thread ([`builder`]), never
//! on the thread that calls the plugin: a standby is asked for in
//! `maintain` and after each failover, and a stage without a ready instance
//! serves its failure policy until one is ready (waiting for it at most
//! until the time set with [`Supervisor::wait_for_builds_until`]).

pub use crate::runtime::StageSpec;

mod builder;
pub mod crash_report;
pub mod pulse;
pub mod thread;

use crate::runtime::{AudioBatch, CrashSummary, Fault, Instance, Items, Metrics, Reload, StageShared, StageState, StageStatus, TrapKind};
use builder::{Builder, News, Ready};
use crash_report::{CrashReport, CrashReporter, unix_ms};
use medianode_core::supervision::backoff::{Backoff, Decision};
use medianode_core::supervision::recorder::{Action, FlightRecorder};
use medianode_core::supervision::{FailurePolicy, Limits};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stage gave up under the `stop` policy: the pipeline must stop.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stage '{stage}' gave up after {failures} failures in {window:?} and its failure policy is `stop`")]
pub struct Stopped {
    pub stage: String,
    pub failures: usize,
    pub window: Duration,
}

/// Waits until a stage serving an async side (the SFU's forwarding stage,
/// an edge's E2EE stage) gives up under `stop`; never resolves if the
/// sender goes away without a reason.
pub async fn wait_stopped(mut stopped: tokio::sync::watch::Receiver<Option<Stopped>>) -> Stopped {
    let reason = stopped.wait_for(Option::is_some).await.ok().and_then(|reason| reason.clone());
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

/// How often a standby may be rebuilt because the state store moved on.
const STANDBY_REFRESH: Duration = Duration::from_secs(1);

/// A piece of a batch still to handle after a fault.
enum Work {
    /// Items for the plugin.
    Process(Items),
    /// A quarantined item, to be replaced by its stand-in.
    StandIn(Items),
}

/// Keeps one stage serving.
pub struct Supervisor {
    spec: StageSpec,
    shared: Arc<StageShared>,
    active: Option<Instance>,
    /// Builds instances off this thread; a ready one is the standby.
    builder: Builder,
    /// How long (in real time) a stage without an instance may wait for
    /// one being built before it applies its failure policy.
    wait_until: Option<Instant>,
    /// The build last waited for (each is waited for once at most).
    waited_for: Option<u64>,
    /// When a stale standby was last thrown away for a fresh one.
    refreshed: Option<Instant>,
    backoff: Backoff,
    recorder: FlightRecorder,
    reporter: CrashReporter,
    faults: u64,
    /// A reload under way: the new spec's builder, building beside the
    /// instance that serves.
    reloading: Option<Reloading>,
}

struct Reloading {
    builder: Builder,
    spec: StageSpec,
    /// `Some` until the new instance is ready (then it says so).
    prepared: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    commit: std::sync::mpsc::Receiver<bool>,
    /// The reload was committed; waiting for an up-to-date instance.
    committed: bool,
    swapped: tokio::sync::oneshot::Sender<()>,
}

impl Supervisor {
    /// Starts the stage's first instance (a failure here is the user's to
    /// see, so it is returned rather than retried) and its standby, both on
    /// the stage's builder thread; the caller waits for them.
    pub fn start(spec: StageSpec, reporter: CrashReporter, now: Instant) -> Result<Supervisor, Fault> {
        let shared = Arc::new(StageShared::with_limits(&spec.id, &spec.limits));
        let builder = Builder::spawn(&spec, shared.clone())
            .map_err(|e| Fault::new(TrapKind::Instantiate, format!("cannot start the stage's builder thread: {e}")))?;
        // A build ends by its init deadline; the margin covers compiling
        // nothing more than instantiation on a busy machine.
        let start_wait = spec.limits.init_deadline.saturating_mul(2) + Duration::from_secs(5);
        builder.request();
        let active = match builder.wait(Instant::now() + start_wait).then(|| builder.take()).flatten() {
            Some(Ok(ready)) => ready.instance,
            Some(Err(fault)) => return Err(fault),
            None => {
                let message = format!("the first instance was not built within {start_wait:?}");
                return Err(Fault::new(TrapKind::Instantiate, message));
            }
        };
        let mut supervisor = Supervisor {
            backoff: Backoff::new(spec.restart.clone(), spec.seed),
            recorder: FlightRecorder::new(spec.recorder, now),
            shared,
            active: Some(active),
            builder,
            wait_until: None,
            waited_for: None,
            refreshed: None,
            reporter,
            faults: 0,
            reloading: None,
            spec,
        };
        supervisor.backoff.on_started(now);
        supervisor.set_status(|status| {
            status.plugin = supervisor.spec.plugin.source.clone();
            status.digest = supervisor.spec.plugin.digest.clone();
            status.failure_policy = supervisor.spec.failure.name();
            status.state = StageState::Serving;
        });
        // The first standby is ready before the first item, like the
        // instance it stands by: ask, wait, and hear how it went.
        supervisor.maintain(now);
        supervisor.builder.wait(Instant::now() + start_wait);
        supervisor.maintain(now);
        Ok(supervisor)
    }

    /// The stage id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The stage's failure policy.
    pub fn failure(&self) -> FailurePolicy {
        self.spec.failure
    }

    /// The stage's resource limits.
    pub fn limits(&self) -> &Limits {
        &self.spec.limits
    }

    /// The stage's metrics and state store.
    pub fn shared(&self) -> &Arc<StageShared> {
        &self.shared
    }

    /// Whether a spare instance is ready.
    pub fn has_standby(&self) -> bool {
        self.builder.ready()
    }

    /// Asks for a standby if there is none and waits for it, at most
    /// `timeout` (benchmarks and tests that need one ready before a fault).
    pub fn wait_for_standby(&mut self, now: Instant, timeout: Duration) -> bool {
        self.maintain(now);
        self.builder.wait(Instant::now() + timeout);
        self.maintain(now);
        self.has_standby()
    }

    /// Until when (real time) a call that finds no instance serving may
    /// wait for one being built, before the failure policy applies. `None`
    /// (the default): not at all. A pipeline sets the end of the current
    /// tick's budget: an instance ready by then loses nothing.
    pub fn wait_for_builds_until(&mut self, until: Option<Instant>) {
        self.wait_until = until;
    }

    /// Runs a batch through the stage. Returns the stage's output: every
    /// item the plugin processed, in order, with the items it could not
    /// process handled by the failure policy (see the module docs).
    pub fn process(&mut self, now: Instant, items: Items) -> Result<Items, Stopped> {
        Metrics::add(&self.shared.metrics.items_in, items.len() as u64);
        let mut out = items.empty_like();
        self.drive(now, vec![Work::Process(items)], &mut out);
        self.finish(&out)?;
        Ok(out)
    }

    /// The audio path, without allocating: while the active instance
    /// serves, `input` goes in and the answer comes back in `output`'s
    /// buffers (reused from call to call). A fault falls back to
    /// [`Supervisor::process`]'s handling, which may allocate.
    pub fn process_audio(&mut self, now: Instant, input: &AudioBatch, output: &mut AudioBatch) -> Result<(), Stopped> {
        let metrics = &self.shared.metrics;
        Metrics::add(&metrics.items_in, input.blocks.len() as u64);
        let fault = match self.active.as_mut() {
            Some(instance) => {
                Metrics::add(&metrics.calls, 1);
                let started = Instant::now();
                match instance.call_audio(input, output) {
                    Ok(()) => {
                        let sequence = input.blocks.first().map(|b| b.sequence);
                        self.recorded_call(now, input.blocks.len(), sequence, started);
                        Metrics::add(&self.shared.metrics.items_out, output.blocks.len() as u64);
                        return Ok(());
                    }
                    Err(fault) => Some(fault),
                }
            }
            None => None,
        };
        let items = Items::Audio(input.clone());
        let mut out = items.empty_like();
        let mut todo = Vec::new();
        match fault {
            Some(fault) => self.on_call_fault(now, items, fault, &mut todo, &mut out),
            None => todo.push(Work::Process(items)),
        }
        self.drive(now, todo, &mut out);
        self.finish(&out)?;
        if let Items::Audio(batch) = out {
            *output = batch;
        }
        Ok(())
    }

    /// The supervised path for stage kinds whose output is not a batch like
    /// their input (signaling, forwarding). `call` runs a slice of `items`
    /// on an instance and appends its answer to `out` only when it
    /// succeeds. `prime` brings a new instance up to date before its first
    /// call. When a call faults, the item the plugin marked is quarantined
    /// and handed to `lost(item, false, out)` (its stand-in: an error reply,
    /// a dropped packet), and the items around it go to the next instance;
    /// items no instance may take go to `lost(item, bypass, out)`, where
    /// `bypass` says the stage's policy is `fail-open`.
    pub fn run<I: Clone, O>(
        &mut self,
        now: Instant,
        items: &[I],
        out: &mut O,
        mut prime: impl FnMut(&mut Instance) -> Result<(), Fault>,
        mut call: impl FnMut(&mut Instance, &[I], &mut O) -> Result<(), Fault>,
        mut lost: impl FnMut(&I, bool, &mut O),
    ) -> Result<(), Stopped> {
        let metrics = self.shared.clone();
        Metrics::add(&metrics.metrics.items_in, items.len() as u64);
        // (range, quarantined) pieces still to do, last first.
        let mut todo = vec![(0..items.len(), false)];
        while let Some((range, quarantined)) = todo.pop() {
            if range.is_empty() {
                continue;
            }
            if quarantined {
                lost(&items[range.start], false, out);
                continue;
            }
            let Some(instance) = self.serving(now) else {
                let bypass = self.spec.failure == FailurePolicy::FailOpen;
                let counter = if bypass { &metrics.metrics.bypassed } else { &metrics.metrics.dropped };
                Metrics::add(counter, range.len() as u64);
                items[range.clone()].iter().for_each(|item| lost(item, bypass, out));
                self.recorder.record(now, Action::Down { items: range.len() as u32, policy: self.spec.failure });
                continue;
            };
            Metrics::add(&metrics.metrics.calls, 1);
            let started = Instant::now();
            let result = match instance.primed {
                true => Ok(()),
                false => prime(instance).inspect(|()| instance.primed = true),
            };
            match result.and_then(|()| call(instance, &items[range.clone()], out)) {
                Ok(()) => {
                    self.recorded_call(now, range.len(), None, started);
                    Metrics::add(&metrics.metrics.items_out, range.len() as u64);
                }
                Err(fault) => {
                    self.active = None;
                    let n = range.len();
                    match fault.item.filter(|&i| i < n).or((n == 1).then_some(0)) {
                        Some(i) => {
                            self.on_fault(now, fault, None, n, true);
                            Metrics::add(&metrics.metrics.quarantined, 1);
                            let poison = range.start + i;
                            todo.push((poison + 1..range.end, false));
                            todo.push((poison..poison + 1, true));
                            todo.push((range.start..poison, false));
                        }
                        None => {
                            self.on_fault(now, fault, None, n, true);
                            todo.push((range, false));
                        }
                    }
                }
            }
        }
        self.finish_run()
    }

    /// Works through `todo` (last first): runs of items for the plugin, and
    /// quarantined items that get a stand-in.
    fn drive(&mut self, now: Instant, mut todo: Vec<Work>, out: &mut Items) {
        while let Some(work) = todo.pop() {
            let batch = match work {
                Work::Process(batch) if batch.is_empty() => continue,
                Work::Process(batch) => batch,
                Work::StandIn(poison) => {
                    self.stand_in(&poison, out);
                    continue;
                }
            };
            let shared = self.shared.clone();
            let Some(instance) = self.serving(now) else {
                self.down(now, &batch, out);
                continue;
            };
            Metrics::add(&shared.metrics.calls, 1);
            let started = Instant::now();
            match instance.call(&batch) {
                Ok(result) => {
                    self.recorded_call(now, batch.len(), batch.sequences().next(), started);
                    if out.is_empty() {
                        *out = result;
                    } else {
                        out.append(&result);
                    }
                }
                Err(fault) => self.on_call_fault(now, batch, fault, &mut todo, out),
            }
        }
    }

    /// A call on `batch` faulted: drop the instance, quarantine the culprit
    /// and queue what is left.
    fn on_call_fault(&mut self, now: Instant, batch: Items, fault: Fault, todo: &mut Vec<Work>, out: &mut Items) {
        self.active = None;
        let n = batch.len();
        // Which input to blame: the one the plugin marked, or the only one.
        // Unknown in a larger batch (the trap came before any mark): then the
        // whole batch meets the policy.
        match fault.item.filter(|&i| i < n).or((n == 1).then_some(0)) {
            Some(i) => {
                let poison = batch.slice(i..i + 1);
                self.on_fault(now, fault, Some(&poison), n, true);
                // The items before the poison were processed by the instance
                // that trapped, but their output is lost with it: they go again.
                todo.push(Work::Process(batch.slice(i + 1..n)));
                todo.push(Work::StandIn(poison));
                todo.push(Work::Process(batch.slice(0..i)));
            }
            None => {
                self.on_fault(now, fault, None, n, true);
                self.down(now, &batch, out);
            }
        }
    }

    fn recorded_call(&mut self, now: Instant, items: usize, first_sequence: Option<u64>, started: Instant) {
        let took = started.elapsed();
        self.shared.metrics.call_time.record(took);
        let micros = took.as_micros() as u32;
        self.recorder.record(now, Action::Call { items: items as u32, first_sequence, micros });
    }

    /// Counts the output; a stage that gave up under `stop` stops the pipeline.
    fn finish(&mut self, out: &Items) -> Result<(), Stopped> {
        self.finish_run()?;
        Metrics::add(&self.shared.metrics.items_out, out.len() as u64);
        Ok(())
    }

    /// A stage that gave up under `stop` stops the pipeline.
    fn finish_run(&self) -> Result<(), Stopped> {
        if self.backoff.gave_up() && self.spec.failure == FailurePolicy::Stop {
            return Err(Stopped {
                stage: self.spec.id.clone(),
                failures: self.spec.restart.max_restarts as usize + 1,
                window: self.spec.restart.window,
            });
        }
        Ok(())
    }

    /// Idle-time work: pick up a failed build, and ask for a spare instance
    /// if one is wanted and allowed. Never builds on this thread.
    pub fn maintain(&mut self, now: Instant) {
        // An operator's restart: the instance goes (no fault, no report);
        // the next call takes the standby, as after a fault.
        if self.shared.restart_requested.swap(false, std::sync::atomic::Ordering::Relaxed) && self.active.take().is_some() {
            tracing::info!(stage = %self.spec.id, "restarting the stage, as asked");
            self.set_status(|status| status.state = StageState::Restarting);
            // The standby (if ready) serves at once, not at the next call.
            let _ = self.serving(now);
        }
        self.drive_reload(now);
        match self.builder.news() {
            Some(News::Failed(fault)) => self.on_fault(now, fault, None, 0, false),
            Some(News::Ready(built_in)) => self.recorder.record(now, Action::StandbyReady { micros: built_in.as_micros() as u32 }),
            None => {}
        }
        // A standby built on state the store has since moved past is
        // rebuilt, at most once a second (a plugin that writes on every
        // call would otherwise keep its builder busy).
        let version = crate::runtime::lock(&self.shared.state).version();
        if self.builder.ready_version().is_some_and(|seen| seen != version)
            && self.refreshed.is_none_or(|at| at.elapsed() >= STANDBY_REFRESH)
        {
            self.refreshed = Some(Instant::now());
            self.builder.discard();
            Metrics::add(&self.shared.metrics.stale, 1);
        }
        if self.spec.restart.standby && self.backoff.may_start(now) {
            self.builder.request();
        }
    }

    /// The instance to call now: the standby, or one built for the purpose,
    /// when the restart policy allows one to serve. Waits at most until
    /// `wait_until` for a build it asks for itself.
    fn serving(&mut self, now: Instant) -> Option<&mut Instance> {
        let asked = Instant::now();
        let mut waited = false;
        while self.active.is_none() && self.backoff.may_start(now) {
            let ready_at_once = !waited && self.builder.ready();
            match self.builder.take() {
                // Built on state the store has moved past since: a new one.
                Some(Ok(ready)) if ready.state_version != crate::runtime::lock(&self.shared.state).version() => {
                    Metrics::add(&self.shared.metrics.stale, 1);
                }
                Some(Ok(Ready { instance, took: built_in, .. })) => {
                    self.active = Some(instance);
                    self.backoff.on_started(now);
                    Metrics::add(&self.shared.metrics.restarts, 1);
                    self.set_status(|status| {
                        status.state = StageState::Serving;
                        status.next_retry_unix_ms = None;
                    });
                    let micros = if ready_at_once { 0 } else { (asked.elapsed() + built_in).as_micros() as u32 };
                    self.recorder.record(now, Action::Restart { standby: ready_at_once, micros });
                    // The next standby is asked for in `maintain`, after
                    // this call: nothing competes with the call that
                    // follows a fault.
                }
                Some(Err(fault)) => self.on_fault(now, fault, None, 0, false),
                // Each build is waited for once at most: one that outlasts
                // a wait may be an `init` that loops, and waiting for it on
                // every call would slow every call to its budget.
                None => match (self.builder.request(), self.wait_until) {
                    (Some(build), Some(until)) if Some(build) != self.waited_for => {
                        self.waited_for = Some(build);
                        waited = true;
                        if !self.builder.wait(until) {
                            break;
                        }
                    }
                    // Built already, between the look and the asking.
                    (None, _) if self.builder.wait(Instant::now()) => {}
                    _ => break,
                },
            }
        }
        self.active.as_mut()
    }

    /// Applies the failure policy to items no instance can take: passed
    /// around the stage (`fail-open`), or else dropped, except audio blocks,
    /// which are muted so that the stream keeps its timing.
    fn down(&mut self, now: Instant, items: &Items, out: &mut Items) {
        let n = items.len();
        if n == 0 {
            return;
        }
        let metrics = &self.shared.metrics;
        match (self.spec.failure, items) {
            (FailurePolicy::FailOpen, _) => {
                Metrics::add(&metrics.bypassed, n as u64);
                out.append(items);
            }
            (_, Items::Audio(_)) => {
                Metrics::add(&metrics.muted, n as u64);
                (0..n).for_each(|i| out.push_muted(items, i));
            }
            (_, Items::Frames(_)) => Metrics::add(&metrics.dropped, n as u64),
        }
        self.recorder.record(now, Action::Down { items: n as u32, policy: self.spec.failure });
    }

    /// What takes a quarantined item's place in the output: an audio block
    /// passes through (`fail-open`) or is muted; a frame is dropped.
    fn stand_in(&mut self, poison: &Items, out: &mut Items) {
        let metrics = &self.shared.metrics;
        match (self.spec.failure, poison) {
            (_, Items::Frames(_)) => {}
            (FailurePolicy::FailOpen, Items::Audio(_)) => {
                Metrics::add(&metrics.bypassed, 1);
                out.append(poison);
            }
            (_, Items::Audio(_)) => {
                Metrics::add(&metrics.muted, 1);
                out.push_muted(poison, 0);
            }
        }
    }

    /// Moves a reload along (see [`Reload`]): starts building the new
    /// spec's instance, says when it is ready, and swaps it in once the
    /// reload is committed. Never waits.
    fn drive_reload(&mut self, now: Instant) {
        if self.reloading.is_none() {
            let Some(Reload { spec, prepared, commit, swapped }) = crate::runtime::lock(&self.shared.reload).take() else { return };
            match Builder::spawn(&spec, self.shared.clone()) {
                Ok(builder) => {
                    builder.request();
                    self.reloading = Some(Reloading { builder, spec, prepared: Some(prepared), commit, committed: false, swapped });
                }
                Err(e) => {
                    let _ = prepared.send(Err(format!("stage '{}': cannot start a builder thread: {e}", self.spec.id)));
                    return;
                }
            }
        }
        let Some(r) = self.reloading.as_mut() else { return };
        if r.prepared.is_some() {
            match r.builder.news() {
                Some(News::Failed(fault)) => {
                    let message = format!("stage '{}': the new instance failed: {}", self.spec.id, brief(&fault.message));
                    if let Some(prepared) = r.prepared.take() {
                        let _ = prepared.send(Err(message));
                    }
                    self.reloading = None;
                    return;
                }
                Some(News::Ready(_)) => {
                    if let Some(prepared) = r.prepared.take() {
                        let _ = prepared.send(Ok(()));
                    }
                }
                None => return,
            }
        }
        if !r.committed {
            match r.commit.try_recv() {
                Ok(true) => r.committed = true,
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                // Called off (another stage failed), or the reloader went.
                Ok(false) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.reloading = None;
                    return;
                }
            }
        }
        // An instance whose `init` saw state that has moved on since is
        // built again, as a standby would be.
        let version = crate::runtime::lock(&self.shared.state).version();
        if r.builder.ready_version() != Some(version) {
            if r.builder.ready_version().is_some() {
                r.builder.discard();
            }
            r.builder.request();
            return;
        }
        let Some(Reloading { builder, spec, swapped, .. }) = self.reloading.take() else { return };
        let Some(Ok(ready)) = builder.take() else { return };
        self.spec = spec;
        self.builder = builder;
        self.active = Some(ready.instance);
        self.backoff = Backoff::new(self.spec.restart.clone(), self.spec.seed);
        self.backoff.on_started(now);
        crate::runtime::lock(&self.shared.state).set_quota(self.spec.limits.state);
        self.set_status(|status| {
            status.plugin = self.spec.plugin.source.clone();
            status.digest = self.spec.plugin.digest.clone();
            status.failure_policy = self.spec.failure.name();
            status.state = StageState::Serving;
            status.next_retry_unix_ms = None;
        });
        tracing::info!(stage = %self.spec.id, digest = %self.spec.plugin.digest, "stage reloaded");
        let _ = swapped.send(());
    }

    fn set_status(&self, change: impl FnOnce(&mut StageStatus)) {
        change(&mut crate::runtime::lock(&self.shared.status));
    }

    /// Records a fault, decides what follows and files the crash report.
    fn on_fault(&mut self, now: Instant, fault: Fault, poison: Option<&Items>, batch_size: usize, serving_lost: bool) {
        self.faults += 1;
        Metrics::add(&self.shared.metrics.faults, 1);
        Metrics::add(&self.shared.metrics.faults_by_kind[fault.kind as usize], 1);
        let crash = CrashSummary { kind: fault.kind, message: brief(&fault.message), unix_ms: unix_ms() };
        self.recorder.record(now, Action::Fault { kind: fault.kind, item: fault.item.map(|i| i as u32) });
        let poison_summary = poison.map(|p| {
            Metrics::add(&self.shared.metrics.quarantined, 1);
            if let Some(sequence) = p.sequences().next() {
                self.recorder.record(now, Action::Quarantine { sequence });
            }
            p.summary(0)
        });
        let decision = self.backoff.on_failure(now, serving_lost);
        let (decision_name, next_delay_ms) = match decision {
            Decision::Restart { delay, .. } => ("restart", Some(delay.as_secs_f64() * 1000.0)),
            Decision::GiveUp { .. } => {
                self.recorder.record(now, Action::GiveUp);
                self.builder.discard();
                ("give-up", None)
            }
        };
        self.set_status(|status| {
            status.state = if next_delay_ms.is_some() { StageState::Restarting } else { StageState::Down };
            status.next_retry_unix_ms = next_delay_ms.map(|ms| crash.unix_ms + ms as u64);
            status.last_crash = Some(crash);
        });
        self.reporter.report(CrashReport {
            stage: self.spec.id.clone(),
            plugin: self.spec.plugin.source.clone(),
            digest: self.spec.plugin.digest.clone(),
            trap_kind: fault.kind,
            message: fault.message,
            plugin_message: fault.plugin_message,
            backtrace: fault.backtrace,
            stderr: fault.stderr,
            poison: poison_summary,
            batch_size,
            fault_count: self.faults,
            decision: decision_name,
            next_delay_ms,
            failure_policy: self.spec.failure,
            recorded: self.recorder.snapshot(),
            unix_ms: unix_ms(),
        });
    }
}

/// A fault message cut to its first line and 200 bytes, for the status.
fn brief(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line[..line.floor_char_boundary(200)].to_string()
}
