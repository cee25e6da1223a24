//! The validated settings, one struct per section of the file, with durations as
//! [`Duration`]s. Only `validate` builds them from the file; the rest of the daemon
//! reads them.

use std::{fmt, net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::secrets::Secret;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) webhook_path: String,
    pub(crate) max_body_bytes: usize,
    /// How long a client may take to send a request's headers, from its first byte (from
    /// the accept, on a new connection); then the connection is closed.
    pub(crate) header_timeout: Duration,
    /// How long a client may take to send a whole request body; then it gets 408 and
    /// the connection is closed.
    pub(crate) body_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub(crate) idle_timeout: Duration,
    /// Open connections at most; further clients wait in the kernel's queue until one
    /// closes. Unset: 4096, or fewer when the open-file limit leaves less room.
    pub(crate) max_connections: Option<usize>,
}

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
    pub(crate) url: Option<String>,
}

#[derive(Clone)]
pub struct StoreConfig {
    pub(crate) url: String,
    /// Settled deliveries, their attempts, seen event ids and quiet calls older than
    /// this are deleted. Pending deliveries are never pruned.
    pub(crate) retention: Duration,
    /// How often pruning runs.
    pub(crate) prune_interval: Duration,
    /// Connections in the pool (PostgreSQL; SQLite uses a few of its own).
    pub(crate) max_connections: u32,
    /// This bridge's name in delivery claims on a shared store. The same name after a
    /// restart takes back its own unfinished claims at once; other bridges take them
    /// after the lease. Default: the host name and the config file's absolute path.
    pub(crate) instance_id: Option<String>,
}

/// The URL may carry a PostgreSQL password: debug prints show it as `***`.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &crate::store::redact_url(&self.url))
            .field("retention", &self.retention)
            .field("prune_interval", &self.prune_interval)
            .field("max_connections", &self.max_connections)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UrlMode {
    Presigned,
    Public,
}

#[derive(Debug, Clone)]
pub struct RecordingsConfig {
    pub(crate) bucket: String,
    pub(crate) region: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) force_path_style: bool,
    pub(crate) url_mode: UrlMode,
    pub(crate) public_base_url: Option<String>,
    /// How long a presigned recording URL stays valid.
    pub(crate) presign_expiry: Duration,
    pub(crate) verify_object: bool,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Timeout of one delivery request.
    pub(crate) timeout: Duration,
    /// Delay before each retry; after the last one a delivery is marked failed.
    pub(crate) retry_schedule: Vec<Duration>,
    /// How many deliveries may be in flight at once, over all endpoints.
    pub(crate) concurrency: usize,
    /// How many may be in flight to one endpoint, so one slow customer cannot take all.
    pub(crate) per_endpoint_concurrency: usize,
    /// Upper bound on an honoured `Retry-After` (429/503).
    pub(crate) max_retry_after: Duration,
    /// Consecutive failures after which an endpoint's circuit opens.
    pub(crate) breaker_failures: u32,
    /// How long an open circuit pauses an endpoint at first; doubles up to the maximum.
    pub(crate) breaker_open: Duration,
    pub(crate) breaker_max_open: Duration,
    /// Timeout of the synchronous `call_started_hook` request.
    pub(crate) hook_timeout: Duration,
    /// On a shared (PostgreSQL) store, how long an instance's claim on a delivery lasts:
    /// if the instance dies mid-delivery, another one sends the event after this.
    pub(crate) claim_lease: Duration,
}

/// The shortest `api.token` accepted: 32 bytes, as much as a 256-bit key.
pub(crate) const MIN_API_TOKEN_BYTES: usize = 32;

/// The operator API (calls, deliveries, retry, replay, metrics, detailed readiness).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub(crate) listen: SocketAddr,
    /// Required as `Authorization: Bearer <token>` when set (and when not on loopback).
    pub(crate) token: Option<Secret>,
    /// How often `/metrics` reads the store's counts (calls by state, outbox backlog);
    /// scrapes in between are answered from the last reading.
    pub(crate) metrics_refresh: Duration,
}

/// Repairs for what LiveKit loses: rooms that never finish, egresses that never end.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// How often to look for calls to repair.
    pub(crate) interval: Duration,
    /// A call whose room has had no participant this long is ended without `room_finished`.
    pub(crate) empty_room_timeout: Duration,
    /// A call ended this long ago without its egress ending is checked with `ListEgress`.
    pub(crate) egress_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `voicekit_bridge=debug`; `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
    /// Refused webhooks, timed-out connections and failed accepts are logged once per
    /// this interval as one summary line (the first of each kind at once), never one
    /// line each.
    pub(crate) summary_interval: Duration,
}
