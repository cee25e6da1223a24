//! Proves the dashboard in a real browser (headless chromium over WebDriver): an
//! operator logs in with the token, opens the overview, finds a call by its room name,
//! opens it, sees its attempts, presses retry and sees the new attempt appear without
//! reloading, and reads the room name `<img src=x onerror=alert(1)>` as text. Each page
//! is saved as a screenshot (`support::browser::screenshots_dir`).

use crate::support;

use fantoccini::Locator;

use support::browser::Browser;
use support::dashboard::{XSS_ROOM, failed_call};
use support::operator::api_url;
use support::poll::{self, DAEMON_REACTION};

const TOKEN: &str = "browser-t0ken-0123456789abcdef0123456789";
/// A laptop's window, and a phone's.
const LAPTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

#[tokio::test]
async fn an_operator_finds_a_call_retries_a_delivery_and_sees_the_new_attempt() {
    let scene = failed_call(Some(TOKEN)).await;
    let base = api_url(&scene.daemon, "");
    let browser = Browser::start(LAPTOP.0, LAPTOP.1).await;
    let c = &browser.client;

    c.goto(&format!("{base}/")).await.unwrap();
    let field = c.wait().for_element(Locator::Id("token")).await.unwrap();
    browser.screenshot("login").await;
    field.send_keys(TOKEN).await.unwrap();
    c.find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, "Overview");
    assert_eq!(browser.text("#deliveries-failed").await, "2");
    browser.screenshot("overview").await;

    c.find(Locator::LinkText("Calls"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let room = c
        .wait()
        .for_element(Locator::Css("input[name='room']"))
        .await
        .unwrap();
    room.send_keys("<img").await.unwrap();
    room.send_keys("\u{E007}").await.unwrap(); // Enter submits the search.
    let link = format!("a[href='/calls/{}']", scene.call_id);
    poll::eventually(
        DAEMON_REACTION,
        "the call in the search's results",
        async || {
            c.current_url()
                .await
                .is_ok_and(|u| u.query().is_some_and(|q| q.contains("room=")))
                && browser.count(&link).await == 1
        },
    )
    .await;
    assert_eq!(
        browser.text("td.room").await,
        XSS_ROOM,
        "the room name reads as text"
    );
    browser.screenshot("calls").await;

    c.find(Locator::Css(&link))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("#room-name").await, XSS_ROOM);
    assert_eq!(
        browser.count("#room-name img, td img").await,
        0,
        "no image element was made"
    );
    assert_eq!(
        browser.count("tr.attempt").await,
        4,
        "two attempts of each delivery"
    );
    browser.screenshot("call").await;

    let before = scene.endpoint.count();
    c.find(Locator::Css("button.retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    poll::eventually(
        DAEMON_REACTION,
        "the retry's attempt on the page",
        async || browser.count("tr.attempt").await == 5,
    )
    .await;
    assert_eq!(
        browser.count("tr.attempt.ok").await,
        1,
        "the retry was delivered"
    );
    assert_eq!(scene.endpoint.count(), before + 1);
    browser.screenshot("call-retried").await;

    c.find(Locator::LinkText("Deliveries"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, "Deliveries");
    browser.screenshot("deliveries").await;
    c.find(Locator::Css("form[action='/deliveries/replay'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let count = browser.text("#replay-count").await;
    assert!(count.starts_with("1 failed deliveries"), "{count}");
    browser.screenshot("replay").await;
    browser.close().await;

    // The same call's page at a phone's width, with the session of a fresh login.
    let phone = Browser::start(PHONE.0, PHONE.1).await;
    let c = &phone.client;
    c.goto(&format!("{base}/login?next=/calls/{}", scene.call_id))
        .await
        .unwrap();
    let field = c.wait().for_element(Locator::Id("token")).await.unwrap();
    field.send_keys(TOKEN).await.unwrap();
    field.send_keys("\u{E007}").await.unwrap();
    assert_eq!(phone.text("#room-name").await, XSS_ROOM);
    phone.screenshot("call-phone").await;
    phone.close().await;
}
