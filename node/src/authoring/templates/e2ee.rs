//! `{{name}}`: an end-to-end encryption stage for medianode's edge node.
//!
//! Every outbound media frame is sealed before it leaves, every inbound one
//! opened after it arrives; a frame that cannot be sealed is dropped, so
//! media never leaves in the clear.
//!
//! **This starting point uses one static key from the config, shared out
//! of band: a lab tool, not end-to-end security.** Real rooms derive keys
//! from an MLS group that the stage keeps through the signaling messages
//! it gets in `control` (see the stock `e2ee` plugin: openmls + SFrame).
//!
//! Frame format: an 8-byte big-endian counter (the nonce's tail), then the
//! AES-128-GCM ciphertext. The cipher runs in the host (`medianode_sdk::aead`:
//! the key is loaded once and used by handle).
//!
//! What survives a restart: nothing of this struct; `new` loads the key
//! again, and the counter starts again at a random point.

use medianode_sdk::aead::{self, Algorithm};
use medianode_sdk::{E2eeEvent, E2eeStatus, Encryption, FrameMeta, Payload, Stage, Verdict};
use serde::Deserialize;

/// The stage's `[stage.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The AES-128 key: 32 hex digits.
    pub key_hex: String,
}

pub struct {{Type}} {
    key: u32,
    counter: u64,
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn nonce(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

impl Stage for {{Type}} {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let key = from_hex(&config.key_hex).filter(|k| k.len() == 16).ok_or("`key-hex` must be 32 hex digits (an AES-128 key)")?;
        let key = aead::load_key(Algorithm::Aes128Gcm, &key)?;
        // A counter that does not restart at 0 with each instance: a
        // repeated nonce under one key would break GCM.
        let counter = medianode_sdk::host::monotonic_now() << 16;
        Ok({{Type}} { key, counter })
    }
}

impl Encryption for {{Type}} {
    fn control(&mut self, _event: E2eeEvent, _out: &mut Vec<String>) {
        // A static key needs no group; an MLS stage joins one here.
    }

    fn seal(&mut self, _meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict {
        self.counter += 1;
        match aead::seal(self.key, &nonce(self.counter), &[], payload) {
            Ok(sealed) => {
                out.extend_from_slice(&self.counter.to_be_bytes());
                out.extend_from_slice(&sealed);
                Verdict::Keep
            }
            Err(_) => Verdict::Drop,
        }
    }

    fn open(&mut self, _meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict {
        let Some((counter, sealed)) = payload.split_first_chunk::<8>() else { return Verdict::Drop };
        match aead::open(self.key, &nonce(u64::from_be_bytes(*counter)), &[], sealed) {
            Ok(plain) => {
                out.extend_from_slice(&plain);
                Verdict::Keep
            }
            Err(_) => Verdict::Drop,
        }
    }

    fn released(&mut self) -> Vec<(FrameMeta, Vec<u8>)> {
        Vec::new()
    }

    fn status(&self) -> E2eeStatus {
        E2eeStatus::default()
    }
}

medianode_sdk::export_encryption!({{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use medianode_sdk::{FrameInfo, frame_batch, start};

    const CONFIG: &str = r#"{"key-hex": "000102030405060708090a0b0c0d0e0f"}"#;

    /// Runs one frame through `seal` or `open`, as the node's glue does.
    fn one(stage: &mut {{Type}}, payload: &[u8], seal: bool) -> Option<Vec<u8>> {
        let info = [FrameInfo { stream: 1, sequence: 1, timestamp: 0, size: payload.len() as u32 }];
        let (mut frames, mut bytes) = (Vec::new(), Vec::new());
        frame_batch(&info, payload, &mut frames, &mut bytes, |meta, p, out| if seal { stage.seal(meta, p, out) } else { stage.open(meta, p, out) });
        (frames.len() == 1).then_some(bytes)
    }

    #[test]
    fn a_sealed_frame_opens_and_a_tampered_one_is_dropped() {
        let mut stage: {{Type}} = start(CONFIG).expect("config");
        let sealed = one(&mut stage, b"hello media", true).expect("sealed");
        assert_ne!(&sealed[8..], b"hello media");
        assert_eq!(one(&mut stage, &sealed, false).as_deref(), Some(&b"hello media"[..]));
        let mut tampered = sealed.clone();
        tampered[10] ^= 1;
        assert_eq!(one(&mut stage, &tampered, false), None);
        assert_eq!(one(&mut stage, b"short", false), None);
    }

    #[test]
    fn a_bad_key_is_refused() {
        let refused = start::<{{Type}}>(r#"{"key-hex": "abc"}"#).err().expect("refused");
        assert!(refused.contains("key-hex"), "{refused}");
    }
}
