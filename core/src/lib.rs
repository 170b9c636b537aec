//! medianode's sans-IO core.
//!
//! Everything in this crate is a value or a state machine: no tokio, no
//! sockets, no threads, no wasmtime, no clock. Time comes in as `now`,
//! events come in as method calls, and what to do comes out as return
//! values, so each part is tested by driving it with made-up instants (the
//! way quinn-proto and str0m are built). The `medianode` crate runs these
//! with real I/O: wasmtime, tokio, axum, webrtc-rs, cpal, stage threads.
//!
//! - [`cluster`]: nodes sharing rooms: who is alive (heartbeats with a
//!   TTL), where a new room goes, which rooms move when a node dies or
//!   drains.
//! - [`config`]: pipeline files — schema, each kind's settings and checks,
//!   the graph and its link types, located errors (all of them at once).
//! - [`monitor`]: the system monitor's thresholds: which are crossed, and
//!   when an alert is raised or cleared.
//! - [`plugin`]: what the host knows of a plugin without running it: the
//!   kind of stage its world makes it.
//! - [`supervision`]: limits, failure policies, the restart backoff (also
//!   the signaling client's reconnect schedule), the flight recorder.
//! - [`signaling`]: per-connection state machines: heartbeat, rate limit.
//! - [`sfu`]: the SFU's decisions: who gets a copy of each packet and how
//!   it is numbered, when to renegotiate, who is speaking.

pub mod cluster;
pub mod config;
pub mod monitor;
pub mod plugin;
pub mod sfu;
pub mod signaling;
pub mod supervision;
