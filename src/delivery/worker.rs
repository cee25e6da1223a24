//! The delivery worker: takes due events from the outbox and POSTs them, signed.
//!
//! It dispatches continuously rather than in rounds, so one slow endpoint never holds
//! up another: concurrency is bounded overall and per endpoint, and an endpoint that
//! keeps failing is paused whole by its circuit breaker. Every attempt is recorded and
//! every failure rescheduled by the retry policy. A call's later events wait while an
//! earlier one is pending (the outbox query enforces it), so order per call holds
//! across retries and restarts.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use tokio::{sync::Notify, task::JoinSet};

use super::{
    breaker::{self, Breakers, Change, Circuits},
    policy::RetryPolicy,
    signing::{self, SigningKey},
};
use crate::{
    call::{machine::RecordingFile, voicekit},
    config::{DeliveryConfig, SharedWorkflows, Workflow},
    livekit::api::{LiveKitApi, merge_metadata},
    metrics,
    recording::{Published, Recordings},
    shutdown::Shutdown,
    store::{
        Attempt, AttemptOutcome, HOOK_EVENT, OutboxRow, Store, StoreError, WriteError, Writer,
        now_ms,
    },
};

/// `voicekit-bridge/0.1.0`: lets a customer's logs tell our requests from others.
pub const USER_AGENT_VALUE: &str = concat!("voicekit-bridge/", env!("CARGO_PKG_VERSION"));

/// How long the list of disabled endpoints is trusted while none is known: another
/// bridge on a shared store may disable one meanwhile. While some are known, the list
/// is read again at every wake-up, so an operator's `endpoints enable` takes effect at
/// once.
const DISABLED_TTL: Duration = Duration::from_secs(1);

/// The most response body kept with an attempt.
const RESPONSE_SNIPPET: usize = 4096;

/// Longest idle sleep: a safety net only, wake-ups come from ingest, due times and
/// finished deliveries.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// How many due rows of a workflow one read of the outbox takes (beyond those in
/// flight). The worker sends from this window as slots free up, and reads again only
/// when it is empty or stale: one query per request had been a third of the loop.
const WINDOW_ROWS: usize = 64;

/// How long a window is trusted while new rows are not announced: other bridges on a
/// shared store, and retries falling due, are seen within this.
const WINDOW_TTL: Duration = Duration::from_millis(50);

/// Due rows read from the outbox and not yet sent, per workflow.
type Windows = HashMap<i64, Window>;

#[derive(Default)]
struct Window {
    rows: VecDeque<OutboxRow>,
    read_at: Option<Instant>,
    hooks_only: bool,
}

impl Window {
    fn is_stale(&self, now: Instant, hooks_only: bool) -> bool {
        self.rows.is_empty()
            || self.hooks_only != hooks_only
            || self
                .read_at
                .is_none_or(|at| now.duration_since(at) > WINDOW_TTL)
    }
}

/// The first wait before recording an outcome again after the store refused it; it
/// doubles up to [`RECORD_RETRY_MAX`]. The request is not sent again meanwhile.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(10);

/// Longest sleep while deliveries are in flight: a retry that falls due meanwhile waits
/// at most this long.
const BUSY_POLL: Duration = Duration::from_millis(20);

pub struct Worker {
    inner: Arc<Inner>,
    wake: Arc<Notify>,
}

struct Inner {
    store: Store,
    http: reqwest::Client,
    recordings: Recordings,
    livekit: LiveKitApi,
    policy: RetryPolicy,
    workflows: SharedWorkflows,
    config: DeliveryConfig,
    breakers: Arc<Mutex<Breakers>>,
    in_flight: Mutex<InFlight>,
    /// Records outcomes and stores published bodies.
    writer: Writer,
    /// Deliveries per slot whose outcome may still be committing after their request
    /// ended (`Writer::outcomes_waiting_per_slot`).
    recording_per_slot: usize,
    /// Woken when a request finishes and frees its endpoint's slot (its outcome may
    /// still be committing).
    slot_freed: Notify,
    /// Endpoints that answered 410 Gone, as last read from the store: their events
    /// are held (pending, not sent) until an operator enables them again.
    disabled: Mutex<Disabled>,
    /// Set, and `stopped` notified, once the worker stops taking new work: outcomes
    /// still waiting for the store give up (their rows stay pending).
    stopping: std::sync::atomic::AtomicBool,
    stopped: Notify,
}

