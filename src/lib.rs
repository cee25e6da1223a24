//! voicekit-bridge: LiveKit room and egress webhooks in, VoiceKit call events out.
//!
//! The flow, one module each: `http` receives and `livekit` verifies; `ingest` runs the
//! pure `call` domain and commits to the `store`, whose outbox the `delivery` worker
//! drains to each workflow's endpoint, publishing recordings through `recording`.

pub mod call;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod descriptors;
pub mod essential;
pub mod http;
pub mod ingest;
pub mod livekit;
pub mod metrics;
pub mod reconcile;
pub mod recording;
pub mod reload;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod testkit;

use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
    sync::Notify,
};

use crate::{
    config::{Config, SharedWorkflows},
    delivery::Worker,
    http::{
        AppState,
        listener::{self, Limits},
        operator::OperatorState,
    },
    ingest::Ingestor,
    livekit::{api::LiveKitApi, auth::WebhookVerifier},
    reconcile::Reconciler,
    recording::Recordings,
    store::Store,
};

/// The line printed on stdout once the daemon accepts webhooks (tests and scripts wait
/// for it).
pub const READY_LINE: &str = "voicekit-bridge listening on";
/// Printed just before [`READY_LINE`]: where the operator API listens.
pub const OPERATOR_API_LINE: &str = "voicekit-bridge operator API on";

/// How long shutdown waits for in-flight requests and deliveries before the process
/// exits anyway (below the unit's `TimeoutStopSec=30`). A delivery cut short stays
/// pending in the outbox and is sent after the restart.
pub const STOP_GRACE: Duration = Duration::from_secs(25);

/// How to run the daemon, beyond its configuration.
#[derive(Default)]
pub struct RunOptions {
    /// The file the configuration came from: SIGHUP reloads its workflows. Without it,
    /// SIGHUP is logged and ignored.
    pub config_path: Option<PathBuf>,
    /// Applies a reloaded `log.level`; `None` keeps the level (e.g. `RUST_LOG` is set).
    pub set_log_level: Option<reload::LogLevelSetter>,
}

