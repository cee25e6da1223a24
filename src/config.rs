//! The one TOML file an operator writes, turned into typed settings.
//!
//! Parsing rejects unknown keys (a typo must not silently change behaviour) and
//! validation names the offending key, so `check-config` can tell an operator exactly
//! what to fix. Secrets may come inline, from files (systemd credentials) or from
//! LiveKit's usual environment variables; they are never printed.

use std::{
    collections::HashSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use regex::Regex;
use serde::Deserialize;

use crate::delivery::signing::SigningKey;

/// A configuration problem, naming the key at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    livekit: RawLiveKit,
    #[serde(default)]
    store: StoreConfig,
    recordings: RecordingsConfig,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    reconcile: ReconcileConfig,
    #[serde(default)]
    workflows: Vec<RawWorkflow>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub webhook_path: String,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, from its first byte (from
    /// the accept, on a new connection); then the connection is closed.
    pub header_timeout_secs: f64,
    /// How long a client may take to send a whole request body; then it gets 408 and
    /// the connection is closed.
    pub body_timeout_secs: f64,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout_secs: f64,
    /// Open connections at most; further clients wait in the kernel's queue until one
    /// closes. Unset: 4096, or fewer when the open-file limit leaves less room.
    pub max_connections: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8787".parse().expect("valid default address"),
            webhook_path: "/livekit/webhook".into(),
            max_body_bytes: 1024 * 1024,
            header_timeout_secs: 10.0,
            body_timeout_secs: 30.0,
            // Longer than the 90 s Go's pooled HTTP transport (LiveKit's webhook client)
            // keeps an idle connection: LiveKit closes first, so a webhook never meets a
            // connection the bridge is closing.
            idle_timeout_secs: 95.0,
            max_connections: None,
        }
    }
}

impl ServerConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout_secs)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_secs)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLiveKit {
    api_key: Option<String>,
    api_secret: Option<String>,
    api_secret_file: Option<PathBuf>,
    url: Option<String>,
    #[serde(default)]
    extra_keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    api_key: String,
    api_secret: Option<String>,
    api_secret_file: Option<PathBuf>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: String,
    /// Settled deliveries, their attempts, seen event ids and quiet calls older than
    /// this are deleted. Pending deliveries are never pruned.
    pub retention_days: f64,
    /// How often pruning runs.
    pub prune_interval_secs: f64,
    /// Connections in the pool (PostgreSQL; SQLite uses a few of its own).
    pub max_connections: u32,
    /// This bridge's name in delivery claims on a shared store. The same name after a
    /// restart takes back its own unfinished claims at once; other bridges take them
    /// after the lease. Default: the host name and the config file's absolute path.
    pub instance_id: Option<String>,
}

/// The URL may carry a PostgreSQL password: debug prints show it as `***`.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &crate::store::redact_url(&self.url))
            .field("retention_days", &self.retention_days)
            .field("prune_interval_secs", &self.prune_interval_secs)
            .field("max_connections", &self.max_connections)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://voicekit-bridge.db".into(),
            retention_days: 30.0,
            prune_interval_secs: 3600.0,
            max_connections: 8,
            instance_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UrlMode {
    Presigned,
    Public,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsConfig {
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default = "default_url_mode")]
    pub url_mode: UrlMode,
    pub public_base_url: Option<String>,
    #[serde(default = "default_presign_expiry")]
    pub presign_expiry_secs: u64,
    #[serde(default = "default_true")]
    pub verify_object: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_url_mode() -> UrlMode {
    UrlMode::Presigned
}
fn default_presign_expiry() -> u64 {
    604_800
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub timeout_secs: f64,
    /// Delay before each retry; after the last one a delivery is marked failed.
    pub retry_schedule_secs: Vec<f64>,
    /// How many deliveries may be in flight at once, over all endpoints.
    pub concurrency: usize,
    /// How many may be in flight to one endpoint, so one slow customer cannot take all.
    pub per_endpoint_concurrency: usize,
    /// Upper bound on an honoured `Retry-After` (429/503).
    pub max_retry_after_secs: f64,
    /// Consecutive failures after which an endpoint's circuit opens.
    pub breaker_failures: u32,
    /// How long an open circuit pauses an endpoint at first; doubles up to the maximum.
    pub breaker_open_secs: f64,
    pub breaker_max_open_secs: f64,
    /// Timeout of the synchronous `call_started_hook` request.
    pub hook_timeout_secs: f64,
    /// On a shared (PostgreSQL) store, how long an instance's claim on a delivery lasts:
    /// if the instance dies mid-delivery, another one sends the event after this.
    pub claim_lease_secs: f64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout_secs: 10.0,
            retry_schedule_secs: vec![5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
            concurrency: 16,
            per_endpoint_concurrency: 4,
            max_retry_after_secs: 3600.0,
            breaker_failures: 5,
            breaker_open_secs: 30.0,
            breaker_max_open_secs: 600.0,
            hook_timeout_secs: 10.0,
            claim_lease_secs: 60.0,
        }
    }
}

