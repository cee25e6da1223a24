//! Webhook `Authorization` tokens for the suite: the crate's testkit signer
//! (`voicekit_bridge::testkit::token`, LiveKit's own `AccessToken`), where a token that
//! cannot be made fails the test.

use std::time::Duration;

use voicekit_bridge::testkit::token;
pub use voicekit_bridge::testkit::token::{TTL, body_sha256, expired_token};

/// The token LiveKit would send with `body`.
pub fn sign(api_key: &str, api_secret: &str, body: &[u8]) -> String {
    token::sign(api_key, api_secret, body).expect("LiveKit's AccessToken signs")
}

/// A valid token whose `sha256` claim is `sha256` verbatim (e.g. the hash of other bytes).
pub fn sign_with_sha256(api_key: &str, api_secret: &str, sha256: &str, ttl: Duration) -> String {
    token::sign_with_sha256(api_key, api_secret, sha256, ttl).expect("LiveKit's AccessToken signs")
}
