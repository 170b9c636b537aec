//! The SFU: one WebRTC peer connection per participant, publish and
//! subscribe of Opus audio and VP8 video, forwarded by the media shards
//! ([`shard`]) on one UDP port.
//!
//! This module is the control plane, on tokio: seats, negotiation, rooms.
//! Each participant's connection lives on a shard (webrtc-rs's sans-IO
//! core, driven there); what this module does to a connection it does
//! with [`Shards::run`], on that shard. The forwarding decision ([`router`])
//! runs on the shards, per batch of packets.
//!
//! Negotiation: the client offers first (its own tracks, send-only); the
//! node answers. Whenever the node adds tracks to a participant's
//! connection (someone else published) or must restart ICE, it sends its
//! own `offer` and the client answers. One node offer is in flight at a
//! time; changes meanwhile are folded into the next one. The node has one
//! ICE candidate, the media port, in every description it sends (trickled
//! after an ICE restart's offer, which starts without candidates). It is
//! a full ICE agent: as an ICE-lite agent (webrtc-rs's `with_lite`), a
//! restart from the node's offer never connected again (checking, then
//! failed, every time, in `sfu::ice_failed_restarts_ice_and_media_resumes`).
//!
//! ICE, per participant: `disconnected` waits (it often heals by itself);
//! `failed` restarts ICE (a node offer with new credentials); `closed`
//! tears the participant's media down for good.
//!
//! Media messages (`offer`, `answer`, `candidate`) come from the signaling
//! server; seats (who is in which room) from the signaling stage.

pub mod relay;
pub mod router;
pub mod shard;

use crate::peer::{self, AUDIO_LEVEL_URI};
use crate::runtime::bindings::{MediaKind, RouteChange};
use crate::signaling::connections::{Connections, Outgoing, error_reply};
use crate::signaling::hub::SeatSink;
use crate::signaling::server::MediaSink;
use medianode_core::sfu::negotiation::Negotiation;
use router::{Decide, RouterStats};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCIceConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use shard::{Gone, LegSpec, ShardEvent, Shards};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Settings of the SFU (`[server]` in a pipeline file).
#[derive(Debug, Clone, PartialEq)]
pub struct SfuOptions {
    /// The address media (UDP) binds to and announces.
    pub rtc_ip: IpAddr,
    /// The one UDP port every connection uses; 0: one the system picks.
    pub media_port: u16,
    /// Media shards (threads); 0: one per core.
    pub media_threads: usize,
    /// ICE: silence before `disconnected`, and before `failed`; how often
    /// to send keepalives.
    pub ice_disconnected: Duration,
    pub ice_failed: Duration,
    pub ice_keepalive: Duration,
}

impl SfuOptions {
    /// The defaults on `rtc_ip`: a port the system picks, a shard per
    /// core, 5 s to disconnected, 25 s to failed, 2 s keepalives (webrtc-rs's
    /// and browsers' usual values).
    pub fn new(rtc_ip: IpAddr) -> SfuOptions {
        SfuOptions {
            rtc_ip,
            media_port: 0,
            media_threads: 0,
            ice_disconnected: Duration::from_secs(5),
            ice_failed: Duration::from_secs(25),
            ice_keepalive: Duration::from_secs(2),
        }
    }

    fn shards(&self) -> usize {
        match self.media_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

/// A published stream.
#[derive(Clone)]
struct Published {
    ssrc: u32,
    kind: MediaKind,
    codec: RTCRtpCodec,
    /// The SSRC it goes by on pipes to other nodes (a cluster's).
    relay_ssrc: u32,
    /// Copies of this stream written to subscribers, all legs together.
    forwarded: Arc<AtomicU64>,
}

struct Participant {
    room: String,
    user: String,
    /// Whether it has a peer connection (on a shard).
    connected: bool,
    published: Vec<Published>,
    /// (publisher, ssrc) pairs this participant already receives.
    receiving: Vec<(u64, u32)>,
    /// Whether a node offer is in flight, and whether another is due.
    negotiation: Negotiation,
    /// Its peer connection's ICE state, as last reported.
    ice: RTCIceConnectionState,
    /// A ghost's node: it stands for a publisher there ([`relay`]).
    origin: Option<String>,
}

/// One room as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomView {
    pub room: String,
    pub participants: Vec<ParticipantView>,
}

/// One participant of a room: its ICE state and what it publishes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParticipantView {
    pub user: String,
    pub ice: String,
    pub tracks: Vec<TrackView>,
}

