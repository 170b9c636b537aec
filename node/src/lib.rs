//! medianode: a media node whose pipeline stages are sandboxed WebAssembly
//! plugins that survive their own crashes.
//!
//! The crate is organised by what the node is made of:
//!
//! - [`config`]: pipeline files: the pure checks of [`medianode_core`]'s
//!   config, then what needs the machine (plugin files, WAV inputs, secrets).
//! - [`check`]: `medianode check`, every error in a pipeline at once.
//! - [`runtime`]: wasmtime engines, compiled plugins, sandboxed instances and
//!   the host interface plugins call.
//! - [`supervisor`]: per-stage supervision — standby, restart backoff,
//!   quarantine of poison inputs, flight recorder, crash reports.
//! - [`pipeline`]: the graph of sources, stages and sinks, and its run loop.
//! - [`io`]: the host's sources and sinks (tone, sweep, WAV, meter...).
//! - [`builtin`]: native stages in the host (the Opus codec).
//! - [`signaling`]: the host's side of signaling connections: the HTTP
//!   server and its page, heartbeat, limits, room tokens, the stage thread.
//! - [`peer`]: opening a WebRTC peer connection, one way for all.
//! - [`sfu`]: the SFU's participants, tracks and packet forwarding loop.
//! - [`server`]: `[server]` from a pipeline file: signaling server + SFU.
//! - [`cluster`]: `[cluster]`: nodes sharing rooms through Redis (registry,
//!   room homes, signaling carried to a room's home).
//! - [`edge`]: `[client]` from a pipeline file: a participant in a room on
//!   an SFU node, with its E2EE stage.
//! - [`daemon`]: `medianode run`, from a pipeline file to an exit status.
//! - [`admin`]: the operator's HTTP API: metrics, health, readiness, stages,
//!   rooms; the system monitor; systemd notifications.
//! - [`reload`]: hot reload of stages' plugins and settings, blue/green.
//! - [`telemetry`]: logging setup.
//! - [`authoring`]: `medianode plugin new | build | inspect`, for plugin
//!   authors.
//!
//! - [`cli`]: the `medianode` command line, which `src/main.rs` runs.

pub mod admin;
pub mod authoring;
pub mod builtin;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod edge;
pub mod io;
pub mod peer;
pub mod pipeline;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod sfu;
pub mod signaling;
pub mod supervisor;
pub mod telemetry;
