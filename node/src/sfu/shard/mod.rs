//! The SFU's media plane: shards, each a thread that owns a share of the
//! node's peer connections (whole rooms: [`Placement`]) and drives them
//! directly.
//!
//! Every peer connection is webrtc-rs's sans-IO core (`rtc`): ICE, DTLS,
//! SRTP, RTCP and the interceptors as plain state machines, fed datagrams
//! and the time, asked for datagrams, packets and events. A shard is one
//! loop around many of them:
//!
//! 1. wait (mio) for its socket, a command, or the earliest timer;
//! 2. read datagrams in batches from its socket on the shared port
//!    ([`udp`]) and hand each to the connection the [`mux`] names (or, a
//!    message per batch, to the shard that owns it);
//! 3. take the RTP packets publishers sent, ask the forwarding decision
//!    once per batch, and write each copy to the chosen subscribers'
//!    connections, all here (a room lives on one shard);
//! 4. run due timers; send everything the connections produced, a batch
//!    per system call.
//!
//! Nothing here is async and nothing blocks but the wait in step 1 and the
//! forwarding decision (a plugin call on this thread, bounded by its
//! deadline; the shards take turns with the stage). The control plane (`super`, on tokio) asks for everything else with
//! [`Shards::run`]: a closure run on the shard that owns a connection, its
//! answer awaited. Building a connection (keys, certificate) happens there,
//! off the shards; it arrives built ([`Shards::adopt`]).
//!
//! In a cluster a room also has **pipes** ([`Shards::add_pipe`]): one per
//! other node of the room, plain RTP both ways between the two nodes'
//! media ports (the media is SFrame-sealed by its sender; the nodes read
//! only headers, as they do here). A pipe subscribes to this node's own
//! publishers like a participant; what comes in on it belongs to a
//! *ghost*, a stand-in here for a publisher on the other node
//! ([`Shards::add_piped`]), whose streams the room's subscribers get as
//! they get anyone's. A ghost's streams never go out on a pipe: every
//! node relays its own publishers to every other, one hop.

pub mod mux;
pub mod udp;

use super::router::{Decide, MAX_BATCH, RouterStats};
use crate::peer::feedback::Estimate;
use crate::peer::unacked::Layers;
use crate::runtime::bindings::{ForwardBatch, MediaKind, PacketMeta, ReceiverState, RouteChange, RouteMember};
use bytes::BytesMut;
use medianode_core::sfu::fanout::{Fanout, Routed};
use medianode_core::sfu::speaker::SpeakerDetector;
use mux::Mux;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use udp::{MediaSocket, SendQueue};

/// Datagrams read before the shard looks at its commands and timers again.
const READ_BUDGET: usize = 256;

/// Longest wait with nothing to do (a safety net for a missed wake).
const IDLE: Duration = Duration::from_millis(100);

const SOCKET: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

/// What a shard tells the control plane.
#[derive(Debug)]
pub enum ShardEvent {
    /// A publisher's stream began.
    Track { connection: u64, ssrc: u32, kind: MediaKind, codec: RTCRtpCodec },
    /// A connection's ICE state changed (in the order the connection saw).
    IceState(u64, RTCIceConnectionState),
    /// The loudest speaker of `room` changed (RFC 6464 audio levels).
    Speaker { room: String, connection: u64 },
    /// A subscriber here wants a keyframe of a stream another node relays
    /// (`ssrc`, as it arrives on the pipe from `ghost`'s node).
    RelayedKeyframe { ghost: u64, ssrc: u32 },
}

/// Where shard events go (the control plane's queue).
pub type Events = Arc<dyn Fn(ShardEvent) + Send + Sync>;

/// A closure run on a shard.
type Job = Box<dyn FnOnce(&mut Shard, Instant) + Send>;

enum Command {
    Job(Job),
    /// Datagrams another shard's socket received for connections here, and
    /// their bytes (counted against [`CROSS_SHARD_BYTES`]).
    Datagrams(Vec<(SocketAddr, BytesMut)>, usize),
    Stop,
}

/// Datagram bytes one shard may have waiting from the others; past it,
/// what another shard hands over is dropped and counted (a shard that
/// falls behind costs its own peers, not the node's memory).
const CROSS_SHARD_BYTES: usize = 8 << 20;

/// One shard's end of the others.
#[derive(Clone)]
struct Link {
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    /// Media bytes waiting in `commands`.
    queued: Arc<AtomicUsize>,
}

impl Link {
    fn send(&self, command: Command) -> bool {
        let sent = self.commands.send(command).is_ok();
        let _ = self.waker.wake();
        sent
    }

    /// Sends media of `bytes` unless the shard has too much waiting.
    fn send_media(&self, command: Command, bytes: usize) -> bool {
        if self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > CROSS_SHARD_BYTES {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        self.send(command)
    }
}

/// The shards, as the control plane holds them.
pub struct Shards {
    links: Vec<Link>,
    /// The media port every connection announces.
    pub local: SocketAddr,
    /// Where connections live ([`Placement`]).
    placement: Mutex<Placement>,
    pub counters: Arc<MediaCounters>,
    pipe_owners: PipeOwners,
}

/// Which shard owns each connection. A room's connections share one shard
/// (the least loaded when its first connection came), as mediasoup keeps a
/// router on one worker and LiveKit a room on one node: a packet then fans
/// out where it arrived, with no hop between shards, and rooms spread the
/// load over the cores. (A shard still forwards to another when it must;
/// a room larger than a core is the limit of this choice.)
#[derive(Default)]
struct Placement {
    connections: HashMap<u64, (usize, String)>,
    /// Room -> its shard and its connections there.
    rooms: HashMap<String, (usize, usize)>,
}

impl Placement {
    fn place(&mut self, connection: u64, room: &str, shards: usize) -> usize {
        if let Some((index, _)) = self.connections.get(&connection) {
            return *index;
        }
        let index = match self.rooms.get_mut(room) {
            Some((index, count)) => {
                *count += 1;
                *index
            }
            None => {
                let mut load = vec![0usize; shards];
                for (shard, _) in self.connections.values() {
                    load[*shard] += 1;
                }
                let index = (0..shards).min_by_key(|&i| load[i]).unwrap_or(0);
                self.rooms.insert(room.to_string(), (index, 1));
                index
            }
        };
        self.connections.insert(connection, (index, room.to_string()));
        index
    }

