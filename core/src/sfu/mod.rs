//! The SFU's decisions that need only packet metadata, events and time:
//! who gets a copy of each packet and how it is numbered ([`fanout`],
//! [`rewrite`]), which packets start VP8 keyframes ([`vp8`]), when to offer a participant a new description
//! ([`negotiation`]), and who is speaking ([`speaker`]).

pub mod fanout;
pub mod negotiation;
pub mod rewrite;
pub mod speaker;
pub mod vp8;
