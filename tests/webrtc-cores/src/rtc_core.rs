//! webrtc-rs `rtc`: two `RTCPeerConnection`s negotiated by SDP.

use crate::{PAYLOAD, Pair};
use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct RtcPair {
    sender: RTCPeerConnection,
    receiver: RTCPeerConnection,
    sender_id: RTCRtpSenderId,
    ssrc: u32,
    sequence: u16,
    payload: Bytes,
}

const SENDER: &str = "10.0.0.1:1000";
const RECEIVER: &str = "10.0.0.2:2000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn peer() -> RTCPeerConnection {
    let mut media = MediaEngine::default();
    media.register_default_codecs().expect("codecs");
    let registry = register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .expect("peer connection")
}

fn host(at: SocketAddr) -> rtc::peer_connection::transport::RTCIceCandidateInit {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: at.ip().to_string(),
            port: at.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("candidate");
    RTCIceCandidate::from(&candidate).to_json().expect("candidate json")
}

fn datagram(now: Instant, from: SocketAddr, to: SocketAddr, message: BytesMut) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext { local_addr: to, peer_addr: from, ecn: None, transport_protocol: TransportProtocol::UDP },
        message,
    }
}

/// Moves every datagram each side has to the other; runs due timers.
fn shuttle(a: &mut RTCPeerConnection, b: &mut RTCPeerConnection, now: Instant) {
    for (from, to, a_to_b) in [(SENDER, RECEIVER, true), (RECEIVER, SENDER, false)] {
        let (src, dst) = if a_to_b { (&mut *a, &mut *b) } else { (&mut *b, &mut *a) };
        if src.poll_timeout().is_some_and(|t| t <= now) {
            let _ = src.handle_timeout(now);
        }
        while let Some(m) = src.poll_write() {
            let _ = dst.handle_read(datagram(now, addr(from), addr(to), m.message));
        }
    }
}

pub fn connect() -> RtcPair {
    let (mut sender, mut receiver) = (peer(), peer());
    let ssrc = 0x1234_5678;
    let track = MediaStreamTrack::new(
        "load".into(),
        "audio".into(),
        "audio".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: RTCRtpCodec { mime_type: MIME_TYPE_OPUS.to_owned(), clock_rate: 48000, channels: 2, ..Default::default() },
            ..Default::default()
        }],
    );
    let sender_id = sender.add_track(track).expect("track");
    let offer = sender.create_offer(None).expect("offer");
    sender.set_local_description(Instant::now(), offer.clone()).expect("local offer");
    sender.add_local_candidate(host(addr(SENDER))).expect("candidate");
    receiver.set_remote_description(Instant::now(), offer).expect("remote offer");
    receiver.add_local_candidate(host(addr(RECEIVER))).expect("candidate");
    let answer = receiver.create_answer(None).expect("answer");
    receiver.set_local_description(Instant::now(), answer.clone()).expect("local answer");
    sender.set_remote_description(Instant::now(), answer).expect("remote answer");
    sender.add_remote_candidate(host(addr(RECEIVER))).expect("remote candidate");
    receiver.add_remote_candidate(host(addr(SENDER))).expect("remote candidate");
    let started = Instant::now();
    let mut connected = [false, false];
    while connected != [true, true] {
        assert!(started.elapsed() < Duration::from_secs(10), "rtc: no connection after 10 s");
        shuttle(&mut sender, &mut receiver, Instant::now());
        for (i, pc) in [&mut sender, &mut receiver].into_iter().enumerate() {
            while let Some(event) = pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = event {
                    connected[i] = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    RtcPair { sender, receiver, sender_id, ssrc, sequence: 0, payload: Bytes::from(vec![0x5A; PAYLOAD]) }
}

impl Pair for RtcPair {
    fn send(&mut self, n: usize, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            self.sequence = self.sequence.wrapping_add(1);
            let header = rtc::rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: self.sequence,
                timestamp: u32::from(self.sequence) * 960,
                ssrc: self.ssrc,
                ..Default::default()
            };
            let packet = rtc::rtp::Packet { header, payload: self.payload.clone() };
            if let Some(mut sender) = self.sender.rtp_sender(self.sender_id) {
                sender.write_rtp(now, packet).expect("write");
            }
            while let Some(m) = self.sender.poll_write() {
                out.push(m.message.to_vec());
            }
        }
        out
    }

    fn receive(&mut self, datagrams: Vec<Vec<u8>>, now: Instant) -> usize {
        let mut got = 0;
        for d in datagrams {
            let _ = self.receiver.handle_read(datagram(now, addr(SENDER), addr(RECEIVER), BytesMut::from(&d[..])));
            while let Some(TaggedRTCMessage { message, .. }) = self.receiver.poll_read() {
                if let RTCMessage::RtpPacket(_, packet) = message
                    && packet.payload.len() == PAYLOAD
                {
                    got += 1;
                }
            }
        }
        // What the receiver answers (reports, TWCC feedback) goes nowhere.
        while self.receiver.poll_write().is_some() {}
        while self.receiver.poll_event().is_some() {}
        got
    }
}
