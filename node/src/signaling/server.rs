//! The node's HTTP side: the web client page and the signaling WebSocket.
//!
//! `GET /` serves the web client, `GET /ws` upgrades to a signaling
//! connection (`/ws?token=...` when the node checks room access tokens),
//! `GET /nodes` lists the cluster's nodes a client may fail over to.
//! Every response carries `Cross-Origin-Opener-Policy: same-origin`,
//! `Cross-Origin-Embedder-Policy: require-corp` and
//! `Cross-Origin-Resource-Policy: same-site`, so the page is cross-origin
//! isolated.
//!
//! Each connection is one task that owns what involves time or abuse:
//!
//! - **heartbeat** ([`super::heartbeat`]): ping after 10 s of silence, close
//!   after 30 s;
//! - **size limit**: a text message over `max_message` bytes gets a
//!   `too-big` error reply and is dropped (frames over four times that are
//!   refused by the WebSocket layer itself, which closes with 1009);
//! - **rate limit** ([`medianode_core::signaling::rate_limit`]): messages beyond the budget get
//!   one `rate-limited` reply per second and are dropped;
//! - binary messages get a `bad-message` reply.
//!
//! The connection stays open through all of these. `ping` is answered with
//! `pong` by the host (browsers cannot send WebSocket pings, and want to
//! know the line is alive). Media messages (`offer`, `answer`, `candidate`,
//! `quality`) go to the SFU; everything else goes to the signaling stage
//! ([`super::hub`]).

use super::connections::{Connections, Outgoing, error_reply};
use super::hub::{Hub, SeatSink};
use super::keepalive::{Lapse, keep_alive};
use super::page;
use super::placement::{Destination, Link, Placement};
use super::token;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use medianode_core::signaling::heartbeat::Heartbeat;
use medianode_core::signaling::rate_limit::TokenBucket;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

pub use medianode_core::config::ServerOptions;

/// Where media messages go: the SFU.
pub trait MediaSink: Send + Sync + 'static {
    /// A media message (`offer`, `answer`, `candidate`) from `connection`.
    fn media_message(&self, connection: u64, message: serde_json::Value);
    /// The connection closed.
    fn closed(&self, connection: u64);
}

/// Message types the SFU handles rather than the signaling stage.
pub const MEDIA_TYPES: &[&str] = &["offer", "answer", "candidate", "quality"];

struct Shared {
    options: ServerOptions,
    hub: Hub,
    connections: Connections,
    media: Option<Arc<dyn MediaSink>>,
    next_id: AtomicU64,
    counters: Arc<SignalingCounters>,
    /// Connections whose task still runs (a drain waits for none).
    live: tokio::sync::watch::Sender<usize>,
    /// In a cluster: where rooms live, and where seats from a client's
    /// room's home go (its SFU).
    cluster: Option<Arc<dyn Placement>>,
    seats: Option<Arc<dyn SeatSink>>,
    /// Connections that are other nodes' proxies for their clients.
    proxied: Proxied,
}

/// Connections that are other nodes' proxies for their clients.
type Proxied = Arc<Mutex<HashSet<u64>>>;

/// How many message types the metrics count: the signaling stage's, the
/// SFU's, `ping`, and `other` for anything else ([`counted_type`]).
pub const COUNTED: usize = medianode_sdk::SIGNALING_TYPES.len() + MEDIA_TYPES.len() + 2;

/// The name counter `i` of [`SignalingCounters::by_type`] counts.
pub fn counted_type(i: usize) -> &'static str {
    let stage = medianode_sdk::SIGNALING_TYPES;
    match i.checked_sub(stage.len()) {
        None => stage[i],
        Some(j) if j < MEDIA_TYPES.len() => MEDIA_TYPES[j],
        Some(j) if j == MEDIA_TYPES.len() => "ping",
        Some(_) => "other",
    }
}

