//! Standard Webhooks signatures, so a customer can prove a delivery came from us.
//!
//! `webhook-signature` is `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`,
//! keyed with the base64-decoded part of a `whsec_...` secret; during a rotation one
//! signature per secret, space separated, so receivers on either secret accept it.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A decoded `whsec_...` signing secret. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigningKeyError {
    #[error("must start with \"whsec_\"")]
    Prefix,
    #[error("the part after \"whsec_\" is not valid base64")]
    Base64,
    #[error("the key is empty")]
    Empty,
}

impl SigningKey {
    pub(crate) fn parse(secret: &str) -> Result<SigningKey, SigningKeyError> {
        let encoded = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or(SigningKeyError::Prefix)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SigningKeyError::Base64)?;
        if key.is_empty() {
            return Err(SigningKeyError::Empty);
        }
        Ok(SigningKey(key))
    }

    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }
}

/// The `webhook-signature` header value for one attempt, or `None` without keys.
pub(crate) fn signature(
    keys: &[SigningKey],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    Some(
        keys.iter()
            .map(|k| k.sign(id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification: its secret, id, timestamp,
    /// body and signature.
    #[test]
    fn standard_webhooks_test_vector() {
        let key = SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let sig = signature(
            &[key],
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn one_signature_per_secret_during_rotation() {
        let old = SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let new = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(&[old, new], "msg_1", 1, b"{}").unwrap();
        let parts: Vec<_> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
        assert_eq!(signature(&[], "msg_1", 1, b"{}"), None);
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(SigningKey::parse("C2FVsBQI"), Err(SigningKeyError::Prefix));
        assert_eq!(SigningKey::parse("whsec_!!!"), Err(SigningKeyError::Base64));
        assert_eq!(SigningKey::parse("whsec_"), Err(SigningKeyError::Empty));
        assert_eq!(
            format!("{:?}", SigningKey::parse("whsec_AAAA").unwrap()),
            "SigningKey(***)"
        );
    }
}
