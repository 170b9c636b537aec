//! A server node in a cluster (`[cluster]`): its registration in Redis, the
//! room directory, and where each client connection's signaling goes.
//!
//! Redis holds the cluster's shared state; nothing else is shared:
//!
//! - `medianode:node:<id>`: a node's [`NodeInfo`] (its URLs and load),
//!   written every [`HEARTBEAT_EVERY`] with an expiry of [`HEARTBEAT_TTL`]. A
//!   node that dies, however it dies, stops writing and its key expires.
//!   Every heartbeat also reads every node's key: that is the view
//!   ([`Membership`]) placement decides from.
//! - `medianode:room:<room>`: the room's home node, claimed with a
//!   compare-and-set ([`CLAIM`]) and renewed by the home while the room has
//!   members ([`ROOM_TTL`]). A claim names the home it replaces, so a dead
//!   home is replaced once, by one node, however many ask at once.
//!
//! A room's signaling lives on its home, whose signaling stage is the
//! room's MLS delivery service (commits are ordered once, for the whole
//! room). A client may connect to any node: its node reads the room of its
//! `join` and, when the home is another node, carries the connection's
//! signaling there over a WebSocket of its own ([`proxy`]); its media stays
//! on the node it connected to, and each node of a room relays its own
//! publishers to the others ([`relay`]).

pub mod proxy;
pub mod relay;

use crate::signaling::connections::Connections;
use crate::signaling::hub::SeatSink;
use crate::signaling::placement::{Destination, Placement};
use medianode_core::cluster::{HEARTBEAT_EVERY, HEARTBEAT_TTL, Membership, NodeInfo, ROOM_TTL};
use medianode_core::config::ClusterConfig;
use redis::aio::ConnectionManager;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How long one Redis command may take before the node treats Redis as
/// unreachable for it (a join is refused rather than left waiting).
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Claims `KEYS[1]` (a room) for `ARGV[1]` if it is free or still names
/// `ARGV[2]` (the home the caller saw dead; "" for none), for `ARGV[3]` ms.
/// Returns the room's home afterwards: the caller's pick, or whoever won.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return cur
";

/// Renews `KEYS[1]` for `ARGV[2]` ms if it still names `ARGV[1]`; 1 if so.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes `KEYS[1]` if it still names `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

fn node_key(id: &str) -> String {
    format!("medianode:node:{id}")
}

fn room_key(room: &str) -> String {
    format!("medianode:room:{room}")
}

/// Where a room's signaling lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    Here,
    /// Another node, reached at `url`.
    There {
        node: String,
        url: String,
    },
}

/// What the cluster side has seen, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Redis commands that failed or timed out.
    pub redis_errors: AtomicU64,
    /// Client connections whose signaling went to another node.
    pub proxied: AtomicU64,
    /// Rooms this node found claimed by another while it was their home.
    pub rooms_lost: AtomicU64,
}

/// This node's membership of the cluster. Cheap to share (`Arc`).
pub struct Cluster {
    /// Itself, for the tasks it starts.
    me: std::sync::Weak<Cluster>,
    pub node: String,
    pub url: String,
    pub redis_url: String,
    media: std::net::SocketAddr,
    redis: ConnectionManager,
    claim: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    view: Mutex<Membership>,
    /// Signaling seats on this node's stage, by connection: the rooms it
    /// is the home of (renewed with each heartbeat while they have one).
    hosted: Mutex<HashMap<u64, String>>,
    /// Connections whose media is on this node: its load.
    media_seats: Mutex<HashSet<u64>>,
    draining: AtomicBool,
    /// It left ([`Self::leave`]): no more heartbeats.
    left: AtomicBool,
    /// Nodes that left the view: proxies to them end.
    gone: broadcast::Sender<String>,
    /// Where Redis calls from plain threads (the signaling stage's) run.
    runtime: tokio::runtime::Handle,
    pub counters: ClusterCounters,
}