/// What the signaling server has seen, for the admin API's metrics.
#[derive(Debug, Default)]
pub struct SignalingCounters {
    pub connections_opened: AtomicU64,
    /// Text messages received (refused ones included).
    pub messages: AtomicU64,
    /// Messages handled, by type ([`counted_type`]).
    pub by_type: [AtomicU64; COUNTED],
    /// Media messages handed to the SFU.
    pub media_messages: AtomicU64,
    /// Messages refused by the host, by error code.
    pub too_big: AtomicU64,
    pub rate_limited: AtomicU64,
    pub busy: AtomicU64,
    pub binary: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A message's `type` (reading only that field), counted by name.
fn message_type<'a>(counters: &SignalingCounters, text: &'a str) -> Option<&'a str> {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<&'a str>,
    }
    let kind = serde_json::from_str::<Typed<'_>>(text).ok().and_then(|t| t.kind);
    let other = COUNTED - 1;
    let index = kind.and_then(|k| (0..other).find(|&i| counted_type(i) == k)).unwrap_or(other);
    count(&counters.by_type[index]);
    kind
}

/// The router: the page ([`super::page`]) and the WebSocket endpoint.
fn router(shared: Shared) -> Router {
    let shared = Arc::new(shared);
    let mut router = Router::new();
    for &(path, content_type, body) in page::FILES {
        let tag = page::etag(body);
        router = router.route(path, get(move |headers: HeaderMap| async move { page::serve(&headers, content_type, body, &tag) }));
    }
    router
        .route("/ws", get(upgrade))
        .route("/nodes", get(nodes))
        .layer(axum::middleware::map_response(isolation_headers))
        .with_state(shared)
}

/// `GET /nodes`: the signaling URLs a client may use, this node's first:
/// in a cluster the live nodes, which the page fails over to in turn.
async fn nodes(State(shared): State<Arc<Shared>>) -> Response {
    let nodes = shared.cluster.as_ref().map(|c| c.node_urls()).unwrap_or_default();
    let mut response = Json(serde_json::json!({ "nodes": nodes })).into_response();
    response.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

async fn isolation_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-embedder-policy", HeaderValue::from_static("require-corp"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-site"));
    response
}

async fn upgrade(ws: WebSocketUpgrade, Query(query): Query<HashMap<String, String>>, State(shared): State<Arc<Shared>>) -> Response {
    let grant = match &shared.options.token_secret {
        None => None,
        Some(secret) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let Some(given) = query.get("token") else {
                let body =
                    Json(serde_json::json!({"type": "error", "code": "token-missing", "message": "connect to /ws?token=<room token>"}));
                return (StatusCode::UNAUTHORIZED, body).into_response();
            };
            match token::open(secret, given, now) {
                Ok(claims) => Some((claims.room, claims.user)),
                Err(e) => {
                    let body = Json(serde_json::json!({"type": "error", "code": e.code(), "message": e.to_string()}));
                    return (StatusCode::UNAUTHORIZED, body).into_response();
                }
            }
        }
    };
    let limit = shared.options.max_message;
    let given = Given { grant, token: query.get("token").cloned(), via: query.contains_key("via") };
    ws.max_message_size(limit * 4).max_frame_size(limit * 4).on_upgrade(move |socket| connection(socket, shared, given))
}

/// What a connection came with.
struct Given {
    /// The room and user its token grants.
    grant: Option<(String, String)>,
    token: Option<String>,
    /// It is another node's proxy for a client of that node.
    via: bool,
}

