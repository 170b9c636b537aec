//! The forwarding decision: which subscribers get a copy of each packet.
//!
//! Each media shard ([`super::shard`]) asks once per batch of packets, on
//! its own thread: the stock forwarding stage compiled in
//! ([`NativeDecider`]), or a forwarding plugin ([`PluginDecider`]), one
//! supervised stage the shards take turns with. Room membership reaches
//! every shard's decider in the order the control plane saw it.

use crate::runtime::bindings::{ForwardBatch, PacketMeta, ReceiverState, RouteChange, RouteMember};
use crate::supervisor::thread::StageThread;
use crate::supervisor::{Stopped, Supervisor};
use medianode_forward::RoomForwarder;
use medianode_sdk::{self as sdk, Forwarding as _};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest batch handed to the forwarding decision.
pub const MAX_BATCH: usize = 64;

/// The most keyframe requests taken from one batch's decision (a plugin
/// may ask for more; the rest are ignored).
pub const MAX_KEYFRAME_REQUESTS: usize = 16;

/// A forwarding decision maker, one per shard ([`Decide::split`]).
pub trait Decide: Send + 'static {
    /// Room membership, or what a member can receive, changed.
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

    /// The keyframes the stage wants after a batch.
    fn keyframes(&mut self, out: &mut ForwardBatch) {
        let mut wanted = Vec::new();
        self.0.keyframes(&mut wanted);
        out.keyframes.extend(wanted.into_iter().take(MAX_KEYFRAME_REQUESTS).map(sdk::KeyframeRequest::pack));
    }

    fn update_sync(&mut self, change: &RouteChange) {
        self.0.update(sdk_change(change));
    }
}

/// The host's route change as the SDK's.
fn sdk_change(change: &RouteChange) -> sdk::RouteChange {
    match change {
        RouteChange::Joined(m) => sdk::RouteChange::Joined { participant: m.participant, room: m.room.clone() },
        RouteChange::Left(p) => sdk::RouteChange::Left(*p),
        RouteChange::Receiver(r) => sdk::RouteChange::Receiver { participant: r.participant, bitrate: r.bitrate, max_layer: r.max_layer },
    }
}

impl Decide for NativeDecider {
    fn update(&mut self, change: &RouteChange) {
        self.update_sync(change);
    }

    fn decide(&mut self, packets: &[PacketMeta], out: &mut ForwardBatch) {
        packets.iter().for_each(|p| self.decide_one(p, out));
        self.keyframes(out);
    }

    fn split(&self) -> Box<dyn Decide> {
        Box::new(NativeDecider::default())
    }
}

/// How long a batch may wait for an instance being built.
const BUILD_WAIT: Duration = Duration::from_millis(20);

/// How often the stage is maintained when no batch comes (builds picked
/// up, a standby asked for, route changes applied).
const MAINTAIN_EVERY: Duration = Duration::from_millis(50);

/// The forwarding stage plugin, called by each shard on its own thread
/// (a media shard is not async, and a thread hop per batch cost more than
/// the decision: the plugin made the node's forwarding 0.81x native). The
/// shards take turns with it; a thread of the stage's own maintains it
/// between batches. A new instance is told the whole table first; packets
/// it cannot decide on are dropped (the one it trapped on) or, while no
/// instance serves, decided natively (`fail-open`) or dropped
/// (`fail-closed`).
pub struct PluginDecider {
    /// Shared by every shard's front end.
    stage: Arc<Mutex<ForwardingStage>>,
    /// Runs the stage's maintenance when it is idle; ends with the last
    /// front end.
    _maintenance: Option<Arc<StageThread<Arc<Mutex<ForwardingStage>>>>>,
    /// Route changes the stage has not applied yet (it does before its next
    /// batch, or when idle): the latest per participant, so they are bounded
    /// by the participants and never lost.
    pending: Pending,
    /// Set when the stage gave up under `stop`.
    stopped: Arc<tokio::sync::watch::Sender<Option<Stopped>>>,
}

/// Route changes not applied yet: the latest per participant.
type Pending = Arc<Mutex<PendingChanges>>;

#[derive(Default)]
struct PendingChanges {
    /// Participant -> its room, or `None`: it left.
    rooms: BTreeMap<u64, Option<String>>,
    /// Participant -> what it can receive.
    receivers: BTreeMap<u64, ReceiverState>,
}

/// The router's table: who is where and what each can receive, for priming
/// new instances.
#[derive(Default)]
struct Table {
    rooms: BTreeMap<u64, String>,
    receivers: BTreeMap<u64, ReceiverState>,
}

impl Table {
    fn apply(&mut self, change: &RouteChange) {
        match change {
            RouteChange::Joined(m) => {
                self.rooms.insert(m.participant, m.room.clone());
            }
            RouteChange::Left(p) => {
                self.rooms.remove(p);
                self.receivers.remove(p);
            }
            RouteChange::Receiver(r) => {
                self.receivers.insert(r.participant, *r);
            }
        }
    }