#[derive(Default)]
struct Disabled {
    urls: HashSet<String>,
    read_at: Option<Instant>,
}

#[derive(Default)]
struct InFlight {
    /// Rows being sent or having their outcome recorded: not to be sent again.
    ids: HashSet<i64>,
    /// Requests under way, per endpoint and in all (`delivery.concurrency`).
    per_endpoint: HashMap<String, usize>,
    requests: usize,
    /// Rows finished since the current dispatch round read the outbox: that read may
    /// predate their outcome, so they must not be sent again from it.
    finished: HashSet<i64>,
}

/// Where one outbox row goes and how it is sent.
#[derive(Clone)]
struct Target {
    url: String,
    keys: Vec<SigningKey>,
    timeout: Duration,
}

/// Why a delivery's outcome was not recorded (it is then sent again).
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Write(#[from] WriteError),
}

/// What a failed attempt tells the retry policy: its reason for the log, the status
/// the endpoint answered (if it answered) and when it asked to be tried again.
struct Answer<'a> {
    why: &'a str,
    status: Option<u16>,
    retry_after: Option<Duration>,
}

/// Why one attempt did not get a 2xx.
enum Failure {
    /// The endpoint answered; `retry_after` from 429/503.
    Status {
        code: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// The endpoint could not be reached, or timed out.
    Network(String),
    /// Nothing was sent (no endpoint configured, the recording could not be published).
    NotSent(String),
}

impl Worker {
    pub fn new(
        store: Store,
        recordings: Recordings,
        livekit: LiveKitApi,
        config: &DeliveryConfig,
        workflows: SharedWorkflows,
        wake: Arc<Notify>,
        writer: Writer,
    ) -> Result<Worker, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Standard Webhooks practice: a redirect is not a delivery.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let breakers = Breakers::new(
            config.breaker_failures,
            Duration::from_secs_f64(config.breaker_open_secs),
            Duration::from_secs_f64(config.breaker_max_open_secs),
        );
        Ok(Worker {
            inner: Arc::new(Inner {
                recording_per_slot: writer.outcomes_waiting_per_slot(),
                writer,
                slot_freed: Notify::new(),
                store,
                http,
                recordings,
                livekit,
                policy: RetryPolicy::new(&config.retry_schedule_secs),
                workflows,
                config: config.clone(),
                breakers: Arc::new(Mutex::new(breakers)),
                in_flight: Mutex::new(InFlight::default()),
                disabled: Mutex::new(Disabled::default()),
                stopping: std::sync::atomic::AtomicBool::new(false),
                stopped: Notify::new(),
            }),
            wake,
        })
    }

    /// Which endpoints' circuits are open, as the worker sees them.
    pub fn circuits(&self) -> Circuits {
        Circuits::new(self.inner.breakers.clone())
    }

