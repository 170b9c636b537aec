//! The SFU: one WebRTC peer connection per participant (webrtc-rs, UDP on
//! the configured address), publish and subscribe of Opus audio and VP8
//! video, and the forwarding loop ([`router`]).
//!
//! Negotiation: the client offers first (its own tracks, send-only); the
//! node answers. Whenever the node adds tracks to a participant's
//! connection (someone else published) or must restart ICE, it sends its
//! own `offer` and the client answers. One node offer is in flight at a
//! time; changes meanwhile are folded into the next one.
//!
//! ICE, per participant: `disconnected` waits (it often heals by itself);
//! `failed` restarts ICE (a node offer with new credentials); `closed`
//! tears the participant's media down for good.
//!
//! Media messages (`offer`, `answer`, `candidate`) come from the signaling
//! server; seats (who is in which room) from the signaling stage.

pub mod outbox;
pub mod router;

use crate::peer::{self, AUDIO_LEVEL_URI, IceTimeouts, PeerOptions, keyframes};
use crate::runtime::bindings::MediaKind;
use crate::signaling::connections::{Connections, Outgoing, error_reply};
use crate::signaling::hub::SeatSink;
use crate::signaling::server::MediaSink;
use medianode_core::sfu::negotiation::Negotiation;
use medianode_core::sfu::speaker::SpeakerDetector;
use router::{Decide, RouterMsg, RouterStats};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCIceConnectionState, RTCPeerConnectionIceEvent};

/// Settings of the SFU (`[server]` in a pipeline file).
#[derive(Debug, Clone, PartialEq)]
pub struct SfuOptions {
    /// The address media (UDP) binds to and announces.
    pub rtc_ip: IpAddr,
    /// ICE: silence before `disconnected`, and before `failed`; how often
    /// to send keepalives.
    pub ice_disconnected: Duration,
    pub ice_failed: Duration,
    pub ice_keepalive: Duration,
}

impl SfuOptions {
    /// The defaults on `rtc_ip`: 5 s to disconnected, 25 s to failed, 2 s
    /// keepalives (webrtc-rs's and browsers' usual values).
    pub fn new(rtc_ip: IpAddr) -> SfuOptions {
        SfuOptions {
            rtc_ip,
            ice_disconnected: Duration::from_secs(5),
            ice_failed: Duration::from_secs(25),
            ice_keepalive: Duration::from_secs(2),
        }
    }
}

/// A published stream.
#[derive(Clone)]
struct Published {
    ssrc: u32,
    kind: MediaKind,
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    remote: Arc<dyn TrackRemote>,
    /// Copies of this stream written to subscribers, all legs together.
    forwarded: Arc<AtomicU64>,
    /// The SFU's count of keyframe requests sent to publishers.
    keyframes_asked: Arc<AtomicU64>,
}

