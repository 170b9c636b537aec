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
//! Spare instances are started in `maintain`, off the hot path.

pub mod backoff;
pub mod crash_report;
pub mod recorder;

use crate::config::FailurePolicy;
use crate::runtime::{CallLimits, Fault, Instance, Items, Metrics, Plugin, StageShared};
use backoff::{Backoff, Decision, RestartConfig};
use crash_report::{CrashReport, CrashReporter, unix_ms};
use recorder::{Action, FlightRecorder};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resource limits of one stage (`[stage.limits]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Linear memory ceiling in bytes.
    pub memory: u64,
    /// Longest a single processing call may run. Measured in wall-clock
    /// time (epochs), so a descheduled thread counts too: leave headroom on
    /// a busy machine.
    pub deadline: Duration,
    /// Longest instantiation plus `init` may run (start-up does more work
    /// than a call, and happens off the hot path).
    pub init_deadline: Duration,
    /// Wasm stack ceiling in bytes.
    pub stack: usize,
    /// State store quota in bytes.
    pub state: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            deadline: Duration::from_millis(5),
            init_deadline: Duration::from_secs(1),
            stack: 512 << 10,
            state: 1 << 20,
        }
    }
}

/// Everything needed to run one stage.
#[derive(Clone)]
pub struct StageSpec {
    pub id: String,
    pub plugin: Arc<Plugin>,
    /// The `[stage.config]` table as JSON.
    pub config_json: String,
    pub limits: Limits,
    pub restart: RestartConfig,
    pub failure: FailurePolicy,
    /// Flight recorder length.
    pub recorder: usize,
    /// Seed for the backoff jitter.
    pub seed: u64,
}

/// The stage gave up under the `stop` policy: the pipeline must stop.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stage '{stage}' gave up after {failures} failures in {window:?} and its failure policy is `stop`")]
pub struct Stopped {
    pub stage: String,
    pub failures: usize,
    pub window: Duration,
}

/// Keeps one stage serving.
pub struct Supervisor {
    spec: StageSpec,
    shared: Arc<StageShared>,
    active: Option<Instance>,
    standby: Option<Instance>,
    backoff: Backoff,
    recorder: FlightRecorder,
    reporter: CrashReporter,
    faults: u64,
}

impl Supervisor {
    /// Starts the stage's first instance (a failure here is the user's to
    /// see, so it is returned rather than retried) and its standby.
    pub fn start(spec: StageSpec, reporter: CrashReporter, now: Instant) -> Result<Supervisor, Fault> {
        let shared = Arc::new(StageShared::new(&spec.id, spec.limits.state));
        let active = start_instance(&spec, &shared)?;
        let mut supervisor = Supervisor {
            backoff: Backoff::new(spec.restart.clone(), spec.seed),
            recorder: FlightRecorder::new(spec.recorder, now),
            shared,
            active: Some(active),
            standby: None,
            reporter,
            faults: 0,
            spec,
        };
        supervisor.backoff.on_started(now);
        supervisor.maintain(now);
        Ok(supervisor)
    }

    /// The stage id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The stage's metrics and state store.
    pub fn shared(&self) -> &Arc<StageShared> {
        &self.shared
    }

    /// Whether a spare instance is ready.
    pub fn has_standby(&self) -> bool {
        self.standby.is_some()
    }

    /// Runs a batch through the stage. Returns the stage's output, which
    /// lacks quarantined items and, while the stage is down, is empty
    /// (`fail-closed`) or the input itself (`fail-open`).
    pub fn process(&mut self, now: Instant, mut items: Items) -> Result<Items, Stopped> {
        let shared = self.shared.clone();
        Metrics::add(&shared.metrics.items_in, items.len() as u64);
        let mut out = items.empty_like();
        while !items.is_empty() {
            let Some(instance) = self.serving(now) else {
                self.down(now, items, &mut out);
                break;
            };
            Metrics::add(&shared.metrics.calls, 1);
            let started = Instant::now();
            match instance.call(&items) {
                Ok(result) => {
                    let action = Action::Call {
                        items: items.len() as u32,
                        first_sequence: items.sequences().next(),
                        micros: started.elapsed().as_micros() as u32,
                    };
                    self.recorder.record(now, action);
                    out.append(result);
                    break;
                }
                Err(fault) => {
                    self.active = None;
                    let batch_size = items.len();
                    // Which input to blame: the one the plugin marked, or the
                    // only one. Unknown in a larger batch (the trap came
                    // before any mark): then nobody is retried.
                    let culprit = fault.item.filter(|&i| i < batch_size).or((batch_size == 1).then_some(0));
                    let poison = culprit.map(|i| items.take(i));
                    self.on_fault(now, fault, poison.as_ref(), batch_size, true);
                    if poison.is_none() {
                        self.down(now, std::mem::replace(&mut items, out.empty_like()), &mut out);
                    }
                }
            }
        }
        if self.backoff.gave_up() && self.spec.failure == FailurePolicy::Stop {
            return Err(Stopped {
                stage: self.spec.id.clone(),
                failures: self.spec.restart.max_restarts as usize + 1,
                window: self.spec.restart.window,
            });
        }
        Metrics::add(&shared.metrics.items_out, out.len() as u64);
        Ok(out)
    }

    /// Idle-time work: start a spare instance if one is wanted and allowed.
    pub fn maintain(&mut self, now: Instant) {
        if !self.spec.restart.standby || self.standby.is_some() || !self.backoff.may_start(now) {
            return;
        }
        let started = Instant::now();
        match start_instance(&self.spec, &self.shared) {
            Ok(instance) => {
                self.standby = Some(instance);
                self.recorder.record(now, Action::StandbyReady { micros: started.elapsed().as_micros() as u32 });
            }
            Err(fault) => self.on_fault(now, fault, None, 0, false),
        }
    }

    /// The instance to call now, promoting the standby or starting a new
    /// instance when the restart policy allows.
    fn serving(&mut self, now: Instant) -> Option<&mut Instance> {
        while self.active.is_none() && self.backoff.may_start(now) {
            let started = Instant::now();
            let (instance, standby) = match self.standby.take() {
                Some(instance) => (instance, true),
                None => match start_instance(&self.spec, &self.shared) {
                    Ok(instance) => (instance, false),
                    Err(fault) => {
                        self.on_fault(now, fault, None, 0, false);
                        continue;
                    }
                },
            };
            self.active = Some(instance);
            self.backoff.on_started(now);
            Metrics::add(&self.shared.metrics.restarts, 1);
            self.recorder.record(now, Action::Restart { standby, micros: started.elapsed().as_micros() as u32 });
        }
        self.active.as_mut()
    }

    /// Applies the failure policy to items no instance can take.
    fn down(&mut self, now: Instant, items: Items, out: &mut Items) {
        let n = items.len() as u64;
        if n == 0 {
            return;
        }
        match self.spec.failure {
            FailurePolicy::FailOpen => {
                Metrics::add(&self.shared.metrics.bypassed, n);
                out.append(items);
            }
            FailurePolicy::FailClosed | FailurePolicy::Stop => Metrics::add(&self.shared.metrics.dropped, n),
        }
        self.recorder.record(now, Action::Down { items: n as u32, policy: self.spec.failure });
    }

    /// Records a fault, decides what follows and files the crash report.
    fn on_fault(&mut self, now: Instant, fault: Fault, poison: Option<&Items>, batch_size: usize, serving_lost: bool) {
        self.faults += 1;
        Metrics::add(&self.shared.metrics.faults, 1);
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
                self.standby = None;
                ("give-up", None)
            }
        };
        self.reporter.report(CrashReport {
            stage: self.spec.id.clone(),
            plugin: self.spec.plugin.source.clone(),
            digest: self.spec.plugin.digest.clone(),
            trap_kind: fault.kind,
            message: fault.message,
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

fn start_instance(spec: &StageSpec, shared: &Arc<StageShared>) -> Result<Instance, Fault> {
    Instance::start(
        &spec.plugin,
        shared.clone(),
        &spec.config_json,
        spec.limits.memory,
        CallLimits { deadline: spec.limits.deadline, init_deadline: spec.limits.init_deadline },
    )
}
