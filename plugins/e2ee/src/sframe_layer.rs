//! SFrame (RFC 9605) frames: a header (key id, counter) and the AEAD of the
//! payload under a key derived from a base key per key id.
//!
//! The `sframe` crate does the format; the cryptography is a [`Backend`]:
//! [`Pure`] (the crate's pure-Rust backend, which builds for wasm32 and
//! runs everything in the sandbox) or [`crate::host_crypto::HostAead`]
//! (AES-GCM by the host). This module is what the stage uses of it, checked
//! below against every header and encryption vector of RFC 9605 Appendix C,
//! with both backends.

pub use sframe::CipherSuite;
use sframe::crypto::{AeadDecrypt, AeadEncrypt, KeyDerivation};
use sframe::frame::{EncryptedFrame, MediaFrame, SingleUseCounter};
use sframe::header::SframeHeader;
use sframe::key::{GenericDecryptionKey, GenericEncryptionKey};

/// An SFrame crypto backend: an AEAD and the key derivation that feeds it.
pub trait Backend:
    AeadEncrypt<Secret = <Self::Kdf as KeyDerivation>::Secret> + AeadDecrypt<Secret = <Self::Kdf as KeyDerivation>::Secret>
{
    type Kdf: KeyDerivation;
}

/// The `sframe` crate's own pure-Rust (RustCrypto) backend.
pub type Pure = sframe::crypto::Aead;

impl Backend for Pure {
    type Kdf = sframe::crypto::Kdf;
}

/// A sender's key for one key id.
pub type EncryptionKey<B> = GenericEncryptionKey<B, <B as Backend>::Kdf>;
/// A receiver's key for one key id.
pub type DecryptionKey<B> = GenericDecryptionKey<B, <B as Backend>::Kdf>;

/// Why a frame could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SframeError(pub String);

impl std::fmt::Display for SframeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(e: impl std::fmt::Display) -> SframeError {
    SframeError(e.to_string())
}

/// The SFrame header of key id `kid` and counter `ctr`, as bytes.
pub fn encode_header(kid: u64, ctr: u64) -> Vec<u8> {
    let header = SframeHeader::new(kid, ctr);
    let mut bytes = vec![0; header.len()];
    // The buffer is exactly the header's length, so this cannot fail.
    let _ = header.serialize(&mut bytes);
    bytes
}

/// The key id and counter of the header at the start of `frame`.
pub fn decode_header(frame: &[u8]) -> Result<(u64, u64), SframeError> {
    let header = SframeHeader::deserialize(frame).map_err(error)?;
    Ok((header.key_id(), header.counter()))
}

/// Seals `payload` as one SFrame ciphertext (header, ciphertext, tag) with
/// counter `ctr`; `metadata` is authenticated, not encrypted, and not part
/// of the output.
pub fn seal<B: Backend>(key: &EncryptionKey<B>, ctr: u64, metadata: &[u8], payload: &[u8]) -> Result<Vec<u8>, SframeError> {
    let mut counter = SingleUseCounter::new(ctr);
    let frame = MediaFrame::try_with_meta_data(&mut counter, payload, metadata).map_err(error)?;
    let sealed = frame.encrypt(key).map_err(error)?;
    Ok(sealed.as_ref()[metadata.len()..].to_vec())
}