/// One connection, from upgrade to close.
async fn connection(mut socket: WebSocket, shared: Arc<Shared>, given: Given) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut outbox = shared.connections.open(id);
    shared.live.send_modify(|n| *n += 1);
    count(&shared.counters.connections_opened);
    if given.via {
        lock(&shared.proxied).insert(id);
    }
    let mut route = Route::default();
    if let Some((room, _)) = &given.grant {
        route.decide(&shared, id, room, given.token.as_deref()).await;
    }
    shared.hub.connected(id, given.grant);
    let options = &shared.options;
    let start = Instant::now().into_std();
    let mut heartbeat = Heartbeat::new(start, options.heartbeat_interval, options.heartbeat_timeout);
    let mut budget = TokenBucket::new(start, options.rate, options.burst);
    let mut last_rate_reply: Option<Instant> = None;
    let mut code = axum::extract::ws::close_code::NORMAL;
    let reason = loop {
        let wake = match keep_alive(&mut heartbeat, &mut socket).await {
            Ok(wake) => wake,
            Err(Lapse::Dead) => break "heartbeat timeout".to_string(),
            Err(Lapse::SendFailed) => break "send failed".into(),
        };
        tokio::select! {
            incoming = socket.recv() => {
                let now = Instant::now();
                let message = match incoming {
                    None | Some(Ok(Message::Close(_))) => break "closed by peer".into(),
                    Some(Err(e)) => break format!("socket error: {e}"),
                    Some(Ok(message)) => message,
                };
                heartbeat.heard(now.into_std());
                let text = match message {
                    Message::Text(text) => text,
                    Message::Binary(_) => {
                        count(&shared.counters.binary);
                        reply(&shared, id, error_reply("bad-message", "messages are JSON text, not binary", None));
                        continue;
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
                };
                count(&shared.counters.messages);
                if !budget.allow(now.into_std()) {
                    count(&shared.counters.rate_limited);
                    if last_rate_reply.is_none_or(|t| now - t >= Duration::from_secs(1)) {
                        last_rate_reply = Some(now);
                        let message = format!("more than {} messages per second; messages are being dropped", options.rate);
                        reply(&shared, id, error_reply("rate-limited", &message, None));
                    }
                    continue;
                }
                if text.len() > options.max_message {
                    count(&shared.counters.too_big);
                    let message = format!("{} bytes; the limit is {} bytes", text.len(), options.max_message);
                    reply(&shared, id, error_reply("too-big", &message, None));
                    continue;
                }
                let kind = message_type(&shared.counters, text.as_str());
                if let Some(text) = route_media(&shared, id, text.as_str(), kind) {
                    route.pass_on(&shared, id, text, given.token.as_deref()).await;
                }
            }
            outgoing = outbox.recv() => match outgoing {
                Some(Outgoing::Text(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break "send failed".into();
                    }
                }
                Some(Outgoing::Close(reason)) => break reason,
                Some(Outgoing::GoAway(reason)) => {
                    code = axum::extract::ws::close_code::AWAY;
                    break reason;
                }
                Some(Outgoing::Rejoin(reason)) => {
                    code = axum::extract::ws::close_code::RESTART;
                    break reason;
                }
                None => break "slow-consumer".into(),
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    };
    tracing::debug!(connection = id, %reason, "signaling connection closed");
    shared.connections.remove(id);
    let frame = CloseFrame { code, reason: truncate(&reason, 120).into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
    if let Some(media) = &shared.media {
        media.closed(id);
    }
    drop(route);
    shared.hub.disconnected(id);
    lock(&shared.proxied).remove(&id);
    shared.live.send_modify(|n| *n -= 1);
}

/// `ping` is the host's to answer and media messages go to the SFU;
/// returns the rest, the signaling stage's.
fn route_media<'a>(shared: &Shared, id: u64, text: &'a str, kind: Option<&str>) -> Option<&'a str> {
    if kind == Some("ping") {
        reply(shared, id, r#"{"type":"pong"}"#.to_string());
        return None;
    }
    match (media_type(text), &shared.media) {
        (Some((_, value)), Some(media)) => {
            count(&shared.counters.media_messages);
            media.media_message(id, value);
            None
        }
        (Some((kind, _)), None) => {
            reply(shared, id, error_reply("no-media", "this node carries no media", Some(&kind)));
            None
        }
        (None, _) => Some(text),
    }
}

/// Where a connection's signaling goes: this node's stage, or (in a
/// cluster) its room's home, through a [`Link`]. Decided by the room of
/// its first `join` (or of its token); messages before that go to this
/// node's stage, which answers them without a room.
#[derive(Default)]
struct Route {
    /// The room its signaling is with, once decided.
    room: Option<String>,
    link: Option<Box<dyn Link>>,
}

impl Route {
    async fn pass_on(&mut self, shared: &Shared, id: u64, text: &str, token: Option<&str>) {
        if shared.cluster.is_some()
            && let Some(room) = join_room(text)
            && self.room.as_deref() != Some(room.as_str())
        {
            if let Some(link) = &self.link {
                let message = format!(
                    "this connection's signaling is with room `{}` on node `{}`; reconnect to join `{room}`",
                    link.room(),
                    link.home()
                );
                return reply(shared, id, error_reply("other-room", &message, Some("join")));
            }
            if !self.decide(shared, id, &room, token).await {
                return;
            }
        }
        let sent = match &self.link {
            Some(link) => link.send(text.to_string()),
            None => shared.hub.message(id, text.to_string()),
        };
        if !sent {
            count(&shared.counters.busy);
            reply(shared, id, error_reply("busy", "the signaling stage is behind; send again later", None));
        }
    }

    /// Finds where `room`'s signaling goes, opening the link to its home
    /// when that is another node. False (after replying why) when it
    /// cannot be done.
    async fn decide(&mut self, shared: &Shared, id: u64, room: &str, token: Option<&str>) -> bool {
        let Some(cluster) = &shared.cluster else { return true };
        let (connections, seats) = (shared.connections.clone(), shared.seats.clone());
        match cluster.route(room, token, id, self.room.is_none(), connections, seats).await {
            Ok(Destination::Here) => {}
            Ok(Destination::There(link)) => self.link = Some(link),
            Ok(Destination::Elsewhere(node)) => {
                let message = format!("room `{room}` lives on node `{node}`; reconnect to join it");
                reply(shared, id, error_reply("other-room", &message, Some("join")));
                return false;
            }
            Err(e) => {
                reply(shared, id, error_reply("cluster-unavailable", &e, Some("join")));
                return false;
            }
        }
        self.room = Some(room.to_string());
        true
    }
}

/// The room of a `join` message.
fn join_room(text: &str) -> Option<String> {
    if !text.contains("join") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    (value.get("type")?.as_str()? == "join").then(|| value.get("room")?.as_str().map(str::to_string)).flatten()
}

/// Seats the stage gives: a proxied connection's go back to the node that
/// carries its media; the others to this node's SFU. In a cluster, each
/// also makes this node its room's home for as long as it lasts.
struct StageSeats {
    sfu: Option<Arc<dyn SeatSink>>,
    proxied: Proxied,
    connections: Connections,
    cluster: Option<Arc<dyn Placement>>,
}

/// What a home's host sends a proxy in place of seating it in its own SFU
/// (read by [`crate::cluster::proxy`]).
pub const SEAT: &str = "cluster-seat";
pub const UNSEAT: &str = "cluster-unseat";

impl SeatSink for StageSeats {
    fn seated(&self, connection: u64, room: &str, user: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.hosting(connection, room);
        }
        if lock(&self.proxied).contains(&connection) {
            let seat = serde_json::json!({"type": SEAT, "room": room, "user": user}).to_string();
            self.connections.send(connection, Outgoing::Text(seat));
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.media_seated(connection);
        }
        if let Some(sfu) = &self.sfu {
            sfu.seated(connection, room, user);
        }
    }

    fn unseated(&self, connection: u64) {
        if let Some(cluster) = &self.cluster {
            cluster.not_hosting(connection);
        }
        if lock(&self.proxied).contains(&connection) {
            self.connections.send(connection, Outgoing::Text(serde_json::json!({"type": UNSEAT}).to_string()));
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.media_unseated(connection);
        }
        if let Some(sfu) = &self.sfu {
            sfu.unseated(connection);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A media message's type and body. Anything else (not JSON included) is
/// the signaling stage's to answer.
fn media_type(text: &str) -> Option<(String, serde_json::Value)> {
    // Cheap pre-check: only parse what could be a media message.
    if !MEDIA_TYPES.iter().any(|t| text.contains(t)) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let kind = value.get("type")?.as_str()?.to_string();
    MEDIA_TYPES.contains(&kind.as_str()).then_some((kind, value))
}

fn reply(shared: &Shared, id: u64, text: String) {
    shared.connections.send(id, Outgoing::Text(text));
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A running signaling server: the stage thread and the HTTP listener.
pub struct Server {
    /// Where it listens (the port is the OS's pick when asked for 0).
    pub addr: std::net::SocketAddr,
    pub connections: Connections,
    pub counters: Arc<SignalingCounters>,
    live: tokio::sync::watch::Sender<usize>,
    stopped: tokio::sync::oneshot::Receiver<crate::supervisor::Stopped>,
    task: tokio::task::JoinHandle<()>,
    /// Where rooms live, when the node is in a cluster.
    cluster: Option<Arc<dyn Placement>>,
}

impl Server {
    /// Binds `listen`, starts the signaling stage's thread and serves.
    /// `connections` is shared with the SFU, when there is one (`media`
    /// and `seats`).
    pub async fn start(
        listen: std::net::SocketAddr,
        options: ServerOptions,
        stage: crate::supervisor::Supervisor,
        connections: Connections,
        media: Option<Arc<dyn MediaSink>>,
        seats: Option<Arc<dyn SeatSink>>,
    ) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        Server::serve(listener, options, stage, connections, media, seats, None)
    }

    /// The same on a bound `listener`, as a node of `cluster` when given.
    pub fn serve(
        listener: tokio::net::TcpListener,
        options: ServerOptions,
        stage: crate::supervisor::Supervisor,
        connections: Connections,
        media: Option<Arc<dyn MediaSink>>,
        seats: Option<Arc<dyn SeatSink>>,
        cluster: Option<Arc<dyn Placement>>,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let (stop_tx, stopped) = tokio::sync::oneshot::channel();
        let proxied = Proxied::default();
        let stage_seats =
            StageSeats { sfu: seats.clone(), proxied: proxied.clone(), connections: connections.clone(), cluster: cluster.clone() };
        let hub = Hub::start(stage, connections.clone(), Some(Arc::new(stage_seats)), stop_tx)?;
        let counters = Arc::new(SignalingCounters::default());
        let (live, _) = tokio::sync::watch::channel(0);
        let app = router(Shared {
            options,
            hub,
            connections: connections.clone(),
            media,
            next_id: AtomicU64::new(1),
            counters: counters.clone(),
            live: live.clone(),
            cluster: cluster.clone(),
            seats,
            proxied,
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("signaling server failed: {e}");
            }
        });
        Ok(Server { addr, connections, counters, live, stopped, task, cluster })
    }

    /// Drains: stops accepting (the port is free for a successor once this
    /// returns), tells every connection to go (1001, "going away", with a
    /// hint to reconnect) and waits up to `grace` for their tasks to end.
    /// Returns how many were still open when the grace ran out.
    pub async fn drain(&mut self, grace: Duration) -> usize {
        self.task.abort();
        let _ = (&mut self.task).await;
        if let Some(cluster) = &self.cluster {
            cluster.drain().await;
        }
        let open = *self.live.borrow();
        self.connections.go_away_all("the node is shutting down; reconnect");
        let mut live = self.live.subscribe();
        let left = match tokio::time::timeout(grace, live.wait_for(|n| *n == 0)).await {
            Ok(_) => 0,
            Err(_) => *self.live.borrow(),
        };
        tracing::info!(open, left, "signaling drained");
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
        left
    }

    /// Resolves when the signaling stage gives up under the `stop` policy.
    pub async fn stopped(&mut self) -> Option<crate::supervisor::Stopped> {
        (&mut self.stopped).await.ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
