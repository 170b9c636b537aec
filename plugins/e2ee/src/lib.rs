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
//! The stage plugin that puts these behind the frame-transform contract,
//! the host AEAD capability and state recovery come next (issue [e2ee]).

pub mod host_crypto;
pub mod keyring;
pub mod membership;
pub mod sframe_layer;
