//! The configuration file's shape: its sections and keys as an operator writes them
//! (durations in seconds, secrets inline or as files), and the defaults of what may be
//! left out. `validate` turns it into the typed settings. Nothing here is `Debug`: secrets
//! and the store URL's password are still in the clear.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use super::settings::{LogFormat, UrlMode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub livekit: RawLiveKit,
    #[serde(default)]
    pub store: RawStore,
    pub recordings: RawRecordings,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub reconcile: RawReconcile,
    #[serde(default)]
    pub workflows: Vec<RawWorkflow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub listen: SocketAddr,
    pub webhook_path: String,
    pub max_body_bytes: usize,
    pub header_timeout_secs: f64,
    pub body_timeout_secs: f64,
    pub idle_timeout_secs: f64,
    pub max_connections: Option<usize>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
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

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLiveKit {
    pub api_key: Option<String>,
    pub api_secret: Option<String>,
    pub api_secret_file: Option<PathBuf>,
    pub url: Option<String>,
    #[serde(default)]
    pub extra_keys: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub api_key: String,
    pub api_secret: Option<String>,
    pub api_secret_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    pub url: String,
    pub retention_days: f64,
    pub prune_interval_secs: f64,
    pub max_connections: u32,
    pub instance_id: Option<String>,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: "sqlite://voicekit-bridge.db".into(),
            retention_days: 30.0,
            prune_interval_secs: 3600.0,
            max_connections: 8,
            instance_id: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecordings {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDelivery {
    pub timeout_secs: f64,
    pub retry_schedule_secs: Vec<f64>,
    pub concurrency: usize,
    pub per_endpoint_concurrency: usize,
    pub max_retry_after_secs: f64,
    pub breaker_failures: u32,
    pub breaker_open_secs: f64,
    pub breaker_max_open_secs: f64,
    pub hook_timeout_secs: f64,
    pub claim_lease_secs: f64,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
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

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub metrics_refresh_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReconcile {
    pub interval_secs: f64,
    pub empty_room_timeout_secs: f64,
    pub egress_timeout_secs: f64,
}

impl Default for RawReconcile {
    fn default() -> Self {
        RawReconcile {
            interval_secs: 30.0,
            empty_room_timeout_secs: 600.0,
            egress_timeout_secs: 900.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub level: String,
    pub format: LogFormat,
    pub summary_interval_secs: f64,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: LogFormat::Text,
            summary_interval_secs: 60.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    pub id: i64,
    pub slug: String,
    pub organization_id: i64,
    pub events_webhook_url: String,
    pub call_started_hook: Option<String>,
    pub room_pattern: Option<String>,
    pub signing_secret: Option<String>,
    pub signing_secret_file: Option<PathBuf>,
    pub signing_secrets: Option<Vec<String>>,
}
