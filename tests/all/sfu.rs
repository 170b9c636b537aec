//! The SFU with real WebRTC peers (webrtc-rs, in process, UDP on
//! 127.0.0.1) that join through the node's own signaling WebSocket.

use crate::webrtc_peers::{Peer, Seen, node, node_with, peer, peer_at, peer_at_with, until_flowing};
use medianode::sfu::SfuOptions;
use medianode::sfu::router;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a test waits for media it sent to arrive.
const ARRIVAL: Duration = Duration::from_secs(10);

/// Connects everyone, waits for media to reach every subscriber, then sends
/// `n` packets tagged `tag`, one per `gap`, and waits until each subscriber
/// has at least `expect` of them (at most [`ARRIVAL`]); returns what each
/// received.
async fn stream_to(publisher: &Peer, subscribers: &[Peer], tag: u8, n: u16, gap: Duration, expect: u64) -> Vec<u64> {
    publisher.connected().await;
    for s in subscribers {
        s.connected().await;
    }
    until_flowing(publisher, subscribers).await;
    publisher.send_tagged(tag, 0, n, gap).await;
    for s in subscribers {
        s.seen.until("the burst to arrive", ARRIVAL, |seen| seen.tagged(tag) >= expect).await;
    }
    subscribers.iter().map(|s| s.seen.tagged(tag)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_reaches_five_subscribers() {
    let node = node("forward", "{}").await;
    let publisher = peer(&node, "room", "pub", true).await;
    let mut subscribers = Vec::new();
    for i in 0..5 {
        subscribers.push(peer(&node, "room", &format!("sub{i}"), false).await);
    }
    const N: u16 = 1000;
    let most = u64::from(N) * 99 / 100;
    for got in stream_to(&publisher, &subscribers, 1, N, Duration::from_millis(2), most).await {
        assert!(got * 100 >= u64::from(N) * 99, "a subscriber received {got} of {N}");
    }
    let stats = node.sfu.stats();
    assert!(stats.packets_out >= 5 * u64::from(N), "{stats:?}");
}

/// With more shards than the machine may have cores, the kernel gives
/// some peers' datagrams to a socket whose shard does not own their room:
/// they are handed over, and everyone hears the publisher. (All eight
/// landing on the room's shard by chance: 1 in 4^8.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_that_land_on_another_shard_are_handed_over() {
    let mut options = SfuOptions::new("127.0.0.1".parse().expect("ip"));
    options.media_threads = 4;
    let node = node_with("forward", "{}", options).await;
    let publisher = peer(&node, "room", "pub", true).await;
    let mut subscribers = Vec::new();
    for i in 0..7 {
        subscribers.push(peer(&node, "room", &format!("s{i}"), false).await);
    }
    let received = stream_to(&publisher, &subscribers, 3, 200, Duration::from_millis(2), 190).await;
    assert!(received.iter().all(|&n| n >= 190), "{received:?}");
    let stats = node.sfu.stats();
    assert!(stats.handed_over > 0, "no datagram was handed over: {stats:?}");
}

/// The forwarding plugin panics on every 500th packet: the standby takes
/// over, the packet it trapped on is lost (quarantined), and every
/// subscriber keeps receiving; loss is bounded by one batch per trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_plugin_trap_drops_no_participant() {
    faulty_forwarding_costs_a_batch_per_fault(r#"{"panic-every": 500}"#, 3).await;
}

/// A forwarding plugin that hangs (every 500th packet, until its deadline,
/// 100 ms here, ends it) runs on the media shards' own threads: each hang
/// stalls a shard for the deadline and loses the batch it was deciding,
/// and media goes on around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_plugin_that_hangs_costs_its_deadline_and_a_batch() {
    faulty_forwarding_costs_a_batch_per_fault(r#"{"panic-every": 500, "hang": true}"#, 3).await;
}

/// 1800 packets through `stock:faulty-forward` with `config` (failing
/// every 500th packet it sees): at least `faults` faults, each losing at
/// most one batch, nobody dropped. The plugin counts only the packets it
/// sees (not those dropped while no instance served), so its next fault
/// may come up to a few batches late: the 50-packet burst at the end stays
/// well clear of its 2000th.
async fn faulty_forwarding_costs_a_batch_per_fault(config: &str, faults: u64) {
    let node = node("faulty-forward", config).await;
    let publisher = peer(&node, "room", "pub", true).await;
    let subscribers = vec![peer(&node, "room", "a", false).await, peer(&node, "room", "b", false).await];
    const N: u16 = 1800;
    let least = u64::from(N) - 4 * router::MAX_BATCH as u64;
    publisher.connected().await;
    for s in &subscribers {
        s.connected().await;
    }
    until_flowing(&publisher, &subscribers).await;
    let before = node.sfu.stats().packets_in;
    publisher.send_tagged(1, 0, N, Duration::from_millis(1)).await;
    // Every packet decided and an instance serving: the burst below meets
    // a settled stage.
    let decided = || node.sfu.stats().packets_in >= before + u64::from(N);
    crate::edge_nodes::until("every packet decided", ARRIVAL, decided).await;
    let serving = || node.forward.status.lock().is_ok_and(|s| s.state == medianode::runtime::StageState::Serving);
    crate::edge_nodes::until("the stage serving again", ARRIVAL, serving).await;
    for s in &subscribers {
        s.seen.until("the stream to arrive", ARRIVAL, |seen| seen.tagged(1) >= least).await;
    }
    let received: Vec<u64> = subscribers.iter().map(|s| s.seen.tagged(1)).collect();
    let seen = node.forward.metrics.faults.load(Ordering::Relaxed);
    assert!(seen >= faults, "the plugin failed {seen} times");
    for got in received {
        let lost = u64::from(N).saturating_sub(got);
        assert!(lost <= seen * router::MAX_BATCH as u64, "lost {lost} of {N} over {seen} faults");
        assert!(got > 0);
    }
    // Nobody was dropped: one more burst reaches both.
    publisher.send_tagged(2, 5000, 50, Duration::from_millis(2)).await;
    for s in &subscribers {
        s.seen.until("the burst after the faults", ARRIVAL, |seen| seen.tagged(2) >= 45).await;
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
    // The node tells the subscriber that `pub` left.
    let left = |seen: &Seen| {
        seen.messages.lock().expect("lock").iter().any(|m| m["type"] == "presence" && m["user"] == "pub" && m["state"] == "left")
    };
    subscriber.seen.until("`pub` to leave", ARRIVAL, left).await;

    let again = peer(&node, "room", "pub", true).await;
    again.connected().await;
    let before = subscriber.received();
    until_flowing_more(&again, &subscriber, before).await;
    again.send_tagged(3, 1000, 300, Duration::from_millis(2)).await;
    subscriber.seen.until("the burst after the rejoin", ARRIVAL, |seen| seen.tagged(3) >= 297).await;
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
    let (freeze_tx, mut freeze_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let subscriber = peer_at(addr, "room", "sub", false).await;
            subscriber.connected().await;
            let _ = ready_tx.send(subscriber.seen.clone());
            // Runs the subscriber until told to freeze, then blocks this
            // runtime's only thread: no ICE, no DTLS, no reads.
            while let Some(pause) = freeze_rx.recv().await {
                std::thread::sleep(pause);
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
    publisher.send_tagged(4, 4000, 300, Duration::from_millis(5)).await;
    seen.until("media to resume after the ICE restart", ARRIVAL, |seen| seen.tagged(4) >= 270).await;

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

/// A subscriber's keyframe request (PLI) for a forwarded video track
/// reaches the publisher as a PLI for its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_are_relayed_to_the_publisher() {
    let node = node("forward", "{}").await;
    let publisher = peer_at_with(node.server.addr, "room", "pub", true, true).await;
    let subscriber = peer(&node, "room", "sub", false).await;
    publisher.connected().await;
    subscriber.connected().await;
    let (video, video_ssrc) = publisher.video.clone().expect("publishes video");
    // Video flows, so the subscriber has the track.
    let mut sequence = 0u16;
    let mut video_track = None;
    for _ in 0..200 {
        let header =
            rtc::rtp::header::Header { version: 2, payload_type: 96, sequence_number: sequence, ssrc: video_ssrc, ..Default::default() };
        let _ = webrtc::media_stream::track_local::TrackLocal::write_rtp(
            &*video,
            rtc::rtp::Packet { header, payload: vec![0x10, 0, 0, 0].into() },
        )
        .await;
        sequence = sequence.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let tracks = subscriber.seen.remote_tracks.lock().expect("lock").clone();
        for track in tracks {
            if track.kind().await == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video {
                video_track = Some(track);
            }
        }
        if video_track.is_some() {
            break;
        }
    }
    let video_track = video_track.expect("the subscriber receives the video track");
    // The node asks for a keyframe when a subscriber joins; the subscriber's
    // own request comes after that one.
    let asked = |seen: &Seen| seen.keyframe_requests.load(Ordering::Relaxed) >= 1;
    publisher.seen.until("the join's keyframe request", ARRIVAL, asked).await;
    let before = publisher.seen.keyframe_requests.load(Ordering::Relaxed);
    let ssrc = *video_track.ssrcs().await.first().expect("an ssrc");
    // Requests closer than `feedback::MIN_INTERVAL` to the last one are
    // merged, so the subscriber asks until one gets through, as a decoder
    // waiting for a keyframe would.
    let relayed = |seen: &Seen| seen.keyframe_requests.load(Ordering::Relaxed) > before;
    for _ in 0..50 {
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
        video_track.write_rtcp(vec![Box::new(pli)]).await.expect("PLI sent");
        if publisher.seen.holds_within(Duration::from_millis(200), relayed).await {
            return;
        }
    }
    panic!("the publisher got no keyframe request (before: {before})");
}

/// Audio levels (RFC 6464) from publishers make an `active-speaker`
/// event: the one talking, not the one silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_levels_name_the_active_speaker() {
    let node = node("forward", "{}").await;
    let talker = peer(&node, "room", "talker", true).await;
    let quiet = peer(&node, "room", "quiet", true).await;
    let listener = peer(&node, "room", "listener", false).await;
    for p in [&talker, &quiet, &listener] {
        p.connected().await;
    }
    for i in 0..150u16 {
        talker.send_level(i, 25).await;
        quiet.send_level(i, 127).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let heard = listener.seen.messages.lock().expect("lock").iter().find(|m| m["type"] == "active-speaker").cloned();
        if let Some(event) = heard {
            assert_eq!(event["user"], "talker", "{event}");
            return;
        }
    }
    panic!("no active-speaker event in 3 s");
}

/// The seed's SFU crashed on one bad message. Here every malformed media
/// message gets an error reply and the connection, the room and the node
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_messages_get_error_replies() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let node = node("forward", "{}").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.server.addr)).await.expect("connects");
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> serde_json::Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a reply");
            if let Some(Ok(Message::Text(text))) = message {
                return serde_json::from_str(&text).expect("JSON");
            }
        }
    };
    let say = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, v: serde_json::Value| {
        ws.send(Message::text(v.to_string())).await.expect("sends");
    };
    say(&mut ws, json!({"type": "offer", "sdp": "v=0"})).await;
    assert_eq!(next(&mut ws).await["code"], "not-joined");
    say(&mut ws, json!({"type": "join", "room": "r", "user": "u"})).await;
    assert_eq!(next(&mut ws).await["type"], "joined");
    for (bad, code) in [
        (json!({"type": "offer", "sdp": "this is not SDP"}), "bad-media"),
        (json!({"type": "offer"}), "bad-media"),
        (json!({"type": "answer", "sdp": "v=0"}), "bad-media"),
        (json!({"type": "candidate", "candidate": {"candidate": "nonsense"}}), "bad-media"),
        (json!({"type": "candidate", "candidate": 7}), "bad-media"),
        (json!({"type": "quality", "video": "ultra"}), "bad-media"),
        (json!({"type": "quality"}), "bad-media"),
    ] {
        say(&mut ws, bad.clone()).await;
        let reply = next(&mut ws).await;
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(code)), "{bad} -> {reply}");
    }
    // Still in the room, and media still works for the next one.
    let other = peer(&node, "r", "other", true).await;
    other.connected().await;
    say(&mut ws, json!({"type": "typing"})).await;
    assert!(node.server.connections.len() == 2);
}