    /// Delivers until shutdown; in-flight deliveries then finish (bounded by the
    /// timeout) and record their outcome, so nothing is left half-sent.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut tasks = JoinSet::new();
        let backlog = self.inner.backlog();
        let mut deadline = tokio::time::Instant::now();
        let mut dispatch = true;
        let mut windows = Windows::new();
        // Read the outbox again rather than trust the windows: new rows were queued,
        // or a sleep ended (a retry may be due).
        let mut reread = true;
        let mut checked: Option<Arc<Vec<Workflow>>> = None;
        while !shutdown.is_shutdown() {
            let workflows = self.inner.workflows.load_full();
            if !checked.as_ref().is_some_and(|c| Arc::ptr_eq(c, &workflows)) {
                self.inner.warn_of_unconfigured(&workflows).await;
                checked = Some(workflows);
            }
            if dispatch {
                let round = self.inner.dispatch(&mut tasks, &mut windows, reread).await;
                let sleep = match round {
                    // While deliveries are in flight their ends wake this loop many
                    // times a second; asking the store when the next row falls due
                    // on each of those wakes was half the loop's time under load.
                    Ok(()) if !tasks.is_empty() => self.inner.busy_sleep(),
                    Ok(()) => self.inner.idle_sleep().await,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the outbox; retrying in 1 s");
                        Duration::from_secs(1)
                    }
                };
                deadline = tokio::time::Instant::now() + sleep;
            }
            let was_full = tasks.len() >= backlog;
            (dispatch, reread) = tokio::select! {
                _ = self.wake.notified() => (true, true),
                _ = self.inner.slot_freed.notified() => (true, false),
                // A recorded outcome frees no request slot (the request's end did):
                // only worth a round when the worker was at its bound of unrecorded
                // outcomes.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                    (was_full || tasks.is_empty(), false)
                }
                _ = tokio::time::sleep_until(deadline) => (true, true),
                _ = shutdown.wait() => (true, false),
            };
        }
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.stopped.notify_waiters();
        // What was read but not sent goes back to the other bridges at once.
        let unsent: Vec<i64> = windows
            .values()
            .flat_map(|w| w.rows.iter().map(|r| r.id))
            .collect();
        if let Err(e) = self.inner.store.release(&unsent).await {
            tracing::warn!(error = %e, "could not release delivery claims; they lapse with their lease");
        }
        if !tasks.is_empty() {
            tracing::info!(in_flight = tasks.len(), "waiting for in-flight deliveries");
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!("delivery worker stopped");
    }
}

impl Inner {
    fn paused_workflows(&self, workflows: &[Workflow], now: Instant) -> Vec<i64> {
        let breakers = self.breakers.lock().expect("breaker lock");
        workflows
            .iter()
            .filter(|w| {
                matches!(
                    breakers.state(&w.events_webhook_url, now),
                    breaker::State::Open(_)
                ) || self.is_disabled(&w.events_webhook_url)
            })
            .map(|w| w.id)
            .collect()
    }

    /// The most deliveries at once, requests and outcomes being recorded together.
    fn backlog(&self) -> usize {
        self.config.concurrency * (1 + self.recording_per_slot)
    }

    /// How many more deliveries may start now: bounded by the requests under way
    /// (`delivery.concurrency`) and by the tasks not yet over.
    fn room(&self, tasks: usize) -> usize {
        let requests = self.in_flight.lock().expect("in-flight lock").requests;
        self.config
            .concurrency
            .saturating_sub(requests)
            .min(self.backlog().saturating_sub(tasks))
    }

