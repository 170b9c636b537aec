//! The pipeline file as written: every key, with its position in the file.
//!
//! These types mirror the TOML one to one. Unknown keys are errors
//! (`deny_unknown_fields`), and every value is `Spanned` so that validation
//! can point at it. Each table is read on its own (see `check`), and each
//! kind's module turns its table into checked settings.

use serde::Deserialize;
use toml::Spanned;

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPipeline {
    pub name: Option<Spanned<String>>,
    /// `"realtime"` (one tick per `tick`) or `"asap"`.
    pub pace: Option<Spanned<String>>,
    pub tick: Option<Spanned<String>>,
    /// Real time a realtime tick may take before late stages are stood in.
    pub budget: Option<Spanned<String>>,
}

/// `[server]`: the signaling server and the SFU.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawServer {
    /// HTTP address of the page and `/ws` ("127.0.0.1:8080").
    pub listen: Option<Spanned<String>>,
    /// Address media (UDP) binds to and announces.
    pub media_ip: Option<Spanned<String>>,
    /// The one UDP port every peer connection's media uses (0: any).
    pub media_port: Option<Spanned<u16>>,
    /// Media threads (shards); 0: one per core.
    pub media_threads: Option<Spanned<u32>>,
    pub max_message: Option<Spanned<String>>,
    /// Messages per second per connection, and the burst above it.
    pub rate: Option<Spanned<f64>>,
    pub burst: Option<Spanned<u32>>,
    pub heartbeat: Option<Spanned<String>>,
    pub heartbeat_timeout: Option<Spanned<String>>,
    /// Environment variable holding the room token secret; when given,
    /// connections need a token.
    pub token_secret_env: Option<Spanned<String>>,
}

/// `[admin]`: the admin listener and the system monitor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAdmin {
    /// HTTP address of the admin API ("127.0.0.1:9090"), or "off".
    pub listen: Option<Spanned<String>>,
    /// Environment variable, or file, holding the admin bearer token.
    pub token_env: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub monitor_every: Option<Spanned<String>>,
    pub max_rss: Option<Spanned<String>>,
    pub max_tasks: Option<Spanned<u64>>,
    /// How long a drain waits for connections to go.
    pub grace: Option<Spanned<String>>,
}

/// `[client]`: this node joins a room on an SFU node as a participant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawClient {
    /// The SFU node's signaling WebSocket (`ws://host:port/ws`), or a
    /// list of a cluster's nodes.
    pub server: Spanned<OneOrMany>,
    pub room: Spanned<String>,
    pub user: Spanned<String>,
    /// Address media (UDP) binds to.
    pub media_ip: Option<Spanned<String>>,
}

/// `[cluster]`: this server node shares rooms with others through Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCluster {
    /// `redis://host:port` (`/db` optional).
    pub redis: Spanned<String>,
    /// This node's name in the cluster (unique).
    pub node: Spanned<String>,
    /// Where clients and the other nodes reach this node's signaling
    /// (`ws://host:port/ws`; default: from `[server] listen`).
    pub url: Option<Spanned<String>>,
}

/// A string, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[[source]]`: items made by the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSource {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
    /// Items to produce before the source ends (default: never ends).
    pub count: Option<Spanned<u64>>,
    /// Mark every Nth item as poison (a NaN sample, or a payload starting
    /// with `poison`), to exercise quarantine.
    pub poison_every: Option<Spanned<u64>>,
    // tone
    pub frequency: Option<Spanned<f64>>,
    pub amplitude: Option<Spanned<f64>>,
    pub channels: Option<Spanned<u8>>,
    // frames
    pub size: Option<Spanned<String>>,
    pub per_tick: Option<Spanned<u32>>,
    // wav
    pub path: Option<Spanned<String>>,
    // device: its name as `medianode devices` lists it (default device when absent)
    pub device: Option<Spanned<String>>,
    // subscribe: whose audio
    pub publisher: Option<Spanned<String>>,
    // sweep
    pub from: Option<Spanned<f64>>,
    pub to: Option<Spanned<f64>>,
    pub period: Option<Spanned<String>>,
}

/// `[[stage]]`: a plugin, or a built-in stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawStage {
    pub id: Spanned<String>,
    pub plugin: Option<Spanned<String>>,
    pub builtin: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    /// Absent for the stages that serve `[server]` (signaling, forwarding).
    pub inputs: Option<Spanned<Vec<Spanned<String>>>>,
    pub config: Option<Spanned<toml::Table>>,
    pub limits: Option<RawLimits>,
    pub restart: Option<RawRestart>,
    pub failure: Option<Spanned<String>>,
    /// The stage encrypts or decrypts media: it may never be bypassed.
    pub e2ee: Option<Spanned<bool>>,
    /// `"native"`: the plugin is a native library, loaded unsandboxed.
    pub trust: Option<Spanned<String>>,
}

/// `[stage.limits]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLimits {
    pub memory: Option<Spanned<String>>,
    pub deadline: Option<Spanned<String>>,
    pub init_deadline: Option<Spanned<String>>,
    pub stack: Option<Spanned<String>>,
    pub state: Option<Spanned<String>>,
    /// Plugin log bytes per second ("64KiB").
    pub log: Option<Spanned<String>>,
    /// Plugin log lines per second.
    pub log_lines: Option<Spanned<u32>>,
}

/// `[stage.restart]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRestart {
    pub max_restarts: Option<Spanned<u32>>,
    pub window: Option<Spanned<String>>,
    pub long_max_restarts: Option<Spanned<u32>>,
    pub long_window: Option<Spanned<String>>,
    pub backoff_base: Option<Spanned<String>>,
    pub backoff_cap: Option<Spanned<String>>,
    pub healthy_after: Option<Spanned<String>>,
    pub jitter: Option<Spanned<f64>>,
    pub standby: Option<Spanned<bool>>,
    pub recorder: Option<Spanned<usize>>,
}

/// `[[sink]]`: where items end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSink {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
    pub inputs: Spanned<Vec<Spanned<String>>>,
    /// meter: how much stream time one log line covers.
    pub report_every: Option<Spanned<String>>,
    /// channel: batches held for the reader before new ones are dropped.
    pub capacity: Option<Spanned<usize>>,
    /// wav: the file to write, and its sample format.
    pub path: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    /// device: the output device's name (default device when absent) and
    /// channel count.
    pub device: Option<Spanned<String>>,
    pub channels: Option<Spanned<u8>>,
}
