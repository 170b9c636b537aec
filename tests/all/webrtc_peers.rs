//! In-process WebRTC participants (webrtc-rs, UDP on 127.0.0.1) that join a
//! node through its own signaling WebSocket: what the SFU tests and the SFU
//! benchmark drive.

use crate::common::stock_stage;
use futures_util::{SinkExt, StreamExt};
use medianode::peer::{self, PeerOptions, feedback};
use medianode::sfu::router::PluginDecider;
use medianode::sfu::{Sfu, SfuOptions};
use medianode::signaling::connections::Connections;
use medianode::signaling::server::{Server, ServerOptions};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCIceConnectionState, RTCPeerConnectionIceEvent};

/// A node: signaling server + SFU with the given forwarding plugin.
pub struct Node {
    pub server: Server,
    pub sfu: Sfu,
    /// The forwarding stage's metrics.
    pub forward: Arc<medianode::runtime::StageShared>,
}

pub async fn node(forward_plugin: &str, forward_config: &str) -> Node {
    node_with(forward_plugin, forward_config, SfuOptions::new("127.0.0.1".parse().expect("ip"))).await
}

pub async fn node_with(forward_plugin: &str, forward_config: &str, options: SfuOptions) -> Node {
    let stage = stock_stage(forward_plugin, forward_config);
    let forward = stage.shared().clone();
    let (server, sfu) = node_deciding(Box::new(PluginDecider::new(stage)), options).await;
    Node { server, sfu, forward }
}

/// A node whose forwarding decisions `decide` makes.
pub async fn node_deciding(decide: Box<dyn medianode::sfu::router::Decide>, options: SfuOptions) -> (Server, Sfu) {
    let connections = Connections::default();
    let sfu = Sfu::start(options, connections.clone(), decide).expect("the SFU starts");
    let server = Server::start(
        "127.0.0.1:0".parse().expect("addr"),
        ServerOptions::default(),
        stock_stage("signaling", "{}"),
        connections,
        Some(Arc::new(sfu.clone())),
        Some(Arc::new(sfu.clone())),
    )
    .await
    .expect("server starts");
    (server, sfu)
}

/// What a test peer saw.
#[derive(Default)]
pub struct Seen {
    /// RTP packets received, all tracks.
    pub packets: AtomicU64,
    /// Distinct (ssrc, sequence) pairs received.
    pub unique: Mutex<HashSet<(u32, u16)>>,
    pub ice: Mutex<Vec<RTCIceConnectionState>>,
    pub messages: Mutex<Vec<Value>>,
    /// Send-to-receive times of timed packets ([`Peer::send_timed`]), ns.
    pub latencies: Mutex<Vec<u64>>,
    /// Keyframe requests (PLI, FIR) received for the published video.
    pub keyframe_requests: AtomicU64,
    /// The tracks received.
    pub remote_tracks: Mutex<Vec<Arc<dyn TrackRemote>>>,
    /// The first payloads received (up to [`KEPT_PAYLOADS`]), as they came.
    pub payloads: Mutex<Vec<Vec<u8>>>,
    /// While set, the peer reads none of its tracks (a stalled subscriber);
    /// `resume` wakes it when cleared.
    pub stalled: std::sync::atomic::AtomicBool,
    pub resume: tokio::sync::Notify,
    /// Packets received by the first payload byte, their tag
    /// ([`Peer::send_tagged`]): a test counts its own burst, whatever else
    /// is still in flight.
    pub tagged: Mutex<HashMap<u8, u64>>,
    /// Woken on everything a peer sees (a packet, an ICE state, a message),
    /// for tests that wait for a state ([`Seen::until`]).
    pub changed: tokio::sync::Notify,
    /// While set, a packet only counts (`packets`, `latencies`): the load
    /// generator's hundreds of peers keep nothing else.
    pub light: std::sync::atomic::AtomicBool,
}

impl Seen {
    /// Waits until `done` holds, re-checking each time the peer sees
    /// something; panics naming `what` after `within`.
    pub async fn until(&self, what: &str, within: Duration, done: impl Fn(&Seen) -> bool) {
        assert!(self.holds_within(within, done).await, "timed out after {within:?} waiting for {what}");
    }

    /// Whether `done` holds within `within`, re-checked each time the peer
    /// sees something.
    pub async fn holds_within(&self, within: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(self);
            }
        }
    }

    /// Packets received with tag `tag`.
    pub fn tagged(&self, tag: u8) -> u64 {
        self.tagged.lock().expect("lock").get(&tag).copied().unwrap_or(0)
    }
}

/// The first payload byte of [`Peer::send_audio`]'s packets.
pub const UNTAGGED: u8 = 0xAB;

/// Payloads a peer keeps for inspection.
pub const KEPT_PAYLOADS: usize = 4000;

