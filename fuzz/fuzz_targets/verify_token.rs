//! The webhook token check on any `Authorization` header and body: it never panics,
//! and it passes a request only if the token really is HS256 over its claims with our
//! secret, issued by our key, and its `sha256` claim is the body's hash.
//!
//! The first input byte picks how the rest is used. Even: `header NUL body`, the header
//! as it came. Odd: `claims NUL body`, where the claims text is signed with our secret
//! (after `NOW` becomes the current unix time and `HASH` the body's hash), so the
//! fuzzer reaches the checks behind the signature.

#![no_main]

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use voicekit_bridge::{
    config::{ApiKey, Secret},
    livekit::auth::WebhookVerifier,
};

const KEY: &str = "devkey";
const SECRET: &str = "fuzzing-secret-that-is-long-enough-to-pass";

fn hmac(message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn sign(claims: &str) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing_input = format!("{head}.{}", URL_SAFE_NO_PAD.encode(claims));
    let signature = URL_SAFE_NO_PAD.encode(hmac(signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// What must hold of a token the verifier passed.
fn assert_genuine(header: &str, body: &[u8]) {
    let token = header.trim().trim_start_matches("Bearer ").trim();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "passed a token of {} parts", parts.len());
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2].trim_end_matches('='))
        .expect("passed a signature that is no base64");
    assert_eq!(
        signature,
        hmac(format!("{}.{}", parts[0], parts[1]).as_bytes()),
        "passed a token not signed with our secret"
    );
    // Read as the verifier and jsonwebtoken read them: typed, unknown fields skipped
    // unparsed (a skipped number may be out of any float's range).
    fn decode<T: serde::de::DeserializeOwned>(part: &str) -> T {
        let bytes = URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .expect("passed a part that is no base64");
        serde_json::from_slice(&bytes).expect("passed a part that is no JSON object")
    }
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
    }
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: Option<String>,
        sha256: Option<String>,
    }
    assert_eq!(decode::<Header>(parts[0]).alg, "HS256");
    let claims: Claims = decode(parts[1]);
    assert_eq!(claims.iss.as_deref(), Some(KEY));
    let hash = claims.sha256.expect("passed without a sha256 claim");
    assert_eq!(
        STANDARD.decode(hash.trim()).ok().as_deref(),
        Some(&Sha256::digest(body)[..]),
        "passed a body whose hash is not the claim"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (head, body) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let verifier = WebhookVerifier::new(&[ApiKey {
        key: KEY.into(),
        secret: Secret::new(SECRET),
    }]);
    let header = if mode % 2 == 0 {
        String::from_utf8_lossy(head).into_owned()
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let claims = String::from_utf8_lossy(head)
            .replace("NOW", &now.to_string())
            .replace("HASH", &STANDARD.encode(Sha256::digest(body)));
        sign(&claims)
    };
    if verifier.verify(Some(&header), body).is_ok() {
        assert_genuine(&header, body);
    }
});