    fn shard(&self, connection: u64) -> Option<usize> {
        self.connections.get(&connection).map(|(shard, _)| *shard)
    }

    fn remove(&mut self, connection: u64) -> Option<usize> {
        let (shard, room) = self.connections.remove(&connection)?;
        if let Some((_, count)) = self.rooms.get_mut(&room) {
            *count -= 1;
            if *count == 0 {
                self.rooms.remove(&room);
            }
        }
        Some(shard)
    }
}

/// Local ufrag -> the shard that owns the connection: how a shard whose
/// socket got another's binding request knows where to hand it.
type Ufrags = Arc<Mutex<HashMap<String, usize>>>;

/// (a node's media port, an SSRC it relays) -> the shard of the pipe's
/// room: another node's datagrams all come from one address, but its
/// rooms may live on different shards here.
type PipeOwners = Arc<Mutex<HashMap<(SocketAddr, u32), usize>>>;

/// Each room's active-speaker detector, shared by the shards.
pub type Speakers = Arc<Mutex<HashMap<String, SpeakerDetector>>>;

/// What the shards counted, all together.
#[derive(Debug, Default)]
pub struct MediaCounters {
    pub packets_in: AtomicU64,
    pub batches: AtomicU64,
    pub packets_out: AtomicU64,
    pub write_errors: AtomicU64,
    /// Datagrams dropped because a shard's send queue was full.
    pub send_dropped: AtomicU64,
    /// Datagrams no connection claimed.
    pub unclaimed: AtomicU64,
    /// Datagrams handed to the shard that owns their connection.
    pub handed_over: AtomicU64,
    /// Streams refused to a publisher past [`MAX_STREAMS`].
    pub streams_refused: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: AtomicU64,
    /// Times a subscriber's copy of a stream moved to another simulcast layer.
    pub layer_switches: AtomicU64,
}

impl MediaCounters {
    pub fn router_stats(&self) -> RouterStats {
        RouterStats {
            packets_in: self.packets_in.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            send_dropped: self.send_dropped.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            layer_switches: self.layer_switches.load(Ordering::Relaxed),
            unclaimed: self.unclaimed.load(Ordering::Relaxed),
            handed_over: self.handed_over.load(Ordering::Relaxed),
            streams_refused: self.streams_refused.load(Ordering::Relaxed),
        }
    }
}

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// No shard owns the connection (it left, or never had one).
    NoConnection,
    /// The shard has stopped.
    Stopped,
}

impl Shards {
    /// Binds `count` sockets on `address` (one port) and starts a shard on
    /// each; `decide` is split so that each shard has its own front end.
    pub fn start(
        address: SocketAddr,
        count: usize,
        decide: Box<dyn Decide>,
        events: Events,
        speakers: Speakers,
    ) -> std::io::Result<Arc<Shards>> {
        let sockets = udp::bind(address, count)?;
        let local = sockets[0].local_addr()?;
        let counters = Arc::new(MediaCounters::default());
        let ufrags = Ufrags::default();
        let pipe_owners = PipeOwners::default();
        let mut polls = Vec::new();
        let mut links = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..sockets.len() {
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
            let (tx, rx) = mpsc::channel();
            links.push(Link { commands: tx, waker, queued: Arc::default() });
            receivers.push(rx);
            polls.push(poll);
        }
        let mut deciders = vec![decide];
        while deciders.len() < sockets.len() {
            deciders.push(deciders[0].split());
        }
        for (index, (((socket, poll), commands), decide)) in sockets.into_iter().zip(polls).zip(receivers).zip(deciders).enumerate() {
            let mut socket = MediaSocket::new(socket)?;
            poll.registry().register(&mut socket.socket, SOCKET, mio::Interest::READABLE)?;
            let shard = Shard {
                index,
                socket,
                poll,
                commands,
                links: links.clone(),
                peers: HashMap::new(),
                mux: Mux::default(),
                timers: BTreeSet::new(),
                fanout: Fanout::default(),
                decide,
                events: events.clone(),
                counters: counters.clone(),
                queue: SendQueue::default(),
                touched: HashSet::new(),
                incoming: Vec::new(),
                draining: Vec::new(),
                writable_interest: false,
                reported_bytes: 0,
                ufrags: ufrags.clone(),
                foreign: HashMap::new(),
                handing: HashMap::new(),
                speakers: speakers.clone(),
                sources: HashMap::new(),
                layers: HashMap::new(),
                epoch: Instant::now(),
                pipes: HashMap::new(),
                piped: HashMap::new(),
                pipe_peers: HashMap::new(),
                piped_in: Vec::new(),
                pipe_owners: pipe_owners.clone(),
            };
            std::thread::Builder::new().name(format!("sfu-shard-{index}")).spawn(move || shard.run())?;
        }
        Ok(Arc::new(Shards { links, local, placement: Mutex::default(), counters, pipe_owners }))
    }

    pub fn count(&self) -> usize {
        self.links.len()
    }

    /// Gives `connection` to its room's shard ([`Placement`]).
    /// `layers` is the set its [`crate::peer::unacked`] interceptor keeps
    /// out of receiver reports: the shard fills it with the simulcast
    /// layers the connection publishes.
    pub fn adopt(&self, connection: u64, room: &str, pc: RTCPeerConnection, layers: Layers) -> Result<(), Gone> {
        let index = crate::runtime::lock(&self.placement).place(connection, room, self.links.len());
        let room = room.to_string();
        let job: Job = Box::new(move |shard: &mut Shard, now| shard.adopt(connection, room, pc, layers, now));
        match self.links[index].send(Command::Job(job)) {
            true => Ok(()),
            false => Err(Gone::Stopped),
        }
    }

