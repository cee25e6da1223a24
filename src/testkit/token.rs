//! The `Authorization` token LiveKit sends with each webhook, and broken ones.
//!
//! LiveKit signs each webhook with an HS256 JWT: `iss` = API key, a five-minute `exp`,
//! and a `sha256` claim holding the standard padded base64 of SHA-256 over the exact
//! body bytes. Valid tokens come from livekit's own `AccessToken`, the code LiveKit's
//! SDK signs with; the negative cases (expired, arbitrary claims) are assembled by hand
//! because `AccessToken` cannot produce them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use livekit_api::access_token::AccessToken;
pub use livekit_api::access_token::AccessTokenError;
use sha2::{Digest, Sha256};

/// LiveKit's webhook token lifetime.
pub const TTL: Duration = Duration::from_secs(5 * 60);

/// The `sha256` claim for `body`: standard padded base64 of its SHA-256.
pub fn body_sha256(body: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(body))
}

/// The token LiveKit would send with `body`; fails only for an empty key or secret.
pub fn sign(api_key: &str, api_secret: &str, body: &[u8]) -> Result<String, AccessTokenError> {
    sign_with_ttl(api_key, api_secret, body, TTL)
}

/// Like [`sign`] but expiring `ttl` from now (a load generator that signs up front
/// needs tokens that outlive its run).
pub fn sign_with_ttl(
    api_key: &str,
    api_secret: &str,
    body: &[u8],
    ttl: Duration,
) -> Result<String, AccessTokenError> {
    sign_with_sha256(api_key, api_secret, &body_sha256(body), ttl)
}

/// A valid token whose `sha256` claim is `sha256` verbatim (e.g. the hash of other
/// bytes, to present a well-signed token for a tampered body).
pub fn sign_with_sha256(
    api_key: &str,
    api_secret: &str,
    sha256: &str,
    ttl: Duration,
) -> Result<String, AccessTokenError> {
    AccessToken::with_api_key(api_key, api_secret)
        .with_ttl(ttl)
        .with_sha256(sha256)
        .to_jwt()
}

/// A correctly signed token for `body` that expired ten minutes ago, well past the
/// 60 s leeway LiveKit's verifiers allow.
pub fn expired_token(api_key: &str, api_secret: &str, body: &[u8]) -> String {
    let now = unix_now();
    sign_claims(
        api_secret,
        &serde_json::json!({
            "iss": api_key,
            "nbf": now - 900,
            "iat": now - 900,
            "exp": now - 600,
            "sha256": body_sha256(body),
        }),
    )
}

/// An HS256 JWT over arbitrary `claims`, signed with `secret`.
pub fn sign_claims(secret: &str, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Seconds since the Unix epoch, for building claims.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use livekit_api::access_token::{Claims, TokenVerifier};

    use super::*;

    const KEY: &str = "APIunit";
    const SECRET: &str = "unit-secret-with-enough-bytes-for-hs256";

    #[test]
    fn a_signed_token_verifies_and_carries_the_hash_of_the_exact_body() {
        let body = br#"{"event":"room_started", "id":"EV_1"}"#;
        let token = sign(KEY, SECRET, body).unwrap();
        let claims = TokenVerifier::with_api_key(KEY, SECRET)
            .verify(&token)
            .unwrap();
        assert_eq!(claims.iss, KEY);
        assert_eq!(claims.sha256, STANDARD.encode(Sha256::digest(body)));
        assert!(
            (300..=301).contains(&(claims.exp - claims.nbf)),
            "five-minute lifetime"
        );
        assert!(
            TokenVerifier::with_api_key(KEY, "another-secret-of-enough-bytes")
                .verify(&token)
                .is_err()
        );
    }

    #[test]
    fn an_expired_token_is_well_signed_but_rejected_as_expired() {
        let body = br#"{"event":"room_finished"}"#;
        let token = expired_token(KEY, SECRET, body);
        match TokenVerifier::with_api_key(KEY, SECRET).verify(&token) {
            Err(AccessTokenError::Encoding(e)) => assert_eq!(
                e.kind(),
                &jsonwebtoken::errors::ErrorKind::ExpiredSignature,
                "{e:?}"
            ),
            other => panic!("expected an expired-signature error, got {other:?}"),
        }
        assert_eq!(
            Claims::from_unverified(&token).unwrap().sha256,
            body_sha256(body)
        );
    }

    #[test]
    fn an_empty_secret_is_an_error_rather_than_a_token() {
        assert!(matches!(
            sign(KEY, "", b"{}"),
            Err(AccessTokenError::InvalidKeys)
        ));
    }

    #[test]
    fn hand_made_claims_are_signed_as_hs256_over_exactly_those_claims() {
        let token = sign_claims(
            SECRET,
            &serde_json::json!({"iss": KEY, "exp": 1, "sha256": "x"}),
        );
        let claims = Claims::from_unverified(&token).unwrap();
        assert_eq!((claims.iss.as_str(), claims.sha256.as_str()), (KEY, "x"));
        let signing_input = token.rsplit_once('.').unwrap().0;
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        assert_eq!(
            token.rsplit_once('.').unwrap().1,
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
    }
}
