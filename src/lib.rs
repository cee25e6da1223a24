//! voicekit-bridge: LiveKit room and egress webhooks in, VoiceKit call events out.
//!
//! The flow, one module each: `http` receives and `livekit` verifies; `ingest` runs the
//! pure `call` domain and commits to the `store`, whose outbox the `delivery` worker
//! drains to each workflow's endpoint, publishing recordings through `recording`.

pub mod call;
pub mod config;
pub mod delivery;
pub mod http;
pub mod ingest;
pub mod livekit;
pub mod recording;
pub mod shutdown;
pub mod simulate;
pub mod store;

use std::{io::Write, sync::Arc};

use anyhow::Context;
use tokio::{net::TcpListener, sync::Notify};

use crate::{
    config::{Config, SharedWorkflows},
    delivery::Worker,
    http::AppState,
    ingest::Ingestor,
    livekit::auth::WebhookVerifier,
    recording::Recordings,
    store::Store,
};

/// The line printed on stdout once the daemon accepts webhooks (tests and scripts wait
/// for it).
pub const READY_LINE: &str = "voicekit-bridge listening on";

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = Store::open(&config.store.url)
        .await
        .with_context(|| format!("opening the store at {}", config.store.url))?;
    let workflows: SharedWorkflows =
        Arc::new(arc_swap::ArcSwap::from_pointee(config.workflows.clone()));
    let wake = Arc::new(Notify::new());
    let (ingestor, writer) = Ingestor::start(store.clone(), workflows.clone(), wake.clone());
    let recordings = Recordings::new(config.recordings.clone()).await;
    let worker = Worker::new(store, recordings, &config.delivery, workflows, wake)
        .context("building the HTTP client for deliveries")?;

    let (trigger, shutdown) = shutdown::channel();
    let delivery = tokio::spawn(worker.run(shutdown.clone()));

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen = {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        verifier: WebhookVerifier::new(&config.livekit.keys),
        ingestor,
        max_body_bytes: config.server.max_body_bytes,
    });
    let app = http::router(&config.server.webhook_path, state);
    tracing::info!(%addr, path = %config.server.webhook_path, workflows = config.workflows.len(), "listening for LiveKit webhooks");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY_LINE} {addr}")?;
        out.flush()?;
    }

    let mut on_shutdown = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        on_shutdown.wait().await;
    });
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests and deliveries");
        trigger.fire();
    });
    server.await.context("serving HTTP")?;
    // The router (and with it the last Ingestor handle) is gone: the writer drains and stops.
    let _ = writer.await;
    let _ = delivery.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
