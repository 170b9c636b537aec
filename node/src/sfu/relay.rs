//! The SFU's side of relaying a room between nodes (a cluster's; the
//! protocol between nodes is [`crate::cluster::relay`]'s).
//!
//! For each other node that has participants in a room, the room here has
//! a **pipe** to that node's media port (the shards send this node's
//! publishers' streams down it, each as its `relay_ssrc`), and a **ghost**
//! for each publisher there: a participant without a peer connection whose
//! streams arrive on the pipe from its node and go to the subscribers here
//! as anyone's do. Pipes and ghosts come and go by [`RelayCommand`]s; what
//! the relay must tell the other nodes comes out as [`RoomEvent`]s.

use super::shard::joined;
use super::{Participant, Published, Sfu};
use crate::runtime::bindings::{MediaKind, RouteChange};
use medianode_core::sfu::negotiation::Negotiation;
use rtc::peer_connection::state::RTCIceConnectionState;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Ids of pipes and ghosts: far above the signaling connections' (which
/// count from 1), so the two never meet in the SFU's maps.
const FIRST_RELAY_ID: u64 = 1 << 62;

/// What the relay needs to hear of the rooms here.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// The room's first participant here came.
    Occupied(String),
    /// Its last participant here left.
    Vacated(String),
    /// What the room's participants here publish changed ([`Sfu::local_streams`]).
    Streams(String),
    /// A subscriber here wants a keyframe of a stream `node` relays (its
    /// `ssrc` on the pipe).
    Keyframe { room: String, node: String, ssrc: u32 },
}

/// A stream a participant here publishes, as the other nodes are told.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalStream {
    /// The participant's id here (the ghost's key at the other end).
    pub participant: u64,
    pub user: String,
    /// Its SSRC on pipes.
    pub ssrc: u32,
    pub kind: String,
    pub mime: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
}

/// What the relay asks of the SFU.
#[derive(Debug)]
pub enum RelayCommand {
    /// `node` (media port `remote`) has participants in `room`: send it the
    /// room's streams from here.
    Pipe { room: String, node: String, remote: SocketAddr },
    /// `node` publishes `streams` in `room` (all of them: those missing are
    /// gone).
    Ghosts { room: String, node: String, remote: SocketAddr, streams: Vec<LocalStream> },
    /// `node` left `room` (or the cluster, with `room` `None`).
    Forget { room: Option<String>, node: String },
    /// Another node's subscriber wants a keyframe of our stream `ssrc`.
    Keyframe { ssrc: u32 },
}

/// The relay's bookkeeping in the SFU.
#[derive(Default)]
pub(super) struct RelayState {
    events: Mutex<Option<mpsc::UnboundedSender<RoomEvent>>>,
    /// (room, node) -> its pipe.
    pipes: Mutex<HashMap<(String, String), u64>>,
    /// (node, participant there) -> its ghost here.
    ghosts: Mutex<HashMap<(String, u64), u64>>,
    next_id: AtomicU64,
}

impl RelayState {
    pub(super) fn tell(&self, event: RoomEvent) {
        if let Some(events) = crate::runtime::lock(&self.events).as_ref() {
            let _ = events.send(event);
        }
    }

