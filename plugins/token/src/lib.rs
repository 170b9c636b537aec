//! Room access tokens for medianode: who may join which room, until when.
//! Shared by the node and the signaling plugin (it builds for wasm too).
//!
//! A token is `v1.<claims>.<signature>`: the claims (`{"room", "user",
//! "exp"}` as JSON, `exp` in Unix seconds) and an HMAC-SHA256 of them under
//! the node's configured secret, both base64url without padding. Whoever
//! holds the secret (the application's backend) mints tokens; the node only
//! checks them. Verification is constant-time in the signature.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    pub room: String,
    pub user: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused (each becomes an error code on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a medianode v1 token")]
    Malformed,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token is for another room or user")]
    WrongScope,
}

impl TokenError {
    /// The error code sent to the client.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed => "token-malformed",
            TokenError::BadSignature => "token-invalid",
            TokenError::Expired => "token-expired",
            TokenError::WrongScope => "token-scope",
        }
    }
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// Mints a token (for tests, tools and application backends).
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut m = mac(secret);
    m.update(body.as_bytes());
    format!("v1.{body}.{}", B64.encode(m.finalize().into_bytes()))
}

/// Checks a token's signature and expiry (at `now`, Unix seconds) and that
/// it grants `room` to `user`.
pub fn verify(secret: &[u8], token: &str, room: &str, user: &str, now: u64) -> Result<Claims, TokenError> {
    let claims = open(secret, token, now)?;
    if claims.room != room || claims.user != user {
        return Err(TokenError::WrongScope);
    }
    Ok(claims)
}

/// Checks a token's signature and expiry (at `now`, Unix seconds) and
/// returns what it grants.
pub fn open(secret: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some("v1"), Some(body), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let signature = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    m.verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = B64.decode(body).ok().and_then(|json| serde_json::from_slice(&json).ok()).ok_or(TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test secret";

    fn token(room: &str, user: &str, exp: u64) -> String {
        sign(SECRET, &Claims { room: room.into(), user: user.into(), exp })
    }

    #[test]
    fn a_valid_token_grants_its_room_and_user() {
        let claims = verify(SECRET, &token("r1", "alice", 2000), "r1", "alice", 1000).unwrap();
        assert_eq!(claims.user, "alice");
    }

    #[test]
    fn every_kind_of_bad_token_is_refused_with_its_reason() {
        let good = token("r1", "alice", 2000);
        assert_eq!(verify(b"other secret", &good, "r1", "alice", 1000), Err(TokenError::BadSignature));
        assert_eq!(verify(SECRET, &good, "r1", "alice", 2000), Err(TokenError::Expired));
        assert_eq!(verify(SECRET, &good, "r2", "alice", 1000), Err(TokenError::WrongScope));
        assert_eq!(verify(SECRET, &good, "r1", "bob", 1000), Err(TokenError::WrongScope));
        for bad in ["", "v1", "v1.a.b.c", "v2.a.b", "v1.!!!.???", &good.replace("v1.", "v1.x")] {
            let e = verify(SECRET, bad, "r1", "alice", 1000).unwrap_err();
            assert!(matches!(e, TokenError::Malformed | TokenError::BadSignature), "{bad:?}: {e:?}");
        }
        // A forged body with the old signature.
        let (_, sig) = good.rsplit_once('.').unwrap();
        let forged_body = B64.encode(br#"{"room":"r1","user":"mallory","exp":9999}"#);
        assert_eq!(verify(SECRET, &format!("v1.{forged_body}.{sig}"), "r1", "mallory", 1000), Err(TokenError::BadSignature));
    }
}
