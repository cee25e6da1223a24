//! The ceilings the ingest / baseline ratio is read against: how fast this machine
//! answers webhooks that are checked and parsed, and that are checked, parsed and
//! durably stored in the cheapest way there is, under the baseline's load.
//!
//! Each is this bench binary re-run as a server (`--ceiling-server verify|append`),
//! a process of its own like the baseline, with the daemon's own token check and body
//! parse (`WebhookVerifier`, `WebhookEvent::parse`):
//! - `verify` answers `accepted` once both pass: a bridge that stores nothing;
//! - `append` then appends the body to a file and answers after an `fdatasync` that
//!   covers it, one sync for all bodies that arrived during the one before (group
//!   commit): a bridge whose only storage is a log, with no call, no state machine, no
//!   outbox and no deliveries.
//!
//! What `append` reaches is the cheapest durable store we could build, on the machine
//! of the run: a bridge that stores each webhook before its 200 does that and more.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    sync::{Arc, mpsc},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use clap::ValueEnum;
use tokio::sync::oneshot;
use voicekit_bridge::{
    config::{ApiKey, Secret},
    livekit::{auth::WebhookVerifier, event::WebhookEvent},
};

use crate::{
    WEBHOOK_PATH,
    calls::{API_KEY, API_SECRET},
    serve_until_killed,
};

pub const CEILING_READY: &str = "ceiling listening on ";

/// The file the `append` server writes, in its working directory.
pub const LOG_FILE: &str = "ceiling-append.log";

/// What a ceiling server does before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ceiling {
    /// Checks the token and parses the body.
    Verify,
    /// Also appends the body to a file and waits for its `fdatasync`.
    Append,
}

impl Ceiling {
    pub const ALL: [Ceiling; 2] = [Ceiling::Verify, Ceiling::Append];

    pub fn key(self) -> &'static str {
        match self {
            Ceiling::Verify => "verify",
            Ceiling::Append => "append",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Ceiling::Verify => "token + body checked, nothing stored",
            Ceiling::Append => "checked, then fdatasync'd append (group commit)",
        }
    }
}

/// How many bodies the `append` server's log at `path` holds (each after its length as
/// a little-endian `u32`).
pub fn logged(path: &std::path::Path) -> io::Result<usize> {
    let log = std::fs::read(path)?;
    let (mut at, mut n) = (0, 0);
    while let Some(len) = log.get(at..at + 4) {
        at += 4 + u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        n += 1;
    }
    if at != log.len() {
        return Err(io::Error::other("the log ends inside a body"));
    }
    Ok(n)
}

/// A body to append, and who to tell once it is durable.
type Append = (Bytes, oneshot::Sender<Result<(), io::ErrorKind>>);

struct Server {
    verifier: WebhookVerifier,
    log: Option<mpsc::Sender<Append>>,
}

/// Runs a ceiling server until the bench kills it.
pub fn serve(ceiling: Ceiling) -> anyhow::Result<()> {
    let verifier = WebhookVerifier::new(&[ApiKey {
        key: API_KEY.into(),
        secret: Secret::new(API_SECRET),
    }]);
    let log = match ceiling {
        Ceiling::Verify => None,
        Ceiling::Append => Some(start_log()?),
    };
    let server = Arc::new(Server { verifier, log });
    serve_until_killed(
        CEILING_READY,
        Router::new()
            .route(WEBHOOK_PATH, post(receive))
            .with_state(server),
    )
}

async fn receive(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if server.verifier.verify(authorization, &body).is_err() {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
    }
    if WebhookEvent::parse(&body).is_err() {
        return (StatusCode::BAD_REQUEST, r#"{"error":"bad body"}"#);
    }
    if let Some(log) = &server.log {
        let (done, synced) = oneshot::channel();
        if log.send((body, done)).is_err() || !matches!(synced.await, Ok(Ok(()))) {
            return (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"not stored"}"#);
        }
    }
    (StatusCode::OK, r#"{"status":"accepted"}"#)
}

/// The log's thread: takes every body that queued, writes them (each after its length)
/// in one `write`, syncs, and only then answers them; bodies that arrive meanwhile
/// make the next batch.
fn start_log() -> io::Result<mpsc::Sender<Append>> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)?;
    let (tx, rx) = mpsc::channel::<Append>();
    std::thread::Builder::new()
        .name("ceiling-log".into())
        .spawn(move || {
            let mut buf = Vec::with_capacity(1 << 20);
            let mut waiting = Vec::new();
            while let Ok(first) = rx.recv() {
                for (body, done) in std::iter::once(first).chain(rx.try_iter()) {
                    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    buf.extend_from_slice(&body);
                    waiting.push(done);
                }
                let result = file.write_all(&buf).and_then(|()| file.sync_data());
                buf.clear();
                for done in waiting.drain(..) {
                    let _ = done.send(result.as_ref().map(|_| ()).map_err(io::Error::kind));
                }
            }
        })?;
    Ok(tx)
}
