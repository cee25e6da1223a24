//! Webhook `Authorization` tokens exactly as LiveKit makes them, and broken ones.
//!
//! LiveKit signs each webhook with an HS256 JWT: `iss` = API key, a 5 minute `exp`,
//! and a `sha256` claim holding the standard padded base64 of SHA-256 over the exact
//! body bytes. Valid tokens come from livekit's own `AccessToken`, so the tests use
//! the same code LiveKit's SDK does; the negative cases (expired, arbitrary claims)
//! are assembled by hand because `AccessToken` cannot produce them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use livekit_api::access_token::AccessToken;
use sha2::{Digest, Sha256};

/// LiveKit's webhook token lifetime.
pub const TTL: Duration = Duration::from_secs(5 * 60);

/// The `sha256` claim for `body`: standard padded base64 of its SHA-256.
pub fn body_sha256(body: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(body))
}

/// The token LiveKit would send with `body`.
pub fn sign(api_key: &str, api_secret: &str, body: &[u8]) -> String {
    sign_with_ttl(api_key, api_secret, body, TTL)
}

/// Like [`sign`] but expiring `ttl` from now.
pub fn sign_with_ttl(api_key: &str, api_secret: &str, body: &[u8], ttl: Duration) -> String {
    sign_with_sha256(api_key, api_secret, &body_sha256(body), ttl)
}

/// A valid token whose `sha256` claim is `sha256` verbatim (e.g. the hash of other bytes).
pub fn sign_with_sha256(api_key: &str, api_secret: &str, sha256: &str, ttl: Duration) -> String {
    AccessToken::with_api_key(api_key, api_secret)
        .with_ttl(ttl)
        .with_sha256(sha256)
        .to_jwt()
        .expect("livekit AccessToken signs")
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
        .expect("clock after 1970")
        .as_secs()
}
