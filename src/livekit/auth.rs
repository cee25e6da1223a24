//! Proof that a webhook came from our LiveKit server and was not altered.
//!
//! LiveKit signs each webhook with an HS256 JWT whose issuer is the API key and whose
//! `sha256` claim is the base64 SHA-256 of the exact body bytes. We pick the secret by
//! the issuer so several keys can be valid during a rotation, check the token as
//! LiveKit's own verifier (`livekit-api`'s `TokenVerifier`, that is jsonwebtoken with
//! HS256, a required `exp`, `nbf`, 60 s leeway, no audience) does, then compare the body
//! hash in constant time.
//!
//! We check the token here rather than through `TokenVerifier`: it is every webhook's
//! largest cost after the HTTP itself. `TokenVerifier` keys a new HMAC (two SHA-256
//! blocks of the secret's pads) and builds its validation rules at every call, and
//! decodes the header twice and the claims three times into LiveKit's whole grant
//! structure; here each key's HMAC is keyed once and the claims are read once, for the
//! five the check needs. `the_same_tokens_pass_as_with_livekits_verifier` holds the two
//! to the same answers.

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use sha2::{Digest, Sha256};

use crate::config::ApiKey;

type HmacSha256 = Hmac<Sha256>;

/// The clock skew LiveKit's verifiers allow on `exp` and `nbf` (jsonwebtoken's default).
const LEEWAY_SECS: u64 = 60;

/// The algorithm names jsonwebtoken knows; a token naming one of them other than HS256
/// is "signed the wrong way", any other name is a malformed token (as there).
const OTHER_ALGORITHMS: &[&str] = &[
    "HS384", "HS512", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "EdDSA",
];

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
    pub(crate) fn reason(&self) -> &'static str {
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
    /// Each API key's HMAC, keyed with its secret; cloned for every token. (`Hmac`'s
    /// `Debug` shows none of its state, which is as good as the secret.)
    keys: HashMap<String, HmacSha256>,
}

/// The header field the check needs.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
}

/// The claims the check needs; LiveKit's grants are not read.
#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(default, borrow)]
    iss: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: NumericDate,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: NumericDate,
    #[serde(default)]
    aud: Option<IgnoredAny>,
    #[serde(default, borrow)]
    sha256: Option<Cow<'a, str>>,
}

/// `exp` or `nbf`: seconds since the epoch, a non-negative integer (LiveKit's claims
/// type takes nothing else).
#[derive(Default)]
enum NumericDate {
    #[default]
    Absent,
    At(u64),
    Malformed,
}

impl WebhookVerifier {
    pub fn new(keys: &[ApiKey]) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                let mac = HmacSha256::new_from_slice(k.secret.expose().as_bytes())
                    .expect("HMAC takes a key of any length");
                (k.key.clone(), mac)
            })
            .collect();
        WebhookVerifier { keys }
    }

    /// Checks the `Authorization` header value against the raw body.
    pub fn verify(&self, authorization: Option<&str>, body: &[u8]) -> Result<(), AuthError> {
        self.verify_token(authorization)?.check(body)
    }

    /// Checks the token alone, before the body is read: a forged request is refused
    /// without reading its body. The body hash it vouches for is checked by
    /// [`BodyHash::check`] once the body is in.
    pub(crate) fn verify_token(&self, authorization: Option<&str>) -> Result<BodyHash, AuthError> {
        let header = authorization.map(str::trim).filter(|h| !h.is_empty());
        let token = header.ok_or(AuthError::Missing)?;
        // LiveKit sends the bare token; other senders add a scheme.
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .unwrap_or(token)
            .trim();

        let (message, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (header, payload) = message.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let payload = decode_part(payload)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed)?;

        let issuer = claims.iss.as_deref().unwrap_or_default();
        let key = self
            .keys
            .get(issuer)
            .ok_or_else(|| AuthError::UnknownKey(issuer.to_owned()))?;

        let header = decode_part(header)?;
        let header: Header = serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        if header.alg != "HS256" {
            return Err(if OTHER_ALGORITHMS.contains(&&*header.alg) {
                AuthError::Other(format!("token signed with {}, not HS256", header.alg))
            } else {
                AuthError::Malformed
            });
        }
        let signature = decode_part(signature)?;
        let mut mac = key.clone();
        mac.update(message.as_bytes());
        // Constant time.
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;

        check_times(&claims, unix_now())?;
        if claims.aud.is_some() {
            // jsonwebtoken refuses an audience nobody asked for; LiveKit sets none.
            return Err(AuthError::Other("token names an audience".into()));
        }

        let claimed = claims
            .sha256
            .as_deref()
            .filter(|h| !h.is_empty())
            .ok_or(AuthError::MissingHash)?;
        let claimed = base64::engine::general_purpose::STANDARD
            .decode(claimed.trim())
            .map_err(|_| AuthError::HashMismatch)?;
        Ok(BodyHash(claimed))
    }
}