/// This bridge's name in delivery claims: `[store] instance_id`, else the host name and
/// the config file's absolute path (the same after a restart of the same service, and
/// different for each config file on one host).
fn instance_id(config: &Config, config_path: Option<&std::path::Path>) -> String {
    if let Some(id) = &config.store.instance_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    match config_path {
        Some(path) => format!("{host}:{}", path.display()),
        None => host,
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_with(config, RunOptions::default()).await
}

/// [`run`], with SIGHUP reloads as `options` say. Tells systemd `READY=1` once the store
/// is open, migrated and the listener bound, `STOPPING=1` on SIGTERM, and pings its
/// watchdog when asked to (all no-ops without `NOTIFY_SOCKET`).
pub async fn run_with(config: Config, options: RunOptions) -> anyhow::Result<()> {
    // Before anything slow: until a handler is installed, SIGTERM and SIGHUP kill.
    let signals = Signals::install().context("installing signal handlers")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "voicekit-bridge starting"
    );
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let max_connections = connection_cap(&config);
    let store = Store::open(&config.store.url, config.store.max_connections)
        .await
        .with_context(|| {
            let url = store::redact_url(&config.store.url);
            format!("opening the store at {url}")
        })?;
    let instance = instance_id(&config, options.config_path.as_deref());
    let store = store
        .named(&instance)
        .await
        .context("taking this bridge's instance id")?;
    tracing::info!(instance_id = %instance, "delivery claims are taken under this instance id");
    let workflows: SharedWorkflows =
        Arc::new(arc_swap::ArcSwap::from_pointee(config.workflows.clone()));
    let wake = Arc::new(Notify::new());
    let reloader = options.config_path.map(|path| {
        reload::Reloader::new(
            path,
            config.clone(),
            workflows.clone(),
            options.set_log_level,
            wake.clone(),
        )
    });
    let ops_store = store.clone();
    let (store_writer, mut writer) = store
        .start_writer(workflows.clone(), wake.clone())
        .context("starting the store's writer")?;
    let ingestor = Ingestor::new(store_writer.clone());
    let recordings = Recordings::new(config.recordings.clone()).await;
    let livekit = LiveKitApi::new(config.livekit.url.clone(), config.livekit.keys[0].clone());
    let (trigger, shutdown) = shutdown::channel();
    let reconciler = Reconciler {
        store: store.clone(),
        ingestor: ingestor.clone(),
        livekit: livekit.clone(),
        config: config.reconcile.clone(),
    };
    let worker = Worker::new(
        store,
        recordings,
        livekit,
        &config.delivery,
        workflows.clone(),
        wake.clone(),
        store_writer,
    )
    .context("building the HTTP client for deliveries")?;
    let operator = Arc::new(OperatorState {
        store: ops_store.clone(),
        workflows,
        token: config.api.token.clone(),
        delivery: wake,
        shutdown: shutdown.clone(),
        gauges: http::GaugeCache::new(Duration::from_secs_f64(config.api.metrics_refresh_secs)),
        circuits: worker.circuits(),
        sessions: http::dashboard::SessionKey::random(),
    });

    let mut delivery = tokio::spawn(worker.run(shutdown.clone()));
    let summary = http::summary::spawn(config.log.summary_interval(), shutdown.clone());
    let mut repairs = tokio::spawn(reconciler.run(shutdown.clone()));
    tokio::spawn(store::keep_checkpointed(
        ops_store.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(store::keep_vacuumed(ops_store.clone(), shutdown.clone()));
    tokio::spawn(store::keep_pruned(
        ops_store.clone(),
        Duration::from_secs_f64(config.store.retention_days * 86_400.0),
        Duration::from_secs_f64(config.store.prune_interval_secs),
        shutdown.clone(),
    ));

    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding api.listen = {}", config.api.listen))?;
    let api_addr = api_listener.local_addr()?;
    let limits = Limits {
        header_timeout: config.server.header_timeout(),
        body_timeout: config.server.body_timeout(),
        idle_timeout: config.server.idle_timeout(),
        max_connections: OPERATOR_MAX_CONNECTIONS,
    };
    tokio::spawn(listener::serve(
        api_listener,
        http::operator::router(operator),
        limits,
        metrics::Listener::Operator,
        shutdown.clone(),
    ));
    tracing::info!(addr = %api_addr, "operator API listening");

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen = {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        verifier: WebhookVerifier::new(&config.livekit.keys),
        ingestor,
        max_body_bytes: config.server.max_body_bytes,
        body_timeout: config.server.body_timeout(),
        store: ops_store.clone(),
        shutdown: shutdown.clone(),
    });
    let app = http::router(&config.server.webhook_path, state);
    tracing::info!(
        %addr,
        path = %config.server.webhook_path,
        workflows = config.workflows.len(),
        max_connections,
        "listening for LiveKit webhooks"
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{OPERATOR_API_LINE} {api_addr}")?;
        writeln!(out, "{READY_LINE} {addr}")?;
        out.flush()?;
    }
    systemd::ready(addr, config.workflows.len());
    systemd::spawn_watchdog(ops_store.clone(), shutdown.clone());
    match reloader {
        Some(reloader) => drop(reloader.spawn(signals.hup)),
        None => drop(ignore_hangups(signals.hup)),
    }

    let mut server = tokio::spawn(listener::serve(
        listener,
        app,
        Limits {
            max_connections,
            ..limits
        },
        metrics::Listener::Webhook,
        shutdown.clone(),
    ));
    let term = signals.term;
    tokio::spawn(async move {
        wait_for_stop(term).await;
        tracing::info!("shutting down: finishing in-flight requests and deliveries");
        systemd::stopping();
        trigger.fire();
    });

    let mut stopping = shutdown.clone();
    let mut essentials = [
        ("the store's writer", &mut writer),
        ("the delivery worker", &mut delivery),
        ("the repairs", &mut repairs),
    ];
    let served_already = tokio::select! {
        // First: once shutdown began, the tasks below end as asked.
        biased;
        _ = stopping.wait() => None,
        served = &mut server => Some(served),
        ended = essential::first_to_end(&mut essentials) => {
            // A task that ends as asked may wake this select before the stop signal
            // does: only the flag tells a graceful end from a failure.
            if !shutdown.is_shutdown() {
                tracing::error!(task = ended.task, how = %ended.how, "an essential task ended; exiting so the service manager restarts the bridge");
                return Err(ended.into());
            }
            None
        }
    };
    // The server may finish in the same wake-up as the stop signal: only the flag tells
    // a graceful end from a failure.
    if served_already.is_some() && !shutdown.is_shutdown() {
        if let Some(served) = served_already {
            served.context("the HTTP server task failed")?;
        }
        anyhow::bail!("the HTTP server stopped without being asked to");
    }
    // From the stop signal on, in-flight work has STOP_GRACE to finish.
    let drained = tokio::time::timeout(STOP_GRACE, async move {
        let served = match served_already {
            Some(served) => served,
            None => server.await,
        };
        // The router, the repairs and the worker hold the last writer handles: once they
        // are gone, the writer drains and stops.
        // A task the watch above saw end has given up its result already.
        for task in [repairs, delivery, writer] {
            if !task.is_finished() {
                let _ = task.await;
            }
        }
        served
    })
    .await;
    match drained {
        Ok(served) => {
            served.context("the HTTP server task failed")?;
            let _ = summary.await;
            tracing::info!("stopped");
        }
        Err(_) => tracing::warn!(
            grace_secs = STOP_GRACE.as_secs(),
            "in-flight work did not finish in time; exiting anyway (undelivered events stay in the outbox)"
        ),
    }
    // Closes the SQLite connections cleanly (and checkpoints the WAL) before the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), ops_store.close()).await;
    Ok(())
}

/// Connections the operator listener holds at most: a few operators and scrapers.
const OPERATOR_MAX_CONNECTIONS: usize = 64;

/// Raises the open-file limit (logging what it is) and picks the webhook listener's
/// connection cap under it.
fn connection_cap(config: &Config) -> usize {
    let limit = match descriptors::raise_open_file_limit() {
        Ok(limit) => {
            if limit.now > limit.was {
                tracing::info!(
                    from = limit.was,
                    to = limit.now,
                    "raised the open-file limit to its hard limit"
                );
            } else {
                tracing::info!(limit = limit.now, "open-file limit");
            }
            limit.now
        }
        Err(e) => {
            let limit = descriptors::open_file_limit().unwrap_or(u64::MAX);
            tracing::warn!(error = %e, limit, "cannot raise the open-file limit; keeping it");
            limit
        }
    };
    let (cap, warning) = descriptors::connection_cap(config.server.max_connections, limit);
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    cap
}

/// The signals the daemon handles, installed first thing so none is lost or fatal.
struct Signals {
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

async fn wait_for_stop(mut term: Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Without a configuration file there is nothing to reload; SIGHUP must still not kill.
fn ignore_hangups(mut hup: Signal) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::warn!("SIGHUP ignored: no configuration file to reload");
        }
    })
}
