//! The signaling stage's thread: connection events in, actions out.
//!
//! One thread owns the stage's [`Supervisor`] (plugin calls are synchronous
//! and take microseconds) and handles one event per call, so that a trap
//! blames exactly the message that caused it: that message gets an
//! `internal` error reply, the standby instance takes over, and the rooms
//! (kept by the plugin in the host state store) are still there. No socket
//! is closed by a plugin fault.
//!
//! Actions go out through [`Connections`]; seats go to the media side (the
//! SFU), which carries a connection's media only while it has one.

use super::connections::{Connections, Outgoing, error_reply};
use crate::runtime::bindings::{SeatGrant, SignalAction, SignalEvent, SignalMessage, SignalPeer};
use crate::supervisor::{Stopped, Supervisor};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Message bytes queued for the stage before new messages are refused as
/// `busy`. Connects and disconnects always queue: there is one of each per
/// connection, so the connection limit bounds them, and losing one would
/// leave a ghost in a room (or a seat never given).
pub const QUEUE_BYTES: usize = 4 << 20;

/// How long a message may wait for an instance being built.
const BUILD_WAIT: Duration = Duration::from_millis(100);

/// Where seats go: the SFU, when the node carries media.
pub trait SeatSink: Send + Sync + 'static {
    fn seated(&self, connection: u64, room: &str, user: &str);
    fn unseated(&self, connection: u64);
}

/// A handle for sending connection events to the stage thread.
#[derive(Clone)]
pub struct Hub {
    events: mpsc::Sender<SignalEvent>,
    /// Bytes of messages queued and not yet handled.
    queued: Arc<AtomicUsize>,
}

impl Hub {
    /// Starts the stage thread. It ends when every [`Hub`] handle is gone,
    /// or when the stage gives up under the `stop` policy (then `stopped`
    /// gets the reason).
    pub fn start(
        mut stage: Supervisor,
        connections: Connections,
        seats: Option<Arc<dyn SeatSink>>,
        stopped: tokio::sync::oneshot::Sender<Stopped>,
    ) -> std::io::Result<Hub> {
        let (tx, rx) = mpsc::channel::<SignalEvent>();
        let queued = Arc::new(AtomicUsize::new(0));
        let handled = queued.clone();
        std::thread::Builder::new().name(format!("stage-{}", stage.id())).spawn(move || {
            loop {
                let event = match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(event) => event,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        stage.maintain(Instant::now());
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                };
                if let SignalEvent::Message(m) = &event {
                    handled.fetch_sub(m.text.len(), Ordering::Relaxed);
                }
                let mut actions = Vec::new();
                // A stage without an instance may wait this long for one
                // being built; the hub's other work waits with it.
                stage.wait_for_builds_until(Some(Instant::now() + BUILD_WAIT));
                let ran = stage.run(
                    Instant::now(),
                    std::slice::from_ref(&event),
                    &mut actions,
                    |_| Ok(()),
                    |instance, events, out| instance.handle_signals(events).map(|a| out.extend(a)),
                    |event, _, out| {
                        if let SignalEvent::Message(m) = event {
                            let text = error_reply("internal", "the signaling stage failed on this message; it was not applied", None);
                            out.push(SignalAction::Send(SignalMessage { connection: m.connection, text }));
                        }
                    },
                );
                dispatch(actions, &connections, seats.as_deref());
                if let Err(reason) = ran {
                    tracing::error!("{reason}");
                    let _ = stopped.send(reason);
                    return;
                }
                stage.maintain(Instant::now());
            }
        })?;
        Ok(Hub { events: tx, queued })
    }

    /// Never waits (see [`QUEUE_BYTES`]).
    pub fn connected(&self, connection: u64, grant: Option<(String, String)>) {
        let grant = grant.map(|(room, user)| SeatGrant { room, user });
        let _ = self.events.send(SignalEvent::Connected(SignalPeer { connection, grant }));
    }

    /// Queues a message; false when the stage is too far behind. Never waits.
    pub fn message(&self, connection: u64, text: String) -> bool {
        let len = text.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        if self.events.send(SignalEvent::Message(SignalMessage { connection, text })).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn disconnected(&self, connection: u64) {
        let _ = self.events.send(SignalEvent::Disconnected(connection));
    }
}

/// Seats first: a client that hears `joined` sends its offer at once, and
/// the SFU must know the seat by then.
fn dispatch(mut actions: Vec<SignalAction>, connections: &Connections, seats: Option<&dyn SeatSink>) {
    actions.sort_by_key(|a| !matches!(a, SignalAction::Seated(_) | SignalAction::Unseated(_)));
    for action in actions {
        match action {
            SignalAction::Send(m) => {
                connections.send(m.connection, Outgoing::Text(m.text));
            }
            SignalAction::Close(m) => {
                connections.send(m.connection, Outgoing::Close(m.text));
            }
            SignalAction::Seated(seat) => {
                if let Some(seats) = seats {
                    seats.seated(seat.connection, &seat.room, &seat.user);
                }
            }
            SignalAction::Unseated(connection) => {
                if let Some(seats) = seats {
                    seats.unseated(connection);
                }
            }
        }
    }
}
