//! The forwarding decision: which subscribers get a copy of each packet.
//!
//! Each media shard ([`super::shard`]) asks once per batch of packets, on
//! its own thread: the stock forwarding stage compiled in
//! ([`NativeDecider`]), or a forwarding plugin on its stage thread
//! ([`PluginDecider`]), which the shards share. Room membership reaches
//! every shard's decider in the order the control plane saw it.

use crate::runtime::bindings::{ForwardBatch, PacketMeta, RouteChange, RouteMember};
use crate::supervisor::thread::StageThread;
use crate::supervisor::{Stopped, Supervisor};
use medianode_core::supervision::FailurePolicy;
use medianode_forward::RoomForwarder;
use medianode_sdk::{self as sdk, Forwarding as _};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest batch handed to the forwarding decision.
pub const MAX_BATCH: usize = 64;

/// A forwarding decision maker, one per shard ([`Decide::split`]).
pub trait Decide: Send + 'static {
    /// Room membership changed.
    fn update(&mut self, change: &RouteChange);
    /// Fills `out` with one count per packet (see `forward-batch` in the
    /// WIT), blocking at most the stage's deadline (and a little).
    fn decide(&mut self, packets: &[PacketMeta], out: &mut ForwardBatch);
    /// Set when the deciding stage gives up under `stop` (then nothing is
    /// forwarded any more); `None`: it never does.
    fn stopped(&self) -> Option<tokio::sync::watch::Receiver<Option<Stopped>>> {
        None
    }
    /// Another front end for another shard, deciding the same way.
    fn split(&self) -> Box<dyn Decide>;
}

/// The stock forwarding stage (`medianode-forward`) compiled natively: the
/// decision when no forwarding plugin is configured, the bypass of a
/// plugin that is down under `fail-open`, and the benchmarks' baseline.
/// One piece of code decides in all four places.
pub struct NativeDecider(RoomForwarder);

impl Default for NativeDecider {
    fn default() -> Self {
        NativeDecider(RoomForwarder::with_defaults())
    }
}

impl NativeDecider {
    fn decide_one(&mut self, packet: &PacketMeta, out: &mut ForwardBatch) {
        let before = out.subscribers.len();
        self.0.forward(&crate::runtime::sdk_packet(packet), &mut out.subscribers);
        out.counts.push((out.subscribers.len() - before) as u32);
    }
}

impl NativeDecider {
    fn update_sync(&mut self, change: &RouteChange) {
        self.0.update(match change {
            RouteChange::Joined(m) => sdk::RouteChange::Joined { participant: m.participant, room: m.room.clone() },
            RouteChange::Left(p) => sdk::RouteChange::Left(*p),
        });
    }
}

impl Decide for NativeDecider {
    fn update(&mut self, change: &RouteChange) {
        self.update_sync(change);
    }

    fn decide(&mut self, packets: &[PacketMeta], out: &mut ForwardBatch) {
        packets.iter().for_each(|p| self.decide_one(p, out));
    }

    fn split(&self) -> Box<dyn Decide> {
        Box::new(NativeDecider::default())
    }
}

/// How long a batch may wait for an instance being built.
const BUILD_WAIT: Duration = Duration::from_millis(20);

/// Jobs queued for the forwarding stage thread before a batch is `busy`.
const STAGE_QUEUE: usize = 64;

/// The forwarding stage plugin, supervised on its own stage thread. A new
/// instance is told the whole table first; packets it cannot decide on are
/// dropped (the one it trapped on) or, while no instance serves (or the
/// stage is behind), decided natively (`fail-open`) or dropped
/// (`fail-closed`).
pub struct PluginDecider {
    /// Shared by every shard's front end.
    thread: Option<Arc<StageThread<ForwardingStage>>>,
    /// Route changes the stage has not applied yet (it does before its next
    /// batch, or when idle): the latest per participant, so they are bounded
    /// by the participants and never lost to a full queue.
    pending: Pending,
    failure: FailurePolicy,
    /// How long a batch may wait for its decision.
    within: Duration,
    /// Kept up to date for the `fail-open` bypass when the stage is behind.
    bypass: NativeDecider,
    /// The buffers lent to the stage thread with each batch, given back
    /// with its answer (so a batch allocates nothing for them).
    spare: Option<(Vec<PacketMeta>, ForwardBatch)>,
    /// Set when the stage gave up under `stop`.
    stopped: Arc<tokio::sync::watch::Sender<Option<Stopped>>>,
}

/// Participant -> its room, or `None`: it left.
type Pending = Arc<std::sync::Mutex<BTreeMap<u64, Option<String>>>>;

/// What the forwarding stage thread owns.
struct ForwardingStage {
    stage: Supervisor,
    pending: Pending,
    /// The router's table, for priming new instances.
    table: BTreeMap<u64, String>,
    /// The `fail-open` bypass while no instance serves.
    bypass: NativeDecider,
}

impl PluginDecider {
    pub fn new(stage: Supervisor) -> PluginDecider {
        let failure = stage.failure();
        let within = stage.limits().deadline.saturating_mul(2) + Duration::from_millis(10);
        let id = stage.id().to_string();
        let pending = Pending::default();
        let owned = ForwardingStage { stage, pending: pending.clone(), table: BTreeMap::new(), bypass: NativeDecider::default() };
        let thread = StageThread::spawn(&id, owned, STAGE_QUEUE, Duration::from_millis(50), ForwardingStage::maintain)
            .map_err(|e| tracing::error!(stage = %id, "cannot start the forwarding stage thread; its failure policy applies to every packet: {e}"))
            .ok()
            .map(Arc::new);
        PluginDecider {
            thread,
            pending,
            failure,
            within,
            bypass: NativeDecider::default(),
            spare: None,
            stopped: Arc::new(tokio::sync::watch::channel(None).0),
        }
    }
}

