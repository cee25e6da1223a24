//! SIGHUP (`systemctl reload`): re-read the TOML file and swap in its workflows.
//!
//! The new file is validated in full (`Config::load`) before anything changes; a bad
//! file is refused with an error log line and the running configuration stays. A good
//! one replaces the workflows with one atomic pointer swap ([`SharedWorkflows`]), so a
//! request or delivery in flight sees either the old set or the new one, never a mix,
//! and none is dropped. `log.level` follows too (unless `RUST_LOG` is set); every other
//! section is fixed at start, and a change there is named in a warning as needing a
//! restart.

use std::{path::PathBuf, sync::Arc};

use tokio::{signal::unix::Signal, task::JoinHandle};

use crate::{
    config::{Config, ConfigError, SharedWorkflows},
    systemd,
};

/// Applies a new `log.level` filter to the running subscriber.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What one successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub workflows: usize,
    /// Sections that differ from the running ones but take effect only after a restart.
    pub need_restart: Vec<&'static str>,
}

/// Holds what is in force, and replaces the reloadable part of it on request.
pub(crate) struct Reloader {
    path: PathBuf,
    running: Config,
    workflows: SharedWorkflows,
    set_log_level: Option<LogLevelSetter>,
    /// Woken after a swap: the worker sends to the new endpoints at once, and checks
    /// whether pending deliveries lost their workflow.
    delivery: Arc<tokio::sync::Notify>,
}

impl Reloader {
    /// `running` is the configuration the daemon started with, read from `path`.
    pub(crate) fn new(
        path: PathBuf,
        running: Config,
        workflows: SharedWorkflows,
        set_log_level: Option<LogLevelSetter>,
        delivery: Arc<tokio::sync::Notify>,
    ) -> Reloader {
        Reloader {
            path,
            running,
            workflows,
            set_log_level,
            delivery,
        }
    }

    /// Re-reads the file; on success the new workflows (and log level) are in force.
    pub(crate) fn reload(&mut self) -> Result<Reloaded, ConfigError> {
        let new = Config::load(&self.path)?;
        let need_restart = restart_needed(&self.running, &new);
        if new.log.level != self.running.log.level
            && let Some(set) = &self.set_log_level
        {
            match set(&new.log.level) {
                Ok(()) => self.running.log.level = new.log.level.clone(),
                Err(e) => tracing::warn!(error = %e, "log.level not changed"),
            }
        }
        self.workflows.store(Arc::new(new.workflows.clone()));
        self.delivery.notify_one();
        self.running.workflows = new.workflows;
        Ok(Reloaded {
            workflows: self.running.workflows.len(),
            need_restart,
        })
    }

    /// Reloads on every signal `hup` delivers, for as long as the runtime runs.
    pub(crate) fn spawn(mut self, mut hup: Signal) -> JoinHandle<()> {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                systemd::reloading();
                match self.reload() {
                    Ok(done) => {
                        tracing::info!(
                            workflows = done.workflows,
                            path = %self.path.display(),
                            "configuration reloaded"
                        );
                        if !done.need_restart.is_empty() {
                            tracing::warn!(
                                sections = done.need_restart.join(", "),
                                "these sections changed but take effect only after a restart"
                            );
                        }
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        path = %self.path.display(),
                        "configuration reload failed; keeping the running configuration"
                    ),
                }
                systemd::reloaded(&format!(
                    "serving; {} workflow(s)",
                    self.running.workflows.len()
                ));
            }
        })
    }
}

/// The sections of `new` that differ from `old` and are not reloaded.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    // The section types hold no secret in their Debug output except livekit's keys,
    // which `Secret` redacts; those are compared by value below.
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let keys = |c: &Config| {
        c.livekit
            .keys
            .iter()
            .map(|k| (k.key.clone(), k.secret.expose().to_owned()))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    if differs(&old.server, &new.server) {
        out.push("server");
    }
    if keys(old) != keys(new) || old.livekit.url != new.livekit.url {
        out.push("livekit");
    }
    if differs(&old.store, &new.store) {
        out.push("store");
    }
    if differs(&old.recordings, &new.recordings) {
        out.push("recordings");
    }
    if differs(&old.delivery, &new.delivery) {
        out.push("delivery");
    }
    if old.log.format != new.log.format {
        out.push("log.format");
    }
    if differs(&old.api, &new.api) {
        out.push("api");
    }
    if differs(&old.reconcile, &new.reconcile) {
        out.push("reconcile");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const CONFIG: &str = r#"
[livekit]
api_key = "devkey"
api_secret = "secret"

[recordings]
bucket = "b"

[log]
level = "info"

[[workflows]]
id = 456
slug = "customer-support"
organization_id = 789
events_webhook_url = "https://one.example.com/hook"
"#;

    fn reloader(
        dir: &tempfile::TempDir,
        levels: Arc<Mutex<Vec<String>>>,
    ) -> (Reloader, SharedWorkflows) {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let config = Config::load(&path).unwrap();
        let workflows: SharedWorkflows =
            Arc::new(arc_swap::ArcSwap::from_pointee(config.workflows.clone()));
        let set: LogLevelSetter = Box::new(move |level| {
            levels.lock().unwrap().push(level.to_owned());
            Ok(())
        });
        let r = Reloader::new(
            path,
            config,
            workflows.clone(),
            Some(set),
            Arc::new(tokio::sync::Notify::new()),
        );
        (r, workflows)
    }

    #[test]
    fn a_valid_file_swaps_workflows_and_log_level() {
        let dir = tempfile::tempdir().unwrap();
        let levels = Arc::new(Mutex::new(Vec::new()));
        let (mut r, workflows) = reloader(&dir, levels.clone());
        let changed = CONFIG
            .replace("one.example.com", "two.example.com")
            .replace("level = \"info\"", "level = \"debug\"");
        std::fs::write(dir.path().join("config.toml"), changed).unwrap();
        let done = r.reload().unwrap();
        assert_eq!(done.workflows, 1);
        assert!(done.need_restart.is_empty(), "{:?}", done.need_restart);
        assert_eq!(
            workflows.load()[0].events_webhook_url,
            "https://two.example.com/hook"
        );
        assert_eq!(*levels.lock().unwrap(), ["debug"]);
    }

    #[test]
    fn a_bad_file_keeps_the_running_workflows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, workflows) = reloader(&dir, Arc::default());
        let bad = CONFIG.replace("https://one.example.com/hook", "not a url");
        std::fs::write(dir.path().join("config.toml"), bad).unwrap();
        let e = r.reload().unwrap_err().to_string();
        assert!(e.starts_with("workflows[0].events_webhook_url"), "{e}");
        assert_eq!(
            workflows.load()[0].events_webhook_url,
            "https://one.example.com/hook"
        );
    }

    #[test]
    fn sections_fixed_at_start_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = reloader(&dir, Arc::default());
        let changed = CONFIG
            .replace("api_secret = \"secret\"", "api_secret = \"rotated\"")
            .replace("bucket = \"b\"", "bucket = \"c\"");
        std::fs::write(dir.path().join("config.toml"), changed).unwrap();
        assert_eq!(r.reload().unwrap().need_restart, ["livekit", "recordings"]);
    }
}
