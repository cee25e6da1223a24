//! Deliveries: filtered by status, workflow and time, a page at a time; retrying one;
//! replaying a workflow's failed ones in a time range once the operator has seen how
//! many that is.

use std::sync::Arc;

use askama::Template;
use axum::{
    Extension, Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};
use serde::Deserialize;

use super::{Frame, PageError, PageResult, Session, check_csrf, format, html};
use crate::{
    http::operator::{OperatorState, enable_workflow_endpoint, workflow_id},
    store::{DeliverySearch, now_ms},
};

/// Deliveries on one page.
const PAGE: i64 = 100;
const STATUSES: &[&str] = &["pending", "delivered", "failed"];
/// The replay form's range starts this long ago.
const DAY_MS: i64 = 86_400_000;

#[derive(Deserialize, Default)]
pub struct DeliveriesForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    before: Option<i64>,
    replayed: Option<u64>,
}

#[derive(Template)]
#[template(path = "dashboard/deliveries.html")]
struct DeliveriesPage {
    frame: Frame,
    notice: Option<String>,
    form: DeliveriesForm,
    statuses: &'static [&'static str],
    workflows: Vec<String>,
    problem: Option<String>,
    deliveries: Vec<DeliveryRow>,
    next: Option<String>,
    /// This page, to come back to after a retry.
    back: String,
    replay_since: String,
    replay_until: String,
}

struct DeliveryRow {
    id: i64,
    call_id: i64,
    event_type: String,
    workflow: String,
    status: String,
    attempts: i64,
    created: String,
    last_error: String,
}

impl DeliveriesForm {
    fn search(&self, s: &OperatorState) -> Result<DeliverySearch, String> {
        let status = match self.status.trim() {
            "" => None,
            status if STATUSES.contains(&status) => Some(status.to_owned()),
            _ => return Err("status: pending, delivered or failed".into()),
        };
        let workflow_id = match self.workflow.trim() {
            "" => None,
            slug => Some(workflow_id(s, slug).map_err(|e| e.1)?),
        };
        Ok(DeliverySearch {
            status,
            workflow_id,
            since_ms: format::parse_time("created from", &self.since)?,
            until_ms: format::parse_time("until", &self.until)?,
            before_id: self.before,
            limit: PAGE,
        })
    }

    fn query(&self, before: Option<i64>) -> String {
        format::query(&[
            ("status", self.status.clone()),
            ("workflow", self.workflow.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("before", before.map(|b| b.to_string()).unwrap_or_default()),
        ])
    }
}

pub async fn list(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    form: Result<Query<DeliveriesForm>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let form = form.map(|Query(f)| f).unwrap_or_default();
    let workflows = s.workflows.load();
    let (deliveries, problem) = match form.search(&s) {
        Ok(search) => (s.store.search_deliveries(&search).await?, None),
        Err(problem) => (Vec::new(), Some(problem)),
    };
    let next = match deliveries.last() {
        Some(last) if deliveries.len() as i64 == PAGE => Some(form.query(Some(last.id))),
        _ => None,
    };
    let slug = |id: i64| {
        workflows
            .iter()
            .find(|w| w.id == id)
            .map_or_else(|| format!("#{id}"), |w| w.slug.clone())
    };
    let now = now_ms();
    let page = DeliveriesPage {
        frame: Frame::new(&s, &session, "deliveries", "Deliveries".into()),
        notice: form
            .replayed
            .map(|n| format!("{n} failed deliveries are sent again now.")),
        statuses: STATUSES,
        workflows: workflows.iter().map(|w| w.slug.clone()).collect(),
        problem,
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryRow {
                id: d.id,
                call_id: d.call_id,
                workflow: slug(d.workflow_id),
                created: format::time(d.created_at),
                event_type: d.event_type,
                status: d.status,
                attempts: d.attempts,
                last_error: d.last_error.unwrap_or_default(),
            })
            .collect(),
        next,
        back: match form.query(form.before) {
            q if q.is_empty() => "/deliveries".into(),
            q => format!("/deliveries?{q}"),
        },
        replay_since: format::field_time(now - DAY_MS),
        replay_until: format::field_time(now + 60_000),
        form,
    };
    Ok(html(&page))
}