    async fn dispatch(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        windows: &mut Windows,
        reread: bool,
    ) -> Result<(), StoreError> {
        let room = self.room(tasks.len());
        if room == 0 {
            return Ok(());
        }
        self.refresh_disabled(reread).await;
        let workflows = self.workflows.load_full();
        let gone: Vec<i64> = windows
            .iter()
            .filter(|(id, _)| !workflows.iter().any(|w| w.id == **id))
            .flat_map(|(_, window)| window.rows.iter().map(|r| r.id))
            .collect();
        windows.retain(|id, _| workflows.iter().any(|w| w.id == *id));
        self.store.release(&gone).await?;
        let now = Instant::now();
        let per_endpoint = self.config.per_endpoint_concurrency;
        let mut cleared = false;
        let mut chosen = Vec::new();
        let mut failed = None;
        let mut held = Vec::new();
        for w in workflows.iter() {
            if chosen.len() >= room {
                break;
            }
            let state = self
                .breakers
                .lock()
                .expect("breaker lock")
                .state(&w.events_webhook_url, now);
            let hooks_only =
                matches!(state, breaker::State::Open(_)) || self.is_disabled(&w.events_webhook_url);
            let (busy, unsettled) = {
                let in_flight = self.in_flight.lock().expect("in-flight lock");
                let busy = in_flight.per_endpoint.get(&w.events_webhook_url).copied();
                (busy.unwrap_or(0), in_flight.ids.len())
            };
            if (hooks_only || busy >= per_endpoint) && w.call_started_hook.is_none() {
                continue;
            }
            let window = windows.entry(w.id).or_default();
            if reread || window.is_stale(now, hooks_only) {
                if !cleared {
                    // From here on, a row that finishes may still be pending in a read.
                    self.in_flight
                        .lock()
                        .expect("in-flight lock")
                        .finished
                        .clear();
                    cleared = true;
                }
                // A failed read ends the round, but what it already chose is sent:
                // those rows are reserved as in flight.
                if let Err(e) = self
                    .read_window(window, w.id, hooks_only, unsettled, now)
                    .await
                {
                    failed = Some(e);
                    break;
                }
            }
            let mut kept = VecDeque::with_capacity(window.rows.len());
            for row in window.rows.drain(..) {
                if chosen.len() >= room {
                    kept.push_back(row);
                    continue;
                }
                let target = target(&workflows, &row, &self.config);
                let endpoint = target.as_ref().map(|t| t.url.clone()).unwrap_or_default();
                if row.event_type != HOOK_EVENT && self.is_disabled(&endpoint) {
                    // Read before its endpoint was disabled: held, not sent.
                    held.push(row.id);
                    continue;
                }
                let limit = match self
                    .breakers
                    .lock()
                    .expect("breaker lock")
                    .state(&endpoint, now)
                {
                    breaker::State::Closed => per_endpoint,
                    // One probe at a time while the circuit is deciding whether to close.
                    breaker::State::HalfOpen => 1,
                    breaker::State::Open(_) if row.event_type == HOOK_EVENT => per_endpoint,
                    breaker::State::Open(_) => 0,
                };
                {
                    let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                    if in_flight.ids.contains(&row.id) {
                        // Sent from an earlier read; never twice at once.
                        continue;
                    }
                    let busy = in_flight.per_endpoint.get(&endpoint).copied().unwrap_or(0);
                    if busy >= limit {
                        kept.push_back(row);
                        continue;
                    }
                    in_flight.ids.insert(row.id);
                    in_flight.requests += 1;
                    *in_flight.per_endpoint.entry(endpoint.clone()).or_insert(0) += 1;
                }
                chosen.push((row, target, endpoint));
            }
            window.rows = kept;
        }
        if let Err(e) = self.store.release(&held).await {
            failed.get_or_insert(e);
        }
        for (row, target, endpoint) in chosen {
            let inner = self.clone();
            tasks.spawn(async move {
                let id = row.id;
                if let Err(e) = inner.deliver(row, target, &endpoint).await {
                    tracing::error!(outbox_id = id, error = %e, "could not record a delivery attempt; it will be retried");
                }
                let mut in_flight = inner.in_flight.lock().expect("in-flight lock");
                in_flight.ids.remove(&id);
                in_flight.finished.insert(id);
            });
        }
        failed.map_or(Ok(()), Err)
    }

