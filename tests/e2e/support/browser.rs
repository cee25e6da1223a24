//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven over
//! WebDriver by its `chromedriver` (package `chromium-driver`), each test with a fresh
//! profile and a driver of its own on a free loopback port. `scripts/test.sh` installs
//! both when they are missing; a machine without them fails these tests, saying so.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

use super::config::free_port;
use super::poll::{self, DAEMON_REACTION};

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where the tests leave a screenshot of each page (`docs/dashboard/` shows copies).
pub fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots")
}

/// A headless chromium under its own chromedriver; both end with it.
pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a chromium session `width` pixels wide.
    pub async fn start(width: u32, height: u32) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium at {CHROMIUM}: `apt-get install chromium \
             chromium-driver` (scripts/test.sh installs them when missing)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the browser tests need {CHROMEDRIVER} (Debian package chromium-driver; \
                     scripts/test.sh installs it when missing): {e}"
                )
            });
        let profile = tempfile::tempdir().expect("a profile directory");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = poll::wait_for(
            DAEMON_REACTION,
            "chromedriver and a chromium session",
            async || {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&webdriver)
                    .await
                    .ok()
            },
        )
        .await;
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Saves what the page looks like now as `<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("the screenshots directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("a screenshot saved");
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    /// The text of the first element matching `css`, once there is one. A page whose
    /// content changed is refreshed in place, which may replace the element between
    /// finding and reading it: then it is found again.
    pub async fn text(&self, css: &str) -> String {
        let mut tries = 3;
        loop {
            let found = self
                .client
                .wait()
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
            match found.text().await {
                Ok(text) => return text,
                Err(e) if tries == 0 => panic!("cannot read {css}: {e}"),
                Err(_) => tries -= 1,
            }
        }
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
