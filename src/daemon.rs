//! The composition root: opens the store, starts the writer, the delivery worker, the
//! repairs and the background jobs (`jobs`), binds the two listeners, and stops them all
//! together.
//!
//! Every long-running task listens to one [`CancellationToken`], cancelled by SIGTERM or
//! Ctrl-C, and runs under one [`TaskTracker`] that shutdown waits on for
//! [`STOP_GRACE`]. The essential tasks are supervised (`essential`): one that ends
//! before shutdown makes the daemon exit non-zero, naming it.

use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
    sync::Notify,
    task::{JoinError, JoinHandle},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Config, SharedWorkflows},
    delivery::{Worker, recording::Recordings},
    descriptors, essential,
    http::{
        self, AppState, GaugeCache,
        listener::{self, Limits},
        operator::OperatorState,
    },
    ingest::Ingestor,
    jobs::{self, reconcile::Reconciler},
    livekit::{api::LiveKitApi, auth::WebhookVerifier},
    metrics, reload,
    store::{self, Store},
    systemd,
};

/// The line printed on stdout once the daemon accepts webhooks (tests and scripts wait
/// for it).
pub(crate) const READY_LINE: &str = "voicekit-bridge listening on";
/// Printed just before [`READY_LINE`]: where the operator API listens.
pub const OPERATOR_API_LINE: &str = "voicekit-bridge operator API on";

/// How long shutdown waits for in-flight requests and deliveries before the process
/// exits anyway (below the unit's `TimeoutStopSec=30`). A delivery cut short stays
/// pending in the outbox and is sent after the restart.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(25);

/// Connections the operator listener holds at most: a few operators and scrapers.
const OPERATOR_MAX_CONNECTIONS: usize = 64;

/// How to run the daemon, beyond its configuration.
#[derive(Default)]
pub struct RunOptions {
    /// The file the configuration came from: SIGHUP reloads its workflows. Without it,
    /// SIGHUP is logged and ignored.
    pub config_path: Option<PathBuf>,
    /// Applies a reloaded `log.level`; `None` keeps the level (e.g. `RUST_LOG` is set).
    pub set_log_level: Option<reload::LogLevelSetter>,
}

/// Runs the daemon until SIGTERM or Ctrl-C, with SIGHUP reloads as `options` say. Tells
/// systemd `READY=1` once the store is open, migrated and the listener bound,
/// `STOPPING=1` on SIGTERM, and pings its watchdog when asked to (all no-ops without
/// `NOTIFY_SOCKET`).
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
    let store = open_store(&config, options.config_path.as_deref()).await?;
    let workflows: SharedWorkflows =
        Arc::new(arc_swap::ArcSwap::from_pointee(config.workflows.clone()));
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    // An early return (an error) stops whatever was started.
    let _stop_on_return = stop.clone().drop_guard();
    let tasks = TaskTracker::new();

    let (store_writer, mut writer) = store
        .start_writer(workflows.clone(), wake.clone())
        .context("starting the store's writer")?;
    let ingestor = Ingestor::new(store_writer.clone());
    let livekit = LiveKitApi::new(config.livekit.url.clone(), config.livekit.keys[0].clone());
    let recordings = Recordings::new(config.recordings.clone()).await;
    let reconciler = Reconciler {
        store: store.clone(),
        ingestor: ingestor.clone(),
        livekit: livekit.clone(),
        config: config.reconcile.clone(),
    };
    let worker = Worker::new(
        store.clone(),
        recordings,
        livekit,
        &config.delivery,
        workflows.clone(),
        wake.clone(),
        store_writer,
    )
    .context("building the HTTP client for deliveries")?;
    let circuits = worker.circuits();
    let mut delivery = tasks.spawn(worker.run(stop.clone()));
    let mut repairs = tasks.spawn(reconciler.run(stop.clone()));
    jobs::spawn_housekeeping(&tasks, &config, &store, &stop);

    let operator = Arc::new(OperatorState {
        store: store.clone(),
        workflows: workflows.clone(),
        token: config.api.token.clone(),
        delivery: wake.clone(),
        shutdown: stop.clone(),
        gauges: GaugeCache::new(config.api.metrics_refresh),
        circuits,
        sessions: http::dashboard::SessionKey::random(),
    });
    let webhooks = Arc::new(AppState {
        verifier: WebhookVerifier::new(&config.livekit.keys),
        ingestor,
        max_body_bytes: config.server.max_body_bytes,
        body_timeout: config.server.body_timeout,
        store: store.clone(),
        shutdown: stop.clone(),
    });
    let mut server = serve(&tasks, &config, max_connections, operator, webhooks, &stop).await?;
    jobs::watchdog::spawn(&tasks, store.clone(), stop.clone());
    match options.config_path {
        Some(path) => {
            let reloader =
                reload::Reloader::new(path, config, workflows, options.set_log_level, wake);
            drop(reloader.spawn(signals.hup));
        }
        None => drop(ignore_hangups(signals.hup)),
    }
    tasks.close();
    tokio::spawn(stop_on_signal(signals.term, stop.clone()));

    let mut essentials = [
        ("the store's writer", &mut writer),
        ("the delivery worker", &mut delivery),
        ("the repairs", &mut repairs),
    ];
    let served_already = supervise(&mut essentials, &mut server, &stop).await?;
    drain(served_already, server, tasks, writer).await?;
    // Closes the SQLite connections cleanly (and checkpoints the WAL) before the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), store.close()).await;
    Ok(())
}

