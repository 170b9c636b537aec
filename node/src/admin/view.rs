//! What the admin API can see of a running node: its stages (pipeline and
//! server alike), its SFU, its signaling server, and the system monitor's
//! alerts. The daemon fills it in as it starts each part; handlers read it.
//!
//! Everything here is a handle to counters the data path keeps anyway
//! (atomics, or a status written at each change): looking costs the data
//! path nothing.

use crate::runtime::{StageShared, StageState};
use crate::sfu::{RoomView, Sfu};
use crate::signaling::connections::Connections;
use crate::signaling::server::SignalingCounters;
use medianode_core::monitor::Change;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A cheap, shared handle on the node's parts.
#[derive(Clone, Default)]
pub struct NodeView {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stages: Mutex<Vec<Arc<StageShared>>>,
    sfu: Mutex<Option<Sfu>>,
    cluster: Mutex<Option<Arc<crate::cluster::Cluster>>>,
    signaling: Mutex<Option<(Connections, Arc<SignalingCounters>)>>,
    /// An edge node's room mix.
    mix: Mutex<Option<Arc<crate::io::mix::MixStats>>>,
    /// The system monitor's alerts up now (empty: healthy).
    alerts: Mutex<Vec<Change>>,
    /// A drain was asked for (`POST /drain`, or a signal).
    draining: AtomicBool,
    drain: tokio::sync::Notify,
    /// Where reload requests go, when the node runs a file it can reload.
    reloads: Mutex<Option<tokio::sync::mpsc::Sender<ReloadAsked>>>,
}

/// A reload request, answered with what was replaced (as JSON), or why
/// nothing was.
pub type ReloadAsked = tokio::sync::oneshot::Sender<Result<Value, String>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for NodeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeView").field("stages", &self.stages().len()).finish_non_exhaustive()
    }
}

impl NodeView {
    pub fn add_stages(&self, stages: impl IntoIterator<Item = Arc<StageShared>>) {
        lock(&self.inner.stages).extend(stages);
    }

    /// The `[server]`: its stages, SFU and signaling server.
    pub fn add_server(&self, running: &crate::server::Running) {
        self.add_stages(running.stages.iter().cloned());
        *lock(&self.inner.sfu) = Some(running.sfu.clone());
        *lock(&self.inner.cluster) = running.cluster.clone();
        *lock(&self.inner.signaling) = Some((running.server.connections.clone(), running.server.counters.clone()));
    }

    /// The cluster this node is in, if any.
    pub fn cluster(&self) -> Option<Arc<crate::cluster::Cluster>> {
        lock(&self.inner.cluster).clone()
    }

    /// An edge node's room source.
    pub fn set_mix(&self, mix: Option<Arc<crate::io::mix::MixStats>>) {
        *lock(&self.inner.mix) = mix;
    }

    pub fn mix(&self) -> Option<Arc<crate::io::mix::MixStats>> {
        lock(&self.inner.mix).clone()
    }

    pub fn set_alerts(&self, alerts: Vec<Change>) {
        *lock(&self.inner.alerts) = alerts;
    }

    pub fn alerts(&self) -> Vec<Change> {
        lock(&self.inner.alerts).clone()
    }

    pub fn stages(&self) -> Vec<Arc<StageShared>> {
        lock(&self.inner.stages).clone()
    }

    pub fn stage(&self, id: &str) -> Option<Arc<StageShared>> {
        lock(&self.inner.stages).iter().find(|s| s.id == id).cloned()
    }

    pub fn sfu(&self) -> Option<Sfu> {
        lock(&self.inner.sfu).clone()
    }

    pub fn signaling(&self) -> Option<(Connections, Arc<SignalingCounters>)> {
        lock(&self.inner.signaling).clone()
    }

    /// Where `POST /reload` sends its requests.
    pub fn set_reloads(&self, reloads: tokio::sync::mpsc::Sender<ReloadAsked>) {
        *lock(&self.inner.reloads) = Some(reloads);
    }

    /// Reloads the pipeline file; `None` when there is none to reload (the
    /// built-in default).
    pub async fn reload(&self) -> Option<Result<Value, String>> {
        let reloads = lock(&self.inner.reloads).clone()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        reloads.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Asks the node to drain (it then stops).
    pub fn request_drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        self.inner.drain.notify_one();
    }

    /// Resolves once a drain is asked for.
    pub async fn drain_requested(&self) {
        self.inner.drain.notified().await;
    }

    /// Why the node is not ready to serve: draining, or a stage that is
    /// not serving.
    pub fn not_ready(&self) -> Vec<String> {
        let draining = self.inner.draining.load(Ordering::Relaxed).then(|| "the node is draining".to_string());
        let stages = self.stages();
        let down = stages.iter().filter_map(|s| {
            let status = crate::runtime::lock(&s.status);
            (status.state != StageState::Serving).then(|| format!("stage '{}' is {}", s.id, status.state.name()))
        });
        draining.into_iter().chain(down).collect()
    }

    /// The rooms the SFU serves (none without one).
    pub async fn rooms(&self) -> Vec<RoomView> {
        match self.sfu() {
            Some(sfu) => sfu.rooms().await,
            None => Vec::new(),
        }
    }
}

/// One stage as `GET /stages` shows it: its status, counters and log budget.
pub fn stage_json(stage: &StageShared) -> Value {
    let status = crate::runtime::lock(&stage.status).clone();
    let m = &stage.metrics;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "id": stage.id,
        "state": status.state,
        "plugin": status.plugin,
        "digest": status.digest,
        "failure_policy": status.failure_policy,
        "restarts": get(&m.restarts),
        "faults": get(&m.faults),
        "calls": get(&m.calls),
        "memory_peak_bytes": get(&m.memory_peak),
        "next_retry_unix_ms": status.next_retry_unix_ms,
        "last_crash": status.last_crash,
        "metrics": stage.snapshot(),
    })
}
