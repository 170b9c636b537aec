//! Opening a WebRTC peer connection: one way, for the SFU, edge nodes and
//! the tests' peers.
//!
//! Every peer connection is made by [`open`]: webrtc-rs's default codecs
//! (Opus, VP8, ...), the audio-level header extension (RFC 6464) that
//! active-speaker detection reads, the default interceptors (NACK
//! responder and generator, sender and receiver reports, TWCC), optionally
//! the [`feedback`] interceptor last so that PLI, FIR and bandwidth
//! estimates reach the application, ICE timeouts, and one UDP address to
//! gather candidates on. The SFU's connections also estimate the bandwidth
//! to each subscriber ([`with_congestion_control`]).
//! What differs between users is the event handler and [`PeerOptions`].

pub mod feedback;
pub mod unacked;

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, SettingEngineBuilder};

/// The RFC 6464 header extension that carries audio levels.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// How a peer connection is set up.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The address its UDP socket binds to and its candidates announce.
    pub ip: IpAddr,
    /// ICE timeouts; `None`: webrtc-rs's defaults.
    pub ice: Option<IceTimeouts>,
    /// Deliver keyframe requests (PLI, FIR) for the connection's local
    /// tracks to the application: for a party that reads its tracks' RTCP
    /// (the SFU relays them upstream; a test counts them).
    pub keyframe_requests: bool,
}

/// When ICE calls a silent connection disconnected and failed, and how
/// often it checks an idle one.
#[derive(Debug, Clone, Copy)]
pub struct IceTimeouts {
    pub disconnected: Duration,
    pub failed: Duration,
    pub keepalive: Duration,
}

/// The codecs, header extensions and interceptors every peer connection
/// has (the SFU's sans-IO connections too).
pub fn engine(keyframe_requests: bool) -> Result<(MediaEngine, Registry), String> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().map_err(|e| format!("codecs: {e}"))?;
    let level = RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_URI.to_string() };
    media.register_header_extension(level, RtpCodecKind::Audio, None).map_err(|e| format!("audio level extension: {e}"))?;
    let mut registry = register_default_interceptors(Registry::new(), &mut media).map_err(|e| format!("interceptors: {e}"))?;
    if keyframe_requests {
        registry = registry.with(Slot::from(feedback::SLOT), feedback::FeedbackToApplication::default());
    }
    Ok((media, registry))
}

/// Adds send-side bandwidth estimation: transport-wide sequence numbers on
/// what leaves, and Google Congestion Control over the remote's feedback
/// (its estimate reaches the application through [`feedback`]). No pacer:
/// the SFU forwards as packets come, and chooses what to send by the
/// estimate instead (simulcast layers).
pub fn with_congestion_control(registry: Registry) -> Registry {
    use rtc::interceptor::{CongestionControlBuilder, Gcc, TwccSenderBuilder};
    // Start where a video call is comfortable: a link that cannot carry it
    // shows within a few round trips, and the estimate drops to what it can.
    let gcc = Gcc::new(INITIAL_ESTIMATE, 100_000.0, 100_000_000.0);
    registry
        .with(Slot::CongestionControl, CongestionControlBuilder::new(gcc).build())
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
}

/// Bits per second a new connection's estimate starts from.
pub const INITIAL_ESTIMATE: f64 = 1_000_000.0;

/// Opens a peer connection whose events go to `handler`.
pub async fn open(options: &PeerOptions, handler: Arc<dyn PeerConnectionEventHandler>) -> Result<Arc<dyn PeerConnection>, String> {
    let (media, registry) = engine(options.keyframe_requests)?;
    let mut builder = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec![format!("{}:0", options.ip)]);
    if let Some(ice) = options.ice {
        let settings = SettingEngineBuilder::new().with_ice_timeouts(Some(ice.disconnected), Some(ice.failed), Some(ice.keepalive)).build();
        builder = builder.with_setting_engine(settings);
    }
    let pc = builder.build().await.map_err(|e| format!("cannot open a peer connection: {e}"))?;
    Ok(Arc::new(pc))
}
