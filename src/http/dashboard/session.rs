//! Who may use the dashboard, and proof that a form was sent from it.
//!
//! A browser cannot send the operator API's bearer token by itself, so the token is
//! typed once into a login form and exchanged for a session cookie: `HttpOnly` (no
//! script reads it), `SameSite=Strict` (no other site's page makes the browser send
//! it). The cookie is signed with a key this process draws at start, so nothing is
//! stored and a restart ends every session. Without a token (a loopback listener) the
//! cookie is handed out on the first visit, for the one thing it is then needed for:
//! every form carries a CSRF token derived from the session, which another site
//! cannot read and so cannot forge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The session cookie's name.
pub const COOKIE: &str = "vkb_session";
/// How long a session lasts after login.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The key that signs sessions and CSRF tokens.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key of its own for this process.
    pub fn random() -> SessionKey {
        SessionKey(rand::random())
    }

    fn mac(&self, purpose: &str, id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(id.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A new session, issued now.
    pub fn issue(&self) -> Session {
        let issued = now_secs();
        let nonce = hex(&rand::random::<[u8; 16]>());
        let id = format!("{issued}.{nonce}");
        let cookie = format!("{id}.{}", self.mac("session", &id));
        Session {
            csrf: self.mac("csrf", &id),
            cookie,
            new: true,
        }
    }

    /// The session a request's cookie names, if it is one of ours and not expired.
    pub fn session_of(&self, headers: &HeaderMap) -> Option<Session> {
        let value = cookie(headers, COOKIE)?;
        let (id, mac) = value.rsplit_once('.')?;
        if !super::super::operator::same_secret(mac, &self.mac("session", id)) {
            return None;
        }
        let issued: u64 = id.split('.').next()?.parse().ok()?;
        if now_secs().saturating_sub(issued) > LIFETIME.as_secs() {
            return None;
        }
        Some(Session {
            csrf: self.mac("csrf", id),
            cookie: value.to_owned(),
            new: false,
        })
    }
}

/// One browser's session: its cookie and the CSRF token its forms carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    cookie: String,
    /// Issued by this request: the answer sets the cookie.
    pub new: bool,
}

impl Session {
    /// Whether a form's `csrf` field is this session's.
    pub fn accepts(&self, csrf: &str) -> bool {
        super::super::operator::same_secret(csrf, &self.csrf)
    }

    /// The `Set-Cookie` value that gives the browser this session.
    pub fn set_cookie(&self) -> HeaderValue {
        let value = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            self.cookie,
            LIFETIME.as_secs()
        );
        HeaderValue::from_str(&value).expect("a cookie of hex digits and dots")
    }
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("vkb_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of cookie `name` in a request's `Cookie:` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_session_is_known_by_its_signed_cookie_and_only_by_it() {
        let key = SessionKey::random();
        let session = key.issue();
        let set = session.set_cookie().to_str().unwrap().to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let pair = set.split(';').next().unwrap();
        let found = key
            .session_of(&with_cookie(&format!("theme=dark; {pair}")))
            .expect("the issued cookie");
        assert_eq!(found.csrf, session.csrf);
        assert!(found.accepts(&session.csrf));
        assert!(!found.accepts(&SessionKey::random().issue().csrf));

        let forged = pair.replace(&pair[pair.len() - 4..], "0000");
        assert!(key.session_of(&with_cookie(&forged)).is_none());
        assert!(
            SessionKey::random()
                .session_of(&with_cookie(pair))
                .is_none()
        );
        let old = key.issue().cookie.replacen(
            &now_secs().to_string(),
            &(now_secs() - LIFETIME.as_secs() - 1).to_string(),
            1,
        );
        assert!(
            key.session_of(&with_cookie(&format!("{COOKIE}={old}")))
                .is_none(),
            "a changed issue time breaks the signature"
        );
    }
}
