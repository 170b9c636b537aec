//! State machines of one signaling connection, on either end: when to ping
//! and when the peer is dead ([`heartbeat`]), how many messages it may send
//! ([`rate_limit`]).

pub mod heartbeat;
pub mod rate_limit;