/// One published track and the packets forwarded of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackView {
    pub kind: &'static str,
    pub forwarded: u64,
}

/// Seats, leaves, media messages and what the shards report, handled one
/// at a time in arrival order (a seat before its offer, an offer before
/// its candidates). Everything that touches a participant's negotiation
/// goes through this one task, in order, whatever raised it (a client
/// message, a new track, an ICE failure).
enum Control {
    Seat { connection: u64, room: String, user: String },
    Leave(u64),
    Media(u64, Value),
    Shard(ShardEvent),
    Relay(relay::RelayCommand),
}

struct Inner {
    options: SfuOptions,
    control: mpsc::UnboundedSender<Control>,
    connections: Connections,
    participants: tokio::sync::Mutex<HashMap<u64, Participant>>,
    shards: Arc<Shards>,
    speakers: shard::Speakers,
    /// Set when the forwarding stage gives up under `stop`.
    stopped: Option<tokio::sync::watch::Receiver<Option<crate::supervisor::Stopped>>>,
    /// In a cluster: where room events go, and the pipes and ghosts.
    relay: relay::RelayState,
}

/// The SFU. Cheap to clone; every clone is the same SFU.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

impl Sfu {
    /// Binds the media port and starts the shards, `decide` making the
    /// forwarding decisions.
    pub fn start(options: SfuOptions, connections: Connections, decide: Box<dyn Decide>) -> Result<Sfu, String> {
        let (control, mut control_rx) = mpsc::unbounded_channel();
        let stopped = decide.stopped();
        let speakers = shard::Speakers::default();
        let events: shard::Events = {
            let control = control.clone();
            Arc::new(move |event| drop(control.send(Control::Shard(event))))
        };
        let address = SocketAddr::new(options.rtc_ip, options.media_port);
        let shards = Shards::start(address, options.shards(), decide, events, speakers.clone())
            .map_err(|e| format!("cannot bind the media port {address}: {e}"))?;
        tracing::info!("media on udp {} ({} shards)", shards.local, shards.count());
        let sfu = Sfu {
            inner: Arc::new(Inner {
                options,
                control,
                connections,
                participants: tokio::sync::Mutex::new(HashMap::new()),
                shards,
                speakers,
                stopped,
                relay: relay::RelayState::default(),
            }),
        };
        // The control task holds a weak handle: dropping every `Sfu` ends it.
        let weak = Arc::downgrade(&sfu.inner);
        tokio::spawn(async move {
            while let Some(control) = control_rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let sfu = Sfu { inner };
                match control {
                    Control::Seat { connection, room, user } => sfu.seat(connection, room, user).await,
                    Control::Leave(connection) => sfu.leave(connection).await,
                    Control::Media(connection, message) => sfu.media(connection, message).await,
                    Control::Shard(event) => sfu.shard_event(event).await,
                    Control::Relay(command) => sfu.relay_command(command).await,
                }
            }
        });
        Ok(sfu)
    }

    /// Resolves when the forwarding stage gave up under the `stop` policy.
    pub async fn stopped(&self) -> crate::supervisor::Stopped {
        match self.inner.stopped.clone() {
            Some(stopped) => crate::supervisor::wait_stopped(stopped).await,
            None => std::future::pending().await,
        }
    }

    /// The media shards' counters.
    pub fn stats(&self) -> RouterStats {
        self.inner.shards.counters.router_stats()
    }

    /// The UDP address every connection's media uses.
    pub fn media_address(&self) -> SocketAddr {
        self.inner.shards.local
    }

    /// Closes every participant's peer connection (a drain).
    pub async fn close_all(&self) {
        let connected: Vec<u64> = self.inner.participants.lock().await.iter().filter(|(_, p)| p.connected).map(|(id, _)| *id).collect();
        for connection in connected {
            self.inner.shards.close(connection);
        }
    }

    /// Every room with its participants, sorted by room and user.
    pub async fn rooms(&self) -> Vec<RoomView> {
        let participants = self.inner.participants.lock().await;
        let mut rooms: BTreeMap<&str, Vec<ParticipantView>> = BTreeMap::new();
        for p in participants.values() {
            let tracks = p
                .published
                .iter()
                .map(|s| TrackView {
                    kind: if s.kind == MediaKind::Audio { "audio" } else { "video" },
                    forwarded: s.forwarded.load(Ordering::Relaxed),
                })
                .collect();
            let ice = match &p.origin {
                Some(node) => format!("relayed from {node}"),
                None => p.ice.to_string(),
            };
            rooms.entry(&p.room).or_default().push(ParticipantView { user: p.user.clone(), ice, tracks });
        }
        rooms
            .into_iter()
            .map(|(room, mut participants)| {
                participants.sort_by(|a, b| a.user.cmp(&b.user));
                RoomView { room: room.to_string(), participants }
            })
            .collect()
    }

    fn send(&self, connection: u64, value: Value) {
        self.inner.connections.send(connection, Outgoing::Text(value.to_string()));
    }

    fn error(&self, connection: u64, code: &str, message: &str, reference: &str) {
        self.inner.connections.send(connection, Outgoing::Text(error_reply(code, message, Some(reference))));
    }

    async fn seat(&self, connection: u64, room: String, user: String) {
        let participant = Participant {
            room: room.clone(),
            user,
            connected: false,
            published: Vec::new(),
            receiving: Vec::new(),
            negotiation: Negotiation::default(),
            ice: RTCIceConnectionState::New,
            origin: None,
        };
        let first = {
            let mut participants = self.inner.participants.lock().await;
            let first = !participants.values().any(|p| p.room == room && p.origin.is_none());
            participants.insert(connection, participant);
            first
        };
        self.inner.shards.route_change(shard::joined(connection, room.clone()));
        if first {
            self.inner.relay.tell(relay::RoomEvent::Occupied(room));
        }
    }

    /// Tears a participant's media down: its connection, its tracks at the
    /// others (who then get a new offer without them).
    async fn leave(&self, connection: u64) {
        let (gone, last) = {
            let mut participants = self.inner.participants.lock().await;
            let Some(gone) = participants.remove(&connection) else { return };
            let last = gone.origin.is_none() && !participants.values().any(|p| p.room == gone.room && p.origin.is_none());
            (gone, last)
        };
        if gone.origin.is_none() && !gone.published.is_empty() {
            self.inner.relay.tell(relay::RoomEvent::Streams(gone.room.clone()));
        }
        if last {
            self.inner.relay.tell(relay::RoomEvent::Vacated(gone.room.clone()));
        }
        self.inner.shards.route_change(RouteChange::Left(connection));
        self.inner.shards.close(connection);
        // The others stop receiving the leaver's streams.
        let others: Vec<u64> = {
            let mut participants = self.inner.participants.lock().await;
            participants
                .iter_mut()
                .filter(|(_, p)| p.room == gone.room)
                .map(|(&id, p)| {
                    p.receiving.retain(|(publisher, _)| *publisher != connection);
                    id
                })
                .collect()
        };
        {
            let mut speakers = crate::runtime::lock(&self.inner.speakers);
            match speakers.get_mut(&gone.room) {
                // The last one out: the room's detector goes too.
                Some(_) if others.is_empty() => drop(speakers.remove(&gone.room)),
                Some(detector) => detector.forget(connection),
                None => {}
            }
        }
        let streams: Vec<u32> = gone.published.iter().map(|s| s.ssrc).collect();
        for other in others {
            for &stream in &streams {
                self.inner.shards.unsubscribe(other, stream);
            }
            self.remove_tracks_of(other, connection).await;
        }
    }

    async fn remove_tracks_of(&self, subscriber: u64, publisher: u64) {
        let prefix = format!("p{publisher}-");
        let removed = self
            .inner
            .shards
            .run(subscriber, move |p| {
                let senders: Vec<_> = p.pc.get_senders().collect();
                let mut removed = false;
                for id in senders {
                    let ours = p.pc.rtp_sender(id).is_some_and(|s| s.track().track_id().starts_with(&prefix));
                    removed |= ours && p.pc.remove_track(id).is_ok();
                }
                removed
            })
            .await;
        if removed == Ok(true) {
            self.renegotiate(subscriber).await;
        }
    }

    async fn media(&self, connection: u64, message: Value) {
        let kind = message.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let seated = self.inner.participants.lock().await.contains_key(&connection);
        if !seated {
            return self.error(connection, "not-joined", "join a room before sending media messages", &kind);
        }
        let result = match kind.as_str() {
            "offer" => match message.get("sdp").and_then(Value::as_str) {
                Some(sdp) => self.on_offer(connection, sdp.to_string()).await,
                None => Err("an offer needs `sdp`".to_string()),
            },
            "answer" => match message.get("sdp").and_then(Value::as_str) {
                Some(sdp) => self.on_answer(connection, sdp.to_string()).await,
                None => Err("an answer needs `sdp`".to_string()),
            },
            "candidate" => match message.get("candidate").cloned().map(serde_json::from_value::<RTCIceCandidateInit>) {
                Some(Ok(candidate)) => self.on_candidate(connection, candidate).await,
                Some(Err(e)) => Err(format!("not an ICE candidate: {e}")),
                None => Err("a candidate message needs `candidate`".to_string()),
            },
            "quality" => match message.get("video").and_then(Value::as_str) {
                Some(quality) => match max_layer(quality) {
                    Some(layer) => {
                        self.inner.shards.set_max_layer(connection, layer);
                        Ok(())
                    }
                    None => Err(format!("unknown video quality `{quality}`: use low, medium, high or auto")),
                },
                None => Err("a quality message needs `video` (low, medium, high or auto)".to_string()),
            },
            _ => Err(format!("unknown media message `{kind}`")),
        };
        if let Err(message) = result {
            self.error(connection, "bad-media", &message, &kind);
        }
    }

    async fn on_offer(&self, connection: u64, sdp: String) -> Result<(), String> {
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| format!("bad offer: {e}"))?;
        if !self.ensure_connection(connection).await? {
            return Ok(());
        }
        let answer = self
            .inner
            .shards
            .run(connection, move |p| {
                p.pc.set_remote_description(p.now, offer).map_err(|e| format!("cannot apply the offer: {e}"))?;
                p.learn_audio_level_id(AUDIO_LEVEL_URI);
                let answer = p.pc.create_answer(None).map_err(|e| format!("cannot answer: {e}"))?;
                p.pc.set_local_description(p.now, answer.clone()).map_err(|e| format!("cannot answer: {e}"))?;
                Ok::<_, String>(answer.sdp)
            })
            .await
            .map_err(gone)??;
        self.send(connection, json!({"type": "answer", "sdp": answer}));
        // What the others already publish comes in a node offer.
        self.subscribe_to_room(connection).await;
        Ok(())
    }

    async fn on_answer(&self, connection: u64, sdp: String) -> Result<(), String> {
        let answer = RTCSessionDescription::answer(sdp).map_err(|e| format!("bad answer: {e}"))?;
        let applied = self
            .inner
            .shards
            .run(connection, move |p| p.pc.set_remote_description(p.now, answer).map_err(|e| format!("cannot apply the answer: {e}")))
            .await
            .map_err(|_| "no offer to answer".to_string())?;
        if let Err(e) = applied {
            // Nothing is in flight any more: a later change offers afresh
            // rather than waiting for an answer that will not come.
            if let Some(p) = self.inner.participants.lock().await.get_mut(&connection) {
                p.negotiation.failed();
            }
            return Err(e);
        }
        let again = self.inner.participants.lock().await.get_mut(&connection).is_some_and(|p| p.negotiation.answered());
        if again {
            self.renegotiate(connection).await;
        }
        Ok(())
    }

    async fn on_candidate(&self, connection: u64, candidate: RTCIceCandidateInit) -> Result<(), String> {
        self.inner
            .shards
            .run(connection, move |p| p.pc.add_remote_candidate(candidate).map_err(|e| format!("bad candidate: {e}")))
            .await
            .map_err(|_| "send an offer first".to_string())?
    }

    /// Makes the participant's peer connection on first use (off the
    /// shards: it makes keys) and gives it to a shard. False: it left.
    async fn ensure_connection(&self, connection: u64) -> Result<bool, String> {
        let room = match self.inner.participants.lock().await.get(&connection) {
            None => return Ok(false),
            Some(p) if p.connected => return Ok(true),
            Some(p) => p.room.clone(),
        };
        let options = self.inner.options.clone();
        let local = SocketAddr::new(options.rtc_ip, self.inner.shards.local.port());
        let (pc, layers) = tokio::task::spawn_blocking(move || build_connection(&options, local))
            .await
            .map_err(|e| format!("cannot make a peer connection: {e}"))??;
        let mut participants = self.inner.participants.lock().await;
        match participants.get_mut(&connection) {
            Some(p) => {
                self.inner.shards.adopt(connection, &room, pc, layers).map_err(gone)?;
                p.connected = true;
                Ok(true)
            }
            // Left while the connection was being built.
            None => Ok(false),
        }
    }

    /// Adds every stream the room publishes to `subscriber`'s connection.
    async fn subscribe_to_room(&self, subscriber: u64) {
        let streams: Vec<(u64, String, Published)> = {
            let participants = self.inner.participants.lock().await;
            let Some(me) = participants.get(&subscriber) else { return };
            participants
                .iter()
                .filter(|(id, p)| **id != subscriber && p.room == me.room)
                .flat_map(|(id, p)| p.published.iter().map(move |s| (*id, p.user.clone(), s.clone())))
                .collect()
        };
        let mut added = false;
        for (publisher, user, stream) in streams {
            added |= self.add_stream(subscriber, publisher, &user, &stream).await;
        }
        if added {
            self.renegotiate(subscriber).await;
        }
    }

    /// Gives `subscriber` a track carrying `stream`; false if it already has one.
    async fn add_stream(&self, subscriber: u64, publisher: u64, user: &str, stream: &Published) -> bool {
        {
            let mut participants = self.inner.participants.lock().await;
            let Some(p) = participants.get_mut(&subscriber) else { return false };
            if p.receiving.contains(&(publisher, stream.ssrc)) || !p.connected {
                return false;
            }
            p.receiving.push((publisher, stream.ssrc));
        }
        let out_ssrc = rand::random::<u32>();
        let kind = match stream.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let track = MediaStreamTrack::new(
            user.to_string(),
            format!("p{publisher}-{}", stream.ssrc),
            format!("{user} {kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(out_ssrc), ..Default::default() },
                codec: stream.codec.clone(),
                ..Default::default()
            }],
        );
        // A transceiver of its own (a new m-line), send-only: `add_track`
        // would reuse the subscriber's own send-only transceiver of that
        // kind, on which a browser receives nothing.
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
        let added = self
            .inner
            .shards
            .run(subscriber, move |p| {
                let transceiver = p.pc.add_transceiver_from_track(track, Some(init)).map_err(|e| e.to_string())?;
                p.pc.rtp_transceiver(transceiver).and_then(|t| t.sender()).ok_or_else(|| "no sender".to_string())
            })
            .await;
        let sender = match added {
            Ok(Ok(sender)) => sender,
            Ok(Err(e)) => {
                tracing::warn!(subscriber, publisher, "cannot add a track: {e}");
                return false;
            }
            Err(_) => return false,
        };
        let leg = LegSpec {
            subscriber,
            stream: stream.ssrc,
            ssrc: out_ssrc,
            sender,
            mime: stream.codec.mime_type.clone(),
            forwarded: stream.forwarded.clone(),
        };
        self.inner.shards.subscribe(leg);
        if stream.kind == MediaKind::Video {
            // A new viewer needs a keyframe.
            self.request_keyframe(publisher, stream);
        }
        true
    }

    /// Sends a node offer (or folds the change into the next one).
    async fn renegotiate(&self, connection: u64) {
        {
            let mut participants = self.inner.participants.lock().await;
            let Some(p) = participants.get_mut(&connection) else { return };
            if !p.connected || !p.negotiation.changed() {
                return;
            }
        }
        let offer = self
            .inner
            .shards
            .run(connection, |p| {
                let offer = p.pc.create_offer(None).map_err(|e| format!("cannot make an offer: {e}"))?;
                p.pc.set_local_description(p.now, offer.clone()).map_err(|e| format!("cannot apply the offer: {e}"))?;
                // An ICE restart starts with no local candidate: ours goes
                // again, trickled after the offer.
                let mut trickle = None;
                if !offer.sdp.contains("a=candidate:") {
                    let candidate = host_candidate(p.local)?;
                    p.pc.add_local_candidate(candidate.clone()).map_err(|e| format!("cannot add the media candidate: {e}"))?;
                    trickle = Some(candidate);
                }
                Ok::<_, String>((offer.sdp, trickle))
            })
            .await;
        match offer {
            Ok(Ok((sdp, trickle))) => {
                self.send(connection, json!({"type": "offer", "sdp": sdp}));
                if let Some(candidate) = trickle {
                    self.send(connection, json!({"type": "candidate", "candidate": candidate}));
                }
            }
            Ok(Err(e)) => {
                if let Some(p) = self.inner.participants.lock().await.get_mut(&connection) {
                    p.negotiation.failed();
                }
                tracing::warn!(connection, "{e}");
            }
            Err(_) => {}
        }
    }

    async fn shard_event(&self, event: ShardEvent) {
        match event {
            ShardEvent::Track { connection, ssrc, kind, codec } => self.on_track(connection, ssrc, kind, codec).await,
            ShardEvent::IceState(connection, state) => self.on_ice_state(connection, state).await,
            ShardEvent::Speaker { room, connection } => self.announce_speaker(&room, connection).await,
            ShardEvent::RelayedKeyframe { ghost, ssrc } => self.relayed_keyframe(ghost, ssrc).await,
        }
    }

    /// A publisher's stream began: give it to everyone else in the room.
    async fn on_track(&self, publisher: u64, ssrc: u32, kind: MediaKind, codec: RTCRtpCodec) {
        self.publish(publisher, Published { ssrc, kind, codec, relay_ssrc: rand::random(), forwarded: Arc::default() }).await;
    }

    /// Gives `stream` of `publisher` (a participant here, or a ghost) to
    /// everyone else in the room here, and (a participant's) to the pipes.
    async fn publish(&self, publisher: u64, stream: Published) {
        let ssrc = stream.ssrc;
        let kind = stream.kind;
        let (user, subscribers) = {
            let mut participants = self.inner.participants.lock().await;
            let Some(p) = participants.get_mut(&publisher) else { return };
            if p.published.iter().any(|s| s.ssrc == ssrc) {
                return;
            }
            p.published.push(stream.clone());
            let (user, room) = (p.user.clone(), p.room.clone());
            let subscribers: Vec<u64> =
                participants.iter().filter(|(id, p)| **id != publisher && p.room == room && p.connected).map(|(id, _)| *id).collect();
            (user, subscribers)
        };
        tracing::info!(publisher, %user, ssrc, ?kind, "publishing");
        for subscriber in subscribers {
            if self.add_stream(subscriber, publisher, &user, &stream).await {
                self.renegotiate(subscriber).await;
            }
        }
        self.relay_stream(publisher, &stream).await;
    }

    /// A node offer with new ICE credentials.
    async fn restart_ice(&self, connection: u64) {
        if self.inner.shards.run(connection, |p| p.pc.restart_ice()).await.is_ok() {
            self.renegotiate(connection).await;
        }
    }

    /// Asks a publisher for a keyframe of `stream` (PLI).
    fn request_keyframe(&self, publisher: u64, stream: &Published) {
        self.inner.shards.request_keyframe(publisher, stream.ssrc);
    }

    async fn announce_speaker(&self, room: &str, speaker: u64) {
        let participants = self.inner.participants.lock().await;
        let Some(user) = participants.get(&speaker).map(|p| p.user.clone()) else { return };
        for (&id, p) in participants.iter() {
            if p.room == room {
                self.send(id, json!({"type": "active-speaker", "room": room, "user": user}));
            }
        }
    }

    /// A participant's ICE state, on the control task: told to its client
    /// (`media-state`), kept for the admin API, and acted on.
    async fn on_ice_state(&self, connection: u64, state: RTCIceConnectionState) {
        // Kept first: a client told `media-state` finds the node's views agree.
        if let Some(p) = self.inner.participants.lock().await.get_mut(&connection) {
            p.ice = state;
        }
        self.send(connection, json!({"type": "media-state", "state": state.to_string()}));
        match state {
            // Often heals by itself (a moment of loss, a Wi-Fi hand-over).
            RTCIceConnectionState::Disconnected => tracing::info!(connection, "ICE disconnected; waiting"),
            RTCIceConnectionState::Failed => {
                tracing::info!(connection, "ICE failed; restarting ICE");
                self.restart_ice(connection).await;
            }
            RTCIceConnectionState::Closed => {
                tracing::info!(connection, "ICE closed; tearing down");
                self.leave(connection).await;
            }
            _ => {}
        }
    }
}

