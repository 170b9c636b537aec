//! Plugin stages in a running pipeline: chains of them, one stage thread
//! per chain.
//!
//! A chain is a run of plugin stages where each one reads only the one
//! before it and is its only reader (`gate -> filter -> gain`). Its stages
//! depend on each other anyway, so they share a stage thread: the driver
//! hands the chain its input once and gets the last stage's output back,
//! one round trip per tick instead of one per stage. Stages on different
//! chains run side by side; a slow or broken stage delays only its chain
//! and what reads it.

use super::{Done, Node, NodeKind};
use crate::runtime::bindings::{BlockInfo, FrameBatch};
use crate::runtime::{AudioBatch, Items, Metrics, StageShared};
use crate::supervisor::thread::{CallError, Job, StageThread};
use crate::supervisor::{Stopped, Supervisor};
use medianode_core::supervision::FailurePolicy;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

/// How often an idle stage thread picks up its builds.
const MAINTAIN_EVERY: Duration = Duration::from_millis(50);

/// One stage of a chain, as its thread owns it.
pub(super) struct StageWorker {
    supervisor: Supervisor,
    /// The buffers the next audio output will use (the previous input's,
    /// recycled: the stage allocates nothing per block).
    spare: AudioBatch,
    /// The latest tick's time, for maintenance between ticks.
    now: Instant,
}

impl StageWorker {
    fn process(&mut self, now: Instant, wait_until: Instant, items: Items) -> Result<Items, Stopped> {
        self.now = now;
        self.supervisor.wait_for_builds_until(Some(wait_until));
        match items {
            Items::Audio(batch) => {
                let mut out = std::mem::replace(&mut self.spare, batch);
                self.supervisor.process_audio(now, &self.spare, &mut out)?;
                Ok(Items::Audio(out))
            }
            other => self.supervisor.process(now, other),
        }
    }
}

/// What a chain answers for a tick.
pub(super) enum Answer {
    Output(Items),
    /// A stage made nothing for the next (all its frames were dropped).
    Nothing,
    /// The job expired before it ran: the chain was behind.
    Expired,
}

/// A chain of plugin stages: its workers until the pipeline is built, then
/// the stage thread that owns them.
pub(super) struct Chain {
    /// The stage ids, in order.
    pub(super) ids: Vec<String>,
    shared: Vec<Arc<StageShared>>,
    /// Every stage is `fail-open`: a late chain passes its input on.
    fail_open: bool,
    /// How long (real time) a build may keep an asap tick waiting.
    pub(super) build_wait: Duration,
    run: Run,
    /// What its output would be replaced by if it were late this tick.
    stand_in: StandIn,
}

enum Run {
    Building(Vec<StageWorker>),
    Started(StageThread<Vec<StageWorker>, Tick>),
}

/// A chain's job for one tick: its input, and where its answer goes. A
/// plain value rather than a closure, so that a tick allocates nothing.
pub(super) struct Tick {
    pub(super) items: Items,
    pub(super) now: Instant,
    pub(super) wait_until: Instant,
    pub(super) done: SyncSender<Done>,
    pub(super) node: usize,
    pub(super) tick: u64,
}

impl Job<Vec<StageWorker>> for Tick {
    fn run(self, workers: Option<&mut Vec<StageWorker>>) {
        let result = match workers {
            Some(workers) => run(workers, self.now, self.wait_until, self.items),
            None => Ok(Answer::Expired),
        };
        let _ = self.done.send(Done { node: self.node, tick: self.tick, result });
    }
}

impl Chain {
    /// A chain of one stage.
    pub(super) fn new(id: &str, supervisor: Supervisor, failure: FailurePolicy, build_wait: Duration, now: Instant) -> Chain {
        Chain {
            ids: vec![id.to_string()],
            shared: vec![supervisor.shared().clone()],
            fail_open: failure == FailurePolicy::FailOpen,
            build_wait,
            run: Run::Building(vec![StageWorker { supervisor, spare: AudioBatch::new(), now }]),
            stand_in: StandIn::default(),
        }
    }

