//! The one TOML file an operator writes, turned into typed settings.
//!
//! Parsing rejects unknown keys (a typo must not silently change behaviour) and
//! validation names the offending key, so `check-config` can tell an operator exactly
//! what to fix. Durations are written as seconds (`*_secs`, `retention_days`) and held
//! as [`std::time::Duration`]s from the load on. Secrets may come inline, from files
//! (systemd credentials) or from LiveKit's usual environment variables; they are never
//! printed.
//!
//! `file` is the file's shape and its defaults, `settings` the validated result,
//! `validate` turns one into the other (`workflows` for the `[[workflows]]` entries),
//! and `secrets` reads and guards the secrets.

mod file;
mod secrets;
mod settings;
mod validate;
mod workflows;

use std::path::{Path, PathBuf};

pub use secrets::Secret;
pub(crate) use settings::MIN_API_TOKEN_BYTES;
pub use settings::{
    ApiConfig, ApiKey, DeliveryConfig, LiveKitConfig, LogConfig, LogFormat, ReconcileConfig,
    RecordingsConfig, ServerConfig, StoreConfig, UrlMode,
};

/// A workflow is part of the domain (`crate::call::workflow`); the configuration
/// builds them.
pub use crate::call::workflow::Workflow;

/// The workflows in force; swapped whole when the configuration is reloaded.
pub(crate) type SharedWorkflows = std::sync::Arc<arc_swap::ArcSwap<Vec<Workflow>>>;

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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) server: ServerConfig,
    pub livekit: LiveKitConfig,
    pub(crate) store: StoreConfig,
    pub(crate) recordings: RecordingsConfig,
    pub(crate) delivery: DeliveryConfig,
    pub log: LogConfig,
    pub(crate) api: ApiConfig,
    pub(crate) reconcile: ReconcileConfig,
    pub workflows: Vec<Workflow>,
    /// What is valid but unwise (a short LiveKit secret, the example secret, inline
    /// secrets in a file others can read): the daemon logs each at start and
    /// `check-config` prints them.
    pub warnings: Vec<String>,
}

/// Where the environment may supply LiveKit credentials, as LiveKit's own tools read them.
pub(crate) trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

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
        if let Some(warning) = secrets::exposed_inline_secrets(path, &text) {
            config.warnings.push(warning);
        }
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub(crate) fn parse(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let raw: file::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: parse_message(&e, text),
        })?;
        raw.validate(env)
    }
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

#[cfg(test)]
mod tests;
