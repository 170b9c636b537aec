//! The forwarding loop: packets from every publisher in, batched; one
//! forwarding decision per packet (the forwarding stage plugin, or a native
//! [`Decide`] in benchmarks); then, per subscriber, SSRC and sequence
//! rewritten and the packet written to that subscriber's track.
//!
//! The router owns its tables (routes and outgoing tracks) and learns of
//! changes through [`RouterMsg`]s on the same channel as the packets, so a
//! change and the packets after it are seen in order.

use super::rewrite::SequenceRewriter;
use crate::runtime::bindings::{ForwardBatch, MediaKind, PacketMeta, RouteChange, RouteMember};
use crate::supervisor::Supervisor;
use rtc::rtp;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::rtp_transceiver::RtpSender;

/// Largest batch handed to the forwarding decision.
pub const MAX_BATCH: usize = 64;

/// What the router is told.
pub enum RouterMsg {
    /// A packet from a publisher.
    Packet { publisher: u64, kind: MediaKind, audio_level: Option<u8>, packet: rtp::Packet },
    Joined { participant: u64, room: String },
    Left(u64),
    /// `subscriber` now has a track carrying `publisher`'s stream `ssrc`
    /// (codec `mime`), sent by `sender`.
    Subscribe { subscriber: u64, ssrc: u32, track: Arc<TrackLocalStaticRTP>, sender: Arc<dyn RtpSender>, mime: String, out_ssrc: u32 },
    /// Everything `participant` sent or received is gone.
    Forget(u64),
}

/// A forwarding decision maker.
pub trait Decide: Send + 'static {
    /// Room membership changed; `all` is the whole table after the change.
    fn update(&mut self, change: &RouteChange, all: &BTreeMap<u64, String>);
    /// Fills `out` with one count per packet (see `forward-batch` in the WIT).
    fn decide(&mut self, packets: &[PacketMeta], all: &BTreeMap<u64, String>, out: &mut ForwardBatch);
}

/// The forwarding stage plugin, supervised. A new instance is told the
/// whole table first; packets it cannot decide on are dropped (the one it
/// trapped on) or, while no instance serves, fanned out to the room
/// (`fail-open`) or dropped (`fail-closed`).
pub struct PluginDecider(pub Supervisor);

impl Decide for PluginDecider {
    fn update(&mut self, change: &RouteChange, all: &BTreeMap<u64, String>) {
        let now = Instant::now();
        let _ = self.0.run(
            now,
            std::slice::from_ref(change),
            &mut (),
            |instance| instance.update_routes(&full_table(all)),
            |instance, changes, _| instance.update_routes(changes),
            |_, _, _| {},
        );
        self.0.maintain(now);
    }

    fn decide(&mut self, packets: &[PacketMeta], all: &BTreeMap<u64, String>, out: &mut ForwardBatch) {
        let now = Instant::now();
        let ran = self.0.run(
            now,
            packets,
            out,
            |instance| instance.update_routes(&full_table(all)),
            |instance, packets, out| {
                let batch = instance.forward(packets)?;
                out.counts.extend_from_slice(&batch.counts);
                out.subscribers.extend_from_slice(&batch.subscribers);
                Ok(())
            },
            |packet, bypass, out| match bypass {
                true => room_fan_out(packet, all, out),
                false => out.counts.push(0),
            },
        );
        if let Err(stopped) = ran {
            tracing::error!("{stopped}");
        }
    }
}

fn full_table(all: &BTreeMap<u64, String>) -> Vec<RouteChange> {
    all.iter().map(|(&participant, room)| RouteChange::Joined(RouteMember { participant, room: room.clone() })).collect()
}

/// The native decision, without a plugin: every other member of the
/// publisher's room (also the baseline of the forwarding benchmark).
pub struct RoomFanOut;

impl Decide for RoomFanOut {
    fn update(&mut self, _: &RouteChange, _: &BTreeMap<u64, String>) {}

    fn decide(&mut self, packets: &[PacketMeta], all: &BTreeMap<u64, String>, out: &mut ForwardBatch) {
        packets.iter().for_each(|p| room_fan_out(p, all, out));
    }
}