impl Cluster {
    /// Connects to Redis, writes the first heartbeat and reads the view,
    /// then keeps heartbeating until the last handle is dropped.
    pub async fn join(config: &ClusterConfig, url: String, media: std::net::SocketAddr) -> Result<Arc<Cluster>, String> {
        let client = redis::Client::open(config.redis.as_str()).map_err(|e| format!("bad Redis URL `{}`: {e}", config.redis))?;
        // One plain connection first: the manager retries a refused one for
        // ever, and a node whose Redis is down should say so at once.
        match tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("cannot reach Redis at {}: {e}", config.redis)),
            Err(_) => return Err(format!("Redis at {} did not answer within 5 s", config.redis)),
        }
        let redis = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager())
            .await
            .map_err(|_| format!("Redis at {} did not answer within 5 s", config.redis))?
            .map_err(|e| format!("cannot reach Redis at {}: {e}", config.redis))?;
        let cluster = Arc::new_cyclic(|me| Cluster {
            me: me.clone(),
            node: config.node.clone(),
            url,
            redis_url: config.redis.clone(),
            media,
            redis,
            claim: redis::Script::new(CLAIM),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
            view: Mutex::new(Membership::default()),
            hosted: Mutex::default(),
            media_seats: Mutex::default(),
            draining: AtomicBool::new(false),
            left: AtomicBool::new(false),
            gone: broadcast::channel(64).0,
            runtime: tokio::runtime::Handle::current(),
            counters: ClusterCounters::default(),
        });
        let taken: Option<String> = cluster.redis(redis::cmd("GET").arg(node_key(&cluster.node))).await?;
        if let Some(other) = taken.and_then(|json| serde_json::from_str::<NodeInfo>(&json).ok()).filter(|n| n.url != cluster.url) {
            return Err(format!("node `{}` is already in the cluster (at {}); give this one another name", cluster.node, other.url));
        }
        cluster.beat(&mut Usage::default()).await?;
        tracing::info!(node = %cluster.node, url = %cluster.url, nodes = cluster.lock_view().alive(Instant::now()).count(), "joined the cluster at {}", config.redis);
        let weak = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            let mut usage = Usage::default();
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                every.tick().await;
                let Some(cluster) = weak.upgrade() else { return };
                match cluster.beat(&mut usage).await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("Redis answers again");
                    }
                    Ok(()) => {}
                    // Logged once per outage, not every half second.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("cluster heartbeat failed: {e}");
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(cluster)
    }

    /// One heartbeat: write ours, renew our rooms, read everyone's.
    async fn beat(&self, usage: &mut Usage) -> Result<(), String> {
        if self.left.load(Ordering::Relaxed) {
            return Ok(());
        }
        let info = NodeInfo {
            id: self.node.clone(),
            url: self.url.clone(),
            media: self.media.to_string(),
            participants: u32::try_from(lock(&self.media_seats).len()).unwrap_or(u32::MAX),
            cpu: usage.cores(),
            packets_per_second: 0,
            draining: self.draining.load(Ordering::Relaxed),
        };
        let json = serde_json::to_string(&info).map_err(|e| e.to_string())?;
        let ttl = millis(HEARTBEAT_TTL);
        self.redis::<()>(redis::cmd("SET").arg(node_key(&self.node)).arg(json).arg("PX").arg(ttl)).await?;
        let rooms: BTreeSet<String> = lock(&self.hosted).values().cloned().collect();
        for room in rooms {
            let mut renew = self.renew.key(room_key(&room));
            renew.arg(&self.node).arg(millis(ROOM_TTL));
            let renewed: i64 = self.invoke(renew).await?;
            if renewed == 0 {
                self.counters.rooms_lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(room, "another node holds this room's home now; its members here should reconnect");
            }
        }
        let nodes = self.read_nodes().await?;
        let now = Instant::now();
        let mut view = self.lock_view();
        let before: Vec<String> = view.alive(now).map(|n| n.id.clone()).collect();
        view.observe(now, nodes);
        for id in before.into_iter().filter(|id| !view.is_alive(now, id)) {
            tracing::warn!(node = %id, "a node left the cluster (its heartbeat lapsed)");
            let _ = self.gone.send(id);
        }
        Ok(())
    }

    async fn read_nodes(&self) -> Result<Vec<NodeInfo>, String> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) =
                self.redis(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg("medianode:node:*").arg("COUNT").arg(1000)).await?;
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = self.redis(redis::cmd("MGET").arg(&keys)).await?;
        // A key that does not parse is some other program's: ignored.
        Ok(values.into_iter().flatten().filter_map(|json| serde_json::from_str(&json).ok()).collect())
    }

    /// Where `room`'s signaling lives: its home if that node is alive, or
    /// else the least loaded node, claimed for it now.
    pub async fn home(&self, room: &str) -> Result<Home, String> {
        self.home_without(room, None).await
    }

    /// The same when `unreachable`, the room's home a moment ago, cannot be
    /// reached: it is replaced at once, not when its heartbeat lapses (a
    /// node that was SIGKILLed refuses connections long before that).
    pub async fn rehome(&self, room: &str, unreachable: &str) -> Result<Home, String> {
        tracing::warn!(room, home = unreachable, "the room's home does not answer; moving the room");
        self.home_without(room, Some(unreachable)).await
    }

    async fn home_without(&self, room: &str, unreachable: Option<&str>) -> Result<Home, String> {
        let key = room_key(room);
        let excluded: Vec<&str> = unreachable.into_iter().collect();
        for _ in 0..3 {
            let current: Option<String> = self.redis(redis::cmd("GET").arg(&key)).await?;
            let (current_alive, pick) = {
                let view = self.lock_view();
                let now = Instant::now();
                let alive = current.as_deref().is_some_and(|h| view.is_alive(now, h) && !excluded.contains(&h));
                (alive, view.least_loaded_for(now, &self.node, &excluded).map(|n| n.id.clone()))
            };
            if current_alive && let Some(home) = current {
                return self.resolve(&home);
            }
            let Some(pick) = pick else { return Err("no node of the cluster can take the room".into()) };
            let mut claim = self.claim.key(&key);
            claim.arg(&pick).arg(current.as_deref().unwrap_or_default()).arg(millis(ROOM_TTL));
            let home: String = self.invoke(claim).await?;
            if self.lock_view().is_alive(Instant::now(), &home) && !excluded.contains(&home.as_str()) {
                if home == pick {
                    tracing::info!(room, home, "a room found its home");
                }
                return self.resolve(&home);
            }
        }
        Err("the room's home changed three times while it was looked up".into())
    }

    fn resolve(&self, home: &str) -> Result<Home, String> {
        if home == self.node {
            return Ok(Home::Here);
        }
        match self.lock_view().get(home) {
            Some(info) => Ok(Home::There { node: home.to_string(), url: info.url.clone() }),
            None => Err(format!("node `{home}` left the cluster")),
        }
    }

    /// The stage took the seat back; the room's claim is released when its
    /// last seat goes, so that the next join places it afresh.
    pub fn not_hosting(&self, connection: u64) {
        let room = {
            let mut hosted = lock(&self.hosted);
            match hosted.remove(&connection) {
                Some(room) if !hosted.values().any(|r| *r == room) => room,
                _ => return,
            }
        };
        let Some(cluster) = self.me.upgrade() else { return };
        // Called from the signaling stage's thread: no runtime of its own.
        self.runtime.spawn(async move {
            let mut release = cluster.release.key(room_key(&room));
            release.arg(&cluster.node);
            if let Err(e) = cluster.invoke::<i64>(release).await {
                tracing::debug!(room, "could not release the room's claim (it expires by itself): {e}");
            }
        });
    }

    /// `connection`'s media is on this node (from `seated`, whichever node's
    /// stage gave the seat): counted as this node's load.
    pub fn media_seated(&self, connection: u64) {
        lock(&self.media_seats).insert(connection);
    }

    pub fn media_unseated(&self, connection: u64) {
        lock(&self.media_seats).remove(&connection);
    }

    /// A drain begins: the others stop placing rooms here (the heartbeat
    /// says so at once), and the rooms homed here are let go, so that
    /// their members' next joins (on the nodes they reconnect to) give
    /// them a new home.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        if let Err(e) = self.beat(&mut Usage::default()).await {
            tracing::warn!("could not tell the cluster this node drains: {e}");
        }
        let rooms: BTreeSet<String> = lock(&self.hosted).drain().map(|(_, room)| room).collect();
        for room in rooms {
            let mut release = self.release.key(room_key(&room));
            release.arg(&self.node);
            match self.invoke::<i64>(release).await {
                Ok(_) => tracing::info!(room, "the room's home let go (draining)"),
                Err(e) => tracing::warn!(room, "could not let the room go (its claim expires by itself): {e}"),
            }
        }
    }

    /// The node leaves the cluster now (the end of a drain): its key goes,
    /// so the others forget it at their next read, not after its TTL.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
        if let Err(e) = self.redis::<i64>(redis::cmd("DEL").arg(node_key(&self.node))).await {
            tracing::warn!("could not leave the cluster (its heartbeat lapses by itself): {e}");
        }
    }

    /// This node's media port, as the others relay to it.
    pub fn media_address(&self) -> std::net::SocketAddr {
        self.media
    }

    /// Told when a node leaves the view.
    pub fn gone(&self) -> broadcast::Receiver<String> {
        self.gone.subscribe()
    }

    /// Rooms this node is the home of now.
    pub fn hosted_rooms(&self) -> usize {
        lock(&self.hosted).values().collect::<BTreeSet<_>>().len()
    }

    /// The nodes alive now, this one included.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.lock_view().alive(Instant::now()).cloned().collect()
    }

    fn lock_view(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn redis<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Result<T, String> {
        let mut con = self.redis.clone();
        self.bounded(cmd.query_async(&mut con)).await
    }

    async fn invoke<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> Result<T, String> {
        let mut con = self.redis.clone();
        self.bounded(invocation.invoke_async(&mut con)).await
    }

    async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
        let result = match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => format!("Redis: {e}"),
            Err(_) => format!("Redis did not answer within {REDIS_TIMEOUT:?}"),
        };
        self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
        Err(result)
    }
}

