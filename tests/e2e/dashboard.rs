//! Proves the dashboard over HTTP against the real daemon: it is behind the operator
//! API's guard (a loopback `Host:` without a token; with one, a login form that sets an
//! HttpOnly, SameSite cookie), a form without the session's CSRF token or from another
//! origin changes nothing, a room named with markup shows as text wherever it appears,
//! calls are found by room and phone number, a retry from a call's page makes a new
//! attempt that the page then shows, and a replay says how many it will send before it
//! sends them, and an endpoint a 410 disabled says so, since when, and is enabled from
//! the overview.

use crate::support;

use reqwest::header;

use support::config::{API_KEY, API_SECRET};
use support::dashboard::{
    PHONE, Pages, XSS_ROOM, attempt_rows, attempts, csrf, failed_call, with_form,
};
use support::lk;
use support::operator::with_api_token;
use support::poll::{self, DAEMON_REACTION};
use support::{Daemon, Receiver, TestConfig};

const TOKEN: &str = "dash-t0ken-0123456789abcdef0123456789";

/// The room name as the pages must show it: escaped, as text.
const XSS_ESCAPED: &str = "&#60;img src=x onerror=alert(1)&#62;";

#[tokio::test]
async fn with_a_token_pages_want_a_login_that_sets_an_httponly_samesite_cookie() {
    let daemon = Daemon::start(&with_api_token(
        &TestConfig::new("http://127.0.0.1:9/h").toml(),
        TOKEN,
    ))
    .await;
    let mut pages = Pages::of(&daemon);

    let answer = pages.get("/calls?room=x").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(
        answer.location.as_deref(),
        Some("/login?next=%2Fcalls%3Froom%3Dx")
    );
    assert!(pages.cookie.is_none(), "no session before a login");
    let login = pages.get("/login?next=%2Fcalls").await;
    assert_eq!(login.status, 200);
    assert!(
        login.body.contains(r#"<label for="token">"#),
        "{}",
        login.body
    );

    let wrong = pages
        .post("/login", &[("token", "not-the-token"), ("next", "/calls")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(pages.cookie.is_none());
    let mut other_origin = Pages::of(&daemon);
    let refused = other_origin
        .request(with_form(
            other_origin
                .http()
                .post(other_origin.url("/login"))
                .header(header::ORIGIN, "http://evil.example"),
            &[("token", TOKEN)],
        ))
        .await;
    assert_eq!(
        refused.status, 403,
        "a login posted from another site's page"
    );

    let ok = pages
        .post(
            "/login",
            &[("token", TOKEN), ("next", "https://evil.example/")],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(
        ok.location.as_deref(),
        Some("/"),
        "never sent to another site"
    );
    let cookie = ok.set_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    let overview = pages.get("/").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body.contains("<h1>Overview</h1>"));

    // The API itself still wants the bearer token, not the cookie.
    let api = pages.get("/api/calls").await;
    assert_eq!(api.status, 401);

    let logout = pages
        .post("/logout", &[("csrf", &csrf(&overview.body))])
        .await;
    assert_eq!(logout.status, 303);
    assert!(logout.set_cookie.unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn without_a_token_only_a_loopback_host_is_answered() {
    let daemon = Daemon::start(&TestConfig::new("http://127.0.0.1:9/h").toml()).await;
    let mut pages = Pages::of(&daemon);
    let rebound = pages
        .request(
            pages
                .http()
                .get(pages.url("/"))
                .header(header::HOST, "evil.example"),
        )
        .await;
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    let page = pages.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.set_cookie.is_some_and(|c| c.contains("HttpOnly")));
    let css = pages.get("/assets/dashboard.css").await;
    assert_eq!(css.status, 200);
    assert!(css.body.contains(":root"));
}

#[tokio::test]
async fn a_call_is_found_shown_as_text_and_retried_with_the_sessions_csrf_token_only() {
    let scene = failed_call(None).await;
    let daemon = &scene.daemon;
    let mut pages = Pages::of(daemon);

    for search in [
        "/calls?room=%3Cimg",
        &format!("/calls?phone={}", PHONE.replace('+', "%2B")),
    ] {
        let found = pages.get(search).await;
        assert_eq!(found.status, 200, "{}", found.body);
        assert!(
            found
                .body
                .contains(&format!(r#"href="/calls/{}""#, scene.call_id)),
            "{search}: {}",
            found.body
        );
        assert!(found.body.contains(XSS_ESCAPED), "{}", found.body);
        assert!(
            !found.body.contains(XSS_ROOM),
            "the room name went in as markup"
        );
    }
    let nothing = pages.get("/calls?phone=%2B4930").await;
    assert!(nothing.body.contains("No calls match."), "{}", nothing.body);

    let path = format!("/calls/{}", scene.call_id);
    let page = pages.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains(XSS_ROOM));
    assert!(page.body.contains(XSS_ESCAPED));
    assert!(page.body.contains(PHONE));
    for event in [
        "room_started",
        "participant_joined",
        "room_finished",
        "call_started",
        "call_ended",
    ] {
        assert!(
            page.body.contains(event),
            "{event} missing from the timeline"
        );
    }
    let before = attempt_rows(&page.body);
    assert_eq!(before, 4, "two attempts of each delivery:\n{}", page.body);
    assert_eq!(attempts(daemon, scene.call_id).await, before);
    let token = csrf(&page.body);
    let retry = format!("/deliveries/{}/retry", scene.deliveries[0]);

    // Refused: no token, another session's token, another site's page.
    let missing = pages.post(&retry, &[("back", &path)]).await;
    assert!(matches!(missing.status, 403 | 422), "{}", missing.status);
    let mut stranger = Pages::of(daemon);
    let theirs = csrf(&stranger.get(&path).await.body);
    assert_ne!(theirs, token);
    let forged = pages
        .post(&retry, &[("csrf", &theirs), ("back", &path)])
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let cross_site = pages
        .request(with_form(
            pages
                .http()
                .post(pages.url(&retry))
                .header(header::ORIGIN, "http://evil.example"),
            &[("csrf", token.as_str()), ("back", path.as_str())],
        ))
        .await;
    assert_eq!(cross_site.status, 403);
    assert_eq!(
        attempts(daemon, scene.call_id).await,
        before,
        "a refused retry changed nothing"
    );

    let done = pages
        .post(&retry, &[("csrf", &token), ("back", &path)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = done.location.expect("back to the call");
    assert_eq!(back, format!("{path}?retried={}", scene.deliveries[0]));
    poll::eventually(
        DAEMON_REACTION,
        "the retry's attempt on the call's page",
        async || attempt_rows(&pages.get(&back).await.body) == before + 1,
    )
    .await;
    let page = pages.get(&back).await.body;
    assert!(
        page.contains("HTTP 200"),
        "the retry was delivered:\n{page}"
    );
    assert_eq!(scene.endpoint.count(), before + 1);
}

#[tokio::test]
async fn a_replay_says_how_many_it_will_send_then_sends_them() {
    let scene = failed_call(Some(TOKEN)).await;
    let mut pages = Pages::of(&scene.daemon);
    let login = pages
        .post(
            "/login",
            &[("token", TOKEN), ("next", "/deliveries?status=failed")],
        )
        .await;
    assert_eq!(login.status, 303);
    let failed = pages.get("/deliveries?status=failed").await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.body.matches(r#"<tr class="delivery">"#).count(), 2);

    let overview = pages.get("/").await.body;
    assert!(
        overview.contains(r#"<dd id="deliveries-failed">2</dd>"#),
        "{overview}"
    );
    assert!(
        overview.contains(r#"/deliveries?status=failed&amp;workflow=customer-support">2</a>"#),
        "{overview}"
    );
    assert!(
        overview.contains(r#"<span class="state healthy">healthy</span>"#),
        "{overview}"
    );

    let confirm = pages
        .get("/deliveries/replay?workflow=customer-support&since=2000-01-01T00%3A00&until=2100-01-01T00%3A00")
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm
            .body
            .contains(r#"<p id="replay-count">2 failed deliveries"#),
        "{}",
        confirm.body
    );
    let nothing_yet = scene.endpoint.count();
    let sent = pages
        .post(
            "/deliveries/replay",
            &[
                ("csrf", &csrf(&confirm.body)),
                ("workflow", "customer-support"),
                ("since", "2000-01-01T00:00"),
                ("until", "2100-01-01T00:00"),
            ],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    assert_eq!(
        sent.location.as_deref(),
        Some("/deliveries?workflow=customer-support&replayed=2")
    );
    poll::eventually(
        DAEMON_REACTION,
        "both replayed deliveries delivered",
        async || {
            let page = pages.get("/deliveries?status=delivered").await.body;
            page.matches(r#"<tr class="delivery">"#).count() == 2
        },
    )
    .await;
    assert_eq!(scene.endpoint.count(), nothing_yet + 2);
    let notice = pages
        .get("/deliveries?workflow=customer-support&replayed=2")
        .await
        .body;
    assert!(notice.contains("2 failed deliveries are sent again now."));
}

#[tokio::test]
async fn an_endpoint_disabled_by_a_410_says_since_when_and_is_enabled_from_the_overview() {
    let mut endpoint = Receiver::start_with(vec![410]).await;
    let url = endpoint.url("/gone");
    let mut config = TestConfig::new(&url);
    config.sales_webhook_url = Some(endpoint.url("/sales"));
    let daemon = Daemon::start(&config.toml()).await;
    let (status, text) = daemon
        .post_signed(&lk::agent_joined(&lk::mapped_room()), API_KEY, API_SECRET)
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(endpoint.next(DAEMON_REACTION).await.path, "/gone");

    let mut pages = Pages::of(&daemon);
    let overview = poll::wait_for(DAEMON_REACTION, "the endpoint shown disabled", async || {
        let page = pages.get("/").await.body;
        page.contains(r#"<span class="state disabled">disabled by 410</span> since "#)
            .then_some(page)
    })
    .await;
    assert!(
        overview.contains(&format!(r#"<td class="url">{url}</td>"#)),
        "{overview}"
    );
    assert!(
        overview.contains(r#"<dd id="deliveries-pending">1</dd>"#),
        "held, not failed"
    );

    let enabled = pages
        .post(
            "/endpoints/enable",
            &[("csrf", &csrf(&overview)), ("url", &url)],
        )
        .await;
    assert_eq!(enabled.status, 303, "{}", enabled.body);
    let held = endpoint.next(DAEMON_REACTION).await;
    assert_eq!(held.path, "/gone", "the held event is sent once enabled");
    poll::eventually(DAEMON_REACTION, "the endpoint healthy again", async || {
        let page = pages.get("/").await.body;
        !page.contains("disabled by 410") && page.contains(r#"<dd id="deliveries-pending">0</dd>"#)
    })
    .await;
}
