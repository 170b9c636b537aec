//! The forwarding loop: packets from every publisher in, batched; one
//! forwarding decision per packet (the forwarding stage plugin, or a native
//! [`Decide`] in benchmarks); then, per subscriber, SSRC and sequence
//! rewritten and the packet written to that subscriber's track.
//!
//! The router owns its tables (routes and outgoing tracks) and learns of
//! changes through [`RouterMsg`]s on the same channel as the packets, so a
//! change and the packets after it are seen in order.

use super::outbox::{Outbox, OutboxCounters, Pushed};
use crate::runtime::bindings::{ForwardBatch, MediaKind, PacketMeta, RouteChange, RouteMember};
use crate::supervisor::thread::StageThread;
use crate::supervisor::{Stopped, Supervisor};
use medianode_core::sfu::fanout::Fanout;
use medianode_core::supervision::FailurePolicy;
use medianode_forward::RoomForwarder;
use medianode_sdk::{self as sdk, Forwarding as _};
use rtc::rtp;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal as _;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::rtp_transceiver::RtpSender;

/// Largest batch handed to the forwarding decision.
pub const MAX_BATCH: usize = 64;

/// What the router is told.
pub enum RouterMsg {
    /// A packet from a publisher.
    Packet {
        publisher: u64,
        kind: MediaKind,
        audio_level: Option<u8>,
        packet: rtp::Packet,
    },
    Joined {
        participant: u64,
        room: String,
    },
    Left(u64),
    /// `subscriber` now has a track carrying `publisher`'s stream `ssrc`
    /// (codec `mime`), sent by `sender`.
    Subscribe {
        subscriber: u64,
        ssrc: u32,
        track: Arc<TrackLocalStaticRTP>,
        sender: Arc<dyn RtpSender>,
        mime: String,
        out_ssrc: u32,
        /// Counts the copies written, for the publisher's stream as a whole.
        forwarded: Arc<AtomicU64>,
    },
    /// Everything `participant` sent or received is gone.
    Forget(u64),
}

/// A forwarding decision maker. Async because a plugin decides on its
/// stage thread while the router's task awaits the answer.
#[async_trait::async_trait]
pub trait Decide: Send + 'static {
    /// Room membership changed; `all` is the whole table after the change.
    async fn update(&mut self, change: &RouteChange, all: &BTreeMap<u64, String>);
    /// Fills `out` with one count per packet (see `forward-batch` in the
    /// WIT). Fails when the deciding stage gave up under `stop`.
    async fn decide(&mut self, packets: &[PacketMeta], all: &BTreeMap<u64, String>, out: &mut ForwardBatch) -> Result<(), Stopped>;
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

#[async_trait::async_trait]
impl Decide for NativeDecider {
    async fn update(&mut self, change: &RouteChange, _: &BTreeMap<u64, String>) {
        self.update_sync(change);
    }

