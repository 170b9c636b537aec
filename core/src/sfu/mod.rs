//! The SFU's decisions that need only packet metadata and time.

pub mod speaker;
