//! The SFU with real WebRTC peers (webrtc-rs, in process, UDP on
//! 127.0.0.1) that join through the node's own signaling WebSocket.

use crate::common::stock_stage;
use futures_util::{SinkExt, StreamExt};
use medianode::sfu::router::{self, PluginDecider};
use medianode::sfu::{Sfu, SfuOptions};
use medianode::signaling::connections::Connections;
use medianode::signaling::server::{Server, ServerOptions};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceConnectionState, RTCPeerConnectionIceEvent};

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
    let connections = Connections::default();
    let stage = stock_stage(forward_plugin, forward_config);
    let forward = stage.shared().clone();
    let decide = Box::new(PluginDecider(stage));
    let sfu = Sfu::start(options, connections.clone(), decide);
    let server = Server::start(
        "127.0.0.1:0".parse().expect("addr"),
        ServerOptions::default(),
        stock_stage("signaling", "{}"),
        connections,
        Some(Arc::new(sfu.clone())),
        Some(Box::new(sfu.clone())),
    )
    .await
    .expect("server starts");
    Node { server, sfu, forward }
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
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = event {
                    seen.packets.fetch_add(1, Ordering::Relaxed);
                    seen.unique.lock().expect("lock").insert((p.header.ssrc, p.header.sequence_number));
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
}

pub async fn peer(node: &Node, room: &str, user: &str, publish: bool) -> Peer {
    peer_at(node.server.addr, room, user, publish).await
}