/// Opens an SFrame ciphertext sealed with `metadata`.
pub fn open<B: Backend>(key: &DecryptionKey<B>, metadata: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SframeError> {
    let frame = EncryptedFrame::try_with_meta_data(sealed, metadata).map_err(error)?;
    let opened = frame.decrypt(key).map_err(error)?;
    Ok(opened.payload().to_vec())
}

/// Keys for `kid` from a base key (RFC 9605 §4.4.2).
pub fn keys<B: Backend>(suite: CipherSuite, kid: u64, base_key: &[u8]) -> Result<(EncryptionKey<B>, DecryptionKey<B>), SframeError> {
    let enc = EncryptionKey::derive_from(suite, kid, base_key).map_err(error)?;
    let dec = DecryptionKey::derive_from(suite, kid, base_key).map_err(error)?;
    Ok((enc, dec))
}

#[cfg(test)]
mod rfc9605_vectors {
    //! RFC 9605 Appendix C, from the RFC's JSON (`rfc9605-test-vectors.json`).
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("rfc9605-test-vectors.json")).expect("the RFC's vectors parse")
    }

    fn hex(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().expect("a hex string")).expect("hex")
    }

    fn suite(id: u64) -> CipherSuite {
        match id {
            1 => CipherSuite::AesCtr128HmacSha256_80,
            2 => CipherSuite::AesCtr128HmacSha256_64,
            3 => CipherSuite::AesCtr128HmacSha256_32,
            4 => CipherSuite::AesGcm128Sha256,
            5 => CipherSuite::AesGcm256Sha512,
            other => panic!("cipher suite {other} is not in RFC 9605"),
        }
    }

    /// Appendix C.1: every (kid, ctr) header encodes and decodes exactly.
    #[test]
    fn every_header_vector() {
        let all = vectors();
        let headers = all["header"].as_array().expect("headers");
        assert_eq!(headers.len(), 289);
        for v in headers {
            let (kid, ctr) = (v["kid"].as_u64().expect("kid"), v["ctr"].as_u64().expect("ctr"));
            assert_eq!(encode_header(kid, ctr), hex(&v["encoded"]), "kid {kid} ctr {ctr}");
            assert_eq!(decode_header(&hex(&v["encoded"])), Ok((kid, ctr)));
        }
    }

    /// Appendix C.2: the AES-CTR + HMAC AEAD of RFC 9605 §4.5.1, computed
    /// here independently (RustCrypto's AES-CTR and HMAC): the key splits
    /// into the encryption and authentication keys, and the ciphertext and
    /// truncated tag are the RFC's. (The same construction runs inside the
    /// `sframe` crate for suites 1-3, which C.3 checks end to end.)
    #[test]
    fn every_aes_ctr_hmac_vector() {
        use aes::cipher::{KeyIvInit, StreamCipher};
        use hmac::Mac;
        let all = vectors();
        let aeads = all["aes_ctr_hmac"].as_array().expect("AES-CTR vectors");
        assert_eq!(aeads.len(), 3);
        for v in aeads {
            let tag_len = match v["cipher_suite"].as_u64() {
                Some(1) => 10,
                Some(2) => 8,
                Some(3) => 4,
                other => panic!("not an AES-CTR suite: {other:?}"),
            };
            let (key, nonce, aad, pt) = (hex(&v["key"]), hex(&v["nonce"]), hex(&v["aad"]), hex(&v["pt"]));
            let (enc_key, auth_key) = key.split_at(16);
            assert_eq!((enc_key.to_vec(), auth_key.to_vec()), (hex(&v["enc_key"]), hex(&v["auth_key"])));
            let mut iv = nonce.clone();
            iv.extend_from_slice(&[0; 4]);
            let mut ct = pt.clone();
            ctr::Ctr128BE::<aes::Aes128>::new(enc_key.into(), iv.as_slice().into()).apply_keystream(&mut ct);
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(auth_key).expect("any key length");
            for len in [aad.len(), ct.len(), tag_len] {
                mac.update(&(len as u64).to_be_bytes());
            }
            mac.update(&nonce);
            mac.update(&aad);
            mac.update(&ct);
            ct.extend_from_slice(&mac.finalize().into_bytes()[..tag_len]);
            assert_eq!(ct, hex(&v["ct"]), "suite {}", v["cipher_suite"]);
        }
    }

    /// Appendix C.3: for every cipher suite, sealing the plaintext gives the
    /// RFC's ciphertext byte for byte, and opening it gives the plaintext.
    #[test]
    fn every_sframe_encryption_vector() {
        let all = vectors();
        let frames = all["sframe"].as_array().expect("sframe vectors");
        assert_eq!(frames.len(), 5, "one per cipher suite");
        for v in frames {
            let suite = suite(v["cipher_suite"].as_u64().expect("suite"));
            let (kid, ctr) = (v["kid"].as_u64().expect("kid"), v["ctr"].as_u64().expect("ctr"));
            let base_key = hex(&v["base_key"]);
            let (metadata, pt, ct) = (hex(&v["metadata"]), hex(&v["pt"]), hex(&v["ct"]));
            check::<Pure>(suite, kid, ctr, &base_key, &metadata, &pt, &ct);
            // The host backend has the AES-GCM suites (natively the SDK
            // stands in for the host with RustCrypto's AES-GCM).
            if matches!(suite, CipherSuite::AesGcm128Sha256 | CipherSuite::AesGcm256Sha512) {
                check::<crate::host_crypto::HostAead>(suite, kid, ctr, &base_key, &metadata, &pt, &ct);
            } else {
                assert!(keys::<crate::host_crypto::HostAead>(suite, kid, &base_key).is_err());
            }
        }
    }

    fn check<B: Backend>(suite: CipherSuite, kid: u64, ctr: u64, base_key: &[u8], metadata: &[u8], pt: &[u8], ct: &[u8]) {
        let (enc, dec) = keys::<B>(suite, kid, base_key).expect("keys");
        assert_eq!(seal(&enc, ctr, metadata, pt).expect("seals"), ct, "{suite:?}");
        assert_eq!(open(&dec, metadata, ct).expect("opens"), pt, "{suite:?}");
        // One flipped bit anywhere and the frame does not open.
        let mut bad = ct.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&dec, metadata, &bad).is_err(), "{suite:?}: a forged tag opens");
    }
}