    /// Reads a workflow's due rows into its window. On a shared store the window is
    /// claimed as it is read (this instance's own claims renewed): another bridge may
    /// have read the same rows, and only what this one wins is its to send. Rows that
    /// left the window are released.
    async fn read_window(
        &self,
        window: &mut Window,
        workflow_id: i64,
        hooks_only: bool,
        unsettled: usize,
        now: Instant,
    ) -> Result<(), StoreError> {
        // Rows in flight are still pending and come first: read past all of
        // them, including those whose request is over but whose outcome is
        // still being committed (they no longer hold a slot).
        let limit = (unsettled + WINDOW_ROWS) as i64;
        let lease = self.config.claim_lease().as_millis() as i64;
        let won = self
            .store
            .claim_due(now_ms(), workflow_id, hooks_only, limit, lease)
            .await?;
        let rows: VecDeque<OutboxRow> = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            won.into_iter()
                .filter(|r| !in_flight.ids.contains(&r.id) && !in_flight.finished.contains(&r.id))
                .collect()
        };
        let kept: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let dropped: Vec<i64> = window
            .rows
            .iter()
            .map(|r| r.id)
            .filter(|id| !kept.contains(id))
            .collect();
        self.store.release(&dropped).await?;
        window.rows = rows;
        window.read_at = Some(now);
        window.hooks_only = hooks_only;
        Ok(())
    }

    /// Says so, at start and after each reload, when pending deliveries belong to a
    /// workflow the configuration no longer has: nothing sends them (their endpoint is
    /// unknown) until it is configured again, and the outbox's oldest pending age grows.
    async fn warn_of_unconfigured(&self, workflows: &[Workflow]) {
        let pending = match self.store.pending_by_workflow().await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "could not count pending deliveries per workflow");
                return;
            }
        };
        for (workflow_id, count) in pending {
            if !workflows.iter().any(|w| w.id == workflow_id) {
                tracing::warn!(
                    workflow_id,
                    pending = count,
                    "pending deliveries belong to a workflow that is not configured: they wait until it is configured again"
                );
            }
        }
    }

    /// The next look at the outbox while deliveries are in flight: soon, as their ends
    /// wake the loop anyway, but never later than an open circuit's reopening.
    fn busy_sleep(&self) -> Duration {
        let now = Instant::now();
        let reopen = self.breakers.lock().expect("breaker lock").next_reopen(now);
        reopen.map_or(BUSY_POLL, |at| BUSY_POLL.min(at - now))
    }

    async fn idle_sleep(&self) -> Duration {
        let now = Instant::now();
        let paused = self.paused_workflows(&self.workflows.load(), now);
        // Other bridges on a shared store queue work this one is not woken for, and
        // leave claims to take over when they die: look again soon.
        let mut sleep = self
            .store
            .unannounced_work_within()
            .map_or(IDLE_POLL, |within| IDLE_POLL.min(within));
        if let Ok(Some(at)) = self.store.next_due_after(now_ms(), &paused).await {
            sleep = sleep.min(Duration::from_millis((at - now_ms()).max(0) as u64));
        }
        if let Some(reopen) = self.breakers.lock().expect("breaker lock").next_reopen(now) {
            sleep = sleep.min(reopen - now);
        }
        sleep
    }

    /// Sends one row and records the outcome. The endpoint's slot is given back as soon
    /// as the request is over, so the next request overlaps this one's commit; the row
    /// itself stays in flight until its outcome is durable.
    async fn deliver(
        &self,
        mut row: OutboxRow,
        target: Option<Target>,
        slot: &str,
    ) -> Result<(), DeliveryError> {
        let attempted_at = now_ms();
        let started = Instant::now();
        let is_hook = row.event_type == HOOK_EVENT;
        let result = match &target {
            None => Err(Failure::NotSent(format!(
                "workflow {} has no {} configured",
                row.workflow_id,
                if is_hook {
                    "call_started_hook"
                } else {
                    "events_webhook_url"
                }
            ))),
            Some(t) => match self.prepare(&mut row).await {
                Err(e) => Err(Failure::NotSent(e)),
                Ok(()) => self.post(t, &row).await,
            },
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        self.release_slot(slot);
        let endpoint = target.map(|t| t.url).unwrap_or_default();
        let failures = row.attempts as usize + 1;

        let mut attempt = Attempt {
            outbox_id: row.id,
            attempted_at,
            endpoint: endpoint.clone(),
            status_code: None,
            error: None,
            latency_ms,
            response_body: None,
        };
        let outcome = match result {
            Ok((code, body)) => {
                attempt.status_code = Some(code);
                if is_hook {
                    attempt.error = self.apply_runtime_data(&row, &body).await.err();
                }
                attempt.response_body = Some(body);
                self.endpoint_succeeded(&endpoint);
                tracing::info!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id, latency_ms, "delivered");
                AttemptOutcome::Delivered
            }
            Err(failure) => {
                let reached_endpoint =
                    matches!(failure, Failure::Status { .. } | Failure::Network(_));
                let (why, status, retry_after) = match &failure {
                    Failure::Status {
                        code, retry_after, ..
                    } => (format!("HTTP {code}"), Some(*code), *retry_after),
                    Failure::Network(e) | Failure::NotSent(e) => (e.clone(), None, None),
                };
                match failure {
                    Failure::Status { code, body, .. } => {
                        attempt.status_code = Some(code);
                        attempt.response_body = Some(body);
                    }
                    Failure::Network(e) | Failure::NotSent(e) => attempt.error = Some(e),
                }
                if reached_endpoint {
                    self.endpoint_failed(&endpoint);
                }
                let answer = Answer {
                    why: &why,
                    status,
                    retry_after,
                };
                self.failure_outcome(&row, &endpoint, answer, failures, is_hook)
                    .await?
            }
        };
        if !is_hook {
            let metric = match &outcome {
                AttemptOutcome::Delivered => metrics::DeliveryOutcome::Delivered,
                AttemptOutcome::RetryAt(_) => metrics::DeliveryOutcome::Retry,
                AttemptOutcome::Dead => metrics::DeliveryOutcome::Failed,
            };
            let slug = self
                .workflows
                .load()
                .iter()
                .find(|w| w.id == row.workflow_id)
                .map_or_else(|| row.workflow_id.to_string(), |w| w.slug.clone());
            metrics::delivery_finished(&slug, metric, started.elapsed().as_secs_f64());
        }
        self.record(attempt, outcome, &row).await
    }

    /// Records an attempt's outcome. While the store refuses writes (a full disk) the
    /// row stays in flight, so it is not sent again, and the same outcome is recorded
    /// again with a growing wait until the store takes it: the customer sees the
    /// webhook-id once more at most (after a restart), not once per dispatch round.
    async fn record(
        &self,
        attempt: Attempt,
        outcome: AttemptOutcome,
        row: &OutboxRow,
    ) -> Result<(), DeliveryError> {
        let mut wait = RECORD_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let stopped = self.stopped.notified();
            let error = match self.writer.record(attempt.clone(), outcome).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(outbox_id = row.id, webhook_id = %row.webhook_id, failures,
                            "delivery outcome recorded after the store took writes again");
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return Err(error.into());
            }
            failures += 1;
            if failures == 1 {
                tracing::error!(outbox_id = row.id, webhook_id = %row.webhook_id, error = %error,
                    "cannot record a delivery's outcome; not sending it again, recording it once the store takes writes");
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped => return Err(error.into()),
            }
            wait = (wait * 2).min(RECORD_RETRY_MAX);
        }
    }

    /// Decides what a failed attempt leads to, and logs it once.
    async fn failure_outcome(
        &self,
        row: &OutboxRow,
        endpoint: &str,
        answer: Answer<'_>,
        failures: usize,
        is_hook: bool,
    ) -> Result<AttemptOutcome, StoreError> {
        let Answer {
            why,
            status,
            retry_after,
        } = answer;
        if is_hook {
            // Runtime data only helps while the call is starting: one try, then the
            // call goes on without it (its events never wait for the hook).
            tracing::warn!(call_id = row.call_id, endpoint, error = %why, "call_started_hook failed; the call continues without runtime data");
            return Ok(AttemptOutcome::Dead);
        }
        if status == Some(410) {
            // The customer says the URL is gone: disable it, for every bridge and across
            // restarts, and hold this event and the endpoint's others (pending, not
            // sent) until an operator enables it again.
            let newly = self
                .store
                .disable_endpoint(endpoint, "answered 410 Gone")
                .await?;
            self.disabled
                .lock()
                .expect("disabled lock")
                .urls
                .insert(endpoint.to_owned());
            if newly {
                tracing::error!(endpoint, call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                    "endpoint answered 410 Gone: disabled; its events are held until `voicekit-bridge endpoints enable` (or a new URL for the workflow)");
            }
            return Ok(AttemptOutcome::RetryAt(now_ms()));
        }
        let scheduled = self.policy.delay_after(failures);
        let delay = match (scheduled, retry_after) {
            (None, _) => None,
            (Some(d), None) => Some(d),
            // The endpoint said when: honour it, within reason.
            (Some(_), Some(asked)) => {
                Some(asked.min(Duration::from_secs_f64(self.config.max_retry_after_secs)))
            }
        };
        Ok(match delay {
            Some(delay) => {
                tracing::warn!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                    endpoint, attempt = failures, error = %why, retry_in_secs = delay.as_secs_f64(),
                    "delivery failed; will retry");
                AttemptOutcome::RetryAt(now_ms() + delay.as_millis() as i64)
            }
            None => {
                tracing::error!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                    endpoint, attempts = failures, error = %why,
                    "delivery failed for the last time; marked failed");
                AttemptOutcome::Dead
            }
        })
    }

    fn is_disabled(&self, url: &str) -> bool {
        self.disabled
            .lock()
            .expect("disabled lock")
            .urls
            .contains(url)
    }

    /// Reads the disabled endpoints again when the list may be stale: at a wake-up
    /// while some are disabled (an operator may have enabled one), else after
    /// [`DISABLED_TTL`]. A failed read keeps the last list.
    async fn refresh_disabled(&self, woken: bool) {
        let due = {
            let d = self.disabled.lock().expect("disabled lock");
            (woken && !d.urls.is_empty()) || d.read_at.is_none_or(|at| at.elapsed() >= DISABLED_TTL)
        };
        if !due {
            return;
        }
        match self.store.disabled_endpoints().await {
            Ok(list) => {
                let mut d = self.disabled.lock().expect("disabled lock");
                let urls: HashSet<String> = list.into_iter().map(|e| e.url).collect();
                for url in d.urls.difference(&urls) {
                    tracing::info!(endpoint = %url, "endpoint enabled again: its held events are sent");
                }
                d.urls = urls;
                d.read_at = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the disabled endpoints; keeping the last list")
            }
        }
    }

    fn release_slot(&self, endpoint: &str) {
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            in_flight.requests = in_flight.requests.saturating_sub(1);
            if let Some(n) = in_flight.per_endpoint.get_mut(endpoint) {
                *n = n.saturating_sub(1);
            }
        }
        self.slot_freed.notify_one();
    }

    fn endpoint_succeeded(&self, endpoint: &str) {
        if self
            .breakers
            .lock()
            .expect("breaker lock")
            .success(endpoint)
            == Change::Closed
        {
            tracing::info!(
                endpoint,
                "circuit closed: endpoint answers again, deliveries resume"
            );
        }
    }

    fn endpoint_failed(&self, endpoint: &str) {
        let change = self
            .breakers
            .lock()
            .expect("breaker lock")
            .failure(endpoint, Instant::now());
        if let Change::Opened { failures, pause } = change {
            tracing::warn!(
                endpoint,
                consecutive_failures = failures,
                pause_secs = pause.as_secs_f64(),
                "circuit opened: pausing all deliveries to this endpoint"
            );
        }
    }

    /// Publishes the recording URL into a `call_finalized` body before its first send.
    async fn prepare(&self, row: &mut OutboxRow) -> Result<(), String> {
        let Some(recording) = row.recording.take() else {
            return Ok(());
        };
        let file: RecordingFile = serde_json::from_str(&recording)
            .map_err(|e| format!("stored recording is corrupt: {e}"))?;
        let url = match self.recordings.publish(&file).await {
            Ok(Published::Url(url)) => Some(url),
            Ok(Published::Missing { bucket, key }) => {
                tracing::warn!(
                    call_id = row.call_id,
                    bucket,
                    key,
                    "recording not found in S3; call_finalized carries no URL"
                );
                None
            }
            Ok(Published::OtherBucket { bucket, key }) => {
                tracing::warn!(
                    call_id = row.call_id,
                    bucket,
                    key,
                    "the egress uploaded the recording to another bucket than [recordings] bucket; call_finalized carries no URL"
                );
                None
            }
            Err(e) => {
                row.recording = Some(recording);
                return Err(format!("recording: {e}"));
            }
        };
        let payload = voicekit::with_recording_url(&row.payload, url.as_deref())
            .map_err(|e| format!("stored payload is corrupt: {e}"))?;
        self.writer
            .publish(row.id, payload.clone())
            .await
            .map_err(|e| format!("saving the published URL: {e}"))?;
        row.payload = payload;
        Ok(())
    }

    async fn post(&self, target: &Target, row: &OutboxRow) -> Result<(u16, String), Failure> {
        let headers = delivery_headers(
            &row.webhook_id,
            now_ms() / 1000,
            &target.keys,
            row.payload.as_bytes(),
        )
        .ok_or_else(|| Failure::NotSent("stored webhook id is not a header value".into()))?;
        let response = self
            .http
            .post(&target.url)
            .timeout(target.timeout)
            .headers(headers)
            .body(row.payload.clone())
            .send()
            .await
            .map_err(|e| Failure::Network(describe(&e)))?;
        let code = response.status().as_u16();
        let retry_after = matches!(code, 429 | 503)
            .then(|| retry_after(response.headers()))
            .flatten();
        let body = snippet(response).await;
        if (200..300).contains(&code) {
            Ok((code, body))
        } else {
            Err(Failure::Status {
                code,
                body,
                retry_after,
            })
        }
    }

    /// Stores a hook's JSON object as the call's runtime data and writes it into the
    /// LiveKit room's metadata, so the agent can read it. An error is recorded with the
    /// attempt; the call's events are not affected.
    async fn apply_runtime_data(&self, row: &OutboxRow, body: &str) -> Result<(), String> {
        let Ok(serde_json::Value::Object(data)) = serde_json::from_str(body) else {
            return Err("the hook's 2xx answer is not a JSON object: no runtime data".into());
        };
        let text = serde_json::Value::Object(data.clone()).to_string();
        self.store
            .set_runtime_data(row.call_id, &text)
            .await
            .map_err(|e| format!("storing runtime data: {e}"))?;
        let call = self
            .store
            .call_state(row.call_id)
            .await
            .map_err(|e| format!("loading the call: {e}"))?
            .ok_or("the call is gone")?;
        let metadata = merge_metadata(&call.room_metadata, &data);
        self.livekit
            .update_room_metadata(&call.room_name, &metadata)
            .await
            .map_err(|e| {
                tracing::warn!(call_id = row.call_id, room = %call.room_name, error = %e, "could not write runtime data into the room's metadata");
                format!("runtime data stored, but not written to the room: {e}")
            })?;
        tracing::info!(call_id = row.call_id, room = %call.room_name, "runtime data written to the room's metadata");
        Ok(())
    }
}