/// Opens and migrates the store and takes this bridge's instance id in it.
async fn open_store(
    config: &Config,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<Store> {
    let store = Store::open(&config.store.url, config.store.max_connections)
        .await
        .with_context(|| {
            let url = store::redact_url(&config.store.url);
            format!("opening the store at {url}")
        })?;
    let instance = instance_id(config, config_path);
    let store = store
        .named(&instance)
        .await
        .context("taking this bridge's instance id")?;
    tracing::info!(instance_id = %instance, "delivery claims are taken under this instance id");
    Ok(store)
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

/// Binds and serves the operator API, then the webhook listener; prints the ready lines
/// and tells systemd. Returns the webhook listener's task.
async fn serve(
    tasks: &TaskTracker,
    config: &Config,
    max_connections: usize,
    operator: Arc<OperatorState>,
    webhooks: Arc<AppState>,
    stop: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding api.listen = {}", config.api.listen))?;
    let api_addr = api_listener.local_addr()?;
    let limits = Limits {
        header_timeout: config.server.header_timeout,
        body_timeout: config.server.body_timeout,
        idle_timeout: config.server.idle_timeout,
        max_connections: OPERATOR_MAX_CONNECTIONS,
    };
    tasks.spawn(listener::serve(
        api_listener,
        http::operator::router(operator),
        limits,
        metrics::Listener::Operator,
        stop.clone(),
    ));
    tracing::info!(addr = %api_addr, "operator API listening");

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen = {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let app = http::router(&config.server.webhook_path, webhooks);
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
    let limits = Limits {
        max_connections,
        ..limits
    };
    Ok(tasks.spawn(listener::serve(
        listener,
        app,
        limits,
        metrics::Listener::Webhook,
        stop.clone(),
    )))
}

/// Waits for the stop signal. An essential task or the webhook listener that ends
/// before it is a failure, named in the error; one that ends as asked in the same
/// wake-up as the stop signal is not. Returns the listener's result if it came first.
async fn supervise(
    essentials: &mut [(&'static str, &mut JoinHandle<()>)],
    server: &mut JoinHandle<()>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Result<(), JoinError>>> {
    let served_already = tokio::select! {
        // First: once shutdown began, the tasks below end as asked.
        biased;
        _ = stop.cancelled() => None,
        served = &mut *server => Some(served),
        ended = essential::first_to_end(essentials) => {
            // A task that ends as asked may wake this select before the stop signal
            // does: only the token tells a graceful end from a failure.
            if !stop.is_cancelled() {
                tracing::error!(task = ended.task, how = %ended.how, "an essential task ended; exiting so the service manager restarts the bridge");
                return Err(ended.into());
            }
            None
        }
    };
    // The server may finish in the same wake-up as the stop signal: only the token
    // tells a graceful end from a failure.
    if served_already.is_some() && !stop.is_cancelled() {
        if let Some(served) = served_already {
            served.context("the HTTP server task failed")?;
        }
        anyhow::bail!("the HTTP server stopped without being asked to");
    }
    Ok(served_already)
}

/// From the stop signal on, in-flight work has [`STOP_GRACE`] to finish: the webhook
/// listener first, then every tracked task. The router, the repairs and the worker hold
/// the last writer handles: once they are gone, the writer drains and stops.
async fn drain(
    served_already: Option<Result<(), JoinError>>,
    server: JoinHandle<()>,
    tasks: TaskTracker,
    writer: JoinHandle<()>,
) -> anyhow::Result<()> {
    let drained = tokio::time::timeout(STOP_GRACE, async move {
        let served = match served_already {
            Some(served) => served,
            None => server.await,
        };
        tasks.wait().await;
        // A task the supervision saw end has given up its result already.
        if !writer.is_finished() {
            let _ = writer.await;
        }
        served
    })
    .await;
    match drained {
        Ok(served) => {
            served.context("the HTTP server task failed")?;
            tracing::info!("stopped");
        }
        Err(_) => tracing::warn!(
            grace_secs = STOP_GRACE.as_secs(),
            "in-flight work did not finish in time; exiting anyway (undelivered events stay in the outbox)"
        ),
    }
    Ok(())
}

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

/// Cancels `stop` on SIGTERM or Ctrl-C, telling systemd `STOPPING=1`.
async fn stop_on_signal(mut term: Signal, stop: CancellationToken) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests and deliveries");
    systemd::stopping();
    stop.cancel();
}

/// Without a configuration file there is nothing to reload; SIGHUP must still not kill.
fn ignore_hangups(mut hup: Signal) -> JoinHandle<()> {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::warn!("SIGHUP ignored: no configuration file to reload");
        }
    })
}
