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

use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    breaker::{self, Breakers, Change, Circuits},
    policy::RetryPolicy,
    recording::Recordings,
    signing::SigningKey,
};
use crate::{
    config::{DeliveryConfig, SharedWorkflows, Workflow},
    livekit::api::LiveKitApi,
    store::{HOOK_EVENT, OutboxRow, Store, StoreError, Writer, now_ms},
};

/// How long the list of disabled endpoints is trusted while none is known: another
/// bridge on a shared store may disable one meanwhile. While some are known, the list
/// is read again at every wake-up, so an operator's `endpoints enable` takes effect at
/// once.
const DISABLED_TTL: Duration = Duration::from_secs(1);

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

/// Longest sleep while deliveries are in flight: a retry that falls due meanwhile waits
/// at most this long.
const BUSY_POLL: Duration = Duration::from_millis(20);

pub(crate) struct Worker {
    inner: Arc<Inner>,
    wake: Arc<Notify>,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) http: reqwest::Client,
    pub(super) recordings: Recordings,
    pub(super) livekit: LiveKitApi,
    pub(super) policy: RetryPolicy,
    pub(super) workflows: SharedWorkflows,
    pub(super) config: DeliveryConfig,
    pub(super) breakers: Arc<Mutex<Breakers>>,
    pub(super) in_flight: Mutex<InFlight>,
    /// Records outcomes and stores published bodies.
    pub(super) writer: Writer,
    /// Deliveries per slot whose outcome may still be committing after their request
    /// ended (`Writer::outcomes_waiting_per_slot`).
    pub(super) recording_per_slot: usize,
    /// Woken when a request finishes and frees its endpoint's slot (its outcome may
    /// still be committing).
    pub(super) slot_freed: Notify,
    /// Endpoints that answered 410 Gone, as last read from the store: their events
    /// are held (pending, not sent) until an operator enables them again.
    pub(super) disabled: Mutex<Disabled>,
    /// Set, and `stopped` notified, once the worker stops taking new work: outcomes
    /// still waiting for the store give up (their rows stay pending).
    pub(super) stopping: std::sync::atomic::AtomicBool,
    pub(super) stopped: Notify,
}

#[derive(Default)]
pub(super) struct Disabled {
    pub(super) urls: HashSet<String>,
    pub(super) read_at: Option<Instant>,
}

#[derive(Default)]
pub(super) struct InFlight {
    /// Rows being sent or having their outcome recorded: not to be sent again.
    pub(super) ids: HashSet<i64>,
    /// Requests under way, per endpoint and in all (`delivery.concurrency`).
    pub(super) per_endpoint: HashMap<String, usize>,
    pub(super) requests: usize,
    /// Rows finished since the current dispatch round read the outbox: that read may
    /// predate their outcome, so they must not be sent again from it.
    pub(super) finished: HashSet<i64>,
}

/// Where one outbox row goes and how it is sent.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) url: String,
    pub(super) keys: Vec<SigningKey>,
    pub(super) timeout: Duration,
}

impl Worker {
    pub(crate) fn new(
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
            config.breaker_open,
            config.breaker_max_open,
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
                policy: RetryPolicy::new(config.retry_schedule.clone()),
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
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let backlog = self.inner.backlog();
        let mut deadline = tokio::time::Instant::now();
        let mut dispatch = true;
        let mut windows = Windows::new();
        // Read the outbox again rather than trust the windows: new rows were queued,
        // or a sleep ended (a retry may be due).
        let mut reread = true;
        let mut checked: Option<Arc<Vec<Workflow>>> = None;
        while !shutdown.is_cancelled() {
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
                _ = shutdown.cancelled() => (true, false),
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
                fail::fail_point!("delivery-row");
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
        let lease = self.config.claim_lease.as_millis() as i64;
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

    pub(super) fn is_disabled(&self, url: &str) -> bool {
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

    pub(super) fn release_slot(&self, endpoint: &str) {
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            in_flight.requests = in_flight.requests.saturating_sub(1);
            if let Some(n) = in_flight.per_endpoint.get_mut(endpoint) {
                *n = n.saturating_sub(1);
            }
        }
        self.slot_freed.notify_one();
    }

    pub(super) fn endpoint_succeeded(&self, endpoint: &str) {
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

    pub(super) fn endpoint_failed(&self, endpoint: &str) {
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
}

fn target(workflows: &[Workflow], row: &OutboxRow, config: &DeliveryConfig) -> Option<Target> {
    let w = workflows.iter().find(|w| w.id == row.workflow_id)?;
    let (url, timeout) = if row.event_type == HOOK_EVENT {
        (w.call_started_hook.clone()?, config.hook_timeout)
    } else {
        (w.events_webhook_url.clone(), config.timeout)
    };
    Some(Target {
        url,
        keys: w.signing_keys.clone(),
        timeout,
    })
}