#[derive(Deserialize)]
pub struct RetryForm {
    csrf: String,
    #[serde(default)]
    back: String,
}

/// Sends one delivery again now, whatever its status, and goes back where the
/// operator was (the call's page says which delivery was retried).
pub async fn retry(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    Form(form): Form<RetryForm>,
) -> PageResult {
    check_csrf(&session, &form.csrf)?;
    let Path(id) =
        id.map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "a delivery id is a number"))?;
    let Some(workflow) = s.store.retry_now(id).await? else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("no delivery {id}"),
        ));
    };
    enable_workflow_endpoint(&s, workflow).await?;
    tracing::info!(
        outbox_id = id,
        "delivery put back in line by an operator (dashboard)"
    );
    s.delivery.notify_one();
    let back = format::local_path(&form.back);
    let to = if back.starts_with("/calls/") && !back.contains('?') {
        format!("{back}?retried={id}")
    } else {
        back.to_owned()
    };
    Ok(Redirect::to(&to).into_response())
}

#[derive(Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
    workflow: String,
    since: String,
    until: String,
}

struct ReplayRange {
    workflow_id: i64,
    since_ms: i64,
    until_ms: i64,
}

impl ReplayForm {
    fn range(&self, s: &OperatorState) -> Result<ReplayRange, PageError> {
        let bad = |e: String| PageError::new(StatusCode::BAD_REQUEST, e);
        let required = |field: &str, value: &str| {
            format::parse_time(field, value)
                .map_err(bad)?
                .ok_or_else(|| bad(format!("{field}: a time is needed")))
        };
        Ok(ReplayRange {
            workflow_id: workflow_id(s, &self.workflow)?,
            since_ms: required("since", &self.since)?,
            until_ms: required("until", &self.until)?,
        })
    }
}

#[derive(Template)]
#[template(path = "dashboard/replay.html")]
struct ReplayPage {
    frame: Frame,
    count: i64,
    workflow: String,
    since: String,
    until: String,
    since_text: String,
    until_text: String,
}

/// Says how many failed deliveries a replay would send, with the button that does it.
pub async fn confirm_replay(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    Query(form): Query<ReplayForm>,
) -> PageResult {
    let range = form.range(&s)?;
    let count = s
        .store
        .count_failed(range.workflow_id, range.since_ms, range.until_ms)
        .await?;
    let page = ReplayPage {
        frame: Frame::new(
            &s,
            &session,
            "deliveries",
            "Replay failed deliveries".into(),
        ),
        count,
        // The times as given: the replay counts exactly what was counted here.
        since: form.since,
        until: form.until,
        workflow: form.workflow,
        since_text: format::time(range.since_ms),
        until_text: format::time(range.until_ms),
    };
    Ok(html(&page))
}

/// Sends a workflow's failed deliveries of a time range again.
pub async fn replay(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<ReplayForm>,
) -> PageResult {
    check_csrf(&session, &form.csrf)?;
    let range = form.range(&s)?;
    let n = s
        .store
        .replay_failed(range.workflow_id, range.since_ms, range.until_ms)
        .await?;
    enable_workflow_endpoint(&s, range.workflow_id).await?;
    tracing::info!(workflow = %form.workflow, since = %form.since, until = %form.until,
        replayed = n, "failed deliveries replayed by an operator (dashboard)");
    s.delivery.notify_one();
    let to = format!(
        "/deliveries?{}",
        format::query(&[
            ("workflow", form.workflow.clone()),
            ("replayed", n.to_string())
        ])
    );
    Ok(Redirect::to(&to).into_response())
}
