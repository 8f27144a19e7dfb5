//! Proof of a ServiceAccount outside Kubernetes: a compact HS256 JWS signed with a key the
//! controller is given (Kubernetes' projected tokens play this part in a cluster).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The audience every smidge token names, so a token minted for something else is refused.
pub const AUDIENCE: &str = "smidge-identity";

/// What a token asserts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub ns: String,
    pub sa: String,
    pub pod: String,
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a token is refused. The messages never contain the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a signed token (three base64url parts)")]
    Malformed,
    #[error("the token's signature does not verify with this controller's token key")]
    BadSignature,
    #[error("the token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("the token is for audience {0:?}, not {AUDIENCE:?}")]
    WrongAudience(String),
}

/// The key tokens are signed and checked with.
#[derive(Clone)]
pub struct TokenKey {
    key: hmac::Key,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl TokenKey {
    /// At least 32 bytes.
    pub fn new(secret: &[u8]) -> Result<TokenKey, String> {
        if secret.len() < 32 {
            return Err(format!(
                "the token key has {} bytes; at least 32 are needed",
                secret.len()
            ));
        }
        Ok(TokenKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let body = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(body));
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(tag.as_ref()))
    }

    /// The claims of a valid, unexpired token for our audience.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let signing_input = format!("{header}.{body}");
        hmac::verify(&self.key, signing_input.as_bytes(), &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let header = B64.decode(header).map_err(|_| TokenError::Malformed)?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "HS256" {
            return Err(TokenError::Malformed);
        }
        let body = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
        if claims.aud != AUDIENCE {
            return Err(TokenError::WrongAudience(claims.aud));
        }
        if claims.exp <= now {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        Ok(claims)
    }
}

/// The `exp` claim of a JWT whose signature someone else checked (the API server, in a
/// TokenReview): used only to end certificates no later than the token. `None` when absent.
pub fn unverified_exp(token: &str) -> Option<u64> {
    let body = token.split('.').nth(1)?;
    let body = B64.decode(body).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    value.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            ns: "shop".into(),
            sa: "checkout".into(),
            pod: "checkout-1".into(),
            aud: AUDIENCE.into(),
            exp,
        }
    }

    fn key(byte: u8) -> TokenKey {
        TokenKey::new(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let t = key(1).sign(&claims(100));
        assert_eq!(key(1).verify(&t, 99), Ok(claims(100)));
        assert_eq!(
            key(1).verify(&t, 100),
            Err(TokenError::Expired { exp: 100, now: 100 })
        );
    }

    #[test]
    fn another_key_a_changed_body_or_garbage_is_refused() {
        let t = key(1).sign(&claims(100));
        assert_eq!(key(2).verify(&t, 0), Err(TokenError::BadSignature));
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut forged = claims(100);
        forged.sa = "admin".into();
        parts[1] = B64.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(
            key(1).verify(&parts.join("."), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key(1).verify("not a token", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let mut c = claims(100);
        c.aud = "kubernetes".into();
        let t = key(1).sign(&c);
        assert_eq!(
            key(1).verify(&t, 0),
            Err(TokenError::WrongAudience("kubernetes".into()))
        );
    }

    #[test]
    fn the_expiry_of_a_checked_token_can_be_read_back() {
        assert_eq!(unverified_exp(&key(1).sign(&claims(1234))), Some(1234));
        assert_eq!(unverified_exp("garbage"), None);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(TokenKey::new(&[0; 16]).is_err());
    }
}