/// The headers of one delivery attempt: JSON, our User-Agent, and the Standard
/// Webhooks `webhook-id` / `webhook-timestamp` / `webhook-signature` (when signing).
/// `None` if the id cannot be a header value.
pub fn delivery_headers(
    webhook_id: &str,
    timestamp: i64,
    keys: &[SigningKey],
    body: &[u8],
) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert("webhook-id", HeaderValue::from_str(webhook_id).ok()?);
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    if let Some(sig) = signing::signature(keys, webhook_id, timestamp, body) {
        headers.insert("webhook-signature", HeaderValue::from_str(&sig).ok()?);
    }
    Some(headers)
}

fn target(workflows: &[Workflow], row: &OutboxRow, config: &DeliveryConfig) -> Option<Target> {
    let w = workflows.iter().find(|w| w.id == row.workflow_id)?;
    let (url, timeout) = if row.event_type == HOOK_EVENT {
        (w.call_started_hook.clone()?, config.hook_timeout_secs)
    } else {
        (w.events_webhook_url.clone(), config.timeout_secs)
    };
    Some(Target {
        url,
        keys: w.signing_keys.clone(),
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// `Retry-After` in seconds (the HTTP-date form is rare from webhook receivers and is
/// treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The first 4 KiB of a response body, without reading the rest.
async fn snippet(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < RESPONSE_SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(RESPONSE_SNIPPET);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 120 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
