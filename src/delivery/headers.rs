//! The headers of a delivery request: JSON, our User-Agent and the Standard Webhooks
//! id, timestamp and signature.

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};

use super::signing::{self, SigningKey};

/// `voicekit-bridge/0.1.0`: lets a customer's logs tell our requests from others.
pub(crate) const USER_AGENT_VALUE: &str = concat!("voicekit-bridge/", env!("CARGO_PKG_VERSION"));

/// The headers of one delivery attempt: JSON, our User-Agent, and the Standard
/// Webhooks `webhook-id` / `webhook-timestamp` / `webhook-signature` (when signing).
/// `None` if the id cannot be a header value.
pub(crate) fn delivery_headers(
    webhook_id: &str,
    timestamp: i64,
    keys: &[SigningKey],
    body: &[u8],
) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert("webhook-id", HeaderValue::from_str(webhook_id).ok()?);
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    if let Some(sig) = signing::signature(keys, webhook_id, timestamp, body) {
        headers.insert("webhook-signature", HeaderValue::from_str(&sig).ok()?);
    }
    Some(headers)
}