/// The default decision: every other member of the publisher's room.
pub fn room_fan_out(packet: &PacketMeta, all: &BTreeMap<u64, String>, out: &mut ForwardBatch) {
    let before = out.subscribers.len();
    if let Some(room) = all.get(&packet.publisher) {
        out.subscribers.extend(all.iter().filter(|(p, r)| **p != packet.publisher && *r == room).map(|(p, _)| *p));
    }
    out.counts.push((out.subscribers.len() - before) as u32);
}

/// One forwarded stream at one subscriber.
struct Outgoing {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    mime: String,
    /// The codec's payload type on the subscriber's leg, once known.
    payload_type: Option<u8>,
    ssrc: u32,
    sequence: SequenceRewriter,
}

impl Outgoing {
    /// The subscriber leg's payload type for the codec: negotiated per leg,
    /// so not necessarily the publisher's.
    async fn payload_type(&mut self) -> Option<u8> {
        if self.payload_type.is_none()
            && let Ok(parameters) = self.sender.get_parameters().await
        {
            self.payload_type = parameters
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&self.mime))
                .map(|c| c.payload_type);
        }
        self.payload_type
    }
}

/// Counters the router keeps (read by tests and benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct RouterStats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub batches: u64,
    /// Writes to a subscriber's track that failed (track not bound yet, or gone).
    pub write_errors: u64,
}

/// Runs the router until every sender is gone.
pub async fn run(mut rx: mpsc::Receiver<RouterMsg>, mut decide: Box<dyn Decide>, stats: Arc<std::sync::Mutex<RouterStats>>) {
    let mut routes: BTreeMap<u64, String> = BTreeMap::new();
    // (publisher stream ssrc) -> subscriber -> outgoing track.
    let mut outgoing: HashMap<u32, HashMap<u64, Outgoing>> = HashMap::new();
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
                    decide.update(&RouteChange::Joined(RouteMember { participant, room }), &routes);
                }
                RouterMsg::Left(participant) => {
                    routes.remove(&participant);
                    decide.update(&RouteChange::Left(participant), &routes);
                }
                RouterMsg::Subscribe { subscriber, ssrc, track, sender, mime, out_ssrc } => {
                    let out = Outgoing { track, sender, mime, payload_type: None, ssrc: out_ssrc, sequence: SequenceRewriter::default() };
                    outgoing.entry(ssrc).or_default().insert(subscriber, out);
                }
                RouterMsg::Forget(participant) => {
                    outgoing.values_mut().for_each(|subs| {
                        subs.remove(&participant);
                    });
                    outgoing.retain(|_, subs| !subs.is_empty());
                }
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
        decide.decide(&metas, &routes, &mut decision);
        local.batches += 1;
        local.packets_in += metas.len() as u64;
        let mut cursor = 0;
        for ((meta, packet), &count) in metas.iter().zip(packets.drain(..)).zip(&decision.counts) {
            let chosen = decision.subscribers.get(cursor..cursor + count as usize).unwrap_or(&[]);
            cursor += count as usize;
            let Some(subscribers) = outgoing.get_mut(&meta.ssrc) else { continue };
            for (subscriber, out) in subscribers.iter_mut() {
                if !chosen.contains(subscriber) {
                    out.sequence.withhold();
                    continue;
                }
                let Some(payload_type) = out.payload_type().await else {
                    local.write_errors += 1;
                    continue;
                };
                let mut copy = packet.clone();
                copy.header.ssrc = out.ssrc;
                copy.header.sequence_number = out.sequence.forward(meta.sequence);
                copy.header.payload_type = payload_type;
                // Header extension ids are negotiated per leg too; none is
                // carried over (the publisher's would be refused).
                copy.header.extension = false;
                copy.header.extensions.clear();
                match out.track.write_rtp(copy).await {
                    Ok(()) => local.packets_out += 1,
                    Err(_) => local.write_errors += 1,
                }
            }
        }
        metas.clear();
        if let Ok(mut shared) = stats.lock() {
            *shared = local;
        }
    }
}