#[async_trait::async_trait]
impl Placement for Cluster {
    async fn route(
        &self,
        room: &str,
        token: Option<&str>,
        connection: u64,
        link: bool,
        connections: Connections,
        seats: Option<Arc<dyn SeatSink>>,
    ) -> Result<Destination, String> {
        let Some(me) = self.me.upgrade() else { return Err("the node is stopping".into()) };
        let (node, url) = match self.home(room).await? {
            Home::Here => return Ok(Destination::Here),
            Home::There { node, .. } if !link => return Ok(Destination::Elsewhere(node)),
            Home::There { node, url } => (node, url),
        };
        let open = |node: String, url: String| {
            let (me, connections, seats) = (me.clone(), connections.clone(), seats.clone());
            async move { proxy::Proxy::open(&me, (&node, &url), room, token, connection, connections, seats).await }
        };
        let proxy = match open(node.clone(), url).await {
            Ok(proxy) => proxy,
            // Its home is gone: the room moves (here, or elsewhere).
            Err(_) => match self.rehome(room, &node).await? {
                Home::Here => return Ok(Destination::Here),
                Home::There { node, url } => open(node, url).await?,
            },
        };
        Ok(Destination::There(Box::new(proxy)))
    }

    fn hosting(&self, connection: u64, room: &str) {
        lock(&self.hosted).insert(connection, room.to_string());
    }

