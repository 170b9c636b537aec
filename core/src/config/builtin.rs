//! Built-in stages (`builtin = "NAME"`): native code in the host, and the
//! settings each takes in `config`.
//!
//! `opus-encoder`: `bitrate` (bits/s, default 32000), `complexity` (0-10,
//! default 10), `fec` (default true), `packet-loss` (expected loss in
//! percent, which sizes the FEC; default 10), `application` (`"voip"`
//! default, `"audio"`, `"low-delay"`).
//! `opus-decoder`: `channels` (1 or 2, default 1), `fec` (use in-band FEC,
//! default true).

use serde::Deserialize;

/// The built-in stages, with their checked settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Builtin {
    OpusEncoder(EncoderConfig),
    OpusDecoder(DecoderConfig),
}

impl Builtin {
    /// Every `builtin = ...` name, for errors.
    pub const NAMES: &[&str] = &["opus-encoder", "opus-decoder"];

    /// Parses `[stage.config]` (as JSON) for the built-in `name`.
    pub fn parse(name: &str, config_json: &str) -> Result<Builtin, String> {
        let parse_err = |e: serde_json::Error| format!("invalid config for {name}: {e}");
        match name {
            "opus-encoder" => serde_json::from_str(config_json).map_err(parse_err).and_then(EncoderConfig::check).map(Builtin::OpusEncoder),
            "opus-decoder" => serde_json::from_str(config_json).map_err(parse_err).and_then(DecoderConfig::check).map(Builtin::OpusDecoder),
            other => Err(format!("unknown built-in stage `{other}`")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Builtin::OpusEncoder(_) => "opus-encoder",
            Builtin::OpusDecoder(_) => "opus-decoder",
        }
    }

    /// Whether it takes audio (else frames) and whether it makes audio.
    pub fn ports(&self) -> (bool, bool) {
        match self {
            Builtin::OpusEncoder(_) => (true, false),
            Builtin::OpusDecoder(_) => (false, true),
        }
    }
}

/// `opus-encoder`'s settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EncoderConfig {
    pub bitrate: i32,
    pub complexity: i32,
    pub fec: bool,
    pub packet_loss: i32,
    pub application: OpusApplication,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig { bitrate: 32_000, complexity: 10, fec: true, packet_loss: 10, application: OpusApplication::Voip }
    }
}

/// What the encoder tunes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpusApplication {
    Voip,
    Audio,
    LowDelay,
}

/// `opus-decoder`'s settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DecoderConfig {
    pub channels: u8,
    pub fec: bool,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig { channels: 1, fec: true }
    }
}

impl EncoderConfig {
    pub fn check(self) -> Result<EncoderConfig, String> {
        if !(6_000..=510_000).contains(&self.bitrate) {
            return Err(format!("bitrate = {} is out of range; use 6000 to 510000 bits/s", self.bitrate));
        }
        if !(0..=10).contains(&self.complexity) {
            return Err(format!("complexity = {} is out of range; use 0 to 10", self.complexity));
        }
        if !(0..=100).contains(&self.packet_loss) {
            return Err(format!("packet-loss = {} is out of range; use 0 to 100 (percent)", self.packet_loss));
        }
        Ok(self)
    }
}

impl DecoderConfig {
    pub fn check(self) -> Result<DecoderConfig, String> {
        if !(1..=2).contains(&self.channels) {
            return Err(format!("channels = {} is out of range; Opus decodes 1 or 2", self.channels));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges() {
        assert_eq!(Builtin::parse("opus-encoder", "{}"), Ok(Builtin::OpusEncoder(EncoderConfig::default())));
        assert_eq!(Builtin::parse("opus-decoder", "{}"), Ok(Builtin::OpusDecoder(DecoderConfig::default())));
        let low = Builtin::parse("opus-encoder", r#"{"application": "low-delay", "bitrate": 64000}"#);
        assert!(matches!(low, Ok(Builtin::OpusEncoder(EncoderConfig { application: OpusApplication::LowDelay, bitrate: 64000, .. }))));
        assert!(Builtin::parse("opus-encoder", r#"{"bitrate": 1}"#).is_err_and(|e| e.contains("bitrate = 1")));
        assert!(Builtin::parse("opus-encoder", r#"{"application": "radio"}"#).is_err_and(|e| e.contains("unknown variant")));
        assert!(Builtin::parse("opus-decoder", r#"{"channels": 3}"#).is_err());
        assert!(Builtin::parse("opus-decoder", r#"{"bogus": 3}"#).is_err_and(|e| e.contains("unknown field")));
    }
}
