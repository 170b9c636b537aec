//! str0m: two `Rtc`s in RTP mode, connected with its direct API (what its
//! own tests do; the SDP API would end in the same state).

use crate::{PAYLOAD, Pair};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub struct Str0mPair {
    sender: Rtc,
    receiver: Rtc,
    ssrc: Ssrc,
    pt: str0m::media::Pt,
    sequence: u64,
    payload: Arc<[u8]>,
}

const SENDER: &str = "10.0.0.1:1000";
const RECEIVER: &str = "10.0.0.2:2000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Takes `rtc`'s output: datagrams to `queue`, events counted when they
/// are RTP packets of the expected size.
fn drain(rtc: &mut Rtc, queue: &mut VecDeque<Vec<u8>>) -> (usize, bool) {
    let (mut packets, mut connected) = (0, false);
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(_)) | Err(_) => break,
            Ok(Output::Transmit(t)) => queue.push_back(t.contents.to_vec()),
            Ok(Output::Event(Event::RtpPacket(p))) if p.payload.len() == PAYLOAD => packets += 1,
            Ok(Output::Event(Event::Connected)) => connected = true,
            Ok(Output::Event(_)) => {}
        }
    }
    (packets, connected)
}

fn deliver(rtc: &mut Rtc, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
    if let Ok(contents) = datagram.try_into() {
        let _ = rtc.handle_input(Input::Receive(now, Receive { proto: Protocol::Udp, source: from, destination: to, contents }));
    }
}

pub fn connect() -> Str0mPair {
    let now = Instant::now();
    let mut sender = Rtc::builder().set_rtp_mode(true).build(now);
    let mut receiver = Rtc::builder().set_rtp_mode(true).build(now);
    let (a, b) = (addr(SENDER), addr(RECEIVER));
    sender.add_local_candidate(Candidate::host(a, "udp").expect("candidate"));
    sender.add_remote_candidate(Candidate::host(b, "udp").expect("candidate"));
    receiver.add_local_candidate(Candidate::host(b, "udp").expect("candidate"));
    receiver.add_remote_candidate(Candidate::host(a, "udp").expect("candidate"));
    let (fa, fb) = (sender.direct_api().local_dtls_fingerprint().clone(), receiver.direct_api().local_dtls_fingerprint().clone());
    sender.direct_api().set_remote_fingerprint(fb);
    receiver.direct_api().set_remote_fingerprint(fa);
    let (ca, cb) = (sender.direct_api().local_ice_credentials(), receiver.direct_api().local_ice_credentials());
    sender.direct_api().set_remote_ice_credentials(cb);
    receiver.direct_api().set_remote_ice_credentials(ca);
    sender.direct_api().set_ice_controlling(true);
    receiver.direct_api().set_ice_controlling(false);
    sender.direct_api().start_dtls(true).expect("dtls");
    receiver.direct_api().start_dtls(false).expect("dtls");
    let mid: Mid = "aud".into();
    let ssrc: Ssrc = 0x1234_5678.into();
    sender.direct_api().declare_media(mid, MediaKind::Audio);
    sender.direct_api().declare_stream_tx(ssrc, None, mid, None);
    receiver.direct_api().declare_media(mid, MediaKind::Audio);
    let pt = sender.codec_config().find(|p| p.spec().codec == Codec::Opus).expect("opus").pt();

    let started = Instant::now();
    let mut connected = [false, false];
    let (mut to_receiver, mut to_sender) = (VecDeque::new(), VecDeque::new());
    while connected != [true, true] {
        assert!(started.elapsed() < Duration::from_secs(10), "str0m: no connection after 10 s");
        let now = Instant::now();
        let _ = sender.handle_input(Input::Timeout(now));
        let _ = receiver.handle_input(Input::Timeout(now));
        connected[0] |= drain(&mut sender, &mut to_receiver).1;
        connected[1] |= drain(&mut receiver, &mut to_sender).1;
        while let Some(d) = to_receiver.pop_front() {
            deliver(&mut receiver, now, a, b, &d);
        }
        while let Some(d) = to_sender.pop_front() {
            deliver(&mut sender, now, b, a, &d);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Str0mPair { sender, receiver, ssrc, pt, sequence: 0, payload: Arc::from(vec![0x5A; PAYLOAD]) }
}

impl Pair for Str0mPair {
    fn send(&mut self, n: usize, now: Instant) -> Vec<Vec<u8>> {
        let mut out = VecDeque::with_capacity(n);
        for _ in 0..n {
            self.sequence += 1;
            let time = (self.sequence * 960) as u32;
            if let Some(stream) = self.sender.direct_api().stream_tx(&self.ssrc) {
                stream.write_rtp(RtpWrite::new(self.pt, self.sequence.into(), time, now, self.payload.clone()));
            }
            // Its pacer releases what was written when it is given the time.
            let _ = self.sender.handle_input(Input::Timeout(now));
            drain(&mut self.sender, &mut out);
        }
        out.into()
    }

    fn receive(&mut self, datagrams: Vec<Vec<u8>>, now: Instant) -> usize {
        let mut got = 0;
        let mut replies = VecDeque::new();
        for d in datagrams {
            deliver(&mut self.receiver, now, addr(SENDER), addr(RECEIVER), &d);
            got += drain(&mut self.receiver, &mut replies).0;
            replies.clear();
        }
        got
    }
}
