//! Signaling: the host's side of the WebSocket connections that rooms are
//! made of.
//!
//! The host owns the connections and everything about them that involves
//! time or abuse; a signaling plugin owns what the messages mean. The
//! pieces here are sans-IO state machines, driven with explicit instants so
//! that tests run them on a simulated clock:
//!
//! - [`heartbeat::Heartbeat`]: ping every 10 s, declare the peer dead after
//!   30 s of silence.
//! - [`rate_limit::TokenBucket`]: a per-connection message budget with bursts.
//! - [`token`]: room access tokens, HMAC-SHA256 over room, user and expiry
//!   with a configured secret (the `medianode-token` crate, which also
//!   builds for wasm so that a signaling plugin can check them on `join`).

pub mod heartbeat;
pub mod rate_limit;
pub use medianode_token as token;
