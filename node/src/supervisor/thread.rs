//! Stage threads: the threads that call plugins.
//!
//! The node has three kinds of threads and never mixes them: async I/O
//! threads (tokio: sockets, timers, HTTP) never call a plugin and never
//! block; each stage's builder thread (see `builder.rs`) makes instances;
//! and a [`StageThread`] owns a stage (its [`super::Supervisor`], or a type
//! wrapping one) and runs the jobs sent to it, one at a time, outside any
//! async runtime. A plugin's WASI calls may then block the stage's own
//! thread for as long as its deadline allows, and nothing else. (One
//! exception, for speed: the SFU's media shards, threads of their own and
//! not async, call the forwarding stage themselves, taking turns; its
//! stage thread only maintains it. See `sfu::router`.)
//!
//! Jobs queue in a bounded channel: a caller that finds it full gets
//! [`CallError::Busy`] at once rather than waiting. Every job carries the
//! real time by which its answer is still of use; a job dequeued after that
//! is not run but answered [`CallError::Expired`], so a stage that fell
//! behind catches up instead of working through stale input. Between jobs,
//! and every `idle` when there are none, the thread runs the owner's
//! maintenance (picking up builds, asking for a standby).
//!
//! After a job the thread looks for the next one for a moment ([`SPIN`])
//! before it sleeps: jobs that come back to back (a pipeline's ticks under
//! `asap`, a burst of packets) then skip the cost of waking a sleeping
//! thread, which on a virtual machine is tens of microseconds.
//!
//! Each thread marks its [`Pulse`] busy while it works, so the systemd
//! watchdog can tell a stuck thread from an idle one.
//!
//! Async callers await the answer without a timer of their own: the answer
//! comes by the job's expiry plus the one call in progress, which its
//! deadline bounds. (A tokio timer would also be at the mercy of a paused
//! test clock, which leaps ahead whenever the runtime waits on a thread.)

use super::pulse::Pulse;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// How long a stage thread looks for its next job before it sleeps.
pub const SPIN: Duration = Duration::from_micros(30);

/// Waits for a message on `rx` for up to `spin` without sleeping (for
/// answers that usually come within microseconds), then returns `None`.
pub fn spin_recv<T>(rx: &mpsc::Receiver<T>, spin: Duration) -> Option<T> {
    let until = Instant::now() + spin;
    loop {
        match rx.try_recv() {
            Ok(message) => return Some(message),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if Instant::now() >= until => return None,
            Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
}

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The stage's queue is full: it is behind.
    #[error("the stage is behind: its queue is full")]
    Busy,
    /// The job waited past its expiry and was skipped.
    #[error("the stage did not get to it in time")]
    Expired,
    /// The stage thread has ended.
    #[error("the stage has stopped")]
    Gone,
}

/// What a stage thread runs on its value: `None` if the job expired
/// before it ran. Any closure is one (boxed: [`StageThread::tell`]); a
/// caller with a hot path (a pipeline's chain, once per tick) sends a plain
/// value instead, and so allocates nothing per job.
pub trait Job<T>: Send + 'static {
    fn run(self, value: Option<&mut T>);
}

impl<T, F: FnOnce(Option<&mut T>) + Send + 'static> Job<T> for F {
    fn run(self, value: Option<&mut T>) {
        self(value);
    }
}

/// A job as a boxed closure: the default.
pub type Boxed<T> = Box<dyn FnOnce(Option<&mut T>) + Send>;

struct Queued<J> {
    expires: Instant,
    job: J,
}

/// A thread that owns a `T` and runs jobs (of type `J`) on it. Cheap to
/// clone; the thread ends (after its current job) when every handle is
/// gone.
pub struct StageThread<T, J = Boxed<T>> {
    jobs: SyncSender<Queued<J>>,
    owns: std::marker::PhantomData<fn(T)>,
}

impl<T, J> Clone for StageThread<T, J> {
    fn clone(&self) -> Self {
        StageThread { jobs: self.jobs.clone(), owns: std::marker::PhantomData }
    }
}