/// The SHA-256 a verified token claims for its webhook's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyHash(Vec<u8>);

impl BodyHash {
    /// Whether `body` is the body the token was signed for (compared in constant time).
    pub(crate) fn check(&self, body: &[u8]) -> Result<(), AuthError> {
        let actual = Sha256::digest(body);
        if !constant_time_eq(&self.0, &actual) {
            return Err(AuthError::HashMismatch);
        }
        Ok(())
    }
}

/// A JWT part: unpadded base64url, as jsonwebtoken requires.
fn decode_part(part: &str) -> Result<Vec<u8>, AuthError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)
}

/// jsonwebtoken's order: a missing or malformed `exp`, a malformed `nbf`, then expiry
/// and not-before, each with the leeway.
fn check_times(claims: &Claims, now: u64) -> Result<(), AuthError> {
    let exp = match claims.exp {
        NumericDate::At(exp) => exp,
        NumericDate::Absent => return Err(AuthError::Other("token has no exp claim".into())),
        NumericDate::Malformed => {
            return Err(AuthError::Other("token's exp is not a number".into()));
        }
    };
    if matches!(claims.nbf, NumericDate::Malformed) {
        return Err(AuthError::Other("token's nbf is not a number".into()));
    }
    if exp.saturating_add(LEEWAY_SECS) < now {
        return Err(AuthError::Expired);
    }
    if let NumericDate::At(nbf) = claims.nbf
        && nbf > now.saturating_add(LEEWAY_SECS)
    {
        return Err(AuthError::NotYetValid);
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NumericDate, D::Error> {
    struct NumericVisitor;

    impl<'de> Visitor<'de> for NumericVisitor {
        type Value = NumericDate;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("seconds since the epoch")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
            Ok(NumericDate::At(v))
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<NumericDate, E> {
            Ok(NumericDate::Malformed)
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<NumericDate, E> {
            // jsonwebtoken would round it, but LiveKit's claims hold an integer.
            Ok(NumericDate::Malformed)
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<NumericDate, E> {
            Ok(NumericDate::Malformed)
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<NumericDate, E> {
            Ok(NumericDate::Malformed)
        }

        fn visit_unit<E: de::Error>(self) -> Result<NumericDate, E> {
            Ok(NumericDate::Malformed)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NumericDate, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(NumericDate::Malformed)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NumericDate, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(NumericDate::Malformed)
        }
    }

    deserializer.deserialize_any(NumericVisitor)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use livekit_api::access_token::{AccessToken, TokenVerifier};
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

    #[test]
    fn the_token_is_judged_without_the_body_and_vouches_for_one_body() {
        let v = WebhookVerifier::new(&keys());
        let body = br#"{"event":"room_started"}"#;
        let forged = sign("devkey", "not-the-secret", body);
        assert_eq!(v.verify_token(Some(&forged)), Err(AuthError::BadSignature));
        assert_eq!(v.verify_token(None), Err(AuthError::Missing));
        let good = sign("devkey", "secret-one-that-is-long-enough", body);
        let hash = v.verify_token(Some(&good)).unwrap();
        assert_eq!(hash.check(body), Ok(()));
        assert_eq!(
            hash.check(br#"{"event":"room_finished"}"#),
            Err(AuthError::HashMismatch)
        );
    }

    /// A token with exactly this header and these claims, signed with HMAC-SHA256 (or
    /// SHA-384 when the header says so), as any JWT library would sign it.
    fn craft(header: &serde_json::Value, claims: &serde_json::Value, secret: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = if header["alg"] == "HS384" {
            let mut mac = Hmac::<sha2::Sha384>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        } else {
            let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        };
        format!("{message}.{}", b64.encode(signature))
    }

    fn body_hash(body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
    }

    /// What the check was before this module did it itself: the key picked by the
    /// issuer read without verifying, `livekit-api`'s `TokenVerifier`, the body hash.
    fn livekit_accepts(keys: &[ApiKey], token: &str, body: &[u8]) -> bool {
        let issuer = || {
            #[derive(serde::Deserialize)]
            struct Issuer {
                #[serde(default)]
                iss: String,
            }
            let payload = token.split('.').nth(1)?;
            let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()?;
            serde_json::from_slice::<Issuer>(&json).ok().map(|c| c.iss)
        };
        let Some(issuer) = issuer() else {
            return false;
        };
        keys.iter().filter(|k| k.key == issuer).any(|k| {
            TokenVerifier::with_api_key(&k.key, k.secret.expose())
                .verify(token)
                .is_ok_and(|claims| {
                    base64::engine::general_purpose::STANDARD
                        .decode(claims.sha256.trim())
                        .is_ok_and(|h| !claims.sha256.is_empty() && h == Sha256::digest(body)[..])
                })
        })
    }

    /// Tokens LiveKit's signer makes, and tokens with every claim and header field the
    /// check reads set to what is valid, borderline or wrong.
    fn tokens(body: &[u8]) -> Vec<String> {
        let now = unix_now() as i64;
        let hash = body_hash(body);
        let secret = "secret-one-that-is-long-enough";
        let hs256 = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let valid = serde_json::json!({"iss": "devkey", "exp": now + 300, "sha256": hash});
        // The valid claims with some set (to null, too) ...
        let claims = |extra: &serde_json::Value| {
            let mut c = valid.clone();
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        // ... or one left out.
        let without = |claim: &str| {
            let mut c = valid.clone();
            c.as_object_mut().unwrap().remove(claim);
            c
        };
        let mut tokens = vec![
            sign("devkey", secret, body),
            sign("oldkey", "secret-two-that-is-long-enough", body),
            sign("devkey", secret, b"another body"),
            sign("devkey", "not-the-secret", body),
            AccessToken::with_api_key("devkey", secret)
                .with_ttl(Duration::from_secs(300))
                .with_sha256(&hash)
                .with_name("a name with \"quotes\" and \\ escapes")
                .to_jwt()
                .unwrap(),
        ];
        let cases = [
            serde_json::json!({}),
            serde_json::json!({"exp": now - 30}),
            serde_json::json!({"exp": now - 90}),
            serde_json::json!({"exp": (now + 300) as f64 + 0.4}),
            serde_json::json!({"exp": (now - 90) as f64}),
            serde_json::json!({"exp": -5}),
            serde_json::json!({"exp": "soon"}),
            serde_json::json!({"exp": null}),
            serde_json::json!({"exp": {"at": 1}}),
            serde_json::json!({"nbf": now + 30}),
            serde_json::json!({"nbf": now + 90}),
            serde_json::json!({"nbf": "later"}),
            serde_json::json!({"nbf": now - 10, "exp": now + 10}),
            serde_json::json!({"aud": "someone"}),
            serde_json::json!({"aud": null}),
            serde_json::json!({"aud": ["a", "b"]}),
            serde_json::json!({"iss": "stranger"}),
            serde_json::json!({"iss": null}),
            serde_json::json!({"iss": ["devkey"]}),
            serde_json::json!({"sha256": null}),
            serde_json::json!({"sha256": ""}),
            serde_json::json!({"sha256": "not base64!"}),
            serde_json::json!({"sub": "agent", "video": {"roomJoin": true}}),
        ];
        tokens.extend(
            cases
                .iter()
                .map(claims)
                .chain(["iss", "exp", "sha256"].map(without))
                .map(|c| craft(&hs256, &c, secret)),
        );
        for header in [
            serde_json::json!({"alg": "HS256"}),
            serde_json::json!({"typ": "JWT", "alg": "HS256", "kid": "devkey"}),
            serde_json::json!({"alg": "HS384", "typ": "JWT"}),
            serde_json::json!({"alg": "none", "typ": "JWT"}),
            serde_json::json!({"alg": "hs256", "typ": "JWT"}),
            serde_json::json!({"typ": "JWT"}),
        ] {
            tokens.push(craft(&header, &valid, secret));
        }
        tokens
    }

    #[test]
    fn the_same_tokens_pass_as_with_livekits_verifier() {
        let keys = keys();
        let v = WebhookVerifier::new(&keys);
        let body = br#"{"event":"room_started","room":{"sid":"RM_1","name":"call-1"}}"#;
        let b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut checked = 0;
        let mut accepted = 0;
        for token in tokens(body) {
            // The token itself, then every way of changing one of its characters or
            // cutting it short: a flipped bit of the header, the claims or the signature.
            let mut variants = vec![token.clone(), format!("{token}="), format!("{token}.")];
            for (i, c) in token.char_indices() {
                let flipped = b64
                    .chars()
                    .find(|b| *b != c && (*b as u32 ^ c as u32) & 1 == 1);
                for replacement in [flipped.unwrap_or('A'), '.', '='] {
                    let mut t = token.clone();
                    t.replace_range(i..i + 1, &replacement.to_string());
                    variants.push(t);
                }
                variants.push(token[..i].to_string());
            }
            for t in variants {
                let ours = v.verify(Some(&t), body);
                assert_eq!(
                    ours.is_ok(),
                    livekit_accepts(&keys, &t, body),
                    "token {t}: ours says {ours:?}"
                );
                checked += 1;
                accepted += usize::from(ours.is_ok());
            }
        }
        // The cases cover both answers: valid tokens pass, changed ones do not.
        assert!(accepted >= 8, "{accepted} of {checked} accepted");
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn expiry_and_not_before_allow_a_minute_of_clock_skew() {
        let v = WebhookVerifier::new(&keys());
        let body = b"{}";
        let now = unix_now() as i64;
        let hs256 = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let token = |exp: i64, nbf: Option<i64>| {
            let mut c = serde_json::json!({"iss": "devkey", "exp": exp, "sha256": body_hash(body)});
            if let Some(nbf) = nbf {
                c["nbf"] = nbf.into();
            }
            craft(&hs256, &c, "secret-one-that-is-long-enough")
        };
        assert_eq!(v.verify(Some(&token(now - 30, None)), body), Ok(()));
        assert_eq!(
            v.verify(Some(&token(now - 90, None)), body),
            Err(AuthError::Expired)
        );
        assert_eq!(
            v.verify(Some(&token(now + 60, Some(now + 30))), body),
            Ok(())
        );
        assert_eq!(
            v.verify(Some(&token(now + 600, Some(now + 90))), body),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn only_hs256_tokens_with_an_expiry_and_no_audience_pass() {
        let v = WebhookVerifier::new(&keys());
        let body = b"{}";
        let now = unix_now() as i64;
        let secret = "secret-one-that-is-long-enough";
        let claims =
            serde_json::json!({"iss": "devkey", "exp": now + 60, "sha256": body_hash(body)});
        let reason = |header: serde_json::Value, claims: &serde_json::Value| {
            v.verify(Some(&craft(&header, claims, secret)), body)
                .map_err(|e| e.reason())
        };
        let hs256 = serde_json::json!({"alg": "HS256"});
        assert_eq!(reason(hs256.clone(), &claims), Ok(()));
        assert_eq!(
            reason(serde_json::json!({"alg": "HS384"}), &claims),
            Err("invalid_token")
        );
        assert_eq!(
            reason(serde_json::json!({"alg": "none"}), &claims),
            Err("malformed_token")
        );
        let mut no_exp = claims.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(reason(hs256.clone(), &no_exp), Err("invalid_token"));
        let mut bad_exp = claims.clone();
        bad_exp["exp"] = "tomorrow".into();
        assert_eq!(reason(hs256.clone(), &bad_exp), Err("invalid_token"));
        let mut audience = claims.clone();
        audience["aud"] = "someone".into();
        assert_eq!(reason(hs256, &audience), Err("invalid_token"));
    }

    #[test]
    fn the_debug_form_names_keys_not_secrets() {
        let shown = format!("{:?}", WebhookVerifier::new(&keys()));
        assert!(
            shown.contains("devkey") && shown.contains("oldkey"),
            "{shown}"
        );
        assert!(!shown.contains("secret-one"), "{shown}");
        // The keyed HMAC state is as good as the secret, in whatever form it would be
        // shown: under the same name, another secret may change nothing shown.
        let alone = |secret: &str| {
            let key = ApiKey {
                key: "devkey".into(),
                secret: Secret::new(secret),
            };
            format!("{:?}", WebhookVerifier::new(&[key]))
        };
        assert_eq!(
            alone("secret-one-that-is-long-enough"),
            alone("another-secret-that-is-long-enough")
        );
    }
}