    /// Appends `next`'s stages (before the chain starts).
    fn absorb(&mut self, next: Chain) {
        self.ids.extend(next.ids);
        self.shared.extend(next.shared);
        self.fail_open &= next.fail_open;
        self.build_wait = self.build_wait.max(next.build_wait);
        if let (Run::Building(mine), Run::Building(theirs)) = (&mut self.run, next.run) {
            mine.extend(theirs);
        }
    }

    /// Starts the chain's stage thread.
    pub(super) fn start(&mut self) -> std::io::Result<()> {
        if let Run::Building(workers) = std::mem::replace(&mut self.run, Run::Building(Vec::new())) {
            // Two jobs' worth of queue: one running, one waiting.
            let maintain = |workers: &mut Vec<StageWorker>| workers.iter_mut().for_each(|w| w.supervisor.maintain(w.now));
            self.run = Run::Started(StageThread::spawn_for(&self.ids.join("+"), workers, 2, MAINTAIN_EVERY, maintain)?);
        }
        Ok(())
    }

    /// Sends the chain its input for tick `tick`; what it made comes back
    /// on `done` as node `node`'s. Keeps what a stand-in needs first.
    /// Never waits, and allocates nothing.
    pub(super) fn send(&mut self, tick: Tick) -> Result<(), CallError> {
        self.stand_in.keep(self.fail_open, &tick.items);
        let Run::Started(thread) = &self.run else { return Err(CallError::Gone) };
        thread.send(tick.wait_until, tick)
    }

    /// The chain's stand-in for this tick's output, counted as late by
    /// each of its stages (each stage's output was replaced).
    pub(super) fn late(&mut self) -> Items {
        for shared in &self.shared {
            Metrics::add(&shared.metrics.late, self.stand_in.items as u64);
        }
        self.stand_in.take()
    }
}

fn run(workers: &mut [StageWorker], now: Instant, wait_until: Instant, mut items: Items) -> Result<Answer, Stopped> {
    for worker in workers {
        if items.is_empty() {
            return Ok(Answer::Nothing);
        }
        items = worker.process(now, wait_until, items)?;
    }
    Ok(Answer::Output(items))
}

/// Merges every plugin stage that reads only the stage before it, and is
/// its only reader, into that stage's chain; remaps the links. `readers`
/// must be counted; the caller counts them again afterwards.
pub(super) fn fuse(nodes: Vec<Node>) -> Vec<Node> {
    let readers: Vec<usize> = nodes.iter().map(|n| n.readers).collect();
    // Where each old node's output now comes from.
    let mut moved: Vec<usize> = Vec::with_capacity(nodes.len());
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
    for mut node in nodes {
        let joins = match (&node.kind, node.inputs.as_slice()) {
            (NodeKind::Stage(_), &[j]) => readers[j] == 1 && matches!(out[moved[j]].kind, NodeKind::Stage(_)),
            _ => false,
        };
        node.inputs.iter_mut().for_each(|j| *j = moved[*j]);
        match (joins, node.kind) {
            (true, NodeKind::Stage(chain)) => {
                let head = node.inputs[0];
                if let NodeKind::Stage(into) = &mut out[head].kind {
                    into.absorb(chain);
                }
                moved.push(head);
            }
            (_, kind) => {
                moved.push(out.len());
                out.push(Node { kind, ..node });
            }
        }
    }
    out
}

/// What a chain in flight leaves behind, for the case it is late: under
/// `fail-open` a copy of its input (passed around it); otherwise, for
/// audio, the block headers, from which silence is made only when needed
/// (in a buffer reused from tick to tick); for frames, only their number.
#[derive(Default)]
struct StandIn {
    input: Option<Items>,
    headers: Vec<BlockInfo>,
    frames: bool,
    items: usize,
}

impl StandIn {
    fn keep(&mut self, fail_open: bool, items: &Items) {
        self.input = fail_open.then(|| items.clone());
        self.headers.clear();
        self.items = items.len();
        self.frames = match items {
            Items::Audio(batch) => {
                self.headers.extend_from_slice(&batch.blocks);
                false
            }
            Items::Frames(_) => true,
        };
    }

    fn take(&mut self) -> Items {
        match self.input.take() {
            Some(input) => input,
            None if self.frames => Items::Frames(FrameBatch::new()),
            None => Items::Audio(AudioBatch::silence(&self.headers)),
        }
    }
}
