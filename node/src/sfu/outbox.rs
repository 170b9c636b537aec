//! One forwarded stream's queue toward one subscriber, bounded in bytes.
//!
//! The router never waits on a subscriber: it pushes each packet into the
//! outbox of that subscriber's copy of the stream and moves on. A writer
//! task per outbox hands the packets to the subscriber's peer connection,
//! which may make it wait (its driver's queue is webrtc-rs's back-pressure).
//! A subscriber that stops taking packets thus fills only its own outboxes:
//! past [`OUTBOX_BYTES`], the oldest packets are dropped and counted, and
//! for video a keyframe is asked of the publisher, so that what follows the
//! gap decodes. Nobody else waits and nothing grows.

use rtc::rtp;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Bytes queued toward one subscriber for one stream: half a second of
/// 4 Mbit/s video.
pub const OUTBOX_BYTES: usize = 256 << 10;

/// How often a subscriber's drops may ask a publisher for a keyframe.
const KEYFRAME_EVERY: Duration = Duration::from_secs(1);

/// Counters every outbox adds to (the router's stats read them).
#[derive(Debug, Default)]
pub struct OutboxCounters {
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
    /// Packets dropped because a subscriber's outbox was full.
    pub dropped: AtomicU64,
    /// Bytes queued in every outbox now.
    pub queued_bytes: AtomicU64,
}

#[derive(Default)]
struct Queue {
    packets: VecDeque<rtp::Packet>,
    bytes: usize,
    closed: bool,
    /// When a full outbox last asked for a keyframe.
    keyframe_asked: Option<Instant>,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    counters: Arc<OutboxCounters>,
}

impl Drop for Shared {
    /// What no one will write any more is no longer queued.
    fn drop(&mut self) {
        let left = crate::runtime::lock(&self.queue).bytes as u64;
        self.counters.queued_bytes.fetch_sub(left, Ordering::Relaxed);
    }
}

/// The router's end of an outbox. Dropping it ends the writer task once it
/// has written what is queued.
pub struct Outbox {
    shared: Arc<Shared>,
    counters: Arc<OutboxCounters>,
}

/// The writer task's end.
pub struct OutboxReader {
    shared: Arc<Shared>,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Older packets were dropped to make room; ask for a keyframe now.
    DroppedAskKeyframe,
    /// Older packets were dropped to make room.
    Dropped,
}

impl Outbox {
    pub fn new(counters: Arc<OutboxCounters>) -> (Outbox, OutboxReader) {
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), ready: Notify::new(), counters: counters.clone() });
        (Outbox { shared: shared.clone(), counters }, OutboxReader { shared })
    }

    /// Queues `packet`, dropping the oldest ones while it would not fit.
    /// Never waits.
    pub fn push(&self, packet: rtp::Packet) -> Pushed {
        let size = packet_bytes(&packet);
        let mut dropped = 0;
        let mut dropped_bytes = 0;
        let ask = {
            let mut queue = crate::runtime::lock(&self.shared.queue);
            while queue.bytes + size > OUTBOX_BYTES {
                let Some(old) = queue.packets.pop_front() else { break };
                queue.bytes -= packet_bytes(&old);
                dropped_bytes += packet_bytes(&old);
                dropped += 1;
            }
            queue.bytes += size;
            queue.packets.push_back(packet);
            let now = Instant::now();
            let ask = dropped > 0 && queue.keyframe_asked.is_none_or(|at| now.duration_since(at) >= KEYFRAME_EVERY);
            if ask {
                queue.keyframe_asked = Some(now);
            }
            ask
        };
        self.shared.ready.notify_one();
        self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.counters.queued_bytes.fetch_add(size as u64, Ordering::Relaxed);
        self.counters.queued_bytes.fetch_sub(dropped_bytes as u64, Ordering::Relaxed);
        match (dropped, ask) {
            (0, _) => Pushed::Queued,
            (_, true) => Pushed::DroppedAskKeyframe,
            (_, false) => Pushed::Dropped,
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        crate::runtime::lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_one();
    }
}

impl OutboxReader {
    /// The next packet, or `None` once the outbox is closed and empty.
    pub async fn next(&self) -> Option<rtp::Packet> {
        loop {
            let notified = self.shared.ready.notified();
            {
                let mut queue = crate::runtime::lock(&self.shared.queue);
                if let Some(packet) = queue.packets.pop_front() {
                    queue.bytes -= packet_bytes(&packet);
                    self.shared.counters.queued_bytes.fetch_sub(packet_bytes(&packet) as u64, Ordering::Relaxed);
                    return Some(packet);
                }
                if queue.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// What a packet costs in an outbox: its payload and a header.
fn packet_bytes(packet: &rtp::Packet) -> usize {
    packet.payload.len() + 12
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sequence: u16, size: usize) -> rtp::Packet {
        rtp::Packet { header: rtp::header::Header { sequence_number: sequence, ..Default::default() }, payload: vec![0; size].into() }
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_packets_and_asks_for_a_keyframe_once() {
        let counters = Arc::new(OutboxCounters::default());
        let (outbox, reader) = Outbox::new(counters.clone());
        let per = OUTBOX_BYTES / 1212;
        for i in 0..per {
            assert_eq!(outbox.push(packet(i as u16, 1200)), Pushed::Queued);
        }
        assert_eq!(outbox.push(packet(per as u16, 1200)), Pushed::DroppedAskKeyframe);
        assert_eq!(outbox.push(packet(per as u16 + 1, 1200)), Pushed::Dropped, "once a second at most");
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let first = rt.block_on(reader.next()).unwrap();
        assert_eq!(first.header.sequence_number, 2, "the oldest went first");
        drop(outbox);
        let rest = rt.block_on(async {
            let mut n = 0;
            while reader.next().await.is_some() {
                n += 1;
            }
            n
        });
        assert_eq!(rest, per - 1, "what was queued is still written after the close");
    }
}