    /// Runs `f` with `connection`'s peer connection on its shard, and
    /// returns what it returns.
    pub async fn run<R: Send + 'static>(
        &self,
        connection: u64,
        f: impl FnOnce(&mut PeerLink<'_>) -> R + Send + 'static,
    ) -> Result<R, Gone> {
        let index = crate::runtime::lock(&self.placement).shard(connection).ok_or(Gone::NoConnection)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |shard: &mut Shard, now| {
            let result = shard.with_peer(connection, now, f);
            let _ = tx.send(result);
        });
        if !self.links[index].send(Command::Job(job)) {
            return Err(Gone::Stopped);
        }
        rx.await.map_err(|_| Gone::Stopped)?.ok_or(Gone::NoConnection)
    }

    /// Tells every shard a route change (the forwarding decision's table).
    pub fn route_change(&self, change: RouteChange) {
        for link in &self.links {
            let change = change.clone();
            link.send(Command::Job(Box::new(move |shard: &mut Shard, _| shard.decide.update(&change))));
        }
    }

    /// `subscriber` receives a publisher's stream through `leg.sender` on
    /// its connection (the shard of their room keeps the leg).
    pub fn subscribe(&self, leg: LegSpec) {
        let Some(index) = crate::runtime::lock(&self.placement).shard(leg.subscriber) else { return };
        self.links[index].send(Command::Job(Box::new(move |shard: &mut Shard, _| shard.add_leg(leg))));
    }

    /// `subscriber` no longer receives publisher stream `stream`.
    pub fn unsubscribe(&self, subscriber: u64, stream: u32) {
        let Some(index) = crate::runtime::lock(&self.placement).shard(subscriber) else { return };
        self.links[index].send(Command::Job(Box::new(move |shard: &mut Shard, _| shard.fanout.unsubscribe(stream, subscriber))));
    }

    /// Closes `connection` and forgets it everywhere.
    pub fn close(&self, connection: u64) {
        let index = crate::runtime::lock(&self.placement).remove(connection);
        for (i, link) in self.links.iter().enumerate() {
            let owner = Some(i) == index;
            link.send(Command::Job(Box::new(move |shard: &mut Shard, _| shard.forget(connection, owner))));
        }
    }

    /// The highest simulcast layer `connection` wants (`ANY_LAYER`: all).
    pub fn set_max_layer(&self, connection: u64, layer: u8) {
        let Some(index) = crate::runtime::lock(&self.placement).shard(connection) else { return };
        self.links[index].send(Command::Job(Box::new(move |shard: &mut Shard, _| shard.receiver(connection, None, Some(layer)))));
    }

    /// Asks a publisher for a keyframe of its stream `ssrc` (a PLI; of
    /// every layer, for a simulcast stream).
    pub fn request_keyframe(&self, publisher: u64, ssrc: u32) {
        let Some(index) = crate::runtime::lock(&self.placement).shard(publisher) else { return };
        self.links[index].send(Command::Job(Box::new(move |shard: &mut Shard, now| {
            let layers: Vec<u32> = shard.sources.iter().filter(|(_, s)| s.stream == ssrc).map(|(&source, _)| source).collect();
            for source in layers {
                shard.request_keyframe(source, now);
            }
        })));
    }
}

impl Shards {
    /// A pipe to another node for `room`: what the room's publishers here
    /// send goes to `remote` (that node's media port) once it subscribes
    /// ([`Self::subscribe_pipe`]).
    pub fn add_pipe(&self, pipe: u64, room: &str, remote: SocketAddr) {
        let index = crate::runtime::lock(&self.placement).place(pipe, room, self.links.len());
        self.links[index].send(Command::Job(Box::new(move |shard: &mut Shard, _| {
            shard.pipes.insert(pipe, remote);
        })));
    }

    /// `pipe` carries this node's publisher stream `stream` as `ssrc`.
    pub fn subscribe_pipe(&self, pipe: u64, stream: u32, ssrc: u32, forwarded: Arc<AtomicU64>) {
        let Some(index) = crate::runtime::lock(&self.placement).shard(pipe) else { return };
        self.links[index].send(Command::Job(Box::new(move |shard: &mut Shard, _| {
            let leg = Leg { subscriber: pipe, sender: None, mime: String::new(), payload_type: None, forwarded };
            shard.fanout.subscribe(stream, pipe, ssrc, leg);
        })));
    }

    /// RTP from `remote` with `ssrc` is a stream of `ghost` (a publisher on
    /// that node) in `room`.
    pub fn add_piped(&self, ghost: u64, room: &str, remote: SocketAddr, ssrc: u32, kind: MediaKind, vp8: bool) {
        let index = crate::runtime::lock(&self.placement).place(ghost, room, self.links.len());
        crate::runtime::lock(&self.pipe_owners).insert((remote, ssrc), index);
        self.links[index].send(Command::Job(Box::new(move |shard: &mut Shard, _| {
            let inbound = Inbound { ssrc, kind, simulcast: false, vp8 };
            shard.piped.insert((remote, ssrc), Piped { ghost, inbound });
            *shard.pipe_peers.entry(remote).or_default() += 1;
            shard.sources.insert(ssrc, Source { publisher: ghost, receiver: None, stream: ssrc, layer: None, asked: None });
        })));
    }
}

impl Drop for Shards {
    /// The shards end after what they are doing (not waited for: this may
    /// run on an async thread).
    fn drop(&mut self) {
        for link in &self.links {
            link.send(Command::Stop);
        }
    }
}

/// What a subscriber's leg of a stream needs.
pub struct LegSpec {
    pub subscriber: u64,
    /// The publisher's SSRC.
    pub stream: u32,
    /// The SSRC the subscriber sees.
    pub ssrc: u32,
    pub sender: RTCRtpSenderId,
    pub mime: String,
    /// Counts copies written, for the publisher's stream as a whole.
    pub forwarded: Arc<AtomicU64>,
}

/// A leg's I/O end in the shard.
struct Leg {
    subscriber: u64,
    /// `None`: the leg is a pipe's.
    sender: Option<RTCRtpSenderId>,
    mime: String,
    payload_type: Option<u8>,
    forwarded: Arc<AtomicU64>,
}

/// A connection a shard owns.
struct Peer {
    pc: RTCPeerConnection,
    room: String,
    /// Remote track id -> the publisher stream it carries (all its
    /// simulcast layers).
    inbound: HashMap<String, Inbound>,
    /// Its simulcast layers' SSRCs, kept out of its receiver reports.
    layers: Layers,
    /// RFC 6464's extension id, once the remote description says it.
    audio_level_id: Option<u8>,
    /// Its timer, as last asked.
    timer: Option<Instant>,
    /// What it can receive, as the forwarding decision was last told: the
    /// bandwidth estimate to it (bits per second, 0 = none yet) and the
    /// highest simulcast layer it asked for.
    estimate: u64,
    max_layer: u8,
    /// Whether its estimates come from this node's congestion controller
    /// (then its REMBs, if it sends any, are not taken).
    own_estimates: bool,
    /// Whether its DTLS handshake is done: before, there are no keys to
    /// send media with (a subscriber gets its tracks before it connects).
    secure: bool,
}

