//! Who can be sent to: one outbox per open connection, bounded in bytes.
//!
//! The signaling stage and the SFU answer connections through this
//! registry. What a plugin makes the node send is budgeted like everything
//! else a plugin reaches: a single message over [`MAX_OUTGOING`] bytes is
//! not sent (counted in `oversized`, and logged); and an outbox holding
//! more than [`OUTBOX_BYTES`] means its peer is not reading: rather than
//! buffer without bound, the connection is dropped from the registry, which
//! closes it (`slow-consumer`, counted in `slow_closed`). A peer that reads
//! keeps up with far more than one sender can make it receive (senders are
//! rate-limited), so a storm costs its senders, not the readers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// The largest message the node sends, in bytes.
pub const MAX_OUTGOING: usize = 1 << 20;

/// Bytes queued for one connection before it counts as not reading. Each
/// message also counts [`MESSAGE_OVERHEAD`], so that a flood of tiny ones
/// is bounded too.
pub const OUTBOX_BYTES: usize = 4 << 20;

/// What a queued message costs beyond its text.
pub const MESSAGE_OVERHEAD: usize = 64;

/// What a connection's task sends to its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    /// Close the connection with this reason.
    Close(String),
    /// Close it as "going away" (1001): the node is draining; the peer
    /// should reconnect, to this node's successor or another.
    GoAway(String),
    /// Close it as "service restart" (1012): this node stays, but the
    /// connection's room moved (its home in a cluster went); the peer
    /// should reconnect here and join again.
    Rejoin(String),
}

impl Outgoing {
    fn cost(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                Outgoing::Text(text) | Outgoing::Close(text) | Outgoing::GoAway(text) | Outgoing::Rejoin(text) => text.len(),
            }
    }
}

/// What was not sent.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Messages over [`MAX_OUTGOING`], not sent.
    pub oversized: AtomicU64,
    /// Connections closed because their outbox was full.
    pub slow_closed: AtomicU64,
}

struct Entry {
    tx: mpsc::UnboundedSender<Outgoing>,
    queued: Arc<AtomicUsize>,
}

/// A connection's end of its outbox.
pub struct Outbox {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// The next message; `None` once the registry dropped the connection.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let message = self.rx.recv().await?;
        self.queued.fetch_sub(message.cost(), Ordering::Relaxed);
        Some(message)
    }
}

/// The open connections' outboxes, shared by everything that answers them.
#[derive(Clone, Default)]
pub struct Connections {
    outboxes: Arc<Mutex<HashMap<u64, Entry>>>,
    pub counters: Arc<ConnectionCounters>,
}

impl Connections {
    /// Registers a connection; returns the receiving end of its outbox.
    pub fn open(&self, connection: u64) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.lock().insert(connection, Entry { tx, queued: queued.clone() });
        Outbox { rx, queued }
    }

    pub fn remove(&self, connection: u64) {
        self.lock().remove(&connection);
    }

    /// Queues a message; false if the connection is gone or the message is
    /// too big. A full outbox drops the connection (its task then closes
    /// the socket).
    pub fn send(&self, connection: u64, message: Outgoing) -> bool {
        let cost = message.cost();
        if cost - MESSAGE_OVERHEAD > MAX_OUTGOING {
            self.counters.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(connection, bytes = cost - MESSAGE_OVERHEAD, "a message over {MAX_OUTGOING} bytes was not sent");
            return false;
        }
        let mut outboxes = self.lock();
        let Some(entry) = outboxes.get(&connection) else { return false };
        if entry.queued.fetch_add(cost, Ordering::Relaxed) + cost > OUTBOX_BYTES {
            tracing::warn!(connection, "peer is not reading its messages; closing it");
            self.counters.slow_closed.fetch_add(1, Ordering::Relaxed);
            outboxes.remove(&connection);
            return false;
        }
        if entry.tx.send(message).is_err() {
            outboxes.remove(&connection);
            return false;
        }
        true
    }

    /// Closes every connection with `reason` (shutdown, or a test cutting
    /// the line).
    pub fn close_all(&self, reason: &str) {
        self.end_all(|| Outgoing::Close(reason.to_string()));
    }

    /// Closes every connection as going away (1001), with `reason`.
    pub fn go_away_all(&self, reason: &str) {
        self.end_all(|| Outgoing::GoAway(reason.to_string()));
    }

    fn end_all(&self, last: impl Fn() -> Outgoing) {
        let outboxes: Vec<_> = self.lock().drain().collect();
        for (_, entry) in outboxes {
            let _ = entry.tx.send(last());
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // Nothing that runs under this lock can panic, but a poisoned map is
    // still a good map.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.outboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The JSON of an error reply: `{"type": "error", "code", "message", "ref"}`.
pub fn error_reply(code: &str, message: &str, reference: Option<&str>) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message, "ref": reference}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_does_not_read_is_closed_at_its_byte_budget_and_big_messages_are_not_sent() {
        let connections = Connections::default();
        let _outbox = connections.open(1);
        assert!(!connections.send(1, Outgoing::Text("x".repeat(MAX_OUTGOING + 1))));
        assert_eq!(connections.counters.oversized.load(Ordering::Relaxed), 1);
        let message = "y".repeat(64 << 10);
        let fits = OUTBOX_BYTES / (message.len() + MESSAGE_OVERHEAD);
        for _ in 0..fits {
            assert!(connections.send(1, Outgoing::Text(message.clone())));
        }
        assert!(!connections.send(1, Outgoing::Text(message)), "over the budget");
        assert_eq!(connections.counters.slow_closed.load(Ordering::Relaxed), 1);
        assert!(connections.is_empty(), "dropped from the registry");
    }
}
