//! Media between the nodes of a room, agreed over Redis pub/sub.
//!
//! Each node with participants in a room subscribes to the room's channel
//! (`medianode:media:<room>`) and says, there, what it has:
//!
//! - `{"type": "here", "node", "media", "streams": [...]}`: this node has
//!   participants in the room, its media port, and every stream they
//!   publish (all of them, each time: a receiver makes its ghosts match,
//!   so a lost message is repaired by the next). Sent when the room comes
//!   here, whenever its streams change, when another node appears (so the
//!   newcomer learns at once), and every [`REPEAT`] (the repair).
//! - `{"type": "gone", "node"}`: its last participant left.
//! - `{"type": "keyframe", "node", "to", "ssrc"}`: a viewer on `node`
//!   wants a keyframe of `to`'s stream `ssrc`.
//!
//! A `here` from another node makes a pipe to it (this node's publishers
//! go down it) and ghosts for its streams ([`crate::sfu::relay`]): every
//! pair of a room's nodes relays each stream once, whatever the number of
//! viewers at the far end. A node whose heartbeat lapses is forgotten in
//! every room at once.

use super::Cluster;
use crate::sfu::Sfu;
use crate::sfu::relay::{LocalStream, RelayCommand, RoomEvent, WeakSfu};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often each node says again what it has in each room.
pub const REPEAT: Duration = Duration::from_secs(2);

/// The largest relay message read (a room's streams, with room to spare):
/// another node's message is input like any other.
const MAX_MESSAGE: usize = 256 << 10;

/// Streams taken from one node in one room (16 per publisher, as the
/// shards take from a participant, for 32 publishers).
const MAX_STREAMS: usize = 512;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Message {
    Here { node: String, media: SocketAddr, streams: Vec<LocalStream> },
    Gone { node: String },
    Keyframe { node: String, to: String, ssrc: u32 },
}

fn channel(room: &str) -> String {
    format!("medianode:media:{room}")
}

fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("medianode:media:")
}

/// Runs the relay of `sfu`'s rooms until the SFU goes; reconnects to
/// Redis (and says again what it has) when the line is lost.
pub fn start(cluster: Arc<Cluster>, sfu: &Sfu) {
    let redis_url = cluster.redis_url.clone();
    let mut events = sfu.relay_events();
    // Weak: the relay ends when the SFU does (its end of `events` goes).
    let sfu = sfu.downgrade();
    tokio::spawn(async move {
        // Rooms with participants here, and the nodes heard in each.
        let mut rooms: HashMap<String, HashSet<String>> = HashMap::new();
        let mut gone = cluster.gone();
        // Between tries to reach Redis: doubling from 1 s to 30 s (jittered
        // by the node's id, so nodes restarted together spread out).
        let jitter = Duration::from_millis(cluster.node.bytes().map(u64::from).sum::<u64>() % 250);
        let mut retry = Duration::from_secs(1);
        loop {
            let client = match redis::Client::open(redis_url.as_str()) {
                Ok(client) => client,
                Err(e) => return tracing::error!("the relay cannot use {redis_url}: {e}"),
            };
            let Ok(Ok(pubsub)) = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub()).await else {
                tracing::warn!("the relay cannot reach Redis; trying again in {retry:?}");
                tokio::time::sleep(retry + jitter).await;
                retry = (retry * 2).min(Duration::from_secs(30));
                continue;
            };
            retry = Duration::from_secs(1);
            let (mut sink, mut stream) = pubsub.split();
            let relay = Relay { cluster: &cluster, sfu: sfu.clone() };
            for room in rooms.keys() {
                if sink.subscribe(channel(room)).await.is_ok() {
                    relay.here(room).await;
                }
            }
            let mut repeat = tokio::time::interval(REPEAT);
            let lost = loop {
                tokio::select! {
                    event = events.recv() => match event {
                        None => return,
                        Some(RoomEvent::Occupied(room)) => {
                            if sink.subscribe(channel(&room)).await.is_err() {
                                break "cannot subscribe";
                            }
                            rooms.insert(room.clone(), HashSet::new());
                            relay.here(&room).await;
                        }
                        Some(RoomEvent::Vacated(room)) => {
                            let _ = sink.unsubscribe(channel(&room)).await;
                            relay.say(&room, &Message::Gone { node: cluster.node.clone() }).await;
                            for node in rooms.remove(&room).unwrap_or_default() {
                                relay.command(RelayCommand::Forget { room: Some(room.clone()), node });
                            }
                        }
                        Some(RoomEvent::Streams(room)) => {
                            if rooms.contains_key(&room) {
                                relay.here(&room).await;
                            }
                        }
                        Some(RoomEvent::Keyframe { room, node, ssrc }) => {
                            relay.say(&room, &Message::Keyframe { node: cluster.node.clone(), to: node, ssrc }).await;
                        }
                    },
                    message = stream.next() => {
                        let Some(message) = message else { break "the line to Redis was lost" };
                        let Some(room) = room_of(message.get_channel_name()).map(str::to_string) else { continue };
                        let payload = message.get_payload_bytes();
                        if payload.len() > MAX_MESSAGE {
                            continue;
                        }
                        match serde_json::from_slice::<Message>(payload) {
                            Ok(message) => relay.heard(&room, message, &mut rooms).await,
                            Err(e) => tracing::debug!(room, "an unreadable relay message: {e}"),
                        }
                    }
                    dead = gone.recv() => {
                        if let Ok(node) = dead {
                            for nodes in rooms.values_mut() {
                                nodes.remove(&node);
                            }
                            relay.command(RelayCommand::Forget { room: None, node });
                        }
                    }
                    _ = repeat.tick() => {
                        for room in rooms.keys() {
                            relay.here(room).await;
                        }
                    }
                }
            };
            tracing::warn!("relay: {lost}; reconnecting");
        }
    });
}