impl<T: Send + 'static, J: Job<T>> StageThread<T, J> {
    /// Starts the thread `stage-NAME` owning `value`, with room for `queue`
    /// jobs; `maintain` runs after each job and every `idle` without one.
    pub fn spawn_for(
        name: &str,
        mut value: T,
        queue: usize,
        idle: Duration,
        mut maintain: impl FnMut(&mut T) + Send + 'static,
    ) -> std::io::Result<StageThread<T, J>> {
        let (jobs, rx) = mpsc::sync_channel::<Queued<J>>(queue.max(1));
        let name = format!("stage-{name}");
        let pulse = Pulse::register(&name);
        std::thread::Builder::new().name(name).spawn(move || {
            loop {
                let next = match spin_recv(&rx, SPIN) {
                    Some(queued) => Ok(queued),
                    None => rx.recv_timeout(idle),
                };
                pulse.busy();
                match next {
                    Ok(queued) => {
                        match Instant::now() <= queued.expires {
                            true => queued.job.run(Some(&mut value)),
                            false => queued.job.run(None),
                        }
                        maintain(&mut value);
                    }
                    Err(RecvTimeoutError::Timeout) => maintain(&mut value),
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                pulse.idle();
            }
        })?;
        Ok(StageThread { jobs, owns: std::marker::PhantomData })
    }

    /// Queues `job`, which gets the value, or `None` if it expired first.
    /// Never waits.
    pub fn send(&self, expires: Instant, job: J) -> Result<(), CallError> {
        self.jobs.try_send(Queued { expires, job }).map_err(|e| match e {
            TrySendError::Full(_) => CallError::Busy,
            TrySendError::Disconnected(_) => CallError::Gone,
        })
    }
}

impl<T: Send + 'static> StageThread<T> {
    /// [`StageThread::spawn_for`] with closures for jobs.
    pub fn spawn(
        name: &str,
        value: T,
        queue: usize,
        idle: Duration,
        maintain: impl FnMut(&mut T) + Send + 'static,
    ) -> std::io::Result<StageThread<T>> {
        Self::spawn_for(name, value, queue, idle, maintain)
    }

    /// Queues `job`, which gets the value, or `None` if it expired first.
    /// Never waits.
    pub fn tell(&self, expires: Instant, job: impl FnOnce(Option<&mut T>) + Send + 'static) -> Result<(), CallError> {
        self.send(expires, Box::new(job))
    }

    /// Runs `f` on the thread and awaits its answer; `within` is how long
    /// from now the answer is wanted (see the module docs).
    pub async fn call<R: Send + 'static>(&self, within: Duration, f: impl FnOnce(&mut T) -> R + Send + 'static) -> Result<R, CallError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tell(Instant::now() + within, move |value| {
            let _ = tx.send(value.map(f).ok_or(CallError::Expired));
        })?;
        rx.await.unwrap_or(Err(CallError::Gone))
    }

    /// [`StageThread::call`] for callers that are not async (and may block).
    pub fn call_blocking<R: Send + 'static>(&self, within: Duration, f: impl FnOnce(&mut T) -> R + Send + 'static) -> Result<R, CallError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tell(Instant::now() + within, move |value| {
            let _ = tx.send(value.map(f).ok_or(CallError::Expired));
        })?;
        rx.recv().unwrap_or(Err(CallError::Gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_order_and_expired_ones_are_skipped() {
        let stage = StageThread::spawn("test", Vec::new(), 8, Duration::from_secs(1), |_| {}).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        // Holds the thread until the test says so.
        stage
            .tell(Instant::now() + Duration::from_secs(60), move |v| {
                let _ = gate_rx.recv();
                v.unwrap().push(1);
            })
            .unwrap();
        // Expires while the first job runs: it must not run.
        stage
            .tell(Instant::now(), |v| {
                if let Some(v) = v {
                    v.push(99);
                }
            })
            .unwrap();
        gate_tx.send(()).unwrap();
        let seen = stage.call_blocking(Duration::from_secs(60), |v: &mut Vec<i32>| {
            v.push(2);
            v.clone()
        });
        assert_eq!(seen, Ok(vec![1, 2]));
    }

    #[test]
    fn a_full_queue_is_busy_at_once() {
        let stage = StageThread::spawn("test", (), 1, Duration::from_secs(1), |_| {}).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let far = Instant::now() + Duration::from_secs(60);
        stage
            .tell(far, move |_| {
                let _ = started_tx.send(());
                let _ = gate_rx.recv();
            })
            .unwrap();
        started_rx.recv().unwrap();
        stage.tell(far, |_| {}).unwrap();
        assert_eq!(stage.tell(far, |_| {}), Err(CallError::Busy));
        gate_tx.send(()).unwrap();
    }
}
