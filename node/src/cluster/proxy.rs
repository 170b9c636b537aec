//! A client connection's signaling, carried to its room's home node.
//!
//! The client's node opens a WebSocket of its own to the home's `/ws`
//! (`?via=<node>`, with the client's token if it gave one) and passes the
//! client's signaling messages through it, and the home's back. To the
//! home's signaling stage the client is one more connection. The home's
//! host tells the proxy the seat its stage gave (`cluster-seat`,
//! `cluster-unseat`, never shown to the client), and the client's node
//! seats the connection in its own SFU: media stays where the client is.
//!
//! When the home goes (its socket closes, or its heartbeat lapses), the
//! client is told to reconnect to this node (a 1012 close, "service
//! restart"): its join then finds the room a new home, where the room's
//! signaling, and its MLS group, start again.

use super::Cluster;
use crate::signaling::connections::{Connections, Outgoing};
use crate::signaling::hub::SeatSink;
use crate::signaling::placement::Link;
use crate::signaling::server::{SEAT, UNSEAT};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// Bytes of client messages waiting for the home's socket before more are
/// refused as `busy`.
pub const QUEUE_BYTES: usize = 1 << 20;

/// The client's end of one proxied connection. Dropping it closes the
/// socket to the home (the home's stage then sees the client leave).
pub struct Proxy {
    pub room: String,
    pub home: String,
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<AtomicUsize>,
}

impl Proxy {
    /// Connects to the home at `url` for client `connection` of this node.
    pub async fn open(
        cluster: &Arc<Cluster>,
        (home, url): (&str, &str),
        room: &str,
        token: Option<&str>,
        connection: u64,
        connections: Connections,
        seats: Option<Arc<dyn SeatSink>>,
    ) -> Result<Proxy, String> {
        let mut target = format!("{url}?via={}", cluster.node);
        if let Some(token) = token {
            target.push_str("&token=");
            target.push_str(&query_escape(token));
        }
        let connect = tokio::time::timeout(std::time::Duration::from_secs(2), connect_async(target.as_str()));
        let (mut socket, _) = match connect.await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return Err(format!("cannot reach the room's home `{home}` at {url}: {e}")),
            Err(_) => return Err(format!("the room's home `{home}` at {url} did not answer within 2 s")),
        };
        cluster.counters.proxied.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let queued = Arc::new(AtomicUsize::new(0));
        let sent = queued.clone();
        let mut gone = cluster.gone();
        let cluster = cluster.clone();
        let home_id = home.to_string();
        tokio::spawn(async move {
            let mut seated = false;
            let why = loop {
                tokio::select! {
                    outgoing = rx.recv() => match outgoing {
                        Some(text) => {
                            sent.fetch_sub(text.len(), Ordering::Relaxed);
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                break Some("the room's home node closed the line");
                            }
                        }
                        // The client went: close the home's end too.
                        None => {
                            let _ = socket.close(None).await;
                            break None;
                        }
                    },
                    incoming = socket.next() => match incoming {
                        Some(Ok(Message::Text(text))) => match host_message(&text) {
                            Some(HostMessage::Seat { room, user }) => {
                                seated = true;
                                cluster.media_seated(connection);
                                if let Some(seats) = &seats {
                                    seats.seated(connection, &room, &user);
                                }
                            }
                            Some(HostMessage::Unseat) => {
                                seated = false;
                                cluster.media_unseated(connection);
                                if let Some(seats) = &seats {
                                    seats.unseated(connection);
                                }
                            }
                            None => {
                                connections.send(connection, Outgoing::Text(text.to_string()));
                            }
                        },
                        Some(Ok(Message::Close(_)) | Err(_)) | None => break Some("the room's home node went away"),
                        Some(Ok(_)) => {}
                    },
                    dead = gone.recv() => {
                        if dead.is_ok_and(|node| node == home_id) {
                            break Some("the room's home node stopped answering");
                        }
                    }
                }
            };
            if seated {
                cluster.media_unseated(connection);
                if let Some(seats) = &seats {
                    seats.unseated(connection);
                }
            }
            if let Some(why) = why {
                tracing::info!(connection, home = %home_id, "{why}; the client is told to reconnect");
                connections.send(connection, Outgoing::Rejoin(format!("{why}; reconnect here")));
            }
        });
        Ok(Proxy { room: room.to_string(), home: home.to_string(), tx, queued })
    }
}

impl Link for Proxy {
    fn send(&self, text: String) -> bool {
        let len = text.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        self.tx.send(text).is_ok()
    }

    fn room(&self) -> &str {
        &self.room
    }

    fn home(&self) -> &str {
        &self.home
    }
}

enum HostMessage {
    Seat { room: String, user: String },
    Unseat,
}

/// A `cluster-seat` or `cluster-unseat` from the home's host; `None` for
/// everything else (the stage's messages, for the client).
fn host_message(text: &str) -> Option<HostMessage> {
    if !text.contains("\"cluster-") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    match value.get("type")?.as_str()? {
        SEAT => Some(HostMessage::Seat { room: value.get("room")?.as_str()?.to_string(), user: value.get("user")?.as_str()?.to_string() }),
        UNSEAT => Some(HostMessage::Unseat),
        _ => None,
    }
}

/// `text` as a query value: what is not unreserved, percent-encoded (the
/// client's token arrives decoded).
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_goes_on_as_the_client_sent_it() {
        assert_eq!(super::query_escape("abc.DEF-1_~"), "abc.DEF-1_~");
        assert_eq!(super::query_escape("a+b/c=&d é"), "a%2Bb%2Fc%3D%26d%20%C3%A9");
    }
}
