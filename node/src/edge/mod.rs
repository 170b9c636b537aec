//! An edge node: a headless participant in a room on an SFU node, from a
//! pipeline file's `[client]` table.
//!
//! The node keeps one signaling connection to the SFU node
//! ([`crate::signaling::client`]: join on every connect, heartbeat,
//! reconnect with backoff) and hands what the room does to its E2EE stage
//! ([`EncryptionStage`]): who is there (`joined` becomes the stage's seat;
//! `presence`), and the MLS delivery messages. What the stage says goes
//! back on the same connection.
//!
//! Media ([`media`]): each (re)join opens a WebRTC connection to the SFU
//! node. Frames from the pipeline's `publish` sink are sealed by the stage
//! and sent one per RTP packet; received packets are opened and handed to
//! the pipeline's `subscribe` source with their publisher's name
//! ([`Ports`]). In a room without an E2EE stage, frames pass as they are.

pub mod encryption;
pub mod media;

pub use encryption::EncryptionStage;

use crate::pipeline::Ports;
use crate::runtime::bindings::{E2eeEvent, E2eeSeat, E2eeStatus, FrameBatch, FrameInfo};
use crate::runtime::{StageShared, lock};
use crate::signaling::client::{Client, ClientEvent, ClientOptions};
use crate::supervisor::Stopped;
use crate::supervisor::thread::StageThread;
use media::{Media, Received};
use medianode_sdk::room::Roster;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often an idle stage thread gets time to pick up its builds.
const MAINTAIN_EVERY: Duration = Duration::from_millis(50);

/// Jobs queued for the E2EE stage thread before a caller hears `busy`.
const STAGE_QUEUE: usize = 256;

/// How long a media frame may wait for the E2EE stage: later, it is stale
/// and dropped.
const FRAME_WITHIN: Duration = Duration::from_millis(500);

/// How long a room event may wait: group changes must not be lost to a
/// stage that is briefly behind.
const CONTROL_WITHIN: Duration = Duration::from_secs(30);

/// Connection events kept for [`Edge::connection_events`].
const EVENTS_KEPT: usize = 64;

type Events = Arc<Mutex<VecDeque<ClientEvent>>>;

/// Frames queued between the pipeline and the media, each way.
const QUEUE: usize = 256;

/// The edge node's WebRTC side.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Where media (UDP) binds.
    pub ip: std::net::IpAddr,
    /// Whether it publishes an audio track.
    pub publish: bool,
}

/// A running edge node's room side. Dropping it leaves the room.
pub struct Edge {
    stage: Option<StageThread<EncryptionStage>>,
    shared: Option<Arc<StageShared>>,
    events: Events,
    stopped: watch::Receiver<Option<Stopped>>,
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    /// Connects to the room; `stage` (built with an outbox from
    /// [`Edge::outbox`]) seals and opens the node's media, which runs when
    /// `media` is given (with the pipeline's ends in the [`Ports`]).
    pub fn start(
        mut options: ClientOptions,
        media: Option<MediaOptions>,
        stage: Option<(EncryptionStage, mpsc::UnboundedReceiver<String>)>,
    ) -> (Edge, Ports) {
        let (stage, shared, outbox) = match stage {
            Some((stage, outbox)) => {
                let shared = stage.shared().clone();
                let id = stage.id().to_string();
                match StageThread::spawn(&id, stage, STAGE_QUEUE, MAINTAIN_EVERY, |s: &mut EncryptionStage| {
                    s.maintain(std::time::Instant::now());
                }) {
                    Ok(thread) => (Some(thread), Some(shared), Some(outbox)),
                    Err(e) => {
                        // Without its stage the node must not send media at
                        // all: it joins without E2EE and publishes nothing.
                        tracing::error!(stage = %id, "cannot start the E2EE stage thread: {e}");
                        (None, Some(shared), None)
                    }
                }
            }
            None => (None, None, None),
        };
        // Only a node that can seal asks into the group.
        options.e2ee = stage.is_some();
        let (publish, to_publish) = mpsc::channel(QUEUE);
        let (opened, subscribe) = mpsc::channel(QUEUE);
        let events = Events::default();
        let (stop_tx, stopped) = watch::channel(None);
        let client = Client::start(options.clone());
        let encrypted = shared.is_some();
        let room = Room { options, media, client, stage: stage.clone(), encrypted, events: events.clone(), opened, stopped: stop_tx };
        let task = tokio::spawn(room.run(outbox, to_publish));
        (Edge { stage, shared, events, stopped, task }, Ports { publish, subscribe: Some(subscribe) })
    }

