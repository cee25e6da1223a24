//! The real `voicekit-bridge` binary, run as a child process.
//!
//! End-to-end tests go through the same door as production: the built binary,
//! `run --config <file>`, a loopback port it picks itself. [`Daemon`] writes the
//! config, waits for the one ready line on stdout
//! (`voicekit-bridge listening on <ip:port>`), keeps draining both pipes so the
//! child never blocks on a full one, and keeps stderr for assertions and for the
//! message when something fails. Dropping it kills the process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{API_KEY, API_SECRET};
use super::poll;
use super::signer;

/// The line the daemon prints on stdout once it accepts connections.
const READY_PREFIX: &str = "voicekit-bridge listening on ";
/// How long the daemon may take to print it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The daemon binary cargo built for this test run.
const PROGRAM: &str = env!("CARGO_BIN_EXE_voicekit-bridge");
/// Name of the config file written into the daemon's directory.
const CONFIG_FILE: &str = "voicekit-bridge.toml";
/// In the config text, replaced by the daemon's directory (e.g. for the SQLite file).
pub const DIR_PLACEHOLDER: &str = "{dir}";

type Lines = Arc<Mutex<Vec<String>>>;

/// What to run; see [`Daemon::launch`].
pub struct Launch {
    config: String,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    program: PathBuf,
}

impl Launch {
    /// Runs in `dir` instead of a fresh temporary directory, so a second daemon can
    /// reuse the first one's state (the SQLite file).
    pub fn in_dir(mut self, dir: &Path) -> Launch {
        self.dir = Some(dir.to_owned());
        self
    }

    /// Runs `program` instead of the built binary: a wrapper that starts it under other
    /// process limits (e.g. `prlimit`), passing the arguments on.
    pub fn program(mut self, program: &Path) -> Launch {
        self.program = program.to_owned();
        self
    }

    /// Sets an extra environment variable (after the defaults, so it can override them).
    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the process and waits until it is ready; panics (with its stderr) if it
    /// exits first or is not ready within 60 s.
    pub async fn start(self) -> Daemon {
        let (tempdir, dir) = match self.dir {
            Some(dir) => (None, dir),
            None => {
                let tempdir = tempfile::tempdir().expect("daemon tempdir");
                let dir = tempdir.path().to_owned();
                (Some(tempdir), dir)
            }
        };
        let config_path = dir.join(CONFIG_FILE);
        let config = self.config.replace(DIR_PLACEHOLDER, &dir.to_string_lossy());
        std::fs::write(&config_path, config).expect("write daemon config");

        let mut command = Command::new(&self.program);
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(&dir)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));

        let stderr: Lines = Lines::default();
        let stderr_task = drain(
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&stderr),
        );
        let stdout: Lines = Lines::default();
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();

        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    let ready = line.trim().strip_prefix(READY_PREFIX).map(|addr| {
                        addr.parse::<SocketAddr>()
                            .unwrap_or_else(|e| panic!("bad address in ready line {line:?}: {e}"))
                    });
                    stdout.lock().expect("stdout lines").push(line);
                    if let Some(addr) = ready {
                        break addr;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = child.wait().await.expect("wait for daemon");
                    // The pipe closes when the process is gone; bounded in case a
                    // grandchild still holds it.
                    let _ = tokio::time::timeout(Duration::from_secs(5), stderr_task).await;
                    panic!(
                        "voicekit-bridge exited with {status} before it was ready\n\
                         --- stdout ---\n{}\n--- stderr ---\n{}",
                        join(&stdout),
                        join(&stderr)
                    );
                }
                Err(_) => {
                    let _ = child.kill().await;
                    panic!(
                        "voicekit-bridge was not ready within {READY_TIMEOUT:?}\n\
                         --- stdout ---\n{}\n--- stderr ---\n{}",
                        join(&stdout),
                        join(&stderr)
                    );
                }
            }
        };
        let stdout_task = tokio::spawn(drain_lines(lines, Arc::clone(&stdout)));

        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        Daemon {
            child,
            addr,
            dir,
            config_path,
            _tempdir: tempdir,
            stdout,
            stderr,
            _drains: [stdout_task, stderr_task],
            http,
        }
    }
}

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    config_path: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    stdout: Lines,
    stderr: Lines,
    _drains: [JoinHandle<()>; 2],
    http: reqwest::Client,
}

impl Daemon {
    /// Runs the built binary with `config_toml` in a fresh temporary directory.
    /// `{dir}` in the text is replaced by that directory.
    pub async fn start(config_toml: &str) -> Daemon {
        Daemon::launch(config_toml).start().await
    }

    /// Like [`Daemon::start`], in `dir` (which the caller owns and may reuse).
    pub async fn start_in(dir: &Path, config_toml: &str) -> Daemon {
        Daemon::launch(config_toml).in_dir(dir).start().await
    }