    fn new_id(&self) -> u64 {
        FIRST_RELAY_ID + self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// An [`Sfu`] that does not keep it alive (the relay's: the SFU's end of
/// the room events is what ends the relay).
#[derive(Clone)]
pub struct WeakSfu(std::sync::Weak<super::Inner>);

impl WeakSfu {
    pub fn upgrade(&self) -> Option<Sfu> {
        self.0.upgrade().map(|inner| Sfu { inner })
    }
}

impl Sfu {
    pub fn downgrade(&self) -> WeakSfu {
        WeakSfu(std::sync::Arc::downgrade(&self.inner))
    }

    /// Room events for a cluster's relay, from now on.
    pub fn relay_events(&self) -> mpsc::UnboundedReceiver<RoomEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        *crate::runtime::lock(&self.inner.relay.events) = Some(tx);
        rx
    }

    /// Queues `command` behind everything the SFU is doing (in order).
    pub fn relay(&self, command: RelayCommand) {
        let _ = self.inner.control.send(super::Control::Relay(command));
    }

    /// What the participants here publish in `room`.
    pub async fn local_streams(&self, room: &str) -> Vec<LocalStream> {
        let participants = self.inner.participants.lock().await;
        let mut streams: Vec<LocalStream> = participants
            .iter()
            .filter(|(_, p)| p.room == room && p.origin.is_none())
            .flat_map(|(&id, p)| {
                p.published.iter().map(move |s| LocalStream {
                    participant: id,
                    user: p.user.clone(),
                    ssrc: s.relay_ssrc,
                    kind: if s.kind == MediaKind::Audio { "audio" } else { "video" }.to_string(),
                    mime: s.codec.mime_type.clone(),
                    clock_rate: s.codec.clock_rate,
                    channels: s.codec.channels,
                    fmtp: s.codec.sdp_fmtp_line.clone(),
                })
            })
            .collect();
        streams.sort_by_key(|s| (s.participant, s.ssrc));
        streams
    }

    pub(super) async fn relay_command(&self, command: RelayCommand) {
        match command {
            RelayCommand::Pipe { room, node, remote } => self.pipe(room, node, remote).await,
            RelayCommand::Ghosts { room, node, remote, streams } => self.ghosts(&room, &node, remote, streams).await,
            RelayCommand::Forget { room, node } => self.forget_node(room.as_deref(), &node).await,
            RelayCommand::Keyframe { ssrc } => {
                let found = self
                    .inner
                    .participants
                    .lock()
                    .await
                    .iter()
                    .find_map(|(&id, p)| p.published.iter().find(|s| s.relay_ssrc == ssrc && p.origin.is_none()).map(|s| (id, s.ssrc)));
                if let Some((publisher, stream)) = found {
                    self.inner.shards.request_keyframe(publisher, stream);
                }
            }
        }
    }

    async fn pipe(&self, room: String, node: String, remote: SocketAddr) {
        let pipe = {
            let mut pipes = crate::runtime::lock(&self.inner.relay.pipes);
            if pipes.contains_key(&(room.clone(), node.clone())) {
                return;
            }
            let pipe = self.inner.relay.new_id();
            pipes.insert((room.clone(), node.clone()), pipe);
            pipe
        };
        tracing::info!(room, node, %remote, "relaying the room to another node");
        self.inner.shards.add_pipe(pipe, &room, remote);
        self.inner.shards.route_change(joined(pipe, room.clone()));
        let streams: Vec<Published> = {
            let participants = self.inner.participants.lock().await;
            participants.values().filter(|p| p.room == room && p.origin.is_none()).flat_map(|p| p.published.iter().cloned()).collect()
        };
        for stream in streams {
            self.inner.shards.subscribe_pipe(pipe, stream.ssrc, stream.relay_ssrc, stream.forwarded.clone());
            if stream.kind == MediaKind::Video {
                self.keyframe_of(stream.ssrc).await;
            }
        }
    }

    /// A new stream of a participant here goes down the room's pipes.
    pub(super) async fn relay_stream(&self, publisher: u64, stream: &Published) {
        let room = match self.inner.participants.lock().await.get(&publisher) {
            Some(p) if p.origin.is_none() => p.room.clone(),
            _ => return,
        };
        let pipes: Vec<u64> =
            crate::runtime::lock(&self.inner.relay.pipes).iter().filter(|((r, _), _)| *r == room).map(|(_, &pipe)| pipe).collect();
        for pipe in pipes {
            self.inner.shards.subscribe_pipe(pipe, stream.ssrc, stream.relay_ssrc, stream.forwarded.clone());
        }
        self.inner.relay.tell(RoomEvent::Streams(room));
    }

    /// Makes `node`'s ghosts in `room` be exactly `streams`' publishers.
    async fn ghosts(&self, room: &str, node: &str, remote: SocketAddr, streams: Vec<LocalStream>) {
        // Ghosts of participants no longer listed leave.
        let listed: Vec<u64> = streams.iter().map(|s| s.participant).collect();
        let stale: Vec<u64> = {
            let mut ghosts = crate::runtime::lock(&self.inner.relay.ghosts);
            let participants: Vec<u64> = ghosts.keys().filter(|(n, p)| n == node && !listed.contains(p)).map(|(_, p)| *p).collect();
            participants.into_iter().filter_map(|p| ghosts.remove(&(node.to_string(), p))).collect()
        };
        for ghost in stale {
            self.leave(ghost).await;
        }
        for stream in streams {
            let key = (node.to_string(), stream.participant);
            let existing = crate::runtime::lock(&self.inner.relay.ghosts).get(&key).copied();
            let ghost = match existing {
                Some(ghost) => ghost,
                None => {
                    let ghost = self.inner.relay.new_id();
                    crate::runtime::lock(&self.inner.relay.ghosts).insert(key, ghost);
                    let participant = Participant {
                        room: room.to_string(),
                        user: stream.user.clone(),
                        connected: false,
                        published: Vec::new(),
                        receiving: Vec::new(),
                        negotiation: Negotiation::default(),
                        ice: RTCIceConnectionState::New,
                        origin: Some(node.to_string()),
                    };
                    self.inner.participants.lock().await.insert(ghost, participant);
                    self.inner.shards.route_change(joined(ghost, room.to_string()));
                    ghost
                }
            };
            let known = self.inner.participants.lock().await.get(&ghost).is_some_and(|p| p.published.iter().any(|s| s.ssrc == stream.ssrc));
            if known {
                continue;
            }
            let kind = if stream.kind == "audio" { MediaKind::Audio } else { MediaKind::Video };
            let vp8 = stream.mime.eq_ignore_ascii_case(rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8);
            self.inner.shards.add_piped(ghost, room, remote, stream.ssrc, kind, vp8);
            let codec = RTCRtpCodec {
                mime_type: stream.mime,
                clock_rate: stream.clock_rate,
                channels: stream.channels,
                sdp_fmtp_line: stream.fmtp,
                rtcp_feedback: Vec::new(),
            };
            // On the pipe, the stream goes by the SSRC its node gave it.
            let published = Published { ssrc: stream.ssrc, kind, codec, relay_ssrc: stream.ssrc, forwarded: Default::default() };
            self.publish(ghost, published).await;
        }
    }

    /// Pipes to `node` and its ghosts go (in `room`, or everywhere).
    async fn forget_node(&self, room: Option<&str>, node: &str) {
        let pipes: Vec<u64> = {
            let mut pipes = crate::runtime::lock(&self.inner.relay.pipes);
            let keys: Vec<_> = pipes.keys().filter(|(r, n)| n == node && room.is_none_or(|room| room == r)).cloned().collect();
            keys.into_iter().filter_map(|k| pipes.remove(&k)).collect()
        };
        for pipe in pipes {
            self.inner.shards.route_change(RouteChange::Left(pipe));
            self.inner.shards.close(pipe);
        }
        let ghosts: Vec<u64> = {
            let participants = self.inner.participants.lock().await;
            let mut ghosts = crate::runtime::lock(&self.inner.relay.ghosts);
            let keys: Vec<_> = ghosts
                .iter()
                .filter(|((n, _), ghost)| n == node && room.is_none_or(|room| participants.get(ghost).is_some_and(|p| p.room == room)))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter().filter_map(|k| ghosts.remove(&k)).collect()
        };
        for ghost in ghosts {
            self.leave(ghost).await;
        }
        if room.is_none() {
            tracing::info!(node, "relays to and from a node that left the cluster closed");
        }
    }

    /// A subscriber here wants a keyframe of a ghost's stream: its node is asked.
    pub(super) async fn relayed_keyframe(&self, ghost: u64, ssrc: u32) {
        let participants = self.inner.participants.lock().await;
        if let Some(p) = participants.get(&ghost)
            && let Some(node) = &p.origin
        {
            self.inner.relay.tell(RoomEvent::Keyframe { room: p.room.clone(), node: node.clone(), ssrc });
        }
    }

    /// Asks for a keyframe of our publisher stream `ssrc` (a new pipe's
    /// far end has viewers waiting).
    async fn keyframe_of(&self, ssrc: u32) {
        let publisher =
            self.inner.participants.lock().await.iter().find(|(_, p)| p.published.iter().any(|s| s.ssrc == ssrc)).map(|(&id, _)| id);
        if let Some(publisher) = publisher {
            self.inner.shards.request_keyframe(publisher, ssrc);
        }
    }
}
