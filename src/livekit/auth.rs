//! Proof that a webhook came from our LiveKit server and was not altered.
//!
//! LiveKit signs each webhook with an HS256 JWT whose issuer is the API key and whose
//! `sha256` claim is the base64 SHA-256 of the exact body bytes. We pick the secret by
//! the (unverified) issuer so several keys can be valid during a rotation, verify the
//! token with `livekit-api` (60 s leeway, as LiveKit's own verifiers), then compare the
//! body hash in constant time.

use std::collections::HashMap;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use livekit_api::access_token::{AccessTokenError, TokenVerifier};
use sha2::{Digest, Sha256};

use crate::config::ApiKey;

/// Why a webhook's authorization was refused. The text is safe to log: no secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header")]
    Missing,
    #[error("token is not a valid JWT")]
    Malformed,
    #[error("token signed with unknown API key {0:?}")]
    UnknownKey(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("bad token signature")]
    BadSignature,
    #[error("token has no sha256 claim")]
    MissingHash,
    #[error("body hash does not match the token's sha256 claim")]
    HashMismatch,
    #[error("token rejected: {0}")]
    Other(String),
}

impl AuthError {
    /// A short stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::MissingHash => "missing_hash",
            AuthError::HashMismatch => "hash_mismatch",
            AuthError::Other(_) => "invalid_token",
        }
    }
}

/// Verifies LiveKit webhook tokens against every configured key.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    verifiers: HashMap<String, TokenVerifier>,
}

impl WebhookVerifier {
    pub fn new(keys: &[ApiKey]) -> Self {
        let verifiers = keys
            .iter()
            .map(|k| {
                (
                    k.key.clone(),
                    TokenVerifier::with_api_key(&k.key, k.secret.expose()),
                )
            })
            .collect();
        WebhookVerifier { verifiers }
    }

    /// Checks the `Authorization` header value against the raw body.
    pub fn verify(&self, authorization: Option<&str>, body: &[u8]) -> Result<(), AuthError> {
        let header = authorization.map(str::trim).filter(|h| !h.is_empty());
        let token = header.ok_or(AuthError::Missing)?;
        // LiveKit sends the bare token; other senders add a scheme.
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .unwrap_or(token)
            .trim();

        let issuer = unverified_issuer(token).ok_or(AuthError::Malformed)?;
        let verifier = self
            .verifiers
            .get(&issuer)
            .ok_or_else(|| AuthError::UnknownKey(issuer.clone()))?;
        let claims = verifier.verify(token).map_err(token_error)?;

        if claims.sha256.is_empty() {
            return Err(AuthError::MissingHash);
        }
        let claimed = base64::engine::general_purpose::STANDARD
            .decode(claims.sha256.trim())
            .map_err(|_| AuthError::HashMismatch)?;
        let actual = Sha256::digest(body);
        if !constant_time_eq(&claimed, &actual) {
            return Err(AuthError::HashMismatch);
        }
        Ok(())
    }
}

/// The `iss` claim, read without checking anything, only to pick the key to verify
/// with. Cheaper than `Claims::from_unverified`, which decodes every claim (and the
/// header) only for `verify` to decode them all again.
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Issuer {
        #[serde(default)]
        iss: String,
    }
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Issuer>(&json).ok().map(|c| c.iss)
}

/// livekit-api prints every token error as "failed to encode jwt"; the inner kind is
/// what tells an operator whether clocks, keys or an attacker are to blame.
fn token_error(e: AccessTokenError) -> AuthError {
    match e {
        AccessTokenError::Encoding(inner) => match inner.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                AuthError::Malformed
            }
            ErrorKind::Utf8(_) => AuthError::Malformed,
            other => AuthError::Other(format!("{other:?}")),
        },
        other => AuthError::Other(other.to_string()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use livekit_api::access_token::AccessToken;
    use std::time::Duration;

    fn keys() -> Vec<ApiKey> {
        vec![
            ApiKey {
                key: "devkey".into(),
                secret: Secret::new("secret-one-that-is-long-enough"),
            },
            ApiKey {
                key: "oldkey".into(),
                secret: Secret::new("secret-two-that-is-long-enough"),
            },
        ]
    }

    fn sign(key: &str, secret: &str, body: &[u8]) -> String {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
        AccessToken::with_api_key(key, secret)
            .with_ttl(Duration::from_secs(300))
            .with_sha256(&hash)
            .to_jwt()
            .unwrap()
    }

    #[test]
    fn accepts_tokens_of_every_configured_key_with_or_without_bearer() {
        let v = WebhookVerifier::new(&keys());
        let body = br#"{"event":"room_started"}"#;
        let t1 = sign("devkey", "secret-one-that-is-long-enough", body);
        let t2 = sign("oldkey", "secret-two-that-is-long-enough", body);
        assert_eq!(v.verify(Some(&t1), body), Ok(()));
        assert_eq!(v.verify(Some(&format!("Bearer {t2}")), body), Ok(()));
    }

    #[test]
    fn names_the_precise_reason() {
        let v = WebhookVerifier::new(&keys());
        let body = br#"{"event":"room_started"}"#;
        assert_eq!(v.verify(None, body), Err(AuthError::Missing));
        assert_eq!(v.verify(Some("nope"), body), Err(AuthError::Malformed));
        let unknown = sign("stranger", "whatever-secret", body);
        assert_eq!(
            v.verify(Some(&unknown), body),
            Err(AuthError::UnknownKey("stranger".into()))
        );
        let wrong_secret = sign("devkey", "not-the-secret", body);
        assert_eq!(
            v.verify(Some(&wrong_secret), body),
            Err(AuthError::BadSignature)
        );
        let good = sign("devkey", "secret-one-that-is-long-enough", body);
        assert_eq!(
            v.verify(Some(&good), br#"{"event":"room_finished"}"#),
            Err(AuthError::HashMismatch)
        );
        assert_eq!(v.verify(Some("a.b"), body), Err(AuthError::Malformed));
        assert_eq!(v.verify(Some("a.!!!.c"), body), Err(AuthError::Malformed));
        let no_hash = AccessToken::with_api_key("devkey", "secret-one-that-is-long-enough")
            .to_jwt()
            .unwrap();
        assert_eq!(v.verify(Some(&no_hash), body), Err(AuthError::MissingHash));
    }
}
