//! Receiver reports that leave out simulcast layers, so that a browser
//! keeps naming them.
//!
//! A browser sends each simulcast layer's RID (and MID) in an RTP header
//! extension only until a receiver report acknowledges that SSRC; after
//! that, the SSRC alone says which layer a packet is. webrtc-rs's `rtc`
//! (0.21.1) forgets what it learned at every renegotiation: applying a
//! description rebuilds each receiver's track from the SDP, where a
//! simulcast layer has a RID but no SSRC, and a packet without the RID
//! extension then maps to no track and is dropped. The SFU renegotiates a
//! participant's connection whenever someone else publishes, so every
//! simulcast publisher went dark at the first newcomer (pion had the same
//! bug: pion/webrtc#1984).
//!
//! Until that is fixed upstream, the report blocks of layer SSRCs are left
//! out of the node's receiver (and sender) reports: the browser never sees
//! them acknowledged, keeps sending the RID (some 8 bytes a packet), and
//! after a renegotiation the next packet binds its layer again. Loss and
//! round trips still reach the browser through transport-wide congestion
//! control feedback and NACKs. The shard tells this interceptor which SSRCs
//! are layers ([`Layers`]).

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where it sits: nearest the wire, after every report is made.
pub const SLOT: usize = 500;

/// The SSRCs of simulcast layers a connection receives.
pub type Layers = Arc<Mutex<HashSet<u32>>>;

pub struct LayersUnacked {
    layers: Layers,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl LayersUnacked {
    pub fn new(layers: Layers) -> LayersUnacked {
        LayersUnacked { layers, read: VecDeque::new(), write: VecDeque::new() }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LayersUnacked {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let layers = crate::runtime::lock(&self.layers);
            if !layers.is_empty() {
                for packet in packets.iter_mut() {
                    let any = packet.as_any();
                    if let Some(rr) = any.downcast_ref::<ReceiverReport>()
                        && rr.reports.iter().any(|r| layers.contains(&r.ssrc))
                    {
                        let mut rr = rr.clone();
                        rr.reports.retain(|r| !layers.contains(&r.ssrc));
                        *packet = Box::new(rr);
                    } else if let Some(sr) = any.downcast_ref::<SenderReport>()
                        && sr.reports.iter().any(|r| layers.contains(&r.ssrc))
                    {
                        let mut sr = sr.clone();
                        sr.reports.retain(|r| !layers.contains(&r.ssrc));
                        *packet = Box::new(sr);
                    }
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for LayersUnacked {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::reception_report::ReceptionReport;

    fn rr(ssrcs: &[u32]) -> TaggedPacket {
        let reports = ssrcs.iter().map(|&ssrc| ReceptionReport { ssrc, ..Default::default() }).collect();
        let packet: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverReport { ssrc: 1, reports, ..Default::default() });
        TaggedPacket { now: Instant::now(), transport: Default::default(), message: Packet::Rtcp(vec![packet]).into() }
    }

    #[test]
    fn layer_ssrcs_leave_the_reports_and_the_rest_stay() {
        let layers = Layers::default();
        let mut unacked = LayersUnacked::new(layers.clone());
        crate::runtime::lock(&layers).extend([10, 11]);
        unacked.handle_write(rr(&[7, 10, 11, 12])).expect("write");
        let out = unacked.poll_write().expect("a report goes on");
        let Packet::Rtcp(packets) = &out.message.packet else { panic!("rtcp expected") };
        let report = packets[0].as_any().downcast_ref::<ReceiverReport>().expect("a receiver report");
        assert_eq!(report.reports.iter().map(|r| r.ssrc).collect::<Vec<_>>(), [7, 12]);
    }
}