#[derive(Clone, Copy)]
struct Inbound {
    /// The stream's key: the SSRC of its first layer to arrive.
    ssrc: u32,
    kind: MediaKind,
    /// Sent in simulcast layers (by RID): each packet's SSRC names its layer.
    simulcast: bool,
    /// VP8: its keyframes can be found.
    vp8: bool,
}

/// An SSRC a publisher sends: a stream, or a layer of one.
struct Source {
    publisher: u64,
    /// `None`: a ghost's (its keyframes are asked of its node).
    receiver: Option<RTCRtpReceiverId>,
    /// The stream's key ([`Inbound::ssrc`]).
    stream: u32,
    layer: Option<u8>,
    /// When a keyframe was last asked of it.
    asked: Option<Instant>,
}

/// Simulcast layers a stream may have.
const MAX_LAYERS: usize = 4;

/// How far (a fraction) a subscriber's estimate moves before the
/// forwarding decision is told.
const ESTIMATE_STEP: f64 = 0.05;

/// A job's view of one connection: the connection itself and what the
/// shard knows of it.
pub struct PeerLink<'a> {
    pub pc: &'a mut RTCPeerConnection,
    /// The media port's address (the candidate to announce).
    pub local: SocketAddr,
    pub now: Instant,
    audio_level_id: &'a mut Option<u8>,
}

impl PeerLink<'_> {
    /// Reads the audio-level extension id from the remote description.
    pub fn learn_audio_level_id(&mut self, uri: &str) {
        if let Some(d) = self.pc.remote_description() {
            *self.audio_level_id = super::extension_id(&d.sdp, uri);
        }
    }
}

/// A shard's state (owned by its thread).
pub struct Shard {
    index: usize,
    socket: MediaSocket,
    poll: mio::Poll,
    commands: mpsc::Receiver<Command>,
    links: Vec<Link>,
    peers: HashMap<u64, Peer>,
    mux: Mux<u64>,
    /// (when, connection): the connections' timers, earliest first.
    timers: BTreeSet<(Instant, u64)>,
    /// Legs of subscribers here, by publisher stream.
    fanout: Fanout<Leg>,
    decide: Box<dyn Decide>,
    events: Events,
    counters: Arc<MediaCounters>,
    queue: SendQueue,
    /// Connections with something to read or write since the last pass.
    touched: HashSet<u64>,
    /// Buffers kept between passes: no allocation per read or per pass.
    incoming: Vec<(SocketAddr, BytesMut)>,
    draining: Vec<u64>,
    writable_interest: bool,
    /// What this shard last added to `counters.queued_bytes`.
    reported_bytes: u64,
    ufrags: Ufrags,
    /// Remote addresses whose connections another shard owns.
    foreign: HashMap<SocketAddr, usize>,
    /// Datagrams to hand to other shards after this read.
    handing: HashMap<usize, Vec<(SocketAddr, BytesMut)>>,
    speakers: Speakers,
    /// Every SSRC publishers here send, and (stream, layer) -> its SSRC.
    sources: HashMap<u32, Source>,
    layers: HashMap<(u32, u8), u32>,
    /// The origin of the RTP clock legs are rebased with.
    epoch: Instant,
    /// Pipes here, to the media port of the node at the other end.
    pipes: HashMap<u64, SocketAddr>,
    /// Streams other nodes relay here, by (their media port, SSRC); and
    /// how many from each node (a datagram from anywhere else is not
    /// looked up).
    piped: HashMap<(SocketAddr, u32), Piped>,
    pipe_peers: HashMap<SocketAddr, usize>,
    /// Packets read from pipes, for the next pass.
    piped_in: Vec<(u64, Inbound, rtc::rtp::Packet)>,
    pipe_owners: PipeOwners,
}

/// A stream another node relays here.
struct Piped {
    ghost: u64,
    inbound: Inbound,
}

/// Streams one connection may publish (audio, video, screen, and room for
/// simulcast layers).
const MAX_STREAMS: usize = 16;

/// Remote addresses a shard remembers as another's before starting over.
const MAX_FOREIGN: usize = 1 << 16;

