//! The `aead` host interface: AES-GCM keys held by the host, used by handle.
//!
//! An E2EE plugin derives its keys itself (the key schedule is its
//! business) and hands them here, then seals and opens frames by handle:
//! the host runs AES-GCM on the CPU's AES instructions (ring), which wasm
//! does not have. Keys belong to the instance: they go when it does.

use super::HostState;
use super::bindings::aead::{self, Algorithm};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::collections::HashMap;

/// Keys one instance may hold at once.
pub const MAX_KEYS: usize = 1024;

/// One instance's keys.
#[derive(Default)]
pub struct Keys {
    keys: HashMap<u32, LessSafeKey>,
    next: u32,
}

fn nonce(bytes: &[u8]) -> Result<Nonce, String> {
    Nonce::try_assume_unique_for_key(bytes).map_err(|_| format!("a nonce is {NONCE_LEN} bytes, not {}", bytes.len()))
}

impl Keys {
    pub fn load(&mut self, algorithm: Algorithm, key: &[u8]) -> Result<u32, String> {
        if self.keys.len() >= MAX_KEYS {
            return Err(format!("an instance holds at most {MAX_KEYS} keys; forget some"));
        }
        let algorithm = match algorithm {
            Algorithm::Aes128Gcm => &AES_128_GCM,
            Algorithm::Aes256Gcm => &AES_256_GCM,
        };
        let key = UnboundKey::new(algorithm, key).map_err(|_| format!("a key for this algorithm is {} bytes", algorithm.key_len()))?;
        self.next = self.next.wrapping_add(1);
        self.keys.insert(self.next, LessSafeKey::new(key));
        Ok(self.next)
    }

    pub fn forget(&mut self, handle: u32) {
        self.keys.remove(&handle);
    }

    fn key(&self, handle: u32) -> Result<&LessSafeKey, String> {
        self.keys.get(&handle).ok_or_else(|| format!("no key {handle}"))
    }

    pub fn seal(&self, handle: u32, nonce_bytes: &[u8], aad: &[u8], mut data: Vec<u8>) -> Result<Vec<u8>, String> {
        let key = self.key(handle)?;
        key.seal_in_place_append_tag(nonce(nonce_bytes)?, Aad::from(aad), &mut data).map_err(|_| "sealing failed".to_string())?;
        Ok(data)
    }

    pub fn open(&self, handle: u32, nonce_bytes: &[u8], aad: &[u8], mut data: Vec<u8>) -> Result<Vec<u8>, String> {
        let key = self.key(handle)?;
        let len = key.open_in_place(nonce(nonce_bytes)?, Aad::from(aad), &mut data).map_err(|_| "does not authenticate".to_string())?.len();
        data.truncate(len);
        Ok(data)
    }
}

impl aead::Host for HostState {
    fn load_key(&mut self, algorithm: Algorithm, key: Vec<u8>) -> Result<u32, String> {
        self.keys.load(algorithm, &key)
    }

    fn forget(&mut self, key: u32) {
        self.keys.forget(key);
    }

    fn seal(&mut self, key: u32, nonce: Vec<u8>, aad: Vec<u8>, data: Vec<u8>) -> Result<Vec<u8>, String> {
        self.keys.seal(key, &nonce, &aad, data)
    }

    fn open(&mut self, key: u32, nonce: Vec<u8>, aad: Vec<u8>, data: Vec<u8>) -> Result<Vec<u8>, String> {
        self.keys.open(key, &nonce, &aad, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AES-128-GCM of RFC 9605's SFrame vector for suite 4 (C.3): the
    /// sframe_key and nonce it derives, its AAD (header + metadata) and
    /// plaintext give its ciphertext and tag.
    #[test]
    fn seals_the_rfc_9605_gcm_vector_and_refuses_forgeries() {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../../../plugins/e2ee/src/rfc9605-test-vectors.json")).expect("vectors");
        let v = all["sframe"].as_array().expect("vectors").iter().find(|v| v["cipher_suite"] == 4).expect("suite 4");
        let hex = |k: &str| -> Vec<u8> {
            let s = v[k].as_str().expect("hex");
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
        };
        let mut keys = Keys::default();
        let key = keys.load(Algorithm::Aes128Gcm, &hex("sframe_key")).expect("key");
        let (nonce, aad, pt, ct) = (hex("nonce"), hex("aad"), hex("pt"), hex("ct"));
        let header_len = ct.len() - pt.len() - 16;
        let sealed = keys.seal(key, &nonce, &aad, pt.clone()).expect("seals");
        assert_eq!(sealed, ct[header_len..], "ciphertext and tag as in the RFC");
        assert_eq!(keys.open(key, &nonce, &aad, sealed.clone()).expect("opens"), pt);
        let mut forged = sealed;
        forged[0] ^= 1;
        assert!(keys.open(key, &nonce, &aad, forged).is_err());
        assert!(keys.seal(key, &[0; 5], &aad, pt.clone()).is_err(), "short nonce");
        assert!(keys.load(Algorithm::Aes256Gcm, &[0; 16]).is_err(), "wrong key length");
        keys.forget(key);
        assert!(keys.seal(key, &nonce, &aad, pt).is_err(), "forgotten");
    }

    #[test]
    fn an_instance_holds_a_bounded_number_of_keys() {
        let mut keys = Keys::default();
        for _ in 0..MAX_KEYS {
            keys.load(Algorithm::Aes128Gcm, &[7; 16]).expect("key");
        }
        assert!(keys.load(Algorithm::Aes128Gcm, &[7; 16]).is_err());
    }
}