struct Participant {
    room: String,
    user: String,
    pc: Option<Arc<dyn PeerConnection>>,
    published: Vec<Published>,
    /// (publisher, ssrc) pairs this participant already receives.
    receiving: Vec<(u64, u32)>,
    /// Whether a node offer is in flight, and whether another is due.
    negotiation: Negotiation,
    /// Its peer connection's ICE state, as last reported.
    ice: RTCIceConnectionState,
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

/// Seats, leaves and media messages, handled one at a time in arrival
/// order (a seat before its offer, an offer before its candidates).
/// Everything that touches a participant's negotiation goes through one
/// task, in order: a node offer is applied before the answer to it is
/// read (the offer is sent first, see `on_offer`), whatever raised it (a
/// client message, a new track, an ICE failure).
enum Control {
    Seat {
        connection: u64,
        room: String,
        user: String,
    },
    Leave(u64),
    Media(u64, Value),
    Track(u64, Arc<dyn TrackRemote>),
    /// A participant's ICE state changed (in the order the connection saw).
    IceState(u64, RTCIceConnectionState),
}

struct Inner {
    options: SfuOptions,
    control: mpsc::UnboundedSender<Control>,
    connections: Connections,
    participants: tokio::sync::Mutex<HashMap<u64, Participant>>,
    router: mpsc::Sender<RouterMsg>,
    stats: Arc<Mutex<RouterStats>>,
    speakers: Mutex<HashMap<String, SpeakerDetector>>,
    /// Set when the forwarding stage gives up under `stop`.
    stopped: tokio::sync::watch::Receiver<Option<crate::supervisor::Stopped>>,
    /// What the subscribers' outboxes wrote and dropped.
    outboxes: Arc<outbox::OutboxCounters>,
    /// Keyframe requests sent to publishers (for a new viewer, a
    /// subscriber's PLI or FIR, or a gap after drops).
    keyframes_asked: Arc<AtomicU64>,
}

/// The SFU. Cheap to clone; every clone is the same SFU.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

/// Packets queued for the router before publishers' reads wait.
const ROUTER_QUEUE: usize = 4096;

impl Sfu {
    /// Starts the router with `decide` making the forwarding decisions.
    pub fn start(options: SfuOptions, connections: Connections, decide: Box<dyn Decide>) -> Sfu {
        let (router, rx) = mpsc::channel(ROUTER_QUEUE);
        let stats = Arc::new(Mutex::new(RouterStats::default()));
        let (stop_tx, stopped) = tokio::sync::watch::channel(None);
        let (keyframes_tx, mut keyframes) = mpsc::channel::<u32>(64);
        let outboxes = Arc::new(outbox::OutboxCounters::default());
        tokio::spawn(router::run(rx, decide, stats.clone(), stop_tx, keyframes_tx, outboxes.clone()));
        let (control, mut control_rx) = mpsc::unbounded_channel();
        let sfu = Sfu {
            inner: Arc::new(Inner {
                options,
                control,
                connections,
                participants: tokio::sync::Mutex::new(HashMap::new()),
                router,
                stats,
                speakers: Mutex::new(HashMap::new()),
                stopped,
                outboxes,
                keyframes_asked: Arc::default(),
            }),
        };
        // Keyframes the router asks for after a subscriber's gap.
        let weak = Arc::downgrade(&sfu.inner);
        tokio::spawn(async move {
            while let Some(ssrc) = keyframes.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let stream = {
                    let participants = inner.participants.lock().await;
                    participants.values().flat_map(|p| &p.published).find(|s| s.ssrc == ssrc).cloned()
                };
                if let Some(stream) = stream {
                    request_keyframe(&stream).await;
                }
            }
        });
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
                    Control::Track(connection, track) => sfu.on_track(connection, track).await,
                    Control::IceState(connection, state) => sfu.on_ice_state(connection, state).await,
                }
            }
        });
        sfu
    }

    /// Resolves when the forwarding stage gave up under the `stop` policy.
    pub async fn stopped(&self) -> crate::supervisor::Stopped {
        crate::supervisor::wait_stopped(self.inner.stopped.clone()).await
    }

    /// The router's counters.
    pub fn stats(&self) -> RouterStats {
        let mut stats = self.inner.stats.lock().unwrap_or_else(PoisonError::into_inner).with(&self.inner.outboxes);
        stats.keyframe_requests = self.inner.keyframes_asked.load(Ordering::Relaxed);
        stats
    }

    /// Closes every participant's peer connection (a drain).
    pub async fn close_all(&self) {
        let pcs: Vec<_> = self.inner.participants.lock().await.values().filter_map(|p| p.pc.clone()).collect();
        for pc in pcs {
            let _ = pc.close().await;
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
            rooms.entry(&p.room).or_default().push(ParticipantView { user: p.user.clone(), ice: p.ice.to_string(), tracks });
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
            pc: None,
            published: Vec::new(),
            receiving: Vec::new(),
            negotiation: Negotiation::default(),
            ice: RTCIceConnectionState::New,
        };
        self.inner.participants.lock().await.insert(connection, participant);
        let _ = self.inner.router.send(RouterMsg::Joined { participant: connection, room }).await;
    }

    /// Tears a participant's media down: its connection, its tracks at the
    /// others (who then get a new offer without them).
    async fn leave(&self, connection: u64) {
        let (gone, room) = {
            let mut participants = self.inner.participants.lock().await;
            let Some(gone) = participants.remove(&connection) else { return };
            let room = gone.room.clone();
            (gone, room)
        };
        let _ = self.inner.router.send(RouterMsg::Left(connection)).await;
        let _ = self.inner.router.send(RouterMsg::Forget(connection)).await;
        if let Some(pc) = gone.pc {
            let _ = pc.close().await;
        }
        // The others stop receiving the leaver's streams.
        let others: Vec<u64> = {
            let mut participants = self.inner.participants.lock().await;
            participants
                .iter_mut()
                .filter(|(_, p)| p.room == room)
                .map(|(&id, p)| {
                    p.receiving.retain(|(publisher, _)| *publisher != connection);
                    id
                })
                .collect()
        };
        {
            let mut speakers = self.inner.speakers.lock().unwrap_or_else(PoisonError::into_inner);
            match speakers.get_mut(&room) {
                // The last one out: the room's detector goes too.
                Some(_) if others.is_empty() => drop(speakers.remove(&room)),
                Some(detector) => detector.forget(connection),
                None => {}
            }
        }
        for other in others {
            self.remove_tracks_of(other, connection).await;
        }
    }

    async fn remove_tracks_of(&self, subscriber: u64, publisher: u64) {
        let pc = self.inner.participants.lock().await.get(&subscriber).and_then(|p| p.pc.clone());
        let Some(pc) = pc else { return };
        let prefix = format!("p{publisher}-");
        let mut removed = false;
        for sender in pc.get_senders().await {
            if sender.track().track_id().await.starts_with(&prefix) {
                removed |= pc.remove_track(&sender).await.is_ok();
            }
        }
        if removed {
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
            _ => Err(format!("unknown media message `{kind}`")),
        };
        if let Err(message) = result {
            self.error(connection, "bad-media", &message, &kind);
        }
    }

    async fn on_offer(&self, connection: u64, sdp: String) -> Result<(), String> {
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| format!("bad offer: {e}"))?;
        let Some(pc) = self.peer_connection(connection).await? else { return Ok(()) };
        pc.set_remote_description(offer).await.map_err(|e| format!("cannot apply the offer: {e}"))?;
        let answer = pc.create_answer(None).await.map_err(|e| format!("cannot answer: {e}"))?;
        // Sent before it is applied: applying it starts ICE gathering, and a
        // candidate that overtook its answer would be lost to the client.
        self.send(connection, json!({"type": "answer", "sdp": answer.sdp}));
        pc.set_local_description(answer).await.map_err(|e| format!("cannot answer: {e}"))?;
        // What the others already publish comes in a node offer.
        self.subscribe_to_room(connection).await;
        Ok(())
    }

    async fn on_answer(&self, connection: u64, sdp: String) -> Result<(), String> {
        let answer = RTCSessionDescription::answer(sdp).map_err(|e| format!("bad answer: {e}"))?;
        let pc = self.inner.participants.lock().await.get(&connection).and_then(|p| p.pc.clone());
        let pc = pc.ok_or("no offer to answer")?;
        if let Err(e) = pc.set_remote_description(answer).await {
            // Nothing is in flight any more: a later change offers afresh
            // rather than waiting for an answer that will not come.
            if let Some(p) = self.inner.participants.lock().await.get_mut(&connection) {
                p.negotiation.failed();
            }
            return Err(format!("cannot apply the answer: {e}"));
        }
        let again = self.inner.participants.lock().await.get_mut(&connection).is_some_and(|p| p.negotiation.answered());
        if again {
            self.renegotiate(connection).await;
        }
        Ok(())
    }

    async fn on_candidate(&self, connection: u64, candidate: RTCIceCandidateInit) -> Result<(), String> {
        let pc = self.inner.participants.lock().await.get(&connection).and_then(|p| p.pc.clone());
        let pc = pc.ok_or("send an offer first")?;
        pc.add_ice_candidate(candidate).await.map_err(|e| format!("bad candidate: {e}"))
    }

    /// The participant's peer connection, made on first use.
    async fn peer_connection(&self, connection: u64) -> Result<Option<Arc<dyn PeerConnection>>, String> {
        if let Some(pc) = self.inner.participants.lock().await.get(&connection).and_then(|p| p.pc.clone()) {
            return Ok(Some(pc));
        }
        let options = &self.inner.options;
        let setup = PeerOptions {
            ip: options.rtc_ip,
            ice: Some(IceTimeouts { disconnected: options.ice_disconnected, failed: options.ice_failed, keepalive: options.ice_keepalive }),
            keyframe_requests: true,
        };
        let pc = peer::open(&setup, Arc::new(Handler { sfu: self.clone(), connection })).await?;
        let mut participants = self.inner.participants.lock().await;
        match participants.get_mut(&connection) {
            Some(p) => {
                p.pc = Some(pc.clone());
                Ok(Some(pc))
            }
            // Left while the connection was being built.
            None => {
                drop(participants);
                let _ = pc.close().await;
                Ok(None)
            }
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
        let pc = {
            let mut participants = self.inner.participants.lock().await;
            let Some(p) = participants.get_mut(&subscriber) else { return false };
            if p.receiving.contains(&(publisher, stream.ssrc)) {
                return false;
            }
            let Some(pc) = p.pc.clone() else { return false };
            p.receiving.push((publisher, stream.ssrc));
            pc
        };
        let out_ssrc = rand::random::<u32>();
        let kind = match stream.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            user.to_string(),
            format!("p{publisher}-{}", stream.ssrc),
            format!("{user} {kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(out_ssrc), ..Default::default() },
                codec: stream.codec.clone(),
                ..Default::default()
            }],
        )));
        // A transceiver of its own (a new m-line), send-only: `add_track`
        // would reuse the subscriber's own send-only transceiver of that
        // kind, on which a browser receives nothing.
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
        let added = pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init)).await;
        let sender = match added {
            Ok(transceiver) => match transceiver.sender().await {
                Ok(Some(sender)) => sender,
                _ => return false,
            },
            Err(e) => {
                tracing::warn!(subscriber, publisher, "cannot add a track: {e}");
                return false;
            }
        };
        let mime = stream.codec.mime_type.clone();
        let _ = self
            .inner
            .router
            .send(RouterMsg::Subscribe {
                subscriber,
                ssrc: stream.ssrc,
                track: track.clone(),
                sender,
                mime,
                out_ssrc,
                forwarded: stream.forwarded.clone(),
            })
            .await;
        if stream.kind == MediaKind::Video {
            // A new viewer needs a keyframe, and so does one that lost one.
            request_keyframe(stream).await;
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut last = Instant::now();
                while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = track.poll().await {
                    if packets.iter().any(|p| keyframes::is_keyframe_request(p.as_ref())) && last.elapsed() >= keyframes::MIN_INTERVAL {
                        last = Instant::now();
                        request_keyframe(&stream).await;
                    }
                }
            });
        }
        true
    }

    /// Sends a node offer (or folds the change into the next one).
    async fn renegotiate(&self, connection: u64) {
        let pc = {
            let mut participants = self.inner.participants.lock().await;
            let Some(p) = participants.get_mut(&connection) else { return };
            let Some(pc) = p.pc.clone() else { return };
            if !p.negotiation.changed() {
                return;
            }
            pc
        };
        let offer = match pc.create_offer(None).await {
            Ok(offer) => offer,
            Err(e) => {
                if let Some(p) = self.inner.participants.lock().await.get_mut(&connection) {
                    p.negotiation.failed();
                }
                return tracing::warn!(connection, "cannot make an offer: {e}");
            }
        };
        // Sent before it is applied, like an answer (see `on_offer`).
        self.send(connection, json!({"type": "offer", "sdp": offer.sdp}));
        if let Err(e) = pc.set_local_description(offer).await {
            tracing::warn!(connection, "cannot apply the offer: {e}");
        }
    }

    /// A publisher's track arrived: read it into the router, and give it to
    /// everyone else in the room.
    async fn on_track(&self, publisher: u64, remote: Arc<dyn TrackRemote>) {
        let Some(&ssrc) = remote.ssrcs().await.first() else { return };
        let Some(codec) = remote.codec(ssrc).await else { return };
        let kind = match remote.kind().await {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        };
        let keyframes_asked = self.inner.keyframes_asked.clone();
        let stream = Published { ssrc, kind, codec, remote: remote.clone(), forwarded: Arc::default(), keyframes_asked };
        let is_audio = kind == MediaKind::Audio;
        let (user, room, subscribers, pc) = {
            let mut participants = self.inner.participants.lock().await;
            let Some(p) = participants.get_mut(&publisher) else { return };
            p.published.push(stream.clone());
            let pc = p.pc.clone();
            let (user, room) = (p.user.clone(), p.room.clone());
            let subscribers: Vec<u64> =
                participants.iter().filter(|(id, p)| **id != publisher && p.room == room && p.pc.is_some()).map(|(id, _)| *id).collect();
            (user, room, subscribers, pc)
        };
        tracing::info!(publisher, %user, ssrc, ?kind, "publishing");
        let level_id = match pc {
            Some(pc) if is_audio => pc.remote_description().await.and_then(|d| extension_id(&d.sdp, AUDIO_LEVEL_URI)),
            _ => None,
        };
        let router = self.inner.router.clone();
        let sfu = self.clone();
        tokio::spawn(async move {
            while let Some(event) = remote.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let audio_level = level_id.and_then(|id| sfu.audio_level(&room, publisher, id, &packet));
                    if router.send(RouterMsg::Packet { publisher, kind, audio_level, packet }).await.is_err() {
                        return;
                    }
                }
            }
        });
        for subscriber in subscribers {
            if self.add_stream(subscriber, publisher, &user, &stream).await {
                self.renegotiate(subscriber).await;
            }
        }
    }

    /// A node offer with new ICE credentials.
    async fn restart_ice(&self, connection: u64) {
        let pc = self.inner.participants.lock().await.get(&connection).and_then(|p| p.pc.clone());
        if let Some(pc) = pc
            && pc.restart_ice().await.is_ok()
        {
            self.renegotiate(connection).await;
        }
    }

    /// The packet's RFC 6464 level (extension `id`), fed to the room's
    /// speaker detector.
    fn audio_level(&self, room: &str, publisher: u64, id: u8, packet: &rtc::rtp::Packet) -> Option<u8> {
        // One byte: V (voice activity) and the level in its low 7 bits.
        let level = packet.header.get_extension(id).and_then(|b| b.first().copied()).map(|b| b & 0x7f)?;
        let changed = {
            let mut speakers = self.inner.speakers.lock().unwrap_or_else(PoisonError::into_inner);
            // Looked up by `&str`: no allocation per packet once the room has one.
            if !speakers.contains_key(room) {
                speakers.insert(room.to_string(), SpeakerDetector::new(60, Duration::from_millis(300)));
            }
            speakers.get_mut(room).and_then(|detector| detector.level(Instant::now(), publisher, level))
        };
        if let Some(speaker) = changed {
            let sfu = self.clone();
            let room = room.to_string();
            tokio::spawn(async move { sfu.announce_speaker(&room, speaker).await });
        }
        Some(level)
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

/// Asks a publisher for a keyframe of `stream` (PLI).
async fn request_keyframe(stream: &Published) {
    stream.keyframes_asked.fetch_add(1, Ordering::Relaxed);
    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: stream.ssrc };
    let _ = stream.remote.write_rtcp(vec![Box::new(pli)]).await;
}

struct Handler {
    sfu: Sfu,
    connection: u64,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(candidate) = event.candidate.to_json() {
            self.sfu.send(self.connection, json!({"type": "candidate", "candidate": candidate}));
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        // On the control task, in order: a task per change could store
        // `checking` after `connected` (seen in a test under load), and
        // tearing down must not run on the driver's task, which it awaits.
        let _ = self.sfu.inner.control.send(Control::IceState(self.connection, state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.sfu.inner.control.send(Control::Track(self.connection, track));
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn extension_ids_are_read_from_the_sdp() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:1/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n";
        assert_eq!(super::extension_id(sdp, super::AUDIO_LEVEL_URI), Some(1));
        assert_eq!(super::extension_id(sdp, "urn:x"), None);
    }
}
