//! The daemon's TOML for a test: loopback everywhere, fast retries, a real S3 endpoint.

/// The LiveKit key and secret every test daemon trusts.
pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "test-secret-0123456789abcdef0123456789";
/// A second key, accepted as during a rotation.
pub const OLD_API_KEY: &str = "oldkey";
pub const OLD_API_SECRET: &str = "old-secret-0123456789abcdef0123456789";

pub const BUCKET: &str = "voicekit-recordings";
pub const WORKFLOW_ID: i64 = 456;
pub const WORKFLOW_SLUG: &str = "customer-support";
pub const ORGANIZATION_ID: i64 = 789;

/// Settings a test may vary; `toml()` renders the file.
#[derive(Clone, Debug)]
pub struct TestConfig {
    /// The customer endpoint (a `Receiver` URL).
    pub events_webhook_url: String,
    /// `Some(moto endpoint)` for a real S3; `None` for public URLs and no HeadObject.
    pub s3_endpoint: Option<String>,
    pub url_mode: &'static str,
    pub verify_object: bool,
    pub retry_schedule_secs: &'static str,
    pub timeout_secs: f64,
    pub max_body_bytes: usize,
    /// The second workflow's (`sales`) endpoint; `None`: the same as the first's.
    pub sales_webhook_url: Option<String>,
    /// Where the operator API listens (`127.0.0.1:0`: a port of its own choosing).
    pub api_listen: String,
    /// LiveKit's server API (a fake RoomService/Egress in tests).
    pub livekit_url: String,
    /// Extra TOML lines: in `[delivery]`, in the first workflow, and the whole
    /// `[reconcile]` table body.
    pub delivery_extra: String,
    pub workflow_extra: String,
    pub reconcile: String,
    /// `sqlite://...` in the daemon's directory, or with `VOICEKIT_TEST_STORE=postgres`
    /// a fresh PostgreSQL database of its own (the daemon creates it).
    pub store_url: String,
}

/// Whether this run of the suite is on PostgreSQL (`VOICEKIT_TEST_STORE=postgres`, as
/// the second pass of `scripts/test.sh` sets it). Without it no test touches PostgreSQL,
/// so `cargo test` passes on a machine that has none.
pub fn postgres_requested() -> bool {
    std::env::var("VOICEKIT_TEST_STORE").as_deref() == Ok("postgres")
}

/// The store the suite runs against: SQLite unless `VOICEKIT_TEST_STORE=postgres`.
pub fn test_store_url() -> String {
    if postgres_requested() {
        postgres_test_url()
    } else {
        "sqlite://voicekit-bridge.db".into()
    }
}

/// A fresh PostgreSQL database of its own, `$VOICEKIT_TEST_DB_PREFIX` (default `vkb_t_`)
/// and 12 random lowercase alphanumerics, on `$VOICEKIT_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).
/// It does not exist yet: the daemon creates it.
pub fn postgres_test_url() -> String {
    let base = std::env::var("VOICEKIT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name: String = rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric)
        .take(12)
        .map(|b| (b as char).to_ascii_lowercase())
        .collect();
    // `scripts/test.sh` names its run, so it drops its own databases and no other run's.
    let run = std::env::var("VOICEKIT_TEST_DB_PREFIX").unwrap_or_else(|_| "vkb_t_".into());
    format!("{base}/{run}{name}")
}

impl TestConfig {
    pub fn new(events_webhook_url: &str) -> TestConfig {
        TestConfig {
            events_webhook_url: events_webhook_url.to_owned(),
            s3_endpoint: None,
            url_mode: "public",
            verify_object: false,
            retry_schedule_secs: "[0.2, 0.2, 0.2]",
            timeout_secs: 5.0,
            max_body_bytes: 1_048_576,
            sales_webhook_url: None,
            api_listen: "127.0.0.1:0".into(),
            livekit_url: "http://127.0.0.1:9".into(),
            delivery_extra: String::new(),
            workflow_extra: String::new(),
            reconcile: String::new(),
            store_url: test_store_url(),
        }
    }

    /// Presigned URLs from a real S3-compatible server, confirmed with HeadObject.
    pub fn with_s3(mut self, endpoint: &str) -> TestConfig {
        self.s3_endpoint = Some(endpoint.to_owned());
        self.url_mode = "presigned";
        self.verify_object = true;
        self
    }

    /// A short claim lease (it must outlast both request timeouts), so a PostgreSQL run
    /// that kills a daemon mid-delivery sees its claims taken over within a test's
    /// wait; a test that sets either key itself keeps its own.
    fn lease_lines(&self) -> String {
        let extra = &self.delivery_extra;
        let mut lines = String::new();
        if !extra.contains("hook_timeout_secs") {
            lines.push_str("hook_timeout_secs = 5.0\n");
        }
        if !extra.contains("claim_lease_secs") {
            let longest = self.timeout_secs.max(5.0);
            lines.push_str(&format!("claim_lease_secs = {:.1}\n", longest + 1.0));
        }
        lines
    }

    pub fn toml(&self) -> String {
        let endpoint = match &self.s3_endpoint {
            Some(e) => format!("endpoint = \"{e}\"\nforce_path_style = true"),
            None => String::new(),
        };
        format!(
            r#"[server]
listen = "127.0.0.1:0"
webhook_path = "/livekit/webhook"
max_body_bytes = {max_body}

[livekit]
api_key = "{API_KEY}"
api_secret = "{API_SECRET}"
url = "{livekit_url}"

[[livekit.extra_keys]]
api_key = "{OLD_API_KEY}"
api_secret = "{OLD_API_SECRET}"

[store]
url = "{store_url}"

[recordings]
bucket = "{BUCKET}"
region = "us-east-1"
{endpoint}
url_mode = "{url_mode}"
public_base_url = "https://recordings.example.com"
presign_expiry_secs = 3600
verify_object = {verify}

[api]
# A literal string, so a test that rewrites the webhook listen line leaves this alone.
listen = '{api_listen}'

[reconcile]
{reconcile}

[delivery]
timeout_secs = {timeout}
retry_schedule_secs = {schedule}
{lease}
{delivery_extra}

[[workflows]]
id = {WORKFLOW_ID}
slug = "{WORKFLOW_SLUG}"
organization_id = {ORGANIZATION_ID}
events_webhook_url = "{url}"
room_pattern = '^VOICEKIT_workflow_(?P<call_slug>[A-Za-z0-9]+)_\d+$'
{workflow_extra}

[[workflows]]
id = 457
slug = "sales"
organization_id = {ORGANIZATION_ID}
events_webhook_url = "{sales_url}"
"#,
            max_body = self.max_body_bytes,
            url_mode = self.url_mode,
            verify = self.verify_object,
            timeout = self.timeout_secs,
            schedule = self.retry_schedule_secs,
            url = self.events_webhook_url,
            sales_url = self
                .sales_webhook_url
                .as_deref()
                .unwrap_or(&self.events_webhook_url),
            api_listen = self.api_listen,
            livekit_url = self.livekit_url,
            delivery_extra = self.delivery_extra,
            lease = self.lease_lines(),
            workflow_extra = self.workflow_extra,
            reconcile = self.reconcile,
            store_url = self.store_url,
        )
    }
}

/// A loopback port nothing listens on right now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
