//! End-to-end encryption of media frames for medianode: SFrame (RFC 9605)
//! frames keyed from an MLS group (RFC 9420).
//!
//! - [`sframe_layer`]: the frame format and its AEAD (the `sframe` crate's
//!   pure-Rust backend), checked against RFC 9605 Appendix C.
//! - [`membership`]: one participant's MLS group (openmls), where every
//!   membership change is idempotent and none reaches openmls empty.
//! - [`keyring`]: per-epoch, per-sender SFrame keys from the MLS exporter,
//!   with a grace window for the previous epoch and a short hold for frames
//!   from the next.
//!
//! - [`host_crypto`]: the same SFrame frames with AES-GCM run by the host
//!   (`medianode:plugin/aead`), keys held there by handle.
//! - [`stage`]: the plugin (`stock:e2ee`): the room's group kept through
//!   signaling messages, frames sealed and opened, state kept in the host
//!   state store across crashes; its settings in [`config`].

pub mod config;
pub mod host_crypto;
pub mod keyring;
pub mod membership;
pub mod sframe_layer;
pub mod stage;

#[cfg(feature = "export")]
medianode_sdk::export_encryption!(stage::E2ee);