    /// A launch to adjust (directory, environment) before [`Launch::start`].
    pub fn launch(config_toml: &str) -> Launch {
        Launch {
            config: config_toml.to_owned(),
            dir: None,
            env: Vec::new(),
            program: PathBuf::from(PROGRAM),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// E.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `path` on the daemon, e.g. `url("/healthz")`.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("{}{slash}{path}", self.base_url())
    }

    pub fn webhook_url(&self) -> String {
        self.url("/livekit/webhook")
    }

    /// The process id, e.g. to send it a signal with `kill(1)`; panics once it has exited.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("voicekit-bridge is still running")
    }

    /// The directory holding the config (and whatever the config puts under `{dir}`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// An HTTP client for calling the daemon (no proxy, 30 s timeout).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs `body` as LiveKit does: `Content-Type: application/webhook+json` and the
    /// token in `Authorization` without `Bearer `. Returns status and response body.
    pub async fn post_webhook(&self, body: &str, auth: Option<&str>) -> (u16, String) {
        let mut request = self
            .http
            .post(self.webhook_url())
            .header(CONTENT_TYPE, "application/webhook+json")
            .body(body.to_owned());
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        self.answer(request).await
    }

    /// Signs `body` with `api_key`/`api_secret` as LiveKit would and posts it.
    pub async fn post_signed(&self, body: &str, api_key: &str, api_secret: &str) -> (u16, String) {
        let token = signer::sign(api_key, api_secret, body.as_bytes());
        self.post_webhook(body, Some(&token)).await
    }

    /// What posts signed webhooks to this daemon from other tasks.
    pub fn poster(&self) -> WebhookPoster {
        WebhookPoster {
            http: self.http.clone(),
            url: self.webhook_url(),
        }
    }

    /// GETs `path`; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.answer(self.http.get(self.url(path))).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "request to voicekit-bridge failed: {e}\n--- stderr ---\n{}",
                self.stderr_text()
            )
        });
        let status = response.status().as_u16();
        (status, response.text().await.expect("response body"))
    }

    /// Everything the daemon wrote to stderr so far (its logs).
    pub fn stderr_text(&self) -> String {
        join(&self.stderr)
    }

    /// Everything the daemon wrote to stdout so far, ready line included.
    pub fn stdout_text(&self) -> String {
        join(&self.stdout)
    }

    /// Waits until stderr contains `needle`; panics (showing stderr) after `timeout`.
    pub async fn wait_for_stderr(&self, needle: &str, timeout: Duration) {
        let found = poll::within(timeout, async || {
            self.stderr_text().contains(needle).then_some(())
        });
        if found.await.is_none() {
            panic!(
                "timed out after {timeout:?} waiting for {needle:?} on voicekit-bridge's stderr\n\
                 --- stderr ---\n{}",
                self.stderr_text()
            );
        }
    }

    /// SIGKILL, then reap. The port and the state directory stay as they are.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits up to `timeout` for the process to exit by itself; panics (and kills) if it
    /// is still running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for daemon"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "voicekit-bridge still running {timeout:?} later\n--- stderr ---\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// SIGTERM (graceful shutdown), then waits up to `timeout` for the exit status;
    /// panics (and kills) if the process is still running then.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(pid) = self.child.id() {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("run kill(1)");
            assert!(sent.success(), "kill -TERM {pid} failed");
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for daemon"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "voicekit-bridge did not exit within {timeout:?} of SIGTERM\n--- stderr ---\n{}",
                    self.stderr_text()
                );
            }
        }
    }
}

/// Posts webhooks to one daemon from any task: cloneable, owns what it needs.
#[derive(Clone)]
pub struct WebhookPoster {
    http: reqwest::Client,
    url: String,
}

impl WebhookPoster {
    /// Posts `body` signed with the test config's key as LiveKit does; the answer, or
    /// the transport's error (a daemon that died or was killed meanwhile).
    pub async fn post_signed(&self, body: String) -> reqwest::Result<reqwest::Response> {
        let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());
        self.http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/webhook+json")
            .header(AUTHORIZATION, token)
            .body(body)
            .send()
            .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn drain(pipe: impl AsyncRead + Unpin + Send + 'static, into: Lines) -> JoinHandle<()> {
    tokio::spawn(drain_lines(BufReader::new(pipe).lines(), into))
}

async fn drain_lines<R: AsyncBufReadExt + Unpin>(mut lines: tokio::io::Lines<R>, into: Lines) {
    while let Ok(Some(line)) = lines.next_line().await {
        into.lock().expect("captured lines").push(line);
    }
}

fn join(lines: &Lines) -> String {
    lines.lock().expect("captured lines").join("\n")
}
