//! The E2EE stage's `[stage.config]`: where AES-GCM runs, which SFrame
//! cipher suite, and the key grace and hold windows.

use serde::Deserialize;

/// `[stage.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where AES-GCM runs: `"host"` (default: the host's AES instructions)
    /// or `"wasm"` (inside the sandbox, ~15x slower; no host capability).
    #[serde(default)]
    pub aead: AeadPlace,
    /// `"aes-128-gcm"` (default; SFrame's AES_128_GCM_SHA256_128) or
    /// `"aes-256-gcm"` (AES_256_GCM_SHA512_128).
    #[serde(default)]
    pub suite: Suite,
    /// How long the previous epoch's frames still open after a change.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// How long a frame from the next epoch waits for its key.
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
}

fn default_grace_ms() -> u64 {
    2000
}

fn default_hold_ms() -> u64 {
    500
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AeadPlace {
    #[default]
    Host,
    Wasm,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Suite {
    #[default]
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}
