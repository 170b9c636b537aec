//! End-to-end encryption of media frames for medianode: SFrame (RFC 9605)
//! frames keyed from an MLS group (RFC 9420).
//!
//! This crate grows into the E2EE stage plugin (issue [e2ee]); today it
//! holds the SFrame layer and its check against every test vector of
//! RFC 9605 Appendix C.

pub mod membership;
pub mod sframe_layer;
