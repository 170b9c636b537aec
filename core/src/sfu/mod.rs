//! The SFU's decisions that need only packet metadata and time: who gets a
//! copy of each packet and how it is numbered ([`fanout`], [`rewrite`]),
//! and who is speaking ([`speaker`]).

pub mod fanout;
pub mod rewrite;
pub mod speaker;
