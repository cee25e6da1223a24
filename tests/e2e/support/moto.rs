//! A real S3-compatible server for recording tests.
//!
//! The bridge confirms recordings with HeadObject and hands out presigned URLs, so the
//! tests need an S3 that speaks the real protocol. [`Moto`] runs `moto_server`
//! (PyPI `moto[server]`) on a free loopback port, one process per test so tests never
//! see each other's buckets, and kills it when dropped.
//!
//! `moto_server` is looked up on `PATH`; set `MOTO_SERVER` to use another executable.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use tokio::time::Instant;

/// How long `moto_server` may take to answer HTTP after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts before giving up; a retry covers losing the free port to another process.
const ATTEMPTS: usize = 3;

/// A running `moto_server`, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
    client: aws_sdk_s3::Client,
    /// Moto's stdout and stderr (its request log), kept for failure messages.
    log_file: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts a fresh server and waits until it answers HTTP.
    pub async fn start() -> Moto {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start().await {
                Ok(moto) => return moto,
                Err(why) => failures.push(why),
            }
        }
        panic!("moto_server did not start:\n{}", failures.join("\n---\n"));
    }

    async fn try_start() -> Result<Moto, String> {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
        let output = |log: &tempfile::NamedTempFile| {
            log.reopen()
                .map(Stdio::from)
                .map_err(|e| format!("log file: {e}"))
        };
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(output(&log)?)
            .stderr(output(&log)?)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{program}` (install it with `pip install 'moto[server]'`): {e}")
            });
        let mut moto = Moto {
            child,
            port,
            client: client_for(&endpoint(port)),
            log_file: log,
        };
        moto.wait_until_ready().await?;
        Ok(moto)
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("reqwest client");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited with {status}:\n{}", self.log()));
            }
            if http.get(self.endpoint()).send().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "moto_server did not answer on {} within {READY_TIMEOUT:?}:\n{}",
                    self.endpoint(),
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything moto has printed so far (its request log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file.path()).unwrap_or_default()
    }

    /// The server's base URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        endpoint(self.port)
    }

    /// An S3 client for this server: static credentials `test`/`test`, region
    /// `us-east-1`, path-style addressing.
    pub async fn client(&self) -> aws_sdk_s3::Client {
        self.client.clone()
    }

    /// Creates `bucket`; panics on failure.
    pub async fn create_bucket(&self, bucket: &str) {
        self.client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_bucket {bucket}: {}", DisplayErrorContext(&e)));
    }

    /// Stores `bytes` at `bucket`/`key`; panics on failure.
    pub async fn put_object(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes.into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put_object {bucket}/{key}: {}", DisplayErrorContext(&e)));
    }

    /// Reads back `bucket`/`key`; panics if it is missing.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let object = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get_object {bucket}/{key}: {}", DisplayErrorContext(&e)));
        let body = object.body.collect().await.expect("read object body");
        body.into_bytes().to_vec()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn client_for(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A loopback port that was free a moment ago (the OS picks it; we release it for moto).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