impl Shard {
    fn run(mut self) {
        let mut events = mio::Events::with_capacity(16);
        let mut batch = Batch::default();
        loop {
            let now = Instant::now();
            let wait = match self.touched.is_empty() {
                true => self.timers.first().map_or(IDLE, |(at, _)| at.saturating_duration_since(now).min(IDLE)),
                false => Duration::ZERO,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(shard = self.index, "media shard cannot wait for its socket: {e}");
                return;
            }
            let now = Instant::now();
            // Commands: jobs, forwarded packets, datagrams from other shards.
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    Command::Job(job) => job(&mut self, now),
                    Command::Datagrams(datagrams, bytes) => {
                        self.links[self.index].queued.fetch_sub(bytes, Ordering::Relaxed);
                        for (from, datagram) in datagrams {
                            self.datagram(from, datagram, now);
                        }
                    }
                    Command::Stop => return,
                }
            }
            // The socket, until it is empty or the budget is spent.
            let mut read = 0;
            while read < READ_BUDGET {
                let mut incoming = std::mem::take(&mut self.incoming);
                match self.socket.recv(|from, d| incoming.push((from, BytesMut::from(d)))) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) => {
                        tracing::warn!(shard = self.index, "media socket: {e}");
                        break;
                    }
                }
                for (from, datagram) in incoming.drain(..) {
                    self.datagram(from, datagram, now);
                }
                self.incoming = incoming;
            }
            self.hand_over();
            // Timers due.
            while let Some(&(at, connection)) = self.timers.first() {
                if at > now {
                    break;
                }
                self.timers.pop_first();
                if let Some(peer) = self.peers.get_mut(&connection) {
                    peer.timer = None;
                    let _ = peer.pc.handle_timeout(now);
                    self.touched.insert(connection);
                }
            }
            self.pass(&mut batch, now);
            self.flush();
            // Budget spent: look again at once rather than wait.
            if read >= READ_BUDGET {
                let _ = self.links[self.index].waker.wake();
            }
        }
    }

    /// One datagram from `from`: to the connection it is for, here or on
    /// the shard that owns it.
    fn datagram(&mut self, from: SocketAddr, datagram: BytesMut, now: Instant) {
        if self.pipe_peers.contains_key(&from) {
            return self.piped_datagram(from, datagram);
        }
        let Some(connection) = self.mux.route(from, &datagram) else {
            return self.hand_on(from, datagram);
        };
        let Some(peer) = self.peers.get_mut(&connection) else { return };
        let transport =
            TransportContext { local_addr: self.socket.local, peer_addr: from, ecn: None, transport_protocol: TransportProtocol::UDP };
        if let Err(e) = peer.pc.handle_read(TaggedBytesMut { now, transport, message: datagram }) {
            tracing::debug!(connection, "datagram refused: {e}");
        }
        self.touched.insert(connection);
    }

    /// A datagram for no connection here. The kernel picks a group socket
    /// by the sender's address, not by who owns the connection: a binding
    /// request names the connection's ufrag, so the owner is known, and
    /// what comes later from that address follows it there. Anything else
    /// is dropped, counted.
    fn hand_on(&mut self, from: SocketAddr, datagram: BytesMut) {
        // Another node's relayed stream goes by its SSRC (that node's rooms
        // may live on several shards here); it is never cached by address.
        if let Some(ssrc) = rtp_ssrc(&datagram)
            && let Some(&owner) = crate::runtime::lock(&self.pipe_owners).get(&(from, ssrc))
        {
            if owner != self.index {
                self.handing.entry(owner).or_default().push((from, datagram));
            } else {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let owner = match self.foreign.get(&from) {
            Some(&owner) => Some(owner),
            None => mux::binding_request_ufrag(&datagram).and_then(|ufrag| crate::runtime::lock(&self.ufrags).get(&ufrag).copied()),
        };
        match owner {
            Some(owner) if owner != self.index => {
                if self.foreign.len() >= MAX_FOREIGN {
                    self.foreign.clear();
                }
                self.foreign.insert(from, owner);
                self.handing.entry(owner).or_default().push((from, datagram));
            }
            _ => {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// RTP from another node's media port: a relayed stream of a room here
    /// (decided with the next pass), or another shard's.
    fn piped_datagram(&mut self, from: SocketAddr, datagram: BytesMut) {
        use rtc::shared::marshal::Unmarshal;
        let Some(piped) = rtp_ssrc(&datagram).and_then(|ssrc| self.piped.get(&(from, ssrc))) else {
            return self.hand_on(from, datagram);
        };
        let (ghost, inbound) = (piped.ghost, piped.inbound);
        match rtc::rtp::Packet::unmarshal(&mut &datagram[..]) {
            Ok(packet) => self.piped_in.push((ghost, inbound, packet)),
            Err(_) => {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Hands the datagrams of other shards' connections over, a message
    /// per shard per read.
    fn hand_over(&mut self) {
        for (shard, datagrams) in self.handing.drain() {
            if let Some(link) = self.links.get(shard) {
                let (count, bytes) = (datagrams.len() as u64, datagrams.iter().map(|(_, d)| d.len()).sum());
                match link.send_media(Command::Datagrams(datagrams, bytes), bytes) {
                    true => self.counters.handed_over.fetch_add(count, Ordering::Relaxed),
                    false => self.counters.send_dropped.fetch_add(count, Ordering::Relaxed),
                };
            }
        }
    }

    /// Reads what touched connections produced, decides and fans out;
    /// again for the subscribers that writes touched. Bounded: what is
    /// left stays touched and the loop comes back without waiting.
    fn pass(&mut self, batch: &mut Batch, now: Instant) {
        let mut piped = std::mem::take(&mut self.piped_in);
        for (ghost, inbound, packet) in piped.drain(..) {
            let keyframe = inbound.vp8 && medianode_core::sfu::vp8::starts_keyframe(&packet.payload);
            batch.push(ghost, inbound, Layered { layer: None, keyframe, audio_level: None }, packet);
            if batch.metas.len() >= MAX_BATCH {
                self.forward(batch, now);
            }
        }
        self.piped_in = piped;
        if !batch.metas.is_empty() {
            self.forward(batch, now);
        }
        for _ in 0..8 {
            if self.touched.is_empty() {
                break;
            }
            let mut touched = std::mem::take(&mut self.draining);
            touched.extend(self.touched.drain());
            for &connection in &touched {
                self.drain_peer(connection, batch, now);
                if batch.metas.len() >= MAX_BATCH {
                    self.forward(batch, now);
                }
            }
            touched.clear();
            self.draining = touched;
            if !batch.metas.is_empty() {
                self.forward(batch, now);
            }
        }
    }

    /// Everything one connection has for us: events, packets, datagrams;
    /// and its next timer.
    fn drain_peer(&mut self, connection: u64, batch: &mut Batch, now: Instant) {
        let Some(peer) = self.peers.get_mut(&connection) else { return };
        while let Some(event) = peer.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                    (self.events)(ShardEvent::IceState(connection, state));
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) => peer.secure = true,
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let layer = init.rid.as_ref().and_then(|rid| {
                        let sdp = peer.pc.remote_description().map_or("", |d| d.sdp.as_str());
                        super::simulcast_layer(sdp, rid).filter(|&l| usize::from(l) < MAX_LAYERS)
                    });
                    if init.rid.is_some() && layer.is_none() {
                        // A layer past the few a stream may have.
                        self.counters.streams_refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let source = |stream| Source { publisher: connection, receiver: Some(init.receiver_id), stream, layer, asked: None };
                    if let Some(inbound) = peer.inbound.get(&init.track_id).copied() {
                        // Another layer of a stream the subscribers have.
                        if let Some(layer) = layer {
                            self.sources.insert(init.ssrc, source(inbound.ssrc));
                            let mut unacked = crate::runtime::lock(&peer.layers);
                            // A layer that came back with another SSRC replaces its old one.
                            if let Some(old) = self.layers.insert((inbound.ssrc, layer), init.ssrc)
                                && old != init.ssrc
                            {
                                self.sources.remove(&old);
                                unacked.remove(&old);
                            }
                            unacked.insert(init.ssrc);
                        }
                        continue;
                    }
                    // Each stream costs every subscriber a track and the
                    // node an offer: a publisher gets a few.
                    if peer.inbound.len() >= MAX_STREAMS {
                        self.counters.streams_refused.fetch_add(1, Ordering::Relaxed);
                        // Counted in the metrics; a log line each could flood.
                        tracing::debug!(connection, "a publisher's stream refused: it has {MAX_STREAMS}");
                        continue;
                    }
                    let Some(mut receiver) = peer.pc.rtp_receiver(init.receiver_id) else { continue };
                    let kind = match receiver.track().kind() {
                        rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio => MediaKind::Audio,
                        _ => MediaKind::Video,
                    };
                    let codec = receiver.get_parameters().rtp_parameters.codecs.first().map(|c| c.rtp_codec.clone());
                    let vp8 = codec.as_ref().is_some_and(|c| {
                        c.mime_type.eq_ignore_ascii_case(rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8)
                    });
                    peer.inbound.insert(init.track_id.clone(), Inbound { ssrc: init.ssrc, kind, simulcast: layer.is_some(), vp8 });
                    self.sources.insert(init.ssrc, source(init.ssrc));
                    if let Some(layer) = layer {
                        self.layers.insert((init.ssrc, layer), init.ssrc);
                        crate::runtime::lock(&peer.layers).insert(init.ssrc);
                    }
                    if let Some(codec) = codec {
                        (self.events)(ShardEvent::Track { connection, ssrc: init.ssrc, kind, codec });
                    }
                }
                _ => {}
            }
        }
        let mut keyframes = Vec::new();
        let mut estimate = None;
        while let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track, packet) => {
                    let Some(inbound) = peer.inbound.get(&track).copied() else { continue };
                    // A simulcast stream's packets name their layer by SSRC
                    // (its retransmissions come on others: not forwarded).
                    let layer = match inbound.simulcast {
                        true => match self.sources.get(&packet.header.ssrc).and_then(|s| s.layer) {
                            Some(layer) => Some(layer),
                            None => continue,
                        },
                        false => None,
                    };
                    let keyframe = inbound.vp8 && medianode_core::sfu::vp8::starts_keyframe(&packet.payload);
                    let audio_level = match (inbound.kind, peer.audio_level_id) {
                        (MediaKind::Audio, Some(id)) => packet.header.get_extension(id).and_then(|b| b.first().copied()).map(|b| b & 0x7f),
                        _ => None,
                    };
                    if let Some(level) = audio_level {
                        let changed = {
                            let mut speakers = crate::runtime::lock(&self.speakers);
                            // Looked up by `&str`: no allocation per packet once the room has one.
                            if !speakers.contains_key(&peer.room) {
                                speakers.insert(peer.room.clone(), SpeakerDetector::new(60, Duration::from_millis(300)));
                            }
                            speakers.get_mut(&peer.room).and_then(|d| d.level(now, connection, level))
                        };
                        if let Some(speaker) = changed {
                            (self.events)(ShardEvent::Speaker { room: peer.room.clone(), connection: speaker });
                        }
                    }
                    batch.push(connection, inbound, Layered { layer, keyframe, audio_level }, packet);
                    if batch.metas.len() >= MAX_BATCH {
                        // Decided now; the rest of this connection's
                        // packets come in the next batch.
                        break;
                    }
                }
                RTCMessage::RtcpPacket(track, packets) => {
                    // The bandwidth to this subscriber: the congestion
                    // controller's estimate from its feedback, or (from a
                    // peer that gives no such feedback) its own REMB.
                    for found in packets.iter().filter_map(|p| crate::peer::feedback::estimate(p.as_ref())) {
                        match found {
                            Estimate::Own(bitrate) => {
                                peer.own_estimates = true;
                                estimate = Some(bitrate);
                            }
                            Estimate::Remote(bitrate) if !peer.own_estimates => estimate = Some(bitrate),
                            Estimate::Remote(_) => {}
                        }
                    }
                    // A subscriber's keyframe request for a track we send:
                    // ours are named `p<publisher>-<stream ssrc>`.
                    if packets.iter().any(|p| crate::peer::feedback::is_keyframe_request(p.as_ref()))
                        && let Some(stream) = track.rsplit('-').next().and_then(|s| s.parse::<u32>().ok())
                    {
                        keyframes.push(stream);
                    }
                }
                _ => {}
            }
        }
        for stream in keyframes {
            self.keyframe_wanted(stream, connection, now);
        }
        if let Some(bitrate) = estimate {
            self.receiver(connection, Some(bitrate), None);
        }
        let Some(peer) = self.peers.get_mut(&connection) else { return };
        while let Some(out) = peer.pc.poll_write() {
            let to = out.transport.peer_addr;
            self.mux.sent(connection, to);
            self.queue.push(to, out.message);
        }
        let next = peer.pc.poll_timeout();
        if next != peer.timer {
            if let Some(old) = peer.timer.take() {
                self.timers.remove(&(old, connection));
            }
            if let Some(at) = next {
                self.timers.insert((at, connection));
            }
            peer.timer = next;
        }
        if batch.metas.len() >= MAX_BATCH {
            // More may be waiting: look at this connection again.
            self.touched.insert(connection);
        }
    }

    /// A subscriber's estimate or wished layer changed: the forwarding
    /// decision hears of it (an estimate only when it moved by more than
    /// [`ESTIMATE_STEP`], so that its wobble costs nothing).
    fn receiver(&mut self, connection: u64, estimate: Option<u64>, max_layer: Option<u8>) {
        let Some(peer) = self.peers.get_mut(&connection) else { return };
        let mut changed = false;
        if let Some(layer) = max_layer {
            changed |= peer.max_layer != layer;
            peer.max_layer = layer;
        }
        if let Some(bitrate) = estimate {
            let moved = (bitrate as f64 - peer.estimate as f64).abs() > peer.estimate as f64 * ESTIMATE_STEP;
            if moved {
                peer.estimate = bitrate;
                changed = true;
            }
        }
        if changed {
            let state = ReceiverState { participant: connection, bitrate: peer.estimate, max_layer: peer.max_layer };
            self.decide.update(&RouteChange::Receiver(state));
        }
    }

    /// A keyframe request from a subscriber's leg goes to the publisher,
    /// for the layer the leg gets now.
    fn keyframe_wanted(&mut self, stream: u32, subscriber: u64, now: Instant) {
        let source = self.fanout.source(stream, subscriber).unwrap_or(stream);
        self.request_keyframe(source, now);
    }

    /// Sends the publisher of `ssrc` a PLI for it, at most one per
    /// `feedback::MIN_INTERVAL` (a keyframe takes a round trip anyway).
    fn request_keyframe(&mut self, ssrc: u32, now: Instant) {
        let Some(source) = self.sources.get_mut(&ssrc) else { return };
        if source.asked.is_some_and(|t| now.duration_since(t) < crate::peer::feedback::MIN_INTERVAL) {
            return;
        }
        source.asked = Some(now);
        let (publisher, receiver) = (source.publisher, source.receiver);
        let Some(receiver) = receiver else {
            // A ghost's: its node asks the publisher.
            self.counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            return (self.events)(ShardEvent::RelayedKeyframe { ghost: publisher, ssrc });
        };
        let Some(peer) = self.peers.get_mut(&publisher) else { return };
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
        if let Some(mut receiver) = peer.pc.rtp_receiver(receiver)
            && receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok()
        {
            self.counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            self.touched.insert(publisher);
        }
    }

    /// Decides `batch` and writes every copy.
    fn forward(&mut self, batch: &mut Batch, now: Instant) {
        // Taken out while the batch is read (empty vectors allocate nothing).
        let mut decision = std::mem::replace(&mut batch.decision, empty_decision());
        decision.counts.clear();
        decision.subscribers.clear();
        decision.keyframes.clear();
        self.decide.decide(&batch.metas, &mut decision);
        for &wanted in &decision.keyframes {
            let wanted = medianode_sdk::KeyframeRequest::unpack(wanted);
            if let Some(&ssrc) = self.layers.get(&(wanted.ssrc, wanted.layer)) {
                self.request_keyframe(ssrc, now);
            }
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.packets_in.fetch_add(batch.metas.len() as u64, Ordering::Relaxed);
        let mut cursor = 0;
        for ((meta, mut packet), &count) in batch.metas.iter().zip(batch.packets.drain(..)).zip(&decision.counts) {
            let chosen = decision.subscribers.get(cursor..cursor + count as usize).unwrap_or(&[]);
            cursor += count as usize;
            // Header extension ids are negotiated per leg; none is carried
            // over (the publisher's would be refused). A fresh header: what
            // the parsed one kept of its extensions' layout (padding, the
            // two-byte profile of a browser's RID and MID) must not reach
            // the leg's marshalling either.
            let h = &packet.header;
            packet.header = rtc::rtp::header::Header {
                version: h.version,
                padding: h.padding,
                marker: h.marker,
                payload_type: h.payload_type,
                sequence_number: h.sequence_number,
                timestamp: h.timestamp,
                ssrc: h.ssrc,
                csrc: std::mem::take(&mut packet.header.csrc),
                ..Default::default()
            };
            self.write_copies(meta.ssrc, &packet, chosen, now);
        }
        batch.metas.clear();
        batch.decision = decision;
    }

    /// Writes `packet` of `stream` (or of one of its layers) to each chosen
    /// leg here.
    fn write_copies(&mut self, stream: u32, packet: &rtc::rtp::Packet, chosen: &[u64], now: Instant) {
        let (peers, touched, counters) = (&mut self.peers, &mut self.touched, &self.counters);
        let (pipes, queue) = (&self.pipes, &mut self.queue);
        // The wall clock in 90 kHz units: how far a leg's timestamps move
        // when it switches layers.
        let clock = (now.duration_since(self.epoch).as_micros() as u64 * 9 / 100) as u32;
        let h = &packet.header;
        let routed = Routed { stream, source: h.ssrc, sequence: h.sequence_number, timestamp: h.timestamp, clock };
        self.fanout.route(routed, chosen, |leg, copy| {
            if copy.switched {
                counters.layer_switches.fetch_add(1, Ordering::Relaxed);
            }
            let subscriber = leg.io.subscriber;
            let Some(sender) = leg.io.sender else {
                // A pipe's: the packet as it came, renumbered, in plain RTP.
                use rtc::shared::marshal::Marshal;
                let Some(&remote) = pipes.get(&subscriber) else { return };
                let mut out = packet.clone();
                out.header.ssrc = copy.ssrc;
                out.header.sequence_number = copy.sequence;
                out.header.timestamp = copy.timestamp;
                match out.marshal() {
                    Ok(datagram) => {
                        queue.push(remote, datagram);
                        counters.packets_out.fetch_add(1, Ordering::Relaxed);
                        leg.io.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return;
            };
            let Some(peer) = peers.get_mut(&subscriber).filter(|p| p.secure) else { return };
            let Some(mut sender) = peer.pc.rtp_sender(sender) else {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if leg.io.payload_type.is_none() {
                let mime = &leg.io.mime;
                leg.io.payload_type = sender
                    .get_parameters()
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                    .map(|c| c.payload_type);
            }
            let Some(pt) = leg.io.payload_type else {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut out = packet.clone();
            out.header.ssrc = copy.ssrc;
            out.header.sequence_number = copy.sequence;
            out.header.timestamp = copy.timestamp;
            out.header.payload_type = pt;
            match sender.write_rtp(now, out) {
                Ok(()) => {
                    counters.packets_out.fetch_add(1, Ordering::Relaxed);
                    leg.io.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            touched.insert(subscriber);
        });
    }

    /// Sends what is queued; asks to hear when the socket takes more.
    fn flush(&mut self) {
        if let Err(e) = self.socket.flush(&mut self.queue) {
            tracing::warn!(shard = self.index, "media socket: {e}");
        }
        self.counters.send_dropped.fetch_add(std::mem::take(&mut self.queue.dropped), Ordering::Relaxed);
        self.counters.write_errors.fetch_add(std::mem::take(&mut self.queue.failed), Ordering::Relaxed);
        // The queued bytes of every shard add up in one gauge.
        let queued = self.queue.bytes() as u64;
        if queued > self.reported_bytes {
            self.counters.queued_bytes.fetch_add(queued - self.reported_bytes, Ordering::Relaxed);
        } else {
            self.counters.queued_bytes.fetch_sub(self.reported_bytes - queued, Ordering::Relaxed);
        }
        self.reported_bytes = queued;
        let want_writable = !self.queue.is_empty();
        if want_writable != self.writable_interest {
            let interest = if want_writable { mio::Interest::READABLE | mio::Interest::WRITABLE } else { mio::Interest::READABLE };
            if self.poll.registry().reregister(&mut self.socket.socket, SOCKET, interest).is_ok() {
                self.writable_interest = want_writable;
            }
        }
    }

    fn adopt(&mut self, connection: u64, room: String, pc: RTCPeerConnection, layers: Layers, now: Instant) {
        let mut peer = Peer {
            pc,
            room,
            inbound: HashMap::new(),
            layers,
            audio_level_id: None,
            timer: None,
            estimate: 0,
            max_layer: medianode_sdk::ANY_LAYER,
            own_estimates: false,
            secure: false,
        };
        self.register(connection, local_ufrag(&peer.pc));
        let _ = peer.pc.handle_timeout(now);
        self.peers.insert(connection, peer);
        self.touched.insert(connection);
    }

    /// Runs `f` on `connection`'s peer connection; `None` if not here.
    fn with_peer<R>(&mut self, connection: u64, now: Instant, f: impl FnOnce(&mut PeerLink<'_>) -> R) -> Option<R> {
        let peer = self.peers.get_mut(&connection)?;
        let mut link = PeerLink { pc: &mut peer.pc, local: self.socket.local, now, audio_level_id: &mut peer.audio_level_id };
        let result = f(&mut link);
        // A new local description may carry a new ufrag (an ICE restart).
        let ufrag = local_ufrag(&peer.pc);
        self.register(connection, ufrag);
        self.touched.insert(connection);
        Some(result)
    }

    /// Makes `connection`'s ufrag known here and to the other shards, in
    /// place of the one an ICE restart replaced.
    fn register(&mut self, connection: u64, ufrag: Option<String>) {
        let Some(ufrag) = ufrag else { return };
        let replaced = self.mux.add(connection, &ufrag);
        let mut ufrags = crate::runtime::lock(&self.ufrags);
        if let Some(old) = replaced {
            ufrags.remove(&old);
        }
        ufrags.insert(ufrag, self.index);
    }

    fn add_leg(&mut self, spec: LegSpec) {
        let leg =
            Leg { subscriber: spec.subscriber, sender: Some(spec.sender), mime: spec.mime, payload_type: None, forwarded: spec.forwarded };
        self.fanout.subscribe(spec.stream, spec.subscriber, spec.ssrc, leg);
    }

    /// `connection` is gone: its peer connection (closed) if it was here,
    /// its legs, its place.
    fn forget(&mut self, connection: u64, owner: bool) {
        self.fanout.forget(connection);
        self.pipes.remove(&connection);
        let (pipe_peers, owners) = (&mut self.pipe_peers, &self.pipe_owners);
        self.piped.retain(|&(remote, ssrc), piped| {
            if piped.ghost != connection {
                return true;
            }
            crate::runtime::lock(owners).remove(&(remote, ssrc));
            if let Some(n) = pipe_peers.get_mut(&remote) {
                *n -= 1;
                if *n == 0 {
                    pipe_peers.remove(&remote);
                }
            }
            false
        });
        self.sources.retain(|_, s| s.publisher != connection);
        let sources = &self.sources;
        self.layers.retain(|_, ssrc| sources.contains_key(ssrc));
        if owner && let Some(mut peer) = self.peers.remove(&connection) {
            let _ = peer.pc.close();
            // Its goodbye (DTLS close) still goes out.
            while let Some(out) = peer.pc.poll_write() {
                self.queue.push(out.transport.peer_addr, out.message);
            }
            if let Some(at) = peer.timer {
                self.timers.remove(&(at, connection));
            }
            if let Some(ufrag) = local_ufrag(&peer.pc) {
                crate::runtime::lock(&self.ufrags).remove(&ufrag);
            }
            self.mux.remove(connection);
        }
    }
}

/// The SSRC of what looks like an RTP packet (version 2, not RTCP).
fn rtp_ssrc(datagram: &[u8]) -> Option<u32> {
    let header = datagram.get(..12)?;
    let rtcp = (192..=223).contains(&header[1]);
    (header[0] >> 6 == 2 && !rtcp).then(|| u32::from_be_bytes([header[8], header[9], header[10], header[11]]))
}

/// The ufrag of a connection's local description (`a=ice-ufrag:`).
fn local_ufrag(pc: &RTCPeerConnection) -> Option<String> {
    let description = pc.local_description()?;
    description.sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:").map(|u| u.trim().to_string()))
}

/// Packets waiting for one forwarding decision.
struct Batch {
    metas: Vec<PacketMeta>,
    packets: Vec<rtc::rtp::Packet>,
    decision: ForwardBatch,
}

/// What the shard read of a packet beyond its header.
struct Layered {
    layer: Option<u8>,
    keyframe: bool,
    audio_level: Option<u8>,
}

impl Batch {
    fn push(&mut self, publisher: u64, inbound: Inbound, read: Layered, packet: rtc::rtp::Packet) {
        let h = &packet.header;
        self.metas.push(PacketMeta {
            publisher,
            kind: inbound.kind,
            ssrc: inbound.ssrc,
            sequence: h.sequence_number,
            timestamp: h.timestamp,
            payload_type: h.payload_type,
            marker: h.marker,
            size: packet.payload.len() as u32,
            audio_level: read.audio_level,
            layer: read.layer,
            keyframe: read.keyframe,
        });
        self.packets.push(packet);
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch { metas: Vec::new(), packets: Vec::new(), decision: empty_decision() }
    }
}

fn empty_decision() -> ForwardBatch {
    ForwardBatch { counts: Vec::new(), subscribers: Vec::new(), keyframes: Vec::new() }
}

/// A route change as the decision takes it.
pub fn joined(participant: u64, room: String) -> RouteChange {
    RouteChange::Joined(RouteMember { participant, room })
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn a_room_stays_on_one_shard_and_new_rooms_go_to_the_least_loaded() {
        let mut p = Placement::default();
        assert_eq!(p.place(1, "a", 2), 0);
        assert_eq!(p.place(2, "a", 2), 0, "with its room");
        assert_eq!(p.place(3, "b", 2), 1, "a new room, on the emptier shard");
        assert_eq!(p.place(4, "c", 2), 1, "2 vs 1 connections");
        assert_eq!(p.remove(1), Some(0));
        assert_eq!(p.remove(2), Some(0));
        assert!(!p.rooms.contains_key("a"), "an empty room is forgotten");
        assert_eq!(p.place(5, "a", 2), 0, "and placed afresh");
        assert_eq!((p.shard(5), p.shard(1), p.remove(1)), (Some(0), None, None));
    }
}