/// A participant of the node at `addr` (on whatever runtime calls this).
pub async fn peer_at(addr: std::net::SocketAddr, room: &str, user: &str, publish: bool) -> Peer {
    let (ws, _) = connect_async(format!("ws://{addr}/ws")).await.expect("connects");
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(v) = out_rx.recv().await {
            if ws_tx.send(Message::text(v.to_string())).await.is_err() {
                return;
            }
        }
    });
    let seen = Arc::new(Seen::default());
    let mut media = MediaEngine::default();
    media.register_default_codecs().expect("codecs");
    let registry = register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(PeerHandler { seen: seen.clone(), out: out.clone() }))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .expect("peer connection"),
    );
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
    // Signaling: join, then offer; answer the node's offers.
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    let mut joined_tx = Some(joined_tx);
    let (pc2, out2, seen2) = (pc.clone(), out.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws_rx.next().await {
            let Message::Text(text) = message else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            seen2.messages.lock().expect("lock").push(v.clone());
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
                    }
                }
                Some("offer") => {
                    let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
                    let Ok(offer) = RTCSessionDescription::offer(sdp) else { continue };
                    if pc2.set_remote_description(offer).await.is_err() {
                        continue;
                    }
                    if let Ok(answer) = pc2.create_answer(None).await {
                        let _ = pc2.set_local_description(answer.clone()).await;
                        let _ = out2.send(json!({"type": "answer", "sdp": answer.sdp}));
                    }
                }
                Some("candidate") => {
                    if let Ok(c) = serde_json::from_value::<RTCIceCandidateInit>(v["candidate"].clone()) {
                        let _ = pc2.add_ice_candidate(c).await;
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
    Peer { pc, seen, out, track, ssrc }
}

impl Peer {
    /// Waits until ICE is connected.
    pub async fn connected(&self) {
        for _ in 0..200 {
            if self.seen.ice.lock().expect("lock").contains(&RTCIceConnectionState::Connected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("ICE never connected: {:?}", self.seen.ice.lock().expect("lock"));
    }

    /// Sends `n` audio packets, one per `gap`, numbered from `first`.
    pub async fn send_audio(&self, first: u16, n: u16, gap: Duration) {
        let track = self.track.as_ref().expect("a publisher");
        for i in 0..n {
            let sequence = first.wrapping_add(i);
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: 111,
                    sequence_number: sequence,
                    timestamp: u32::from(sequence) * 960,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: vec![0xAB; 120].into(),
            };
            let _ = track.write_rtp(packet).await;
            tokio::time::sleep(gap).await;
        }
    }

    pub fn received(&self) -> u64 {
        self.seen.packets.load(Ordering::Relaxed)
    }
}

/// Waits until every subscriber has a track (the node's offer answered)
/// by sending a trickle of packets until each has received some.
async fn until_flowing(publisher: &Peer, subscribers: &[Peer]) {
    for round in 0..100u16 {
        publisher.send_audio(60000u16.wrapping_add(round * 10), 10, Duration::from_millis(5)).await;
        if subscribers.iter().all(|s| s.received() > 0) {
            return;
        }
    }
    let counts: Vec<u64> = subscribers.iter().map(Peer::received).collect();
    panic!("media never reached every subscriber: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_reaches_five_subscribers() {
    let node = node("forward", "{}").await;
    let publisher = peer(&node, "room", "pub", true).await;
    let mut subscribers = Vec::new();
    for i in 0..5 {
        subscribers.push(peer(&node, "room", &format!("sub{i}"), false).await);
    }
    publisher.connected().await;
    for s in &subscribers {
        s.connected().await;
    }
    until_flowing(&publisher, &subscribers).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = subscribers.iter().map(Peer::received).collect();
    const N: u16 = 1000;
    publisher.send_audio(0, N, Duration::from_millis(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (s, before) in subscribers.iter().zip(before) {
        let got = s.received() - before;
        assert!(got * 100 >= u64::from(N) * 99, "a subscriber received {got} of {N}");
    }
    let stats = node.sfu.stats();
    assert!(stats.packets_out >= 5 * u64::from(N), "{stats:?}");
}

/// The forwarding plugin panics on every 500th packet: the standby takes
/// over, the packet it trapped on is lost (quarantined), and every
/// subscriber keeps receiving; loss is bounded by one batch per trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_plugin_trap_drops_no_participant() {
    let node = node("faulty-forward", r#"{"panic-every": 500}"#).await;
    let publisher = peer(&node, "room", "pub", true).await;
    let subscribers = vec![peer(&node, "room", "a", false).await, peer(&node, "room", "b", false).await];
    publisher.connected().await;
    for s in &subscribers {
        s.connected().await;
    }
    until_flowing(&publisher, &subscribers).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = subscribers.iter().map(Peer::received).collect();
    const N: u16 = 2000;
    publisher.send_audio(0, N, Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traps = node.forward.metrics.faults.load(Ordering::Relaxed);
    assert!(traps >= 4, "the plugin trapped {traps} times");
    for (s, before) in subscribers.iter().zip(before) {
        let got = s.received() - before;
        let lost = u64::from(N).saturating_sub(got);
        assert!(lost <= traps * router::MAX_BATCH as u64, "lost {lost} of {N} over {traps} traps");
        assert!(got > 0);
    }
    // Nobody was dropped: one more burst reaches both.
    let before: Vec<u64> = subscribers.iter().map(Peer::received).collect();
    publisher.send_audio(5000, 50, Duration::from_millis(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (s, before) in subscribers.iter().zip(before) {
        assert!(s.received() - before >= 45, "still subscribed after the traps");
    }
}

/// A publisher leaves mid-stream and comes back as a new connection: the
/// subscriber is offered the new track and receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_leaves_and_rejoins_mid_stream() {
    let node = node("forward", "{}").await;
    let subscriber = peer(&node, "room", "sub", false).await;
    let first = peer(&node, "room", "pub", true).await;
    first.connected().await;
    subscriber.connected().await;
    until_flowing(&first, std::slice::from_ref(&subscriber)).await;
    first.send_audio(0, 100, Duration::from_millis(2)).await;
    let _ = first.out.send(json!({"type": "leave"}));
    let _ = first.pc.close().await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let again = peer(&node, "room", "pub", true).await;
    again.connected().await;
    let before = subscriber.received();
    until_flowing_more(&again, &subscriber, before).await;
    let before = subscriber.received();
    again.send_audio(1000, 300, Duration::from_millis(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = subscriber.received() - before;
    assert!(got >= 297, "received {got} of 300 after the rejoin");
    let ssrcs: HashSet<u32> = subscriber.seen.unique.lock().expect("lock").iter().map(|(s, _)| *s).collect();
    assert_eq!(ssrcs.len(), 2, "two forwarded streams, one per publisher connection");
}

async fn until_flowing_more(publisher: &Peer, subscriber: &Peer, before: u64) {
    for round in 0..100u16 {
        publisher.send_audio(50000u16.wrapping_add(round * 10), 10, Duration::from_millis(5)).await;
        if subscriber.received() > before {
            return;
        }
    }
    panic!("the rejoined publisher never reached the subscriber");
}

/// ICE `failed` on the node's side makes it restart ICE: the subscriber
/// goes silent (its whole runtime frozen) past the failed timeout; the
/// node sends an offer with new ICE credentials; once the subscriber is
/// back it answers, ICE connects again and media flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_failed_restarts_ice_and_media_resumes() {
    let mut options = SfuOptions::new("127.0.0.1".parse().expect("ip"));
    options.ice_disconnected = Duration::from_millis(500);
    options.ice_failed = Duration::from_millis(1500);
    options.ice_keepalive = Duration::from_millis(200);
    let node = node_with("forward", "{}", options).await;
    let publisher = peer(&node, "room", "pub", true).await;

    // The subscriber lives on a runtime of its own, so that it can be frozen.
    let addr = node.server.addr;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (freeze_tx, freeze_rx) = std::sync::mpsc::channel::<Duration>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let subscriber = peer_at(addr, "room", "sub", false).await;
            subscriber.connected().await;
            let _ = ready_tx.send(subscriber.seen.clone());
            loop {
                match freeze_rx.try_recv() {
                    // Blocks this runtime's only thread: no ICE, no DTLS, no reads.
                    Ok(pause) => std::thread::sleep(pause),
                    Err(std::sync::mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
        });
    });
    let seen = tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("join")
        .expect("the subscriber connects");
    publisher.connected().await;
    let received = || seen.packets.load(Ordering::Relaxed);
    for round in 0..100u16 {
        publisher.send_audio(round * 10, 10, Duration::from_millis(5)).await;
        if received() > 0 {
            break;
        }
    }
    assert!(received() > 0, "media flows before the freeze");
    let offers_before = seen.messages.lock().expect("lock").iter().filter(|m| m["type"] == "offer").count();

    freeze_tx.send(Duration::from_secs(3)).expect("freeze");
    publisher.send_audio(2000, 1000, Duration::from_millis(5)).await; // ~5 s, spanning the freeze
    let before = received();
    publisher.send_audio(4000, 300, Duration::from_millis(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = received() - before;
    assert!(after >= 270, "media resumed after the ICE restart: {after} of 300");

    let messages = seen.messages.lock().expect("lock").clone();
    let states: Vec<&str> = messages.iter().filter(|m| m["type"] == "media-state").filter_map(|m| m["state"].as_str()).collect();
    let failed = states.iter().position(|s| *s == "failed").unwrap_or_else(|| panic!("the node saw no failure: {states:?}"));
    assert!(states[failed..].contains(&"connected"), "connected again after failing: {states:?}");
    let offers: Vec<&str> = messages.iter().filter(|m| m["type"] == "offer").filter_map(|m| m["sdp"].as_str()).collect();
    assert!(offers.len() > offers_before, "the node sent a restart offer");
    let ufrag = |sdp: &str| sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:").map(str::to_string));
    assert_ne!(ufrag(offers[0]), ufrag(offers[offers.len() - 1]), "with new ICE credentials");
    drop(freeze_tx);
}