impl DeliveryConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    pub fn claim_lease(&self) -> Duration {
        Duration::from_secs_f64(self.claim_lease_secs)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<SocketAddr>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    metrics_refresh_secs: Option<f64>,
}

/// The shortest `api.token` accepted: 32 bytes, as much as a 256-bit key.
pub const MIN_API_TOKEN_BYTES: usize = 32;

/// The operator API (calls, deliveries, retry, replay, metrics, detailed readiness).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Required as `Authorization: Bearer <token>` when set (and when not on loopback).
    pub token: Option<Secret>,
    /// How often `/metrics` reads the store's counts (calls by state, outbox backlog);
    /// scrapes in between are answered from the last reading.
    pub metrics_refresh_secs: f64,
}

/// Repairs for what LiveKit loses: rooms that never finish, egresses that never end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// How often to look for calls to repair.
    pub interval_secs: f64,
    /// A call whose room has had no participant this long is ended without `room_finished`.
    pub empty_room_timeout_secs: f64,
    /// A call ended this long ago without its egress ending is checked with `ListEgress`.
    pub egress_timeout_secs: f64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval_secs: 30.0,
            empty_room_timeout_secs: 600.0,
            egress_timeout_secs: 900.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `voicekit_bridge=debug`; `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
    /// Refused webhooks, timed-out connections and failed accepts are logged once per
    /// this interval as one summary line (the first of each kind at once), never one
    /// line each.
    pub summary_interval_secs: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            summary_interval_secs: 60.0,
        }
    }
}

impl LogConfig {
    pub fn summary_interval(&self) -> Duration {
        Duration::from_secs_f64(self.summary_interval_secs)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    id: i64,
    slug: String,
    organization_id: i64,
    events_webhook_url: String,
    call_started_hook: Option<String>,
    room_pattern: Option<String>,
    signing_secret: Option<String>,
    signing_secret_file: Option<PathBuf>,
    signing_secrets: Option<Vec<String>>,
}

/// A workflow is part of the domain (`crate::call::workflow`); the configuration
/// builds them.
pub use crate::call::workflow::Workflow;

/// The workflows in force; swapped whole when the configuration is reloaded.
pub type SharedWorkflows = std::sync::Arc<arc_swap::ArcSwap<Vec<Workflow>>>;

/// One LiveKit API key and its secret; several may be valid during rotation.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: String,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct LiveKitConfig {
    /// The first entry is the primary key, used when the bridge signs requests itself.
    pub keys: Vec<ApiKey>,
    pub url: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub livekit: LiveKitConfig,
    pub store: StoreConfig,
    pub recordings: RecordingsConfig,
    pub delivery: DeliveryConfig,
    pub log: LogConfig,
    pub api: ApiConfig,
    pub reconcile: ReconcileConfig,
    pub workflows: Vec<Workflow>,
    /// What is valid but unwise (a short LiveKit secret, the example secret, inline
    /// secrets in a file others can read): the daemon logs each at start and
    /// `check-config` prints them.
    pub warnings: Vec<String>,
}

/// Where the environment may supply LiveKit credentials, as LiveKit's own tools read them.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, &ProcessEnv).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        if let Some(warning) = exposed_inline_secrets(path, &text) {
            config.warnings.push(warning);
        }
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: parse_message(&e, text),
        })?;
        raw.validate(env)
    }
}

/// The LiveKit secret of the bundled example configuration (`config.toml`): fine on a
/// developer's machine, a warning anywhere else.
pub const EXAMPLE_LIVEKIT_SECRET: &str = "secret-for-local-development-only";

/// The shortest LiveKit secret that does not draw a warning: LiveKit's own generated
/// secrets are longer, and an HS256 key should carry 256 bits.
pub const MIN_LIVEKIT_SECRET_CHARS: usize = 32;

/// A warning when `path` holds a secret inline (a key the TOML file sets itself, not a
/// `*_file`) and its group or others may read it.
fn exposed_inline_secrets(path: &Path, text: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;

    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o044 == 0 {
        return None;
    }
    let table: toml::Table = toml::from_str(text).ok()?;
    let keys = inline_secret_keys(&table);
    if keys.is_empty() {
        return None;
    }
    Some(format!(
        "{} holds secrets inline ({}) and is readable by {} (mode {:o}): \
         chmod 600 it, or move the secrets to *_file keys (systemd credentials)",
        path.display(),
        keys.join(", "),
        if mode & 0o004 != 0 {
            "everyone"
        } else {
            "its group"
        },
        mode & 0o777
    ))
}

/// The keys of a parsed configuration file that carry a secret inline.
fn inline_secret_keys(table: &toml::Table) -> Vec<String> {
    let mut keys = Vec::new();
    let has = |t: Option<&toml::Value>, key: &str| t.and_then(|t| t.get(key)).is_some();
    if has(table.get("livekit"), "api_secret") {
        keys.push("livekit.api_secret".to_owned());
    }
    let extra = table
        .get("livekit")
        .and_then(|l| l.get("extra_keys"))
        .and_then(|e| e.as_array());
    for (i, key) in extra.into_iter().flatten().enumerate() {
        if key.get("api_secret").is_some() {
            keys.push(format!("livekit.extra_keys[{i}].api_secret"));
        }
    }
    if has(table.get("api"), "token") {
        keys.push("api.token".to_owned());
    }
    let store_url = table
        .get("store")
        .and_then(|s| s.get("url"))
        .and_then(|u| u.as_str());
    if store_url.is_some_and(|u| crate::store::redact_url(u) != u) {
        keys.push("store.url (password)".to_owned());
    }
    let workflows = table.get("workflows").and_then(|w| w.as_array());
    for (i, w) in workflows.into_iter().flatten().enumerate() {
        for key in ["signing_secret", "signing_secrets"] {
            if w.get(key).is_some() {
                keys.push(format!("workflows[{i}].{key}"));
            }
        }
    }
    keys
}

/// Warnings about the LiveKit secrets: shorter than [`MIN_LIVEKIT_SECRET_CHARS`], or the
/// example configuration's.
fn livekit_secret_warnings(livekit: &LiveKitConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    for key in &livekit.keys {
        let secret = key.secret.expose();
        if secret == EXAMPLE_LIVEKIT_SECRET {
            warnings.push(format!(
                "the LiveKit secret of api_key {:?} is the example configuration's: \
                 anyone who read config.toml can forge webhooks; generate a new one",
                key.key
            ));
        } else if secret.chars().count() < MIN_LIVEKIT_SECRET_CHARS {
            warnings.push(format!(
                "the LiveKit secret of api_key {:?} is shorter than {MIN_LIVEKIT_SECRET_CHARS} \
                 characters: a short HS256 key can be guessed offline from one captured webhook",
                key.key
            ));
        }
    }
    warnings
}

/// A TOML error as `line L, column C: what`, without the excerpt of the file that
/// toml's own message quotes: that line may hold a secret, and this text is logged.
fn parse_message(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// The environment variable systemd sets to the directory holding the unit's
/// `LoadCredential=` files (`/run/credentials/<unit>/`).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// `path` with `${CREDENTIALS_DIRECTORY}` (or `$CREDENTIALS_DIRECTORY`) replaced by that
/// variable's value, so a `*_file` key can name a systemd credential without knowing the
/// unit's name; an error naming `key` when the path uses it and it is unset.
pub fn expand_credentials_directory(
    key: &str,
    path: &Path,
    env: &dyn Env,
) -> Result<PathBuf, ConfigError> {
    let Some(text) = path.to_str() else {
        return Ok(path.to_owned());
    };
    let braced = format!("${{{CREDENTIALS_DIRECTORY}}}");
    let bare = format!("${CREDENTIALS_DIRECTORY}");
    if !text.contains(&bare) && !text.contains(&braced) {
        return Ok(path.to_owned());
    }
    let dir = env.var(CREDENTIALS_DIRECTORY).ok_or_else(|| {
        invalid(
            key,
            format!(
                "{} uses ${CREDENTIALS_DIRECTORY}, which is not set \
                 (systemd sets it for a unit with LoadCredential=)",
                path.display()
            ),
        )
    })?;
    let dir = dir.trim_end_matches('/');
    Ok(PathBuf::from(
        text.replace(&braced, dir).replace(&bare, dir),
    ))
}

fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let path = &expand_credentials_directory(key, path, &ProcessEnv)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let value = text.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(Secret(value))
}

/// Picks the one secret source given for a key (inline or file), naming both keys on a clash.
fn secret_from(
    prefix: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            format!("{prefix}.api_secret"),
            format!("set either api_secret or {prefix}.api_secret_file, not both"),
        )),
        (Some(s), None) if s.is_empty() => Err(invalid(format!("{prefix}.api_secret"), "is empty")),
        (Some(s), None) => Ok(Some(Secret(s))),
        (None, Some(path)) => {
            read_secret_file(&format!("{prefix}.api_secret_file"), &path).map(Some)
        }
        (None, None) => Ok(None),
    }
}

fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(value).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(key, "must be an http:// or https:// URL"));
    }
    Ok(())
}

impl RawConfig {
    fn validate(self, env: &dyn Env) -> Result<Config, ConfigError> {
        if !self.server.webhook_path.starts_with('/') {
            return Err(invalid("server.webhook_path", "must start with '/'"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        for (key, value) in [
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
        ] {
            if !(0.1..=3600.0).contains(&value) {
                return Err(invalid(key, "must be between 0.1 and 3600 seconds"));
            }
        }
        if self.server.max_connections == Some(0) {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if !(0.1..=86_400.0).contains(&self.log.summary_interval_secs) {
            return Err(invalid(
                "log.summary_interval_secs",
                "must be between 0.1 and 86400 seconds",
            ));
        }

        let livekit = self.livekit.validate(env)?;

        let url = &self.store.url;
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid(
                "store.url",
                "must be sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
            ));
        }
        if !(1..=256).contains(&self.store.max_connections) {
            return Err(invalid(
                "store.max_connections",
                "must be between 1 and 256",
            ));
        }
        if let Some(id) = &self.store.instance_id
            && (id.trim().is_empty() || id.len() > 200 || id.chars().any(char::is_control))
        {
            return Err(invalid(
                "store.instance_id",
                "must be 1 to 200 characters, not blank, without control characters",
            ));
        }

        let rec = &self.recordings;
        if rec.bucket.is_empty() {
            return Err(invalid("recordings.bucket", "is empty"));
        }
        if let Some(endpoint) = &rec.endpoint {
            check_http_url("recordings.endpoint", endpoint)?;
        }
        match (&rec.url_mode, &rec.public_base_url) {
            (UrlMode::Public, None) => {
                return Err(invalid(
                    "recordings.public_base_url",
                    "required when url_mode = \"public\"",
                ));
            }
            (_, Some(base)) => check_http_url("recordings.public_base_url", base)?,
            _ => {}
        }
        // SigV4 presigned URLs cannot outlive seven days.
        if !(1..=604_800).contains(&rec.presign_expiry_secs) {
            return Err(invalid(
                "recordings.presign_expiry_secs",
                "must be between 1 and 604800 (7 days, the SigV4 maximum)",
            ));
        }

        if !(self.store.retention_days > 0.0 && self.store.retention_days <= 36_500.0) {
            return Err(invalid(
                "store.retention_days",
                "must be a positive number of days",
            ));
        }
        if !(self.store.prune_interval_secs >= 1.0 && self.store.prune_interval_secs <= 86_400.0) {
            return Err(invalid(
                "store.prune_interval_secs",
                "must be between 1 and 86400 seconds",
            ));
        }
        let d = &self.delivery;
        if !(d.timeout_secs > 0.0 && d.timeout_secs <= 300.0) {
            return Err(invalid("delivery.timeout_secs", "must be in (0, 300]"));
        }
        if d.retry_schedule_secs
            .iter()
            .any(|s| !(*s >= 0.0 && *s <= 7.0 * 86400.0))
        {
            return Err(invalid(
                "delivery.retry_schedule_secs",
                "each delay must be between 0 and 604800 seconds",
            ));
        }
        // The lease must outlast the longest attempt, or a slow but live delivery
        // would be taken over and sent twice.
        let longest = d.timeout_secs.max(d.hook_timeout_secs);
        if !(d.claim_lease_secs >= 1.0 && d.claim_lease_secs > longest) {
            return Err(invalid(
                "delivery.claim_lease_secs",
                "must be at least 1 and longer than timeout_secs and hook_timeout_secs",
            ));
        }
        if d.concurrency == 0 {
            return Err(invalid("delivery.concurrency", "must be at least 1"));
        }
        if d.per_endpoint_concurrency == 0 {
            return Err(invalid(
                "delivery.per_endpoint_concurrency",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("delivery.max_retry_after_secs", d.max_retry_after_secs),
            ("delivery.breaker_open_secs", d.breaker_open_secs),
            ("delivery.breaker_max_open_secs", d.breaker_max_open_secs),
            ("delivery.hook_timeout_secs", d.hook_timeout_secs),
            ("reconcile.interval_secs", self.reconcile.interval_secs),
            (
                "reconcile.empty_room_timeout_secs",
                self.reconcile.empty_room_timeout_secs,
            ),
            (
                "reconcile.egress_timeout_secs",
                self.reconcile.egress_timeout_secs,
            ),
        ] {
            if !(value > 0.0 && value <= 7.0 * 86400.0) {
                return Err(invalid(
                    key,
                    "must be a positive number of seconds (at most 7 days)",
                ));
            }
        }
        if d.breaker_failures == 0 {
            return Err(invalid("delivery.breaker_failures", "must be at least 1"));
        }
        let api = self.api.validate()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "not a valid filter (e.g. \"info\")"));
        }

        let workflows = validate_workflows(self.workflows)?;
        let warnings = livekit_secret_warnings(&livekit);

        Ok(Config {
            server: self.server,
            livekit,
            store: self.store,
            recordings: self.recordings,
            delivery: self.delivery,
            log: self.log,
            api,
            reconcile: self.reconcile,
            workflows,
            warnings,
        })
    }
}

impl RawLiveKit {
    fn validate(self, env: &dyn Env) -> Result<LiveKitConfig, ConfigError> {
        let api_key = self
            .api_key
            .or_else(|| env.var("LIVEKIT_API_KEY"))
            .ok_or_else(|| invalid("livekit.api_key", "missing (or set LIVEKIT_API_KEY)"))?;
        let secret = match secret_from("livekit", self.api_secret, self.api_secret_file)? {
            Some(s) => s,
            None => env.var("LIVEKIT_API_SECRET").map(Secret).ok_or_else(|| {
                invalid(
                    "livekit.api_secret",
                    "missing (set api_secret, api_secret_file or LIVEKIT_API_SECRET)",
                )
            })?,
        };
        let mut keys = vec![ApiKey {
            key: api_key,
            secret,
        }];
        for (i, extra) in self.extra_keys.into_iter().enumerate() {
            let prefix = format!("livekit.extra_keys[{i}]");
            let secret = secret_from(&prefix, extra.api_secret, extra.api_secret_file)?
                .ok_or_else(|| invalid(format!("{prefix}.api_secret"), "missing"))?;
            keys.push(ApiKey {
                key: extra.api_key,
                secret,
            });
        }
        let mut seen = HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            if k.key.is_empty() {
                return Err(invalid(format!("livekit key #{i}"), "api_key is empty"));
            }
            if !seen.insert(k.key.clone()) {
                return Err(invalid(
                    "livekit.extra_keys",
                    format!("api_key {:?} appears twice", k.key),
                ));
            }
        }
        if let Some(url) = &self.url {
            check_http_url("livekit.url", url)?;
        }
        Ok(LiveKitConfig {
            keys,
            url: self.url,
        })
    }
}

impl RawApi {
    fn validate(self) -> Result<ApiConfig, ConfigError> {
        let listen = self
            .listen
            .unwrap_or_else(|| "127.0.0.1:8789".parse().expect("valid default address"));
        let token = match (self.token, self.token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "api.token",
                    "set either token or token_file, not both",
                ));
            }
            (Some(t), None) => Some(("api.token", Secret(t))),
            (None, Some(path)) => {
                Some(("api.token_file", read_secret_file("api.token_file", &path)?))
            }
            (None, None) => None,
        };
        if let Some((key, token)) = &token
            && token.expose().len() < MIN_API_TOKEN_BYTES
        {
            return Err(invalid(
                *key,
                format!(
                    "must be at least {MIN_API_TOKEN_BYTES} bytes \
                     (e.g. `openssl rand -hex 32`)"
                ),
            ));
        }
        let token = token.map(|(_, token)| token);
        let metrics_refresh_secs = self.metrics_refresh_secs.unwrap_or(10.0);
        if !(0.0..=3600.0).contains(&metrics_refresh_secs) {
            return Err(invalid(
                "api.metrics_refresh_secs",
                "must be between 0 and 3600 seconds",
            ));
        }
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(invalid(
                "api.token",
                "required when api.listen is not a loopback address",
            ));
        }
        Ok(ApiConfig {
            listen,
            token,
            metrics_refresh_secs,
        })
    }
}

fn validate_workflows(raw: Vec<RawWorkflow>) -> Result<Vec<Workflow>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "workflows",
            "at least one [[workflows]] entry is required",
        ));
    }
    let mut ids = HashSet::new();
    let mut slugs = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, w) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("workflows[{i}].{field}");
        if !ids.insert(w.id) {
            return Err(invalid(key("id"), format!("id {} is used twice", w.id)));
        }
        if w.slug.is_empty() {
            return Err(invalid(key("slug"), "is empty"));
        }
        if !slugs.insert(w.slug.clone()) {
            return Err(invalid(
                key("slug"),
                format!("slug {:?} is used twice", w.slug),
            ));
        }
        check_http_url(&key("events_webhook_url"), &w.events_webhook_url)?;
        if let Some(hook) = &w.call_started_hook {
            check_http_url(&key("call_started_hook"), hook)?;
        }
        let room_pattern = match w.room_pattern {
            None => None,
            Some(p) => Some(
                Regex::new(&p)
                    .map_err(|e| invalid(key("room_pattern"), format!("invalid regex: {e}")))?,
            ),
        };
        let mut secrets = Vec::new();
        match (w.signing_secret, w.signing_secret_file, w.signing_secrets) {
            (None, None, None) => {}
            (Some(s), None, None) => secrets.push((key("signing_secret"), s)),
            (None, Some(path), None) => {
                let k = key("signing_secret_file");
                let s = read_secret_file(&k, &path)?;
                secrets.push((k, s.0));
            }
            (None, None, Some(list)) => {
                if list.is_empty() {
                    return Err(invalid(key("signing_secrets"), "is empty"));
                }
                for (j, s) in list.into_iter().enumerate() {
                    secrets.push((key(&format!("signing_secrets[{j}]")), s));
                }
            }
            _ => {
                return Err(invalid(
                    key("signing_secret"),
                    "set only one of signing_secret, signing_secret_file, signing_secrets",
                ));
            }
        }
        let signing_keys = secrets
            .into_iter()
            .map(|(k, s)| SigningKey::parse(&s).map_err(|e| invalid(k, e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Workflow {
            id: w.id,
            slug: w.slug,
            organization_id: w.organization_id,
            events_webhook_url: w.events_webhook_url,
            call_started_hook: w.call_started_hook,
            room_pattern,
            signing_keys,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }
    fn no_env() -> FakeEnv {
        FakeEnv(HashMap::new())
    }

    const MINIMAL: &str = r#"
[livekit]
api_key = "devkey"
api_secret = "secret"

[recordings]
bucket = "b"

[[workflows]]
id = 456
slug = "customer-support"
organization_id = 789
events_webhook_url = "https://example.com/hook"
room_pattern = '^VOICEKIT_workflow_(?P<call_slug>[A-Za-z0-9]+)_\d+$'
"#;

    fn err(text: &str) -> String {
        Config::parse(text, &no_env()).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL, &no_env()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(c.server.webhook_path, "/livekit/webhook");
        assert_eq!(c.server.max_body_bytes, 1_048_576);
        assert_eq!(c.store.url, "sqlite://voicekit-bridge.db");
        assert_eq!(c.recordings.url_mode, UrlMode::Presigned);
        assert_eq!(c.recordings.presign_expiry_secs, 604_800);
        assert!(c.recordings.verify_object);
        assert_eq!(c.delivery.timeout(), Duration::from_secs(10));
        assert_eq!(c.livekit.keys[0].key, "devkey");
    }

    #[test]
    fn store_takes_sqlite_or_postgres_and_the_lease_must_outlast_an_attempt() {
        let with = |extra: &str| format!("{extra}\n{MINIMAL}");
        let pg = with("[store]\nurl = \"postgres://bridge@db:5432/vk\"\nmax_connections = 16");
        let c = Config::parse(&pg, &no_env()).unwrap();
        assert_eq!(c.store.max_connections, 16);
        assert_eq!(c.delivery.claim_lease(), Duration::from_secs(60));
        let secret = with("[store]\nurl = \"postgres://bridge:hunter2@db/vk\"");
        let debug = format!("{:?}", Config::parse(&secret, &no_env()).unwrap());
        assert!(
            !debug.contains("hunter2") && debug.contains("bridge:***@db"),
            "{debug}"
        );
        let e = err(&with("[store]\nurl = \"mysql://db/vk\""));
        assert!(e.contains("store.url") && e.contains("postgres://"), "{e}");
        let e = err(&with("[store]\nmax_connections = 0"));
        assert!(e.contains("store.max_connections"), "{e}");
        let named = with("[store]\ninstance_id = \"bridge-a\"");
        let c = Config::parse(&named, &no_env()).unwrap();
        assert_eq!(c.store.instance_id.as_deref(), Some("bridge-a"));
        for bad in ["\"\"", "\" \"", "\"a\\nb\""] {
            let e = err(&with(&format!("[store]\ninstance_id = {bad}")));
            assert!(e.contains("store.instance_id"), "{bad}: {e}");
        }
        let e = err(&with(
            "[delivery]\ntimeout_secs = 30\nclaim_lease_secs = 20",
        ));
        assert!(e.contains("delivery.claim_lease_secs"), "{e}");
    }

    #[test]
    fn bundled_example_config_is_valid() {
        let text = include_str!("../config.toml");
        Config::parse(text, &no_env()).unwrap();
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = err(&MINIMAL.replace("[recordings]", "[recordings]\nbukket = \"x\""));
        assert!(e.contains("bukket"), "{e}");
    }

    #[test]
    fn bad_regex_names_the_workflow_key() {
        let e = err(&MINIMAL.replace(r"(?P<call_slug>", "(?P<call_slug"));
        assert!(
            e.starts_with("workflows[0].room_pattern: invalid regex"),
            "{e}"
        );
    }

    #[test]
    fn public_mode_requires_base_url() {
        let e = err(&MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nurl_mode = \"public\""));
        assert!(e.starts_with("recordings.public_base_url"), "{e}");
    }

    #[test]
    fn secrets_come_from_the_environment_when_absent() {
        let text = MINIMAL.replace("api_key = \"devkey\"\napi_secret = \"secret\"\n", "");
        let env = FakeEnv(HashMap::from([
            ("LIVEKIT_API_KEY", "envkey"),
            ("LIVEKIT_API_SECRET", "envsecret"),
        ]));
        let c = Config::parse(&text, &env).unwrap();
        assert_eq!(c.livekit.keys[0].key, "envkey");
        assert_eq!(c.livekit.keys[0].secret.expose(), "envsecret");
        let e = err(&text);
        assert!(e.starts_with("livekit.api_key: missing"), "{e}");
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let text = MINIMAL.replace(
            "api_secret = \"secret\"",
            &format!("api_secret_file = {:?}", path.display().to_string()),
        );
        let c = Config::parse(&text, &no_env()).unwrap();
        assert_eq!(c.livekit.keys[0].secret.expose(), "from-file");
    }

    #[test]
    fn extra_keys_are_accepted_and_duplicates_rejected() {
        let text =
            format!("{MINIMAL}\n[[livekit.extra_keys]]\napi_key = \"old\"\napi_secret = \"s2\"\n");
        let c = Config::parse(&text, &no_env()).unwrap();
        assert_eq!(c.livekit.keys.len(), 2);
        let dup = text.replace("\"old\"", "\"devkey\"");
        assert!(err(&dup).contains("appears twice"));
    }

    #[test]
    fn duplicate_workflow_ids_are_rejected() {
        let second = MINIMAL
            .split("[[workflows]]")
            .nth(1)
            .unwrap()
            .replace("customer-support", "other");
        let e = err(&format!("{MINIMAL}[[workflows]]{second}"));
        assert!(e.starts_with("workflows[1].id"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = Config::parse(MINIMAL, &no_env()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("\"secret\""), "{shown}");
    }

    #[test]
    fn credentials_directory_is_expanded_in_file_paths() {
        let env = FakeEnv(HashMap::from([(
            "CREDENTIALS_DIRECTORY",
            "/run/credentials/voicekit-bridge.service/",
        )]));
        for form in ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"] {
            let path = PathBuf::from(format!("{form}/livekit-api-secret"));
            assert_eq!(
                expand_credentials_directory("k", &path, &env).unwrap(),
                PathBuf::from("/run/credentials/voicekit-bridge.service/livekit-api-secret")
            );
        }
        let plain = PathBuf::from("/etc/voicekit-bridge/secret");
        assert_eq!(
            expand_credentials_directory("k", &plain, &no_env()).unwrap(),
            plain
        );
        let e = expand_credentials_directory(
            "livekit.api_secret_file",
            Path::new("${CREDENTIALS_DIRECTORY}/s"),
            &no_env(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("livekit.api_secret_file: ${CREDENTIALS_DIRECTORY}/s uses"),
            "{e}"
        );
    }

    #[test]
    fn server_limits_have_defaults_and_are_checked() {
        let c = Config::parse(MINIMAL, &no_env()).unwrap();
        assert_eq!(c.server.header_timeout(), Duration::from_secs(10));
        assert_eq!(c.server.body_timeout(), Duration::from_secs(30));
        assert_eq!(c.server.idle_timeout(), Duration::from_secs(95));
        assert_eq!(c.server.max_connections, None);
        assert_eq!(c.log.summary_interval(), Duration::from_secs(60));
        assert_eq!(c.api.metrics_refresh_secs, 10.0);
        let with = |extra: &str| format!("[server]\n{extra}\n{MINIMAL}");
        let c = Config::parse(
            &with("header_timeout_secs = 2\nbody_timeout_secs = 3\nidle_timeout_secs = 4\nmax_connections = 50"),
            &no_env(),
        )
        .unwrap();
        assert_eq!(c.server.idle_timeout(), Duration::from_secs(4));
        assert_eq!(c.server.max_connections, Some(50));
        for (line, key) in [
            ("header_timeout_secs = 0", "server.header_timeout_secs"),
            ("body_timeout_secs = -1", "server.body_timeout_secs"),
            ("idle_timeout_secs = 1e9", "server.idle_timeout_secs"),
            ("max_connections = 0", "server.max_connections"),
        ] {
            let e = err(&with(line));
            assert!(e.starts_with(key), "{line}: {e}");
        }
    }

    #[test]
    fn an_api_token_must_be_at_least_32_bytes() {
        let with = |token: &str| format!("[api]\ntoken = \"{token}\"\n{MINIMAL}");
        let e = err(&with(&"x".repeat(31)));
        assert!(e.starts_with("api.token: must be at least 32 bytes"), "{e}");
        let e = err(&with(""));
        assert!(e.starts_with("api.token: must be at least 32 bytes"), "{e}");
        let c = Config::parse(&with(&"x".repeat(32)), &no_env()).unwrap();
        assert_eq!(c.api.token.unwrap().expose().len(), 32);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "short\n").unwrap();
        let text = format!(
            "[api]\ntoken_file = {:?}\n{MINIMAL}",
            path.display().to_string()
        );
        let e = err(&text);
        assert!(
            e.starts_with("api.token_file: must be at least 32 bytes"),
            "{e}"
        );
    }

    #[test]
    fn weak_livekit_secrets_are_warned_about_without_showing_them() {
        // MINIMAL's "secret" is short.
        let c = Config::parse(MINIMAL, &no_env()).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("shorter than 32 characters"));
        assert!(!c.warnings[0].contains("\"secret\""));
        let example = MINIMAL.replace("\"secret\"", &format!("{EXAMPLE_LIVEKIT_SECRET:?}"));
        let c = Config::parse(&example, &no_env()).unwrap();
        assert!(
            c.warnings[0].contains("is the example configuration's"),
            "{:?}",
            c.warnings
        );
        assert!(!c.warnings[0].contains(EXAMPLE_LIVEKIT_SECRET));
        let strong = MINIMAL.replace("\"secret\"", &format!("\"{}\"", "k".repeat(40)));
        assert!(
            Config::parse(&strong, &no_env())
                .unwrap()
                .warnings
                .is_empty()
        );
        // The bundled example draws the warning it should.
        let bundled = Config::parse(include_str!("../config.toml"), &no_env()).unwrap();
        assert!(
            bundled
                .warnings
                .iter()
                .any(|w| w.contains("example configuration"))
        );
    }

    #[test]
    fn a_file_of_inline_secrets_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = format!(
            "[store]\nurl = \"postgres://u:pw@db/vk\"\n{}",
            MINIMAL.replace(
                "room_pattern",
                "signing_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\nroom_pattern"
            )
        );
        std::fs::write(&path, &text).unwrap();
        let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        mode(0o644);
        let warning = exposed_inline_secrets(&path, &text).unwrap();
        assert!(
            warning
                .contains("livekit.api_secret, store.url (password), workflows[0].signing_secret")
                && warning.contains("readable by everyone"),
            "{warning}"
        );
        mode(0o640);
        assert!(
            exposed_inline_secrets(&path, &text)
                .unwrap()
                .contains("its group")
        );
        mode(0o600);
        assert_eq!(exposed_inline_secrets(&path, &text), None);
        mode(0o644);
        let no_inline = "[livekit]\napi_key = \"k\"\napi_secret_file = \"/run/s\"\n";
        assert_eq!(exposed_inline_secrets(&path, no_inline), None);
    }

    #[test]
    fn parse_errors_name_the_place_but_never_quote_the_line() {
        let text = MINIMAL.replace("api_secret = \"secret\"", "api_secret = \"do-not-print-me");
        let e = err(&text);
        assert!(e.contains("line 4, column"), "{e}");
        assert!(!e.contains("do-not-print-me"), "{e}");
    }
}
