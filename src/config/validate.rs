//! From the file's shape to the typed settings: every key checked, the offending one
//! named, and seconds turned into [`Duration`]s once the range is known to be sane.

use std::{collections::HashSet, time::Duration};

use super::{
    ApiConfig, ApiKey, Config, ConfigError, DeliveryConfig, Env, LiveKitConfig, LogConfig,
    MIN_API_TOKEN_BYTES, ReconcileConfig, RecordingsConfig, Secret, ServerConfig, StoreConfig,
    UrlMode,
    file::{RawApi, RawConfig, RawLiveKit},
    invalid,
    secrets::{livekit_secret_warnings, read_secret_file, secret_from},
    workflows,
};

/// `value` seconds as a [`Duration`] when `ok` accepts it; else an error naming `key`.
/// A negative, NaN or too large a number is refused as well.
fn seconds(
    key: &str,
    value: f64,
    ok: impl Fn(f64) -> bool,
    reason: &str,
) -> Result<Duration, ConfigError> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if ok(value) => Ok(duration),
        _ => Err(invalid(key, reason)),
    }
}

/// At most seven days: the bound of every delay the delivery and repair settings take.
const WEEK_SECS: f64 = 7.0 * 86400.0;

pub(super) fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(value).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(key, "must be an http:// or https:// URL"));
    }
    Ok(())
}

impl RawConfig {
    pub(super) fn validate(self, env: &dyn Env) -> Result<Config, ConfigError> {
        if !self.server.webhook_path.starts_with('/') {
            return Err(invalid("server.webhook_path", "must start with '/'"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        let timeout = |key: &str, value: f64| {
            seconds(
                key,
                value,
                |s| (0.1..=3600.0).contains(&s),
                "must be between 0.1 and 3600 seconds",
            )
        };
        let header_timeout = timeout(
            "server.header_timeout_secs",
            self.server.header_timeout_secs,
        )?;
        let body_timeout = timeout("server.body_timeout_secs", self.server.body_timeout_secs)?;
        let idle_timeout = timeout("server.idle_timeout_secs", self.server.idle_timeout_secs)?;
        if self.server.max_connections == Some(0) {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        let summary_interval = seconds(
            "log.summary_interval_secs",
            self.log.summary_interval_secs,
            |s| (0.1..=86_400.0).contains(&s),
            "must be between 0.1 and 86400 seconds",
        )?;

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

        let rec = self.recordings;
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
        let recordings = RecordingsConfig {
            presign_expiry: Duration::from_secs(rec.presign_expiry_secs),
            bucket: rec.bucket,
            region: rec.region,
            endpoint: rec.endpoint,
            force_path_style: rec.force_path_style,
            url_mode: rec.url_mode,
            public_base_url: rec.public_base_url,
            verify_object: rec.verify_object,
        };

        let retention = seconds(
            "store.retention_days",
            self.store.retention_days * 86_400.0,
            |s| s > 0.0 && s <= 36_500.0 * 86_400.0,
            "must be a positive number of days",
        )?;
        let prune_interval = seconds(
            "store.prune_interval_secs",
            self.store.prune_interval_secs,
            |s| (1.0..=86_400.0).contains(&s),
            "must be between 1 and 86400 seconds",
        )?;
        let d = &self.delivery;
        let delivery_timeout = seconds(
            "delivery.timeout_secs",
            d.timeout_secs,
            |s| s > 0.0 && s <= 300.0,
            "must be in (0, 300]",
        )?;
        let retry_schedule = d
            .retry_schedule_secs
            .iter()
            .map(|&s| {
                seconds(
                    "delivery.retry_schedule_secs",
                    s,
                    |s| (0.0..=WEEK_SECS).contains(&s),
                    "each delay must be between 0 and 604800 seconds",
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The lease must outlast the longest attempt, or a slow but live delivery
        // would be taken over and sent twice.
        let longest = d.timeout_secs.max(d.hook_timeout_secs);
        let claim_lease = seconds(
            "delivery.claim_lease_secs",
            d.claim_lease_secs,
            |s| s >= 1.0 && s > longest,
            "must be at least 1 and longer than timeout_secs and hook_timeout_secs",
        )?;
        if d.concurrency == 0 {
            return Err(invalid("delivery.concurrency", "must be at least 1"));
        }
        if d.per_endpoint_concurrency == 0 {
            return Err(invalid(
                "delivery.per_endpoint_concurrency",
                "must be at least 1",
            ));
        }
        let delay = |key: &str, value: f64| {
            seconds(
                key,
                value,
                |s| s > 0.0 && s <= WEEK_SECS,
                "must be a positive number of seconds (at most 7 days)",
            )
        };
        let max_retry_after = delay("delivery.max_retry_after_secs", d.max_retry_after_secs)?;
        let breaker_open = delay("delivery.breaker_open_secs", d.breaker_open_secs)?;
        let breaker_max_open = delay("delivery.breaker_max_open_secs", d.breaker_max_open_secs)?;
        let hook_timeout = delay("delivery.hook_timeout_secs", d.hook_timeout_secs)?;
        let r = &self.reconcile;
        let reconcile = ReconcileConfig {
            interval: delay("reconcile.interval_secs", r.interval_secs)?,
            empty_room_timeout: delay(
                "reconcile.empty_room_timeout_secs",
                r.empty_room_timeout_secs,
            )?,
            egress_timeout: delay("reconcile.egress_timeout_secs", r.egress_timeout_secs)?,
        };
        if d.breaker_failures == 0 {
            return Err(invalid("delivery.breaker_failures", "must be at least 1"));
        }
        let api = self.api.validate()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "not a valid filter (e.g. \"info\")"));
        }

        let workflows = workflows::validate(self.workflows)?;
        let warnings = livekit_secret_warnings(&livekit);
        let d = self.delivery;
        let server = self.server;
        let store = self.store;

        Ok(Config {
            server: ServerConfig {
                listen: server.listen,
                webhook_path: server.webhook_path,
                max_body_bytes: server.max_body_bytes,
                header_timeout,
                body_timeout,
                idle_timeout,
                max_connections: server.max_connections,
            },
            livekit,
            store: StoreConfig {
                url: store.url,
                retention,
                prune_interval,
                max_connections: store.max_connections,
                instance_id: store.instance_id,
            },
            recordings,
            delivery: DeliveryConfig {
                timeout: delivery_timeout,
                retry_schedule,
                concurrency: d.concurrency,
                per_endpoint_concurrency: d.per_endpoint_concurrency,
                max_retry_after,
                breaker_failures: d.breaker_failures,
                breaker_open,
                breaker_max_open,
                hook_timeout,
                claim_lease,
            },
            log: LogConfig {
                level: self.log.level,
                format: self.log.format,
                summary_interval,
            },
            api,
            reconcile,
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
        let metrics_refresh = seconds(
            "api.metrics_refresh_secs",
            self.metrics_refresh_secs.unwrap_or(10.0),
            |s| (0.0..=3600.0).contains(&s),
            "must be between 0 and 3600 seconds",
        )?;
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(invalid(
                "api.token",
                "required when api.listen is not a loopback address",
            ));
        }
        Ok(ApiConfig {
            listen,
            token,
            metrics_refresh,
        })
    }
}