/// What the relay says and does (it publishes on the cluster's own
/// connection: a subscribed one cannot).
struct Relay<'a> {
    cluster: &'a Arc<Cluster>,
    sfu: WeakSfu,
}

impl Relay<'_> {
    /// Says what this node has in `room`.
    fn command(&self, command: RelayCommand) {
        if let Some(sfu) = self.sfu.upgrade() {
            sfu.relay(command);
        }
    }

    async fn here(&self, room: &str) {
        let Some(sfu) = self.sfu.upgrade() else { return };
        let streams = sfu.local_streams(room).await;
        let media = self.cluster.media_address();
        self.say(room, &Message::Here { node: self.cluster.node.clone(), media, streams }).await;
    }

    async fn say(&self, room: &str, message: &Message) {
        let Ok(text) = serde_json::to_string(message) else { return };
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel(room)).arg(text);
        if let Err(e) = self.cluster.redis::<i64>(&mut publish).await {
            tracing::debug!(room, "relay message not sent: {e}");
        }
    }

    async fn heard(&self, room: &str, message: Message, rooms: &mut HashMap<String, HashSet<String>>) {
        let me = &self.cluster.node;
        let Some(nodes) = rooms.get_mut(room) else { return };
        match message {
            Message::Here { node, media, mut streams } if node != *me => {
                // Another node is input like any other: each of its streams
                // costs a ghost and a track per subscriber here.
                if streams.len() > MAX_STREAMS {
                    tracing::warn!(
                        room,
                        node,
                        streams = streams.len(),
                        "a node announced more streams than a room takes; the rest ignored"
                    );
                    streams.truncate(MAX_STREAMS);
                }
                if nodes.insert(node.clone()) {
                    // A newcomer: it hears what we have now, not in 2 s.
                    self.command(RelayCommand::Pipe { room: room.to_string(), node: node.clone(), remote: media });
                    self.here(room).await;
                }
                self.command(RelayCommand::Ghosts { room: room.to_string(), node, remote: media, streams });
            }
            Message::Gone { node } if node != *me => {
                if nodes.remove(&node) {
                    self.command(RelayCommand::Forget { room: Some(room.to_string()), node });
                }
            }
            Message::Keyframe { to, ssrc, .. } if to == *me => self.command(RelayCommand::Keyframe { ssrc }),
            _ => {}
        }
    }
}
