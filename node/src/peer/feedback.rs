//! RTCP feedback that the application acts on, passed up to it: keyframe
//! requests (the SFU relays them to the publisher) and bandwidth estimates
//! (the SFU chooses simulcast layers by them).
//!
//! Inbound RTCP normally ends at the interceptors that act on it (NACKs are
//! answered from the send buffer of each subscriber's leg, reports feed the
//! statistics). A PLI or FIR, though, is for the publisher: only its encoder
//! can make a keyframe; and a subscriber's bandwidth is for whoever decides
//! what to send it. This interceptor sits last in the chain (so every other
//! interceptor has seen the RTCP) and marks for the application:
//!
//! - keyframe requests;
//! - REMB messages (a receiver's own estimate, RFC draft-alvestrand-rmcat-remb);
//! - the send-side estimate of the congestion controller (GCC over the
//!   subscriber's transport-wide feedback), which the chain attaches to
//!   the feedback it came from: it goes up as a REMB of that bitrate
//!   addressed to one of the connection's own streams, so it reaches the
//!   application the same way as a receiver's REMB.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Keyframe requests for one stream closer together than this are merged:
/// a keyframe takes a round trip to arrive anyway.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Where in the interceptor chain it sits: after the default interceptors.
pub const SLOT: usize = 14_000;

#[derive(Default)]
pub struct FeedbackToApplication {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// Streams this end sends: an estimate is addressed to the first.
    local: Vec<u32>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// The sender SSRC of the REMB that carries this end's own estimate (a
/// receiver's REMB names the receiver).
const OWN: u32 = 0x6d6e_6f64;

/// A bandwidth estimate, bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimate {
    /// This end's congestion controller's, from the remote's feedback.
    Own(u64),
    /// The remote's own (its REMB).
    Remote(u64),
}

/// The bandwidth an RTCP packet reports (a REMB).
pub fn estimate(packet: &dyn rtc::rtcp::Packet) -> Option<Estimate> {
    let remb = packet.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>()?;
    let bitrate = remb.bitrate as u64;
    Some(if remb.sender_ssrc == OWN { Estimate::Own(bitrate) } else { Estimate::Remote(bitrate) })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            // Only what the application acts on goes on; the rest has been handled.
            let mut wanted: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref()) || estimate(p.as_ref()).is_some()).cloned().collect();
            let target = msg.message.attributes.iter().find_map(|a| match a {
                Attribute::TargetBitrateChanged { bits_per_second } => Some(*bits_per_second),
                _ => None,
            });
            if let (Some(bitrate), Some(&local)) = (target, self.local.first()) {
                let remb = ReceiverEstimatedMaximumBitrate { sender_ssrc: OWN, bitrate: bitrate as f32, ssrcs: vec![local] };
                wanted.push(Box::new(remb));
            }
            if wanted.is_empty() {
                // Its attributes still go on (to the connection's statistics).
                msg.message.packet = Packet::Rtcp(Vec::new());
                self.read.push_back(msg);
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(wanted);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for FeedbackToApplication {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.local.push(info.ssrc);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.local.retain(|&s| s != info.ssrc);
    }
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}
