//! Who can be sent to: one bounded outbox per open connection.
//!
//! The signaling stage and the SFU answer connections through this
//! registry. An outbox that is full means the peer is not reading; rather
//! than buffer without bound, the connection is dropped from the registry,
//! which closes it (`slow-consumer`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// Messages queued for one connection before it counts as not reading.
pub const OUTBOX: usize = 256;

/// What a connection's task sends to its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    /// Close the connection with this reason.
    Close(String),
}

/// The open connections' outboxes, shared by everything that answers them.
#[derive(Clone, Default)]
pub struct Connections {
    outboxes: Arc<Mutex<HashMap<u64, mpsc::Sender<Outgoing>>>>,
}

impl Connections {
    /// Registers a connection; returns the receiving end of its outbox.
    pub fn open(&self, connection: u64) -> mpsc::Receiver<Outgoing> {
        let (tx, rx) = mpsc::channel(OUTBOX);
        self.lock().insert(connection, tx);
        rx
    }

    pub fn remove(&self, connection: u64) {
        self.lock().remove(&connection);
    }

    /// Queues a message; false if the connection is gone. A full outbox
    /// drops the connection (its task then closes the socket).
    pub fn send(&self, connection: u64, message: Outgoing) -> bool {
        let mut outboxes = self.lock();
        let Some(outbox) = outboxes.get(&connection) else { return false };
        match outbox.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(connection, "peer is not reading its messages; closing it");
                outboxes.remove(&connection);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                outboxes.remove(&connection);
                false
            }
        }
    }

    /// Closes every connection with `reason` (shutdown, or a test cutting
    /// the line).
    pub fn close_all(&self, reason: &str) {
        let outboxes: Vec<_> = self.lock().drain().collect();
        for (_, outbox) in outboxes {
            let _ = outbox.try_send(Outgoing::Close(reason.to_string()));
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Outgoing>>> {
        self.outboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The JSON of an error reply: `{"type": "error", "code", "message", "ref"}`.
pub fn error_reply(code: &str, message: &str, reference: Option<&str>) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message, "ref": reference}).to_string()
}
