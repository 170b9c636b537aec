//! Keyframe requests from subscribers, passed up to the application so the
//! SFU can relay them to the publisher.
//!
//! Inbound RTCP normally ends at the interceptors that act on it (NACKs are
//! answered from the send buffer of each subscriber's leg, reports feed the
//! statistics). A PLI or FIR, though, is for the publisher: only its encoder
//! can make a keyframe. This interceptor sits last in the chain (so every
//! other interceptor has seen the RTCP) and marks keyframe requests for the
//! application; the SFU reads them from the subscriber's track and sends a
//! PLI upstream, at most one per [`MIN_INTERVAL`] per stream.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
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
pub struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            // Only keyframe requests go on; the rest has been handled.
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
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

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}