/// Timed packets carry nanoseconds since this instant, then this tag.
static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
const TIMED: [u8; 8] = *b"medianod";

fn since_origin() -> u64 {
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

struct PeerHandler {
    seen: Arc<Seen>,
    out: mpsc::UnboundedSender<Value>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(candidate) = event.candidate.to_json() {
            let _ = self.out.send(json!({"type": "candidate", "candidate": candidate}));
        }
    }
    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        self.seen.ice.lock().expect("lock").push(state);
        self.seen.changed.notify_waiters();
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let seen = self.seen.clone();
        seen.remote_tracks.lock().expect("lock").push(track.clone());
        tokio::spawn(async move {
            loop {
                while seen.stalled.load(Ordering::Relaxed) {
                    seen.resume.notified().await;
                }
                let Some(event) = track.poll().await else { break };
                if let TrackRemoteEvent::OnRtpPacket(p) = event {
                    if p.payload.len() >= 16 && p.payload[8..16] == TIMED {
                        let sent = u64::from_le_bytes(p.payload[..8].try_into().unwrap_or_default());
                        seen.latencies.lock().expect("lock").push(since_origin().saturating_sub(sent));
                    }
                    seen.packets.fetch_add(1, Ordering::Relaxed);
                    if seen.light.load(Ordering::Relaxed) {
                        continue;
                    }
                    {
                        let mut payloads = seen.payloads.lock().expect("lock");
                        if payloads.len() < KEPT_PAYLOADS {
                            payloads.push(p.payload.to_vec());
                        }
                    }
                    seen.unique.lock().expect("lock").insert((p.header.ssrc, p.header.sequence_number));
                    if let Some(&tag) = p.payload.first() {
                        *seen.tagged.lock().expect("lock").entry(tag).or_default() += 1;
                    }
                    seen.changed.notify_waiters();
                }
            }
        });
    }
}

/// An in-process WebRTC participant driven over the node's WebSocket.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub seen: Arc<Seen>,
    /// Messages to the node.
    pub out: mpsc::UnboundedSender<Value>,
    /// The audio track it publishes, if any.
    pub track: Option<Arc<TrackLocalStaticRTP>>,
    pub ssrc: u32,
    /// The video track it publishes, if any, and its SSRC.
    pub video: Option<(Arc<TrackLocalStaticRTP>, u32)>,
}

#[allow(dead_code)] // the benchmark joins by address
pub async fn peer(node: &Node, room: &str, user: &str, publish: bool) -> Peer {
    peer_at(node.server.addr, room, user, publish).await
}

/// A peer connection on 127.0.0.1 that publishes one Opus track or
/// receives audio; its ICE candidates go to `out` as `candidate` messages.
async fn endpoint(user: &str, publish: bool, video: bool, out: mpsc::UnboundedSender<Value>) -> Endpoint {
    let seen = Arc::new(Seen::default());
    // The node's own setup: audio levels (RFC 6464) on published audio, as
    // browsers send them, and keyframe requests reach the application
    // (they count in `Seen`).
    let options = PeerOptions { ip: [127, 0, 0, 1].into(), ice: None, keyframe_requests: true };
    let pc = peer::open(&options, Arc::new(PeerHandler { seen: seen.clone(), out })).await.expect("peer connection");
    let ssrc = rand::random::<u32>();
    let track = if publish {
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("{user}-stream"),
            format!("{user}-audio"),
            format!("{user} audio"),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: RTCRtpCodec { mime_type: MIME_TYPE_OPUS.to_owned(), clock_rate: 48000, channels: 2, ..Default::default() },
                ..Default::default()
            }],
        )));
        pc.add_track(track.clone() as Arc<dyn TrackLocal>).await.expect("add track");
        Some(track)
    } else {
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
        pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init)).await.expect("transceiver");
        None
    };
    let video = match video {
        false => None,
        true => {
            let video_ssrc = rand::random::<u32>();
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("{user}-stream"),
                format!("{user}-video"),
                format!("{user} video"),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(video_ssrc), ..Default::default() },
                    codec: RTCRtpCodec { mime_type: MIME_TYPE_VP8.to_owned(), clock_rate: 90000, ..Default::default() },
                    ..Default::default()
                }],
            )));
            pc.add_track(track.clone() as Arc<dyn TrackLocal>).await.expect("add track");
            let (counting, seen) = (track.clone(), seen.clone());
            tokio::spawn(async move {
                while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = counting.poll().await {
                    let n = packets.iter().filter(|p| feedback::is_keyframe_request(p.as_ref())).count();
                    seen.keyframe_requests.fetch_add(n as u64, Ordering::Relaxed);
                    seen.changed.notify_waiters();
                }
            });
            Some((track, video_ssrc))
        }
    };
    Endpoint { pc, seen, track, ssrc, video }
}