fn gone(e: Gone) -> String {
    match e {
        Gone::NoConnection => "no peer connection (send an offer first)".to_string(),
        Gone::Stopped => "the media plane has stopped".to_string(),
    }
}

/// A participant's peer connection: a full ICE agent whose one candidate
/// is the media port (`local`), estimating the bandwidth to its peer.
fn build_connection(options: &SfuOptions, local: SocketAddr) -> Result<(RTCPeerConnection, peer::unacked::Layers), String> {
    let (media, registry) = peer::engine(true)?;
    let registry = peer::with_congestion_control(registry);
    let layers = peer::unacked::Layers::default();
    let registry = registry.with(rtc::interceptor::Slot::from(peer::unacked::SLOT), peer::unacked::LayersUnacked::new(layers.clone()));
    let settings = SettingEngineBuilder::new()
        .with_ice_timeouts(Some(options.ice_disconnected), Some(options.ice_failed), Some(options.ice_keepalive))
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build(Instant::now())
        .map_err(|e| format!("cannot make a peer connection: {e}"))?;
    pc.add_local_candidate(host_candidate(local)?).map_err(|e| format!("bad media address {local}: {e}"))?;
    Ok((pc, layers))
}

/// The node's one ICE candidate: the media port.
fn host_candidate(local: SocketAddr) -> Result<RTCIceCandidateInit, String> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(|e| format!("bad media address {local}: {e}"))?;
    RTCIceCandidate::from(&candidate).to_json().map_err(|e| format!("bad media address {local}: {e}"))
}

