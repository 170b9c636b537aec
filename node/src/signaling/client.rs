//! The signaling client of a headless participant (an edge node): one
//! WebSocket to a node, kept up.
//!
//! - It joins its room on every connect, so a reconnect puts it back where
//!   it was (the room's state lives on the node).
//! - It checks the line with pings ([`Heartbeat`]: a ping after 10 s of
//!   silence, the line declared dead after 30 s), because a half-open TCP
//!   connection otherwise looks alive forever.
//! - Given several nodes (a cluster's), it moves on to the next one
//!   whenever a line fails or cannot be made.
//! - It reconnects with the supervisor's [`Backoff`] (the first retry at
//!   once, then base 1 s doubling to a 30 s cap, with jitter; reset after a
//!   healthy minute; more than 10 failures in 5 minutes gives up), so a
//!   node that is down is not hammered.
//!
//! What happens is reported as [`ClientEvent`]s, the messages from the node
//! among them; [`Client::send`] queues a message (dropped while the line is
//! down: everything a room needs is re-established by the join).

use super::keepalive::{Lapse, keep_alive};
use futures_util::{SinkExt, StreamExt};
use medianode_core::signaling::heartbeat::{self, Heartbeat};
use medianode_core::supervision::backoff::{Backoff, Decision, RestartConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://host:port/ws` (with `?token=` when the node wants one): the
    /// nodes of a cluster, any of which serves the room. A failed line
    /// moves the next attempt on to the next one.
    pub servers: Vec<String>,
    pub room: String,
    pub user: String,
    pub reconnect: RestartConfig,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Joins as a member of the room's MLS group (`e2ee` in `join`): set
    /// by [`crate::edge::Edge::start`] when the node has an E2EE stage.
    pub e2ee: bool,
}

impl ClientOptions {
    pub fn new(url: &str, room: &str, user: &str) -> ClientOptions {
        ClientOptions {
            servers: vec![url.to_string()],
            room: room.to_string(),
            user: user.to_string(),
            reconnect: RestartConfig {
                max_restarts: 10,
                window: Duration::from_secs(300),
                // The short window is the client's limit.
                long_max_restarts: u32::MAX,
                long_window: Duration::from_secs(300),
                backoff_base: Duration::from_secs(1),
                backoff_cap: Duration::from_secs(30),
                healthy_after: Duration::from_secs(60),
                jitter: 0.2,
                standby: false,
            },
            heartbeat_interval: heartbeat::INTERVAL,
            heartbeat_timeout: heartbeat::TIMEOUT,
            e2ee: false,
        }
    }
}

/// What the client saw.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Connected to `url` (and the join sent); `attempt` counts from 1.
    Connected { attempt: u32, url: String },
    /// A message from the node.
    Message(Value),
    /// The line is down; the next attempt comes after `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// Too many failures: the client stopped.
    GaveUp { failures: usize },
}

/// A running client. Dropping it stops the connection.
pub struct Client {
    outgoing: mpsc::UnboundedSender<Value>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    pub fn start(options: ClientOptions) -> Client {
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(options, outgoing_rx, events_tx));
        Client { outgoing, events, task }
    }

    /// Queues a message for the node.
    pub fn send(&self, message: Value) {
        let _ = self.outgoing.send(message);
    }

    /// The next event; `None` once the client has stopped.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(options: ClientOptions, mut outgoing: mpsc::UnboundedReceiver<Value>, events: mpsc::UnboundedSender<ClientEvent>) {
    let mut backoff = Backoff::new(options.reconnect.clone(), rand::random());
    let mut attempt = 0;
    let mut server = 0;
    loop {
        attempt += 1;
        let Some(url) = options.servers.get(server % options.servers.len().max(1)) else {
            let _ = events.send(ClientEvent::GaveUp { failures: 0 });
            return;
        };
        let (reason, stay) = match connect_async(url.as_str()).await {
            Err(e) => (format!("cannot connect to {url}: {e}"), false),
            Ok((ws, _)) => {
                backoff.on_started(Instant::now().into_std());
                let _ = events.send(ClientEvent::Connected { attempt, url: url.clone() });
                session(&options, ws, &mut outgoing, &events).await
            }
        };
        // The node that failed may be gone for good: the next one next,
        // unless it asked to be come back to (1012: its room moved).
        if !stay {
            server += 1;
        }
        let now = Instant::now();
        match backoff.on_failure(now.into_std(), true) {
            Decision::Restart { at, .. } => {
                let retry_in = at.saturating_duration_since(now.into_std());
                let _ = events.send(ClientEvent::Disconnected { reason, retry_in });
                // Messages queued while down would be stale by the rejoin.
                tokio::time::sleep(retry_in).await;
                while outgoing.try_recv().is_ok() {}
            }
            Decision::GiveUp { failures } => {
                let _ = events.send(ClientEvent::GaveUp { failures });
                return;
            }
        }
    }
}

