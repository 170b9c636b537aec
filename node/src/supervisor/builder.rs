//! A stage's builder thread: where its instances are made.
//!
//! Instantiating a plugin and running its `init` takes microseconds for a
//! good plugin and up to the stage's `init-deadline` for a bad one (an
//! `init` that loops is stopped only by its deadline). Neither may happen on
//! a thread that carries data, so each stage has one builder thread that
//! does nothing else. The supervisor asks for an instance
//! ([`Builder::request`]), goes on serving (or, while it has no instance,
//! applies its failure policy), and picks the instance up when it is ready
//! ([`Builder::take`]). A ready instance that waits in the slot is the
//! stage's standby.
//!
//! One build at a time, one result in the slot: the builder never holds
//! more than one spare instance, however often it is asked.

use crate::runtime::{CallLimits, Fault, Instance, StageShared, lock};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::StageSpec;
use super::thread::SPIN;

/// What a build produced, or why it failed.
pub(crate) type Built = Result<Ready, Fault>;

/// A built instance.
pub(crate) struct Ready {
    pub(crate) instance: Instance,
    /// How long building it took.
    pub(crate) took: Duration,
    /// The state store's version its `init` saw: if the store has changed
    /// since, the instance started from state that is no longer the
    /// stage's (see [`Builder::ready_version`]).
    pub(crate) state_version: u64,
}

#[derive(Default)]
struct Slot {
    /// A build was asked for and has not finished.
    pending: bool,
    /// The finished build, until the supervisor takes it.
    result: Option<Built>,
    /// The supervisor has heard of the instance in `result` ([`Builder::news`]).
    told: bool,
    /// Builds asked for so far: the current one's number.
    builds: u64,
}

/// What the builder has to tell, once per build.
pub(crate) enum News {
    /// A spare instance is ready; building it took this long.
    Ready(Duration),
    /// A build failed.
    Failed(Fault),
}

struct Shared {
    slot: Mutex<Slot>,
    done: Condvar,
}

/// The supervisor's handle on its builder thread. Dropping it ends the
/// thread once any build in progress has finished.
pub(crate) struct Builder {
    requests: SyncSender<()>,
    shared: Arc<Shared>,
}

impl Builder {
    /// Starts the builder thread for `spec`'s stage.
    pub(crate) fn spawn(spec: &StageSpec, stage: Arc<StageShared>) -> std::io::Result<Builder> {
        let (requests, rx) = mpsc::sync_channel(1);
        let shared = Arc::new(Shared { slot: Mutex::new(Slot::default()), done: Condvar::new() });
        let spec = spec.clone();
        let thread_shared = shared.clone();
        std::thread::Builder::new().name(format!("build-{}", spec.id)).spawn(move || build_loop(&spec, &stage, &rx, &thread_shared))?;
        Ok(Builder { requests, shared })
    }

    /// Asks for an instance, unless one is being built or waits in the
    /// slot. Returns the number of the build under way, if one is (asked
    /// for now or before), read in the same breath as the asking: the
    /// builder may finish it before the caller looks again.
    pub(crate) fn request(&self) -> Option<u64> {
        let mut slot = lock(&self.shared.slot);
        if !slot.pending && slot.result.is_none() {
            // The channel holds one request and the thread takes the next
            // only after finishing this one, so with `pending` unset it has
            // room.
            slot.pending = self.requests.try_send(()).is_ok();
            slot.builds += u64::from(slot.pending);
        }
        slot.pending.then_some(slot.builds)
    }

    /// The finished build, if there is one.
    pub(crate) fn take(&self) -> Option<Built> {
        lock(&self.shared.slot).result.take()
    }

    /// A build that finished since the last call: a failure is taken out
    /// of the slot; a ready instance stays there (it is the standby).
    pub(crate) fn news(&self) -> Option<News> {
        let mut slot = lock(&self.shared.slot);
        match slot.result.take() {
            Some(Err(fault)) => Some(News::Failed(fault)),
            Some(Ok(ready)) => {
                let took = ready.took;
                slot.result = Some(Ok(ready));
                (!std::mem::replace(&mut slot.told, true)).then_some(News::Ready(took))
            }
            None => None,
        }
    }

    /// The state version a ready instance started from, if one is ready.
    pub(crate) fn ready_version(&self) -> Option<u64> {
        match &lock(&self.shared.slot).result {
            Some(Ok(ready)) => Some(ready.state_version),
            _ => None,
        }
    }

    /// Whether a built instance is ready to serve.
    pub(crate) fn ready(&self) -> bool {
        matches!(lock(&self.shared.slot).result, Some(Ok(_)))
    }

    /// Waits (in real time) until a build is finished or `until`. True if a
    /// result is there.
    pub(crate) fn wait(&self, until: Instant) -> bool {
        // A build takes tens of microseconds: look for a moment before
        // sleeping, which costs as much again to wake from.
        let spin_until = Instant::now() + SPIN.min(until.saturating_duration_since(Instant::now()));
        while Instant::now() < spin_until {
            let slot = lock(&self.shared.slot);
            if slot.result.is_some() {
                return true;
            }
            if !slot.pending {
                return false;
            }
            drop(slot);
            std::hint::spin_loop();
        }
        let mut slot = lock(&self.shared.slot);
        loop {
            if slot.result.is_some() {
                return true;
            }
            let now = Instant::now();
            if !slot.pending || now >= until {
                return false;
            }
            slot = match self.shared.done.wait_timeout(slot, until - now) {
                Ok((slot, _)) => slot,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Drops a spare instance (the stage gave up).
    pub(crate) fn discard(&self) {
        lock(&self.shared.slot).result = None;
    }
}

fn build_loop(spec: &StageSpec, stage: &Arc<StageShared>, requests: &Receiver<()>, shared: &Shared) {
    while requests.recv().is_ok() {
        let started = Instant::now();
        let before = lock(&stage.state).version();
        let built = start_instance(spec, stage).map(|instance| {
            let after = lock(&stage.state).version();
            // Only its own writes came between: it saw the state as of
            // `after`. Anyone else's: as of some time before.
            let state_version = if after - before == instance.state_writes() { after } else { before };
            Ready { instance, took: started.elapsed(), state_version }
        });
        let mut slot = lock(&shared.slot);
        slot.pending = false;
        slot.result = Some(built);
        slot.told = false;
        shared.done.notify_all();
    }
}

/// Instantiates the stage's plugin and runs its `init`.
pub(crate) fn start_instance(spec: &StageSpec, shared: &Arc<StageShared>) -> Result<Instance, Fault> {
    Instance::start(
        &spec.plugin,
        shared.clone(),
        &spec.config_json,
        spec.limits.memory,
        CallLimits { deadline: spec.limits.deadline, init_deadline: spec.limits.init_deadline },
    )
}