impl ForwardingStage {
    /// Applies the route changes that came since the last batch.
    fn apply_pending(&mut self) {
        let changes: Vec<RouteChange> = std::mem::take(&mut *crate::runtime::lock(&self.pending))
            .into_iter()
            .map(|(participant, room)| match room {
                Some(room) => RouteChange::Joined(RouteMember { participant, room }),
                None => RouteChange::Left(participant),
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        for change in &changes {
            match change {
                RouteChange::Joined(m) => self.table.insert(m.participant, m.room.clone()),
                RouteChange::Left(p) => self.table.remove(p),
            };
            self.bypass.update_sync(change);
        }
        let table = &self.table;
        let _ = self.stage.run(
            Instant::now(),
            &changes,
            &mut (),
            |instance| instance.update_routes(&full_table(table)),
            |instance, changes, _| instance.update_routes(changes),
            |_, _, _| {},
        );
    }

    fn maintain(&mut self) {
        self.apply_pending();
        self.stage.maintain(Instant::now());
    }

    fn decide(&mut self, packets: &[PacketMeta], out: &mut ForwardBatch) -> Result<(), Stopped> {
        self.apply_pending();
        // A stage without an instance waits a little for one being built.
        self.stage.wait_for_builds_until(Some(Instant::now() + BUILD_WAIT));
        let (bypass, table) = (&mut self.bypass, &self.table);
        self.stage.run(
            Instant::now(),
            packets,
            out,
            |instance| instance.update_routes(&full_table(table)),
            |instance, packets, out| {
                let batch = instance.forward(packets)?;
                out.counts.extend_from_slice(&batch.counts);
                out.subscribers.extend_from_slice(&batch.subscribers);
                Ok(())
            },
            |packet, fail_open, out| match fail_open {
                true => bypass.decide_one(packet, out),
                false => out.counts.push(0),
            },
        )
    }
}

impl Decide for PluginDecider {
    fn update(&mut self, change: &RouteChange) {
        self.bypass.update_sync(change);
        let mut pending = crate::runtime::lock(&self.pending);
        match change {
            RouteChange::Joined(m) => pending.insert(m.participant, Some(m.room.clone())),
            RouteChange::Left(p) => pending.insert(*p, None),
        };
    }

    fn decide(&mut self, packets: &[PacketMeta], out: &mut ForwardBatch) {
        if self.stopped.borrow().is_some() {
            out.counts.extend(packets.iter().map(|_| 0));
            return;
        }
        if let Some(thread) = &self.thread {
            let (mut batch, mut decision) =
                self.spare.take().unwrap_or_else(|| (Vec::new(), ForwardBatch { counts: Vec::new(), subscribers: Vec::new() }));
            batch.clear();
            batch.extend_from_slice(packets);
            decision.counts.clear();
            decision.subscribers.clear();
            let decided = thread.call_blocking(self.within, move |stage| {
                let result = stage.decide(&batch, &mut decision);
                (result, batch, decision)
            });
            match decided {
                Ok((Ok(()), batch, decision)) => {
                    out.counts.extend_from_slice(&decision.counts);
                    out.subscribers.extend_from_slice(&decision.subscribers);
                    self.spare = Some((batch, decision));
                    return;
                }
                Ok((Err(stopped), ..)) => {
                    tracing::error!("{stopped}; the SFU stops forwarding");
                    self.stopped.send_replace(Some(stopped));
                    out.counts.extend(packets.iter().map(|_| 0));
                    return;
                }
                Err(_) => {} // behind or gone: the failure policy decides
            }
        }
        match self.failure {
            FailurePolicy::FailOpen => packets.iter().for_each(|p| self.bypass.decide_one(p, out)),
            _ => out.counts.extend(packets.iter().map(|_| 0)),
        }
    }

    fn stopped(&self) -> Option<tokio::sync::watch::Receiver<Option<Stopped>>> {
        Some(self.stopped.subscribe())
    }

    fn split(&self) -> Box<dyn Decide> {
        Box::new(PluginDecider {
            thread: self.thread.clone(),
            pending: self.pending.clone(),
            failure: self.failure,
            within: self.within,
            bypass: NativeDecider::default(),
            spare: None,
            stopped: self.stopped.clone(),
        })
    }
}

fn full_table(all: &BTreeMap<u64, String>) -> Vec<RouteChange> {
    all.iter().map(|(&participant, room)| RouteChange::Joined(RouteMember { participant, room: room.clone() })).collect()
}

/// What the media shards counted (read by the metrics, tests and benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct RouterStats {
    pub packets_in: u64,
    pub batches: u64,
    /// Copies written to subscribers' connections.
    pub packets_out: u64,
    /// Copies that could not be written (the leg's sender gone, or its
    /// codec not negotiated).
    pub write_errors: u64,
    /// Datagrams dropped because a shard's send queue was full.
    pub dropped_slow: u64,
    /// Bytes waiting in the shards' send queues now.
    pub queued_bytes: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Datagrams on the media port no connection claimed.
    pub unclaimed: u64,
}