impl SeatSink for Sfu {
    fn seated(&self, connection: u64, room: &str, user: &str) {
        let _ = self.inner.control.send(Control::Seat { connection, room: room.to_string(), user: user.to_string() });
    }

    fn unseated(&self, connection: u64) {
        let _ = self.inner.control.send(Control::Leave(connection));
    }
}

impl MediaSink for Sfu {
    fn media_message(&self, connection: u64, message: Value) {
        let _ = self.inner.control.send(Control::Media(connection, message));
    }

    fn closed(&self, connection: u64) {
        let _ = self.inner.control.send(Control::Leave(connection));
    }
}

/// The id an SDP gives a header extension (`a=extmap:ID URI`). Audio and
/// video sections of one description agree on ids (BUNDLE). The SDP is the
/// peer's: anything may come.
pub fn extension_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, rest) = rest.split_once(' ')?;
        let id = id.split('/').next()?.parse().ok()?;
        (rest.split_whitespace().next()? == uri).then_some(id)
    })
}

/// The highest simulcast layer a subscriber's wished quality allows.
fn max_layer(quality: &str) -> Option<u8> {
    match quality {
        "low" => Some(0),
        "medium" => Some(1),
        "high" | "auto" => Some(medianode_sdk::ANY_LAYER),
        _ => None,
    }
}