struct Endpoint {
    pc: Arc<dyn PeerConnection>,
    seen: Arc<Seen>,
    track: Option<Arc<TrackLocalStaticRTP>>,
    ssrc: u32,
    video: Option<(Arc<TrackLocalStaticRTP>, u32)>,
}

/// A publisher and a subscriber connected directly, without a node: the
/// baseline for the latency the node adds.
#[allow(dead_code)] // used by the benchmark
pub async fn direct_pair() -> (Peer, Peer) {
    let (a_out, a_candidates) = mpsc::unbounded_channel::<Value>();
    let (b_out, b_candidates) = mpsc::unbounded_channel::<Value>();
    let a = endpoint("direct-a", true, false, a_out.clone()).await;
    let b = endpoint("direct-b", false, false, b_out.clone()).await;
    let (a_pc, b_pc) = (a.pc.clone(), b.pc.clone());
    let offer = a_pc.create_offer(None).await.expect("offer");
    a_pc.set_local_description(offer.clone()).await.expect("local offer");
    b_pc.set_remote_description(offer).await.expect("remote offer");
    let answer = b_pc.create_answer(None).await.expect("answer");
    b_pc.set_local_description(answer.clone()).await.expect("local answer");
    a_pc.set_remote_description(answer).await.expect("remote answer");
    // Candidates wait in their channels until both sides have the other's
    // description (one added before it would be refused, and lost).
    for (to, mut from) in [(b_pc.clone(), a_candidates), (a_pc.clone(), b_candidates)] {
        tokio::spawn(async move {
            while let Some(v) = from.recv().await {
                if let Ok(c) = serde_json::from_value::<RTCIceCandidateInit>(v["candidate"].clone()) {
                    let _ = to.add_ice_candidate(c).await;
                }
            }
        });
    }
    (Peer::new(a, a_out), Peer::new(b, b_out))
}

/// A participant of the node at `addr` (on whatever runtime calls this).
pub async fn peer_at(addr: std::net::SocketAddr, room: &str, user: &str, publish: bool) -> Peer {
    peer_at_with(addr, room, user, publish, false).await
}

/// A participant that may also publish a VP8 track (`video`).
pub async fn peer_at_with(addr: std::net::SocketAddr, room: &str, user: &str, publish: bool, video: bool) -> Peer {
    let (ws, _) = connect_async(format!("ws://{addr}/ws")).await.expect("connects");
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(v) = out_rx.recv().await {
            // Null: hang up ([`Peer::close`]).
            if v.is_null() {
                let _ = ws_tx.close().await;
                return;
            }
            if ws_tx.send(Message::text(v.to_string())).await.is_err() {
                return;
            }
        }
    });
    let endpoint = endpoint(user, publish, video, out.clone()).await;
    let (pc, seen) = (endpoint.pc.clone(), endpoint.seen.clone());
    // Signaling: join, then offer; answer the node's offers.
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    let mut joined_tx = Some(joined_tx);
    let (pc2, out2, seen2) = (pc.clone(), out.clone(), seen.clone());
    tokio::spawn(async move {
        let mut early: Vec<RTCIceCandidateInit> = Vec::new();
        while let Some(Ok(message)) = ws_rx.next().await {
            let Message::Text(text) = message else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            seen2.messages.lock().expect("lock").push(v.clone());
            seen2.changed.notify_waiters();
            match v["type"].as_str() {
                Some("joined") => {
                    if let Some(tx) = joined_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Some("answer") => {
                    let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
                    if let Ok(answer) = RTCSessionDescription::answer(sdp) {
                        let _ = pc2.set_remote_description(answer).await;
                        for c in early.drain(..) {
                            let _ = pc2.add_ice_candidate(c).await;
                        }
                    }
                }
                Some("offer") => {
                    let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
                    let Ok(offer) = RTCSessionDescription::offer(sdp) else { continue };
                    if pc2.set_remote_description(offer).await.is_err() {
                        continue;
                    }
                    for c in early.drain(..) {
                        let _ = pc2.add_ice_candidate(c).await;
                    }
                    if let Ok(answer) = pc2.create_answer(None).await {
                        let _ = pc2.set_local_description(answer.clone()).await;
                        let _ = out2.send(json!({"type": "answer", "sdp": answer.sdp}));
                    }
                }
                Some("candidate") => {
                    // Kept until there is a remote description to add it to.
                    if let Ok(c) = serde_json::from_value::<RTCIceCandidateInit>(v["candidate"].clone()) {
                        match pc2.remote_description().await {
                            Some(_) => drop(pc2.add_ice_candidate(c).await),
                            None => early.push(c),
                        }
                    }
                }
                _ => {}
            }
        }
    });
    let _ = out.send(json!({"type": "join", "room": room, "user": user}));
    tokio::time::timeout(Duration::from_secs(5), joined_rx).await.expect("joined in time").expect("joined");
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer.clone()).await.expect("local offer");
    let _ = out.send(json!({"type": "offer", "sdp": offer.sdp}));
    Peer::new(endpoint, out)
}

