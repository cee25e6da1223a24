//! The dashboard as the tests reach it: a browser-like client over plain HTTP that
//! keeps the session cookie and reads the CSRF token from pages, and the scene both
//! the HTTP and the browser tests start from: one call whose room name is markup,
//! whose caller has a phone number, and whose two deliveries failed.

use reqwest::{header, redirect};
use serde_json::{Value, json};

use super::config::{API_KEY, API_SECRET, WORKFLOW_SLUG};
use super::lk::{self, Participant, Room};
use super::operator::{api_get, api_url, with_api_token};
use super::poll::{self, DAEMON_REACTION};
use super::{Daemon, Receiver, TestConfig};

/// A room name that would run a script if a page put it in as markup.
pub const XSS_ROOM: &str = "<img src=x onerror=alert(1)>";
/// The SIP caller's number.
pub const PHONE: &str = "+15550199";
/// Each event gets one retry, soon, and is then failed.
const SCHEDULE: &str = "[0.1]";
/// Requests the endpoint fails: both events' two attempts. It answers 200 after.
const FAILING: usize = 4;

/// One answer: status, the `Location` and `Set-Cookie` headers, and the body.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
    pub body: String,
}

/// A client of the dashboard that keeps its session cookie, as a browser does, and
/// follows no redirect by itself.
pub struct Pages {
    base: String,
    http: reqwest::Client,
    pub cookie: Option<String>,
}

impl Pages {
    pub fn of(daemon: &Daemon) -> Pages {
        Pages {
            base: api_url(daemon, ""),
            http: reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            cookie: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let request = match &self.cookie {
            Some(cookie) => request.header(header::COOKIE, cookie),
            None => request,
        };
        let response = request.send().await.expect("a dashboard request");
        let text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, set_cookie) = (text(header::LOCATION), text(header::SET_COOKIE));
        if let Some(set) = &set_cookie {
            let pair = set.split(';').next().unwrap_or_default();
            if !pair.ends_with('=') {
                self.cookie = Some(pair.to_owned());
            }
        }
        Answer {
            status: response.status().as_u16(),
            location,
            set_cookie,
            body: response.text().await.expect("a page"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let request = self.http.get(self.url(path));
        self.send(request).await
    }

    /// POSTs a form as a browser on the dashboard's own page does (with its `Origin`).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self
            .http
            .post(self.url(path))
            .header(header::ORIGIN, self.base.trim_end_matches('/'));
        let request = with_form(request, form);
        self.send(request).await
    }

    /// A request of one's own making, with the session cookie.
    pub async fn request(&mut self, request: reqwest::RequestBuilder) -> Answer {
        self.send(request).await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// `request` with `form` as its body, as a browser sends a form.
pub fn with_form(
    request: reqwest::RequestBuilder,
    form: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    request
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
}

/// The value of the first `name="csrf"` field of a page.
pub fn csrf(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no CSRF field in:\n{page}"));
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').expect("a closed attribute")].to_owned()
}

/// How many attempt rows a call's page shows.
pub fn attempt_rows(page: &str) -> usize {
    page.matches(r#"<tr class="attempt "#).count()
}

/// A daemon whose endpoint failed both deliveries of one call.
pub struct Scene {
    pub endpoint: Receiver,
    pub daemon: Daemon,
    pub call_id: i64,
    /// The failed deliveries' ids, oldest first.
    pub deliveries: Vec<i64>,
}

/// Starts the scene, with the operator API's token when one is given.
pub async fn failed_call(token: Option<&str>) -> Scene {
    let endpoint = Receiver::start_with(vec![500; FAILING]).await;
    let mut config = TestConfig::new(&endpoint.url("/hooks/voicekit"));
    config.retry_schedule_secs = SCHEDULE;
    config.delivery_extra = "breaker_failures = 100".into();
    let mut toml = config.toml();
    if let Some(token) = token {
        toml = with_api_token(&toml, token);
    }
    let daemon = Daemon::start(&toml).await;
    let metadata = json!({ "workflow_slug": WORKFLOW_SLUG }).to_string();
    let room = Room::new("RM_dashboardXss1", XSS_ROOM, 1_761_234_567_123).with_metadata(&metadata);
    let caller = Participant::sip("PA_caller", PHONE, "+15550100", 1_761_234_568_000);
    let agent = Participant::agent("PA_agent", "agent-1", 1_761_234_569_000);
    for body in [
        lk::room_started(&room, 1_761_234_567),
        lk::participant_joined(&room, &caller, 1_761_234_568),
        lk::participant_joined(&room, &agent, 1_761_234_569),
        lk::room_finished(&room, 1_761_234_740),
    ] {
        let (status, text) = daemon.post_signed(&body, API_KEY, API_SECRET).await;
        assert_eq!(status, 200, "webhook answered {status}: {text}");
    }
    let bearer = token.map(|t| format!("Bearer {t}"));
    let failed = poll::wait_for(DAEMON_REACTION, "both deliveries failed", async || {
        let mut request = daemon
            .http()
            .get(api_url(&daemon, "/api/deliveries?status=failed"));
        if let Some(bearer) = &bearer {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        let body: Value = request.send().await.ok()?.json().await.ok()?;
        let list = body["deliveries"].as_array()?.clone();
        (list.len() == 2).then_some(list)
    })
    .await;
    let mut deliveries: Vec<i64> = failed.iter().filter_map(|d| d["id"].as_i64()).collect();
    deliveries.sort();
    let call_id = failed[0]["call_id"].as_i64().expect("a call id");
    Scene {
        endpoint,
        daemon,
        call_id,
        deliveries,
    }
}

/// The attempts the operator API lists for a call (no token).
pub async fn attempts(daemon: &Daemon, call_id: i64) -> usize {
    let (status, body) = api_get(daemon, &format!("/api/calls/{call_id}")).await;
    assert_eq!(status, 200, "{body}");
    body["attempts"].as_array().map_or(0, Vec::len)
}