/// Refusals of a join that go away by themselves: the node has not yet
/// seen this client's old line go, or (in a cluster) the room's node is
/// being replaced.
fn retried(code: &Value) -> bool {
    code == "user-taken" || code == "cluster-unavailable"
}

/// A refused join ([`retried`]) goes again after this (times the tries)...
const REJOIN_AFTER: Duration = Duration::from_millis(100);
/// ...this many times: the node sees a line that died within a heartbeat
/// timeout at most, and a real second client of the same user is not
/// displaced by trying forever.
const MAX_REJOINS: u32 = 8;

/// One connection, until it ends; returns why, and whether the node asked
/// to be reconnected to (a 1012 close).
async fn session(
    options: &ClientOptions,
    mut ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    outgoing: &mut mpsc::UnboundedReceiver<Value>,
    events: &mpsc::UnboundedSender<ClientEvent>,
) -> (String, bool) {
    let join = json!({"type": "join", "room": options.room, "user": options.user, "e2ee": options.e2ee});
    if let Err(e) = ws.send(Message::text(join.to_string())).await {
        return (format!("cannot join: {e}"), false);
    }
    let mut heartbeat = Heartbeat::new(Instant::now().into_std(), options.heartbeat_interval, options.heartbeat_timeout);
    // A join refused for a moment ([`retried`]) goes again, a little later.
    let mut rejoin: Option<Instant> = None;
    let mut rejoins = 0u32;
    loop {
        let wake = match keep_alive(&mut heartbeat, &mut ws).await {
            Ok(wake) => wake,
            Err(Lapse::Dead) => return ("no answer to pings".into(), false),
            Err(Lapse::SendFailed) => return ("send failed".into(), false),
        };
        let wake = rejoin.map_or(wake, |at| at.min(wake));
        if rejoin.is_some_and(|at| at <= Instant::now()) {
            rejoin = None;
            if let Err(e) = ws.send(Message::text(join.to_string())).await {
                return (format!("cannot join: {e}"), false);
            }
        }
        tokio::select! {
            incoming = ws.next() => match incoming {
                None => return ("closed".into(), false),
                Some(Err(e)) => return (format!("socket error: {e}"), false),
                Some(Ok(message)) => {
                    heartbeat.heard(Instant::now().into_std());
                    match message {
                        Message::Text(text) => {
                            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                                if value["type"] == "error" && retried(&value["code"]) && value["ref"] == "join" && rejoins < MAX_REJOINS {
                                    rejoins += 1;
                                    rejoin = Some(Instant::now() + REJOIN_AFTER * rejoins);
                                }
                                let _ = events.send(ClientEvent::Message(value));
                            }
                        }
                        Message::Close(frame) => {
                            let stay = frame.as_ref().is_some_and(|f| f.code == CloseCode::Restart);
                            return (frame.map_or("closed".into(), |f| format!("closed: {}", f.reason)), stay);
                        }
                        _ => {}
                    }
                }
            },
            message = outgoing.recv() => match message {
                Some(message) => {
                    if ws.send(Message::text(message.to_string())).await.is_err() {
                        return ("send failed".into(), false);
                    }
                }
                None => return ("client dropped".into(), false),
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
