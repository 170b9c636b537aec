//! Authenticated encryption by key handle, done by the host (AES-GCM with
//! the CPU's AES instructions, which wasm lacks: sealing in the sandbox
//! runs ~15x slower).
//!
//! A plugin derives a key, loads it with [`load_key`] and then seals and
//! opens by handle; the key bytes stay in the host from then on. Handles
//! live until [`forget`] or the end of the instance (at most 1024 at once).
//!
//! On wasm these call the `medianode:plugin/aead` imports. Natively (unit
//! tests, benchmarks) RustCrypto's AES-GCM stands in for the host.

/// The AEAD algorithms the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Aes128Gcm,
    Aes256Gcm,
}

impl Algorithm {
    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Aes128Gcm => 16,
            Algorithm::Aes256Gcm => 32,
        }
    }
}

#[cfg(target_os = "wasi")]
mod imp {
    use super::Algorithm;
    use crate::host::wit::medianode::plugin::aead as wit;

    pub fn load_key(algorithm: Algorithm, key: &[u8]) -> Result<u32, String> {
        let algorithm = match algorithm {
            Algorithm::Aes128Gcm => wit::Algorithm::Aes128Gcm,
            Algorithm::Aes256Gcm => wit::Algorithm::Aes256Gcm,
        };
        wit::load_key(algorithm, key)
    }
    pub fn forget(key: u32) {
        wit::forget(key)
    }
    pub fn seal(key: u32, nonce: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        wit::seal(key, nonce, aad, data)
    }
    pub fn open(key: u32, nonce: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        wit::open(key, nonce, aad, data)
    }
}

#[cfg(not(target_os = "wasi"))]
mod imp {
    use super::Algorithm;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
    use std::cell::RefCell;
    use std::collections::HashMap;

    enum Cipher {
        Aes128(Box<Aes128Gcm>),
        Aes256(Box<Aes256Gcm>),
    }

    thread_local! {
        static KEYS: RefCell<(u32, HashMap<u32, Cipher>)> = RefCell::new((0, HashMap::new()));
    }

    pub fn load_key(algorithm: Algorithm, key: &[u8]) -> Result<u32, String> {
        let bad = |_| format!("a {algorithm:?} key is {} bytes, not {}", algorithm.key_len(), key.len());
        let cipher = match algorithm {
            Algorithm::Aes128Gcm => Cipher::Aes128(Box::new(Aes128Gcm::new_from_slice(key).map_err(bad)?)),
            Algorithm::Aes256Gcm => Cipher::Aes256(Box::new(Aes256Gcm::new_from_slice(key).map_err(bad)?)),
        };
        KEYS.with_borrow_mut(|(next, keys)| {
            *next += 1;
            keys.insert(*next, cipher);
            Ok(*next)
        })
    }
    pub fn forget(key: u32) {
        KEYS.with_borrow_mut(|(_, keys)| keys.remove(&key));
    }
    fn run(key: u32, nonce: &[u8], aad: &[u8], data: &[u8], seal: bool) -> Result<Vec<u8>, String> {
        if nonce.len() != 12 {
            return Err(format!("the nonce is 12 bytes, not {}", nonce.len()));
        }
        let nonce = Nonce::from_slice(nonce);
        let payload = Payload { msg: data, aad };
        KEYS.with_borrow(|(_, keys)| {
            let result = match (keys.get(&key), seal) {
                (None, _) => return Err(format!("no key {key}")),
                (Some(Cipher::Aes128(c)), true) => c.encrypt(nonce, payload),
                (Some(Cipher::Aes128(c)), false) => c.decrypt(nonce, payload),
                (Some(Cipher::Aes256(c)), true) => c.encrypt(nonce, payload),
                (Some(Cipher::Aes256(c)), false) => c.decrypt(nonce, payload),
            };
            result.map_err(|_| "does not authenticate".to_string())
        })
    }
    pub fn seal(key: u32, nonce: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        run(key, nonce, aad, data, true)
    }
    pub fn open(key: u32, nonce: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        run(key, nonce, aad, data, false)
    }
}

/// Loads a key; the handle seals and opens until [`forget`].
pub fn load_key(algorithm: Algorithm, key: &[u8]) -> Result<u32, String> {
    imp::load_key(algorithm, key)
}

/// Drops a key from the host.
pub fn forget(key: u32) {
    imp::forget(key);
}

/// Encrypts `data` with a 12-byte nonce: ciphertext, then the 16-byte tag.
pub fn seal(key: u32, nonce: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    imp::seal(key, nonce, aad, data)
}

/// Checks and decrypts ciphertext-then-tag.
pub fn open(key: u32, nonce: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    imp::open(key, nonce, aad, data)
}
