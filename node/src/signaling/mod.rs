//! Signaling: the host's side of the WebSocket connections that rooms are
//! made of.
//!
//! The host owns the connections and everything about them that involves
//! time or abuse; a signaling plugin owns what the messages mean. The
//! protocol is documented in `docs/protocol.md`.
//!
//! - [`server`]: the axum router: the web client page and `/ws`, one task
//!   per connection (heartbeat, size and rate limits, token check).
//! - [`page`]: the web client the server serves (HTML, CSS, JS modules).
//! - [`hub`]: the thread that runs the supervised signaling stage, one
//!   event per call.
//! - [`connections`]: outboxes bounded in bytes, one per connection.
//! - [`client`]: the other end, for headless participants: joins, checks
//!   the line with pings, reconnects with backoff.
//! - [`keepalive`]: the heartbeat's driver, shared by both ends.
//! - [`placement`]: where a room's signaling goes when the node is one of
//!   a cluster's (the seam the cluster implements).
//!
//! The state machines these drive (heartbeat, rate limit) are sans-IO and
//! live in [`medianode_core::signaling`].
//! - [`token`]: room access tokens, HMAC-SHA256 over room, user and expiry
//!   with a configured secret (the `medianode-token` crate).

pub mod client;
pub mod connections;
pub mod hub;
pub mod keepalive;
pub mod page;
pub mod placement;
pub mod server;
pub use medianode_token as token;
