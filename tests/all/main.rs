//! Integration tests for medianode: one test binary (so wasmtime is linked
//! once), one module per behaviour.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod audio_faults;
mod audio_files;
mod browser;
mod browser_e2ee;
mod cluster;
mod common;
mod config_errors;
mod daemon;
mod devices;
mod dsp;
mod e2ee;
mod edge_nodes;
mod faults;
mod fuzz;
mod hostile;
mod layout;
mod native;
mod pipelines;
mod redis_server;
mod restart_policy;
mod sfu;
mod signaling;
mod signaling_server;
mod simulcast;
mod tutorial;
mod webrtc_peers;