    /// An outbox for an [`EncryptionStage`], and its reader for [`Edge::start`].
    pub fn outbox() -> (encryption::Outbox, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Box::new(move |message| {
                let _ = tx.send(message);
            }),
            rx,
        )
    }

    /// The E2EE stage's thread, for the media paths.
    pub fn stage(&self) -> Option<&StageThread<EncryptionStage>> {
        self.stage.as_ref()
    }

    /// The E2EE stage's metrics and state store.
    pub fn stage_shared(&self) -> Option<&Arc<StageShared>> {
        self.shared.as_ref()
    }

    /// What the E2EE stage reports about its group. Blocks the caller for
    /// at most one stage call: not for async code (use [`Edge::stage`]).
    pub fn status(&self) -> Option<E2eeStatus> {
        let stage = self.stage.as_ref()?;
        stage.call_blocking(FRAME_WITHIN, |s| s.status(std::time::Instant::now())).ok().flatten()
    }

    /// Resolves when the E2EE stage gave up under the `stop` policy.
    pub async fn stopped(&self) -> Stopped {
        crate::supervisor::wait_stopped(self.stopped.clone()).await
    }

    /// The signaling connection's recent connects, drops and give-up
    /// (room messages left out), oldest first.
    pub fn connection_events(&self) -> Vec<ClientEvent> {
        lock(&self.events).iter().cloned().collect()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The edge's task: the signaling client, the E2EE stage and the media.
struct Room {
    options: ClientOptions,
    media: Option<MediaOptions>,
    client: Client,
    stage: Option<StageThread<EncryptionStage>>,
    /// The room is encrypted: without a stage thread nothing is sent.
    encrypted: bool,
    events: Events,
    /// Opened frames for the pipeline's subscribe source.
    opened: mpsc::Sender<(String, FrameBatch)>,
    /// Set when the E2EE stage gives up under `stop`.
    stopped: watch::Sender<Option<Stopped>>,
}

impl Room {
    async fn run(mut self, mut outbox: Option<mpsc::UnboundedReceiver<String>>, mut to_publish: mpsc::Receiver<FrameBatch>) {
        let mut roster = Roster::new(&self.options.room, &self.options.user);
        let (signal, mut signals) = mpsc::unbounded_channel::<Value>();
        let (received_tx, mut received) = mpsc::channel::<Received>(QUEUE);
        let mut connection: Option<Media> = None;
        // Extends each publisher's 16-bit RTP sequence numbers.
        let mut sequences: std::collections::HashMap<String, (u32, u64)> = Default::default();
        let mut next_stream = 0u32;
        loop {
            let event = tokio::select! {
                event = self.client.next() => match event {
                    Some(event) => event,
                    None => return,
                },
                Some(message) = recv(&mut outbox) => {
                    match serde_json::from_str::<Value>(&message) {
                        Ok(message) => self.client.send(message),
                        Err(e) => tracing::error!("the E2EE stage sent a message that is not JSON ({e}); dropped"),
                    }
                    continue;
                }
                Some(message) = signals.recv() => {
                    self.client.send(message);
                    continue;
                }
                Some(batch) = to_publish.recv() => {
                    if let Some(media) = &connection {
                        self.publish(media, batch).await;
                    }
                    continue;
                }
                Some(packet) = received.recv() => {
                    let (stream, sequence) = {
                        let entry = sequences.entry(packet.from.clone()).or_insert_with(|| {
                            next_stream += 1;
                            (next_stream, u64::from(packet.sequence))
                        });
                        entry.1 = extend(entry.1, packet.sequence);
                        (entry.0, entry.1)
                    };
                    self.receive(packet, stream, sequence).await;
                    continue;
                }
            };
            if let ClientEvent::Message(message) = &event {
                let kind = message.get("type").and_then(Value::as_str).unwrap_or_default();
                if kind == "joined"
                    && let Some(options) = &self.media
                {
                    // A (re)join: the node has no media for this seat yet.
                    if let Some(old) = connection.take() {
                        old.close().await;
                    }
                    sequences.clear();
                    match Media::start(options.ip, &self.options.user, options.publish, signal.clone(), received_tx.clone()).await {
                        Ok(media) => connection = Some(media),
                        Err(e) => tracing::error!("edge: no media: {e}"),
                    }
                }
                if kind == "media-state" {
                    tracing::info!(user = %self.options.user, state = %message["state"], "media");
                }
                if kind == "error" {
                    tracing::warn!(user = %self.options.user, error = %message, "the node refused a message");
                }
                if matches!(kind, "answer" | "offer" | "candidate")
                    && let Some(media) = &connection
                {
                    media.on_message(message, &signal).await;
                }
            }
            let room_event = match &event {
                ClientEvent::Message(message) => roster.message(message).map(from_sdk),
                ClientEvent::Disconnected { reason, retry_in } => {
                    tracing::warn!(%reason, retry_in = ?retry_in, "signaling connection lost");
                    None
                }
                ClientEvent::GaveUp { failures } => {
                    tracing::error!(failures, "signaling: giving up after repeated failures");
                    None
                }
                ClientEvent::Connected { attempt, url } => {
                    tracing::info!(attempt, %url, "signaling connected");
                    None
                }
            };
            if let (Some(event), Some(stage)) = (room_event, &self.stage) {
                let others: Vec<String> = roster.others().cloned().collect();
                let done = stage
                    .call(CONTROL_WITHIN, move |stage| {
                        stage.roster(others);
                        stage.control(std::time::Instant::now(), vec![event])
                    })
                    .await;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(stopped)) => return self.stop(stopped),
                    Err(e) => tracing::error!("a room event did not reach the E2EE stage: {e}"),
                }
            }
            if !matches!(event, ClientEvent::Message(_)) {
                let mut events = lock(&self.events);
                if events.len() == EVENTS_KEPT {
                    events.pop_front();
                }
                events.push_back(event);
            }
        }
    }

    /// The E2EE stage gave up under `stop`: the room side ends, and
    /// [`Edge::stopped`] says why.
    fn stop(&self, stopped: Stopped) {
        tracing::error!("{stopped}");
        self.stopped.send_replace(Some(stopped));
    }

    /// Seals (in an encrypted room) and sends each frame as a packet.
    async fn publish(&self, media: &Media, batch: FrameBatch) {
        let batch = match (&self.stage, self.encrypted) {
            (Some(stage), _) => match stage.call(FRAME_WITHIN, move |s| s.seal(std::time::Instant::now(), &batch)).await {
                Ok(Ok(sealed)) => sealed,
                Ok(Err(stopped)) => return self.stop(stopped),
                // Behind or gone: the frames are dropped, never sent plain.
                Err(_) => return,
            },
            (None, true) => return,
            (None, false) => batch,
        };
        let mut at = 0;
        for frame in &batch.frames {
            let end = at + frame.size as usize;
            let Some(payload) = batch.payloads.get(at..end) else { return };
            at = end;
            media.send(frame.sequence as u16, frame.timestamp as u32, payload.to_vec()).await;
        }
    }

    /// Opens (in an encrypted room) a received packet for the pipeline.
    async fn receive(&self, packet: Received, stream: u32, sequence: u64) {
        let info = FrameInfo { stream, sequence, timestamp: u64::from(packet.timestamp), size: packet.payload.len() as u32 };
        let batch = FrameBatch { frames: vec![info], payloads: packet.payload };
        let batch = match (&self.stage, self.encrypted) {
            (Some(stage), _) => match stage.call(FRAME_WITHIN, move |s| s.open(std::time::Instant::now(), &batch)).await {
                Ok(Ok(opened)) => opened,
                Ok(Err(stopped)) => return self.stop(stopped),
                Err(_) => return,
            },
            (None, true) => return,
            (None, false) => batch,
        };
        if !batch.frames.is_empty() && self.opened.try_send((packet.from, batch)).is_err() {
            tracing::debug!("edge: an opened frame dropped (the pipeline is behind)");
        }
    }
}