impl Peer {
    fn new(e: Endpoint, out: mpsc::UnboundedSender<Value>) -> Peer {
        Peer { pc: e.pc, seen: e.seen, out, track: e.track, ssrc: e.ssrc, video: e.video }
    }

    /// Waits until ICE is connected.
    pub async fn connected(&self) {
        let connected = |seen: &Seen| seen.ice.lock().expect("lock").contains(&RTCIceConnectionState::Connected);
        self.seen.until("ICE to connect", Duration::from_secs(20), connected).await;
    }

    /// Sends `n` audio packets, one per `gap`, numbered from `first`.
    pub async fn send_audio(&self, first: u16, n: u16, gap: Duration) {
        self.send_tagged(UNTAGGED, first, n, gap).await;
    }

    /// [`Peer::send_audio`] with `tag` as each payload's first byte, so
    /// that receivers can count this burst alone ([`Seen::tagged`]).
    pub async fn send_tagged(&self, tag: u8, first: u16, n: u16, gap: Duration) {
        for i in 0..n {
            let mut payload = vec![UNTAGGED; 120];
            payload[0] = tag;
            self.send_one(first.wrapping_add(i), payload).await;
            // Pacing what is sent, as a microphone would.
            tokio::time::sleep(gap).await;
        }
    }

    #[allow(dead_code)] // used by the benchmark
    /// Sends one packet of `size` bytes stamped with the time it was sent
    /// (receivers record the latency).
    pub async fn send_timed(&self, sequence: u16, size: usize) {
        let mut payload = vec![0xCD; size.max(16)];
        payload[..8].copy_from_slice(&since_origin().to_le_bytes());
        payload[8..16].copy_from_slice(&TIMED);
        self.send_one(sequence, payload).await;
    }

    async fn send_one(&self, sequence: u16, payload: Vec<u8>) {
        let track = self.track.as_ref().expect("a publisher");
        let header = rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: sequence,
            timestamp: u32::from(sequence) * 960,
            ssrc: self.ssrc,
            ..Default::default()
        };
        let _ = track.write_rtp(rtp::Packet { header, payload: payload.into() }).await;
    }

    /// Sends one video packet of `size` bytes on the VP8 track.
    #[allow(dead_code)] // used by some tests only
    pub async fn send_video(&self, sequence: u16, size: usize) {
        let (track, ssrc) = self.video.as_ref().expect("a video publisher");
        let header = rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: sequence,
            timestamp: u32::from(sequence) * 3000,
            ssrc: *ssrc,
            ..Default::default()
        };
        let _ = track.write_rtp(rtp::Packet { header, payload: vec![0x5A; size].into() }).await;
    }

    /// Sends one audio packet carrying an RFC 6464 level (-dBov).
    #[allow(dead_code)] // used by some tests only
    pub async fn send_level(&self, sequence: u16, level: u8) {
        let track = self.track.as_ref().expect("a publisher");
        let header =
            rtp::header::Header { version: 2, payload_type: 111, sequence_number: sequence, ssrc: self.ssrc, ..Default::default() };
        let extension = rtp::extension::HeaderExtension::AudioLevel(rtp::extension::audio_level_extension::AudioLevelExtension {
            level,
            voice: level < 127,
        });
        let _ = track.write_rtp_with_extensions(rtp::Packet { header, payload: vec![0xAB; 60].into() }, &[extension]).await;
    }

    /// Leaves the room, hangs up and closes the peer connection.
    #[allow(dead_code)] // the churn benchmark's
    pub async fn close(self) {
        let _ = self.out.send(serde_json::json!({"type": "leave"}));
        let _ = self.out.send(Value::Null);
        let _ = self.pc.close().await;
    }

    pub fn received(&self) -> u64 {
        self.seen.packets.load(Ordering::Relaxed)
    }
}

/// Waits until every subscriber has a track (the node's offer answered)
/// by sending a trickle of packets until each has received some.
pub async fn until_flowing(publisher: &Peer, subscribers: &[Peer]) {
    for round in 0..100u16 {
        publisher.send_audio(60000u16.wrapping_add(round * 10), 10, Duration::from_millis(5)).await;
        if subscribers.iter().all(|s| s.received() > 0) {
            return;
        }
    }
    let counts: Vec<u64> = subscribers.iter().map(Peer::received).collect();
    panic!("media never reached every subscriber: {counts:?}");
}