/// The media port is open to anyone: random bytes, binding requests for
/// connections that do not exist and RTP from strangers are counted as
/// unclaimed and dropped, and the room's media goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_media_port_is_counted_and_media_flows_on() {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{BINDING_REQUEST, Message, TransactionId};
    use rtc::stun::textattrs::Username;
    let node = node("forward", "{}").await;
    let publisher = peer(&node, "room", "pub", true).await;
    let subscriber = peer(&node, "room", "sub", false).await;
    publisher.connected().await;
    subscriber.connected().await;
    until_flowing(&publisher, std::slice::from_ref(&subscriber)).await;

    let port = node.sfu.media_address();
    let before = node.sfu.stats().unclaimed;
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut request = Message::new();
    request
        .build(&[Box::<TransactionId>::default(), Box::new(BINDING_REQUEST), Box::new(Username::new(ATTR_USERNAME, "nobody:x".into()))])
        .expect("a binding request");
    let rtp = [0x80u8, 111, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4];
    const JUNK: u64 = 3000;
    for i in 0..JUNK {
        let random: Vec<u8> = (0..(i % 1200) as usize).map(|_| rand::random()).collect();
        let datagram: &[u8] = match i % 3 {
            0 => &random,
            1 => &request.raw,
            _ => &rtp,
        };
        stranger.send_to(datagram, port).expect("send");
    }
    let sent = stream_to(&publisher, std::slice::from_ref(&subscriber), 9, 300, Duration::from_millis(2), 290).await;
    assert!(sent[0] >= 290, "media went on: {sent:?}");
    let unclaimed = node.sfu.stats().unclaimed - before;
    // Loopback loses nothing at this rate; the empty datagram (i = 0) counts too.
    assert!(unclaimed >= JUNK * 9 / 10, "unclaimed {unclaimed} of {JUNK}");
}