/// Which simulcast layer `rid` is (0 = the lowest): its place in the
/// `a=simulcast:send` list of the m-section that names it, where browsers
/// list the encodings in the order the page gave them (lowest first, by
/// this node's convention); else its place among the `a=rid:… send` lines.
pub fn simulcast_layer(sdp: &str, rid: &str) -> Option<u8> {
    let position = |mut names: std::vec::IntoIter<&str>| names.position(|name| name == rid).and_then(|p| u8::try_from(p).ok());
    for section in sdp.split("\nm=") {
        // `a=simulcast:send q;h;f` (`,` separates alternatives, `~` marks a paused one).
        let listed = section.lines().find_map(|line| {
            let mut words = line.trim().strip_prefix("a=simulcast:")?.split_whitespace();
            words.by_ref().find(|&w| w == "send")?;
            words.next()
        });
        if let Some(list) = listed {
            let names: Vec<&str> =
                list.split(';').map(|alternatives| alternatives.split(',').next().unwrap_or("").trim_start_matches('~')).collect();
            if let Some(layer) = position(names.into_iter()) {
                return Some(layer);
            }
        }
        let rids: Vec<&str> = section
            .lines()
            .filter_map(|line| {
                let rest = line.trim().strip_prefix("a=rid:")?;
                let mut words = rest.split_whitespace();
                let name = words.next()?;
                (words.next() == Some("send")).then_some(name)
            })
            .collect();
        if let Some(layer) = position(rids.into_iter()) {
            return Some(layer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn simulcast_layers_follow_the_offer_s_order() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:f send\r\na=rid:h send\r\na=rid:q send\r\n\
                   a=simulcast:send q;~h,x;f\r\n";
        assert_eq!(super::simulcast_layer(sdp, "q"), Some(0));
        assert_eq!(super::simulcast_layer(sdp, "h"), Some(1), "a paused layer keeps its place");
        assert_eq!(super::simulcast_layer(sdp, "f"), Some(2));
        assert_eq!(super::simulcast_layer(sdp, "zz"), None);
        // Without a simulcast line: the order of the rid lines.
        let rids_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rid:lo send\r\na=rid:hi send\r\n";
        assert_eq!(super::simulcast_layer(rids_only, "hi"), Some(1));
    }

    #[test]
    fn extension_ids_are_read_from_the_sdp() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:1/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n";
        assert_eq!(super::extension_id(sdp, super::AUDIO_LEVEL_URI), Some(1));
        assert_eq!(super::extension_id(sdp, "urn:x"), None);
    }
}