    async fn decide(&mut self, packets: &[PacketMeta], _: &BTreeMap<u64, String>, out: &mut ForwardBatch) -> Result<(), Stopped> {
        packets.iter().for_each(|p| self.decide_one(p, out));
        Ok(())
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
    thread: Option<StageThread<ForwardingStage>>,
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
            .ok();
        PluginDecider { thread, pending, failure, within, bypass: NativeDecider::default(), spare: None }
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

#[async_trait::async_trait]
impl Decide for PluginDecider {
    async fn update(&mut self, change: &RouteChange, _: &BTreeMap<u64, String>) {
        self.bypass.update_sync(change);
        let mut pending = crate::runtime::lock(&self.pending);
        match change {
            RouteChange::Joined(m) => pending.insert(m.participant, Some(m.room.clone())),
            RouteChange::Left(p) => pending.insert(*p, None),
        };
    }

    async fn decide(&mut self, packets: &[PacketMeta], _: &BTreeMap<u64, String>, out: &mut ForwardBatch) -> Result<(), Stopped> {
        if let Some(thread) = &self.thread {
            let (mut batch, mut decision) =
                self.spare.take().unwrap_or_else(|| (Vec::new(), ForwardBatch { counts: Vec::new(), subscribers: Vec::new() }));
            batch.clear();
            batch.extend_from_slice(packets);
            decision.counts.clear();
            decision.subscribers.clear();
            let decided = thread
                .call(self.within, move |stage| {
                    let result = stage.decide(&batch, &mut decision);
                    (result, batch, decision)
                })
                .await;
            match decided {
                Ok((Ok(()), batch, decision)) => {
                    out.counts.extend_from_slice(&decision.counts);
                    out.subscribers.extend_from_slice(&decision.subscribers);
                    self.spare = Some((batch, decision));
                    return Ok(());
                }
                Ok((Err(stopped), ..)) => return Err(stopped),
                Err(_) => {} // behind or gone: the failure policy decides
            }
        }
        match self.failure {
            FailurePolicy::FailOpen => packets.iter().for_each(|p| self.bypass.decide_one(p, out)),
            _ => out.counts.extend(packets.iter().map(|_| 0)),
        }
        Ok(())
    }
}

fn full_table(all: &BTreeMap<u64, String>) -> Vec<RouteChange> {
    all.iter().map(|(&participant, room)| RouteChange::Joined(RouteMember { participant, room: room.clone() })).collect()
}

/// The I/O end of one forwarded stream at one subscriber: the outbox its
/// writer task drains (see [`super::outbox`]). Its SSRC and numbering are
/// the core's ([`Fanout`]).
struct Outgoing {
    outbox: Outbox,
    video: bool,
}

impl Outgoing {
    /// Starts the writer task of a new outgoing stream.
    fn start(
        track: Arc<TrackLocalStaticRTP>,
        sender: Arc<dyn RtpSender>,
        mime: String,
        counters: &Arc<OutboxCounters>,
        forwarded: Arc<AtomicU64>,
    ) -> Outgoing {
        let video = mime.to_ascii_lowercase().starts_with("video/");
        let (outbox, reader) = Outbox::new(counters.clone());
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut payload_type = None;
            while let Some(mut packet) = reader.next().await {
                if payload_type.is_none() {
                    payload_type = leg_payload_type(sender.as_ref(), &mime).await;
                }
                let Some(pt) = payload_type else {
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                packet.header.payload_type = pt;
                match track.write_rtp(packet).await {
                    Ok(()) => {
                        counters.written.fetch_add(1, Ordering::Relaxed);
                        forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Outgoing { outbox, video }
    }
}

/// The subscriber leg's payload type for the codec: negotiated per leg, so
/// not necessarily the publisher's.
async fn leg_payload_type(sender: &dyn RtpSender, mime: &str) -> Option<u8> {
    let parameters = sender.get_parameters().await.ok()?;
    parameters.rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime)).map(|c| c.payload_type)
}

/// Counters the router keeps (read by tests and benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct RouterStats {
    pub packets_in: u64,
    pub batches: u64,
    /// Written to subscribers' tracks (by the outboxes' writer tasks).
    pub packets_out: u64,
    /// Writes to a subscriber's track that failed (track not bound yet, or gone).
    pub write_errors: u64,
    /// Packets dropped because a subscriber did not take them fast enough.
    pub dropped_slow: u64,
    /// Bytes waiting in subscribers' outboxes now.
    pub queued_bytes: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
}

impl RouterStats {
    /// The router's counts with the outboxes' as they are now.
    pub fn with(mut self, outboxes: &OutboxCounters) -> RouterStats {
        self.packets_out = outboxes.written.load(Ordering::Relaxed);
        self.write_errors = outboxes.write_errors.load(Ordering::Relaxed);
        self.dropped_slow = outboxes.dropped.load(Ordering::Relaxed);
        self.queued_bytes = outboxes.queued_bytes.load(Ordering::Relaxed);
        self
    }
}

/// Runs the router until every sender is gone, or until the deciding stage
/// gives up under `stop` (then `stopped` says why).
pub async fn run(
    mut rx: mpsc::Receiver<RouterMsg>,
    mut decide: Box<dyn Decide>,
    stats: Arc<std::sync::Mutex<RouterStats>>,
    stopped: tokio::sync::watch::Sender<Option<Stopped>>,
    keyframes: mpsc::Sender<u32>,
    counters: Arc<OutboxCounters>,
) {
    let mut routes: BTreeMap<u64, String> = BTreeMap::new();
    let mut fanout: Fanout<Outgoing> = Fanout::default();
    let mut metas = Vec::with_capacity(MAX_BATCH);
    let mut packets = Vec::with_capacity(MAX_BATCH);
    let mut decision = ForwardBatch { counts: Vec::new(), subscribers: Vec::new() };
    let mut local = RouterStats::default();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Take what is queued, up to a batch; control messages apply in order.
        while let Some(message) = next.take() {
            match message {
                RouterMsg::Packet { publisher, kind, audio_level, packet } => {
                    let h = &packet.header;
                    metas.push(PacketMeta {
                        publisher,
                        kind,
                        ssrc: h.ssrc,
                        sequence: h.sequence_number,
                        timestamp: h.timestamp,
                        payload_type: h.payload_type,
                        marker: h.marker,
                        size: packet.payload.len() as u32,
                        audio_level,
                    });
                    packets.push(packet);
                }
                RouterMsg::Joined { participant, room } => {
                    routes.insert(participant, room.clone());
                    decide.update(&RouteChange::Joined(RouteMember { participant, room }), &routes).await;
                }
                RouterMsg::Left(participant) => {
                    routes.remove(&participant);
                    decide.update(&RouteChange::Left(participant), &routes).await;
                }
                RouterMsg::Subscribe { subscriber, ssrc, track, sender, mime, out_ssrc, forwarded } => {
                    fanout.subscribe(ssrc, subscriber, out_ssrc, Outgoing::start(track, sender, mime, &counters, forwarded));
                }
                RouterMsg::Forget(participant) => fanout.forget(participant),
            }
            if metas.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if metas.is_empty() {
            continue;
        }
        decision.counts.clear();
        decision.subscribers.clear();
        if let Err(reason) = decide.decide(&metas, &routes, &mut decision).await {
            tracing::error!("{reason}; the SFU stops forwarding");
            stopped.send_replace(Some(reason));
            return;
        }
        local.batches += 1;
        local.packets_in += metas.len() as u64;
        let mut cursor = 0;
        for ((meta, mut packet), &count) in metas.iter().zip(packets.drain(..)).zip(&decision.counts) {
            let chosen = decision.subscribers.get(cursor..cursor + count as usize).unwrap_or(&[]);
            cursor += count as usize;
            // Header extension ids are negotiated per leg; none is carried
            // over (the publisher's would be refused). Stripped once here,
            // so the copies below clone no extension list.
            packet.header.extension = false;
            packet.header.extensions.clear();
            fanout.route(meta.ssrc, meta.sequence, chosen, |leg, to| {
                let mut copy = packet.clone();
                copy.header.ssrc = to.ssrc;
                copy.header.sequence_number = to.sequence;
                // A gap in a video stream wants a keyframe after it (at
                // most one request a second; a full queue skips it).
                if leg.io.outbox.push(copy) == Pushed::DroppedAskKeyframe && leg.io.video {
                    let _ = keyframes.try_send(meta.ssrc);
                }
            });
        }
        metas.clear();
        if let Ok(mut shared) = stats.lock() {
            *shared = local;
        }
    }
}