    /// Everything, as the changes that make it from nothing.
    fn changes(&self) -> Vec<RouteChange> {
        let joined = self.rooms.iter().map(|(&participant, room)| RouteChange::Joined(RouteMember { participant, room: room.clone() }));
        joined.chain(self.receivers.values().map(|r| RouteChange::Receiver(*r))).collect()
    }
}

/// The forwarding stage and what it keeps.
struct ForwardingStage {
    stage: Supervisor,
    pending: Pending,
    table: Table,
    /// The `fail-open` bypass while no instance serves.
    bypass: NativeDecider,
}

impl PluginDecider {
    pub fn new(stage: Supervisor) -> PluginDecider {
        let id = stage.id().to_string();
        let pending = Pending::default();
        let owned = ForwardingStage { stage, pending: pending.clone(), table: Table::default(), bypass: NativeDecider::default() };
        let stage = Arc::new(Mutex::new(owned));
        let maintenance = StageThread::spawn(&id, stage.clone(), 1, MAINTAIN_EVERY, |stage| crate::runtime::lock(stage).maintain())
            .map_err(
                |e| tracing::error!(stage = %id, "cannot start the forwarding stage's thread; it is maintained only as batches come: {e}"),
            )
            .ok()
            .map(Arc::new);
        PluginDecider { stage, _maintenance: maintenance, pending, stopped: Arc::new(tokio::sync::watch::channel(None).0) }
    }
}

impl ForwardingStage {
    /// Applies the route changes that came since the last batch.
    fn apply_pending(&mut self) {
        let pending = std::mem::take(&mut *crate::runtime::lock(&self.pending));
        let rooms = pending.rooms.into_iter().map(|(participant, room)| match room {
            Some(room) => RouteChange::Joined(RouteMember { participant, room }),
            None => RouteChange::Left(participant),
        });
        let changes: Vec<RouteChange> = rooms.chain(pending.receivers.into_values().map(RouteChange::Receiver)).collect();
        if changes.is_empty() {
            return;
        }
        for change in &changes {
            self.table.apply(change);
            self.bypass.update_sync(change);
        }
        let table = &self.table;
        let _ = self.stage.run(
            Instant::now(),
            &changes,
            &mut (),
            |instance| instance.update_routes(&table.changes()),
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
            |instance| instance.update_routes(&table.changes()),
            |instance, packets, out| {
                let batch = instance.forward(packets)?;
                out.counts.extend_from_slice(&batch.counts);
                out.subscribers.extend_from_slice(&batch.subscribers);
                out.keyframes.extend(batch.keyframes.iter().take(MAX_KEYFRAME_REQUESTS));
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
        let mut pending = crate::runtime::lock(&self.pending);
        match change {
            RouteChange::Joined(m) => {
                pending.rooms.insert(m.participant, Some(m.room.clone()));
            }
            RouteChange::Left(p) => {
                pending.rooms.insert(*p, None);
                pending.receivers.remove(p);
            }
            RouteChange::Receiver(r) => {
                pending.receivers.insert(r.participant, *r);
            }
        }
    }

    fn decide(&mut self, packets: &[PacketMeta], out: &mut ForwardBatch) {
        let (counts, subscribers) = (out.counts.len(), out.subscribers.len());
        if self.stopped.borrow().is_none() {
            match crate::runtime::lock(&self.stage).decide(packets, out) {
                Ok(()) => return,
                Err(stopped) => {
                    tracing::error!("{stopped}; the SFU stops forwarding");
                    self.stopped.send_replace(Some(stopped));
                }
            }
        }
        // Stopped: nothing is forwarded any more.
        out.counts.truncate(counts);
        out.subscribers.truncate(subscribers);
        out.counts.extend(packets.iter().map(|_| 0));
    }

    fn stopped(&self) -> Option<tokio::sync::watch::Receiver<Option<Stopped>>> {
        Some(self.stopped.subscribe())
    }

    fn split(&self) -> Box<dyn Decide> {
        Box::new(PluginDecider {
            stage: self.stage.clone(),
            _maintenance: self._maintenance.clone(),
            pending: self.pending.clone(),
            stopped: self.stopped.clone(),
        })
    }
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
    /// Datagrams dropped because a shard's send queue was full, or another
    /// shard had too much waiting to take more.
    pub send_dropped: u64,
    /// Bytes waiting in the shards' send queues now.
    pub queued_bytes: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Times a subscriber's copy of a stream moved to another simulcast layer.
    pub layer_switches: u64,
    /// Datagrams on the media port no connection claimed.
    pub unclaimed: u64,
    /// Datagrams a shard's socket received for another shard's connection.
    pub handed_over: u64,
    /// Streams a publisher announced past the most one may publish.
    pub streams_refused: u64,
}
