//! An edge node's media: one WebRTC peer connection to the SFU node.
//!
//! The edge offers first, with one send-only Opus track when it publishes
//! (receive-only otherwise), and answers the node's offers as publishers
//! come and go; ICE candidates trickle both ways, and candidates that
//! arrive before a remote description are kept until there is one. Each
//! (re)join of the room makes a fresh connection (the node tears a
//! participant's media down when its signaling connection drops).
//!
//! Published frames go out one per RTP packet; received packets come out
//! as frames with the publisher's user name (the stream id the node gives
//! forwarded tracks). Sealing and opening are the caller's: this module
//! never sees a key.

use crate::peer::PeerOptions;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCPeerConnectionIceEvent};

/// The payload type the edge sends Opus with (the default codecs' Opus).
const OPUS_PAYLOAD_TYPE: u8 = 111;

/// One packet's payload from a publisher, as received (still sealed when
/// the room is encrypted).
#[derive(Debug, Clone)]
pub struct Received {
    /// The publisher's user name.
    pub from: String,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

/// Publisher names by SSRC, from the `msid` of the node's offers.
type Publishers = Arc<std::sync::Mutex<std::collections::HashMap<u32, String>>>;

/// The connection, its published track and the candidates kept early.
pub struct Media {
    pc: Arc<dyn PeerConnection>,
    track: Option<(Arc<TrackLocalStaticRTP>, u32)>,
    early: Mutex<Vec<RTCIceCandidateInit>>,
    publishers: Publishers,
}

struct Handler {
    signal: mpsc::UnboundedSender<Value>,
    received: mpsc::Sender<Received>,
    publishers: Publishers,
}

/// `a=ssrc:<ssrc> msid:<stream> <track>` lines of an SDP.
fn ssrc_streams(sdp: &str) -> impl Iterator<Item = (u32, String)> + '_ {
    sdp.lines().filter_map(|line| {
        let rest = line.trim().strip_prefix("a=ssrc:")?;
        let (ssrc, attribute) = rest.split_once(' ')?;
        let stream = attribute.strip_prefix("msid:")?.split_whitespace().next()?;
        Some((ssrc.parse().ok()?, stream.to_string()))
    })
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(candidate) = event.candidate.to_json() {
            let _ = self.signal.send(json!({"type": "candidate", "candidate": candidate}));
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // RTP that arrives before the node's offer is applied opens a
        // track without a stream id: its publisher comes from the offer's
        // SSRC lines then.
        let stream = track.stream_id().await.clone();
        let (received, publishers) = (self.received.clone(), self.publishers.clone());
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let from = match stream.is_empty() {
                        false => stream.clone(),
                        true => match crate::runtime::lock(&publishers).get(&packet.header.ssrc) {
                            Some(from) => from.clone(),
                            None => continue,
                        },
                    };
                    let frame = Received {
                        from,
                        sequence: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        payload: packet.payload.to_vec(),
                    };
                    // A full queue means the pipeline is behind: drop
                    // rather than grow (the decoder conceals the gap).
                    if received.try_send(frame).is_err() {
                        tracing::debug!("edge: a received packet dropped (the pipeline is behind)");
                    }
                }
            }
        });
    }
}

impl Media {
    /// Opens the connection on `ip` and sends the offer through `signal`.
    pub async fn start(
        ip: std::net::IpAddr,
        user: &str,
        publish: bool,
        signal: mpsc::UnboundedSender<Value>,
        received: mpsc::Sender<Received>,
    ) -> Result<Media, String> {
        let publishers = Publishers::default();
        let handler = Arc::new(Handler { signal: signal.clone(), received, publishers: publishers.clone() });
        let pc = crate::peer::open(&PeerOptions { ip, ice: None, keyframe_requests: false }, handler).await?;
        let track = if publish {
            let ssrc = rand::random::<u32>();
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
            pc.add_track(track.clone() as Arc<dyn TrackLocal>).await.map_err(|e| format!("track: {e}"))?;
            Some((track, ssrc))
        } else {
            let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
            pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init)).await.map_err(|e| format!("transceiver: {e}"))?;
            None
        };
        let offer = pc.create_offer(None).await.map_err(|e| format!("offer: {e}"))?;
        // Applied before it is sent: the node's answer may come back at
        // once, and it applies only over a local offer.
        pc.set_local_description(offer.clone()).await.map_err(|e| format!("local offer: {e}"))?;
        let _ = signal.send(json!({"type": "offer", "sdp": offer.sdp}));
        Ok(Media { pc, track, early: Mutex::new(Vec::new()), publishers })
    }

    /// Handles the node's media messages (answer, offer, candidate).
    pub async fn on_message(&self, message: &Value, signal: &mpsc::UnboundedSender<Value>) {
        let sdp = || message.get("sdp").and_then(Value::as_str).unwrap_or_default().to_string();
        match message.get("type").and_then(Value::as_str) {
            Some("answer") => match RTCSessionDescription::answer(sdp()) {
                Ok(answer) => match self.pc.set_remote_description(answer).await {
                    Ok(()) => self.add_early().await,
                    Err(e) => tracing::warn!("edge: the node's answer does not apply: {e}"),
                },
                Err(e) => tracing::warn!("edge: a bad answer from the node: {e}"),
            },
            Some("offer") => {
                crate::runtime::lock(&self.publishers).extend(ssrc_streams(&sdp()));
                let applied = match RTCSessionDescription::offer(sdp()) {
                    Ok(offer) => self.pc.set_remote_description(offer).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = applied {
                    return tracing::warn!("edge: the node's offer does not apply: {e}");
                }
                self.add_early().await;
                match self.pc.create_answer(None).await {
                    Ok(answer) => {
                        let _ = signal.send(json!({"type": "answer", "sdp": answer.sdp}));
                        if let Err(e) = self.pc.set_local_description(answer).await {
                            tracing::warn!("edge: cannot apply its own answer: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("edge: cannot answer the node's offer: {e}"),
                }
            }
            Some("candidate") => {
                let Some(candidate) = message.get("candidate").and_then(|c| serde_json::from_value::<RTCIceCandidateInit>(c.clone()).ok())
                else {
                    return tracing::warn!("edge: a bad candidate from the node");
                };
                match self.pc.remote_description().await {
                    Some(_) => drop(self.pc.add_ice_candidate(candidate).await),
                    None => self.early.lock().await.push(candidate),
                }
            }
            _ => {}
        }
    }

    async fn add_early(&self) {
        for candidate in self.early.lock().await.drain(..) {
            let _ = self.pc.add_ice_candidate(candidate).await;
        }
    }

    /// Sends one frame as one RTP packet (a no-op when not publishing).
    pub async fn send(&self, sequence: u16, timestamp: u32, payload: Vec<u8>) {
        let Some((track, ssrc)) = &self.track else { return };
        let header = rtp::header::Header {
            version: 2,
            payload_type: OPUS_PAYLOAD_TYPE,
            sequence_number: sequence,
            timestamp,
            ssrc: *ssrc,
            ..Default::default()
        };
        if let Err(e) = track.write_rtp(rtp::Packet { header, payload: payload.into() }).await {
            tracing::debug!("edge: a packet not sent: {e}");
        }
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