/// The 64-bit sequence number after `last` whose low 16 bits are `seq`
/// (RTP sequence numbers wrap).
fn extend(last: u64, seq: u16) -> u64 {
    let candidate = (last & !0xffff) | u64::from(seq);
    let diff = candidate as i64 - last as i64;
    if diff < -0x8000 {
        candidate + 0x10000
    } else if diff > 0x8000 && candidate >= 0x10000 {
        candidate - 0x10000
    } else {
        candidate
    }
}

async fn recv(outbox: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match outbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The SDK's room event (what [`Roster`] makes of a message) as the
/// plugin interface's.
fn from_sdk(event: medianode_sdk::E2eeEvent) -> E2eeEvent {
    match event {
        medianode_sdk::E2eeEvent::Seated { room, user, others, rejoined } => E2eeEvent::Seated(E2eeSeat { room, user, others, rejoined }),
        medianode_sdk::E2eeEvent::Message(text) => E2eeEvent::Message(text),
    }
}

/// Starts the room side described by `config.client` (there must be one):
/// the stage without inputs, if any, must be an E2EE plugin. Build the
/// pipeline with the returned [`Ports`] ([`Pipeline::build_with`](crate::pipeline::Pipeline::build_with)).
pub fn start(
    runtime: &crate::runtime::Runtime,
    config: &crate::config::PipelineConfig,
    reporter: &crate::supervisor::crash_report::CrashReporter,
) -> Result<(Edge, Ports), crate::pipeline::BuildError> {
    use crate::pipeline;
    let Some(client) = &config.client else {
        return Err(config.error(0..0, "the pipeline has no [client] table", "add one (see pipelines/edge.toml)").into());
    };
    let compiled = pipeline::compile(runtime, config)?;
    let now = std::time::Instant::now();
    let encryption = compiled.plan.encryption.map(|i| compiled.supervise(config, i, reporter, now)).transpose()?;
    let options = ClientOptions { servers: client.servers.clone(), ..ClientOptions::new("", &client.room, &client.user) };
    let stage = encryption.map(|supervisor| {
        let (outbox, reader) = Edge::outbox();
        (EncryptionStage::new(supervisor, outbox), reader)
    });
    let publish = config.sinks.iter().any(|s| s.kind == crate::config::SinkKind::Publish);
    tracing::info!(servers = ?client.servers, room = %client.room, user = %client.user, e2ee = stage.is_some(), publish, "joining");
    Ok(Edge::start(options, Some(MediaOptions { ip: client.media_ip, publish }), stage))
}