    fn node_urls(&self) -> Vec<String> {
        let mut nodes: Vec<NodeInfo> = self.nodes().into_iter().filter(|n| !n.draining && n.id != self.node).collect();
        nodes.sort_by(|a, b| a.participants.cmp(&b.participants).then_with(|| a.id.cmp(&b.id)));
        std::iter::once(self.url.clone()).chain(nodes.into_iter().map(|n| n.url)).collect()
    }

    fn not_hosting(&self, connection: u64) {
        Cluster::not_hosting(self, connection);
    }

    fn media_seated(&self, connection: u64) {
        Cluster::media_seated(self, connection);
    }

    fn media_unseated(&self, connection: u64) {
        Cluster::media_unseated(self, connection);
    }

    async fn drain(&self) {
        Cluster::drain(self).await;
    }

    async fn leave(&self) {
        Cluster::leave(self).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The process's CPU use between heartbeats, in cores.
#[derive(Default)]
struct Usage {
    last: Option<(Instant, Duration)>,
}

impl Usage {
    fn cores(&mut self) -> f32 {
        let now = Instant::now();
        let used = process_cpu();
        let cores = match self.last {
            Some((at, before)) if now > at => used.saturating_sub(before).as_secs_f32() / (now - at).as_secs_f32(),
            _ => 0.0,
        };
        self.last = Some((now, used));
        cores
    }
}

/// CPU time (user and system) this process has used.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the memory we pass, which
    // is that size; on error it writes nothing and the zeroes stand.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0)) + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
