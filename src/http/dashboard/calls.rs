//! Calls: found by id, room name, phone number, slug and time, a page at a time; and
//! one call's page, its timeline (LiveKit events in, VoiceKit events out, every
//! attempt), its recording and the hook's runtime data, with a retry per delivery.

use std::sync::Arc;

use askama::Template;
use axum::{
    Extension,
    extract::{Path, Query, State},
    http::StatusCode,
};
use serde::Deserialize;

use super::{Frame, PageError, PageResult, Session, format, html};
use crate::{
    http::operator::OperatorState,
    store::{AttemptRecord, CallSearch, CallSummary, DeliverySummary},
};

/// Calls on one page.
const PAGE: i64 = 50;
/// How much of a response body the attempts table shows before it is opened.
const EXCERPT_CHARS: usize = 120;

/// The search form as typed, shown again above its results.
#[derive(Deserialize, Default)]
pub struct CallsForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    before: Option<i64>,
}

impl CallsForm {
    fn search(&self) -> Result<CallSearch, String> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let call_id = match self.id.trim() {
            "" => None,
            id => Some(id.parse().map_err(|_| "call id: a number".to_owned())?),
        };
        Ok(CallSearch {
            call_id,
            room: text(&self.room),
            phone: text(&self.phone),
            slug: text(&self.slug),
            since_ms: format::parse_time("created from", &self.since)?,
            until_ms: format::parse_time("until", &self.until)?,
            before_id: self.before,
            limit: PAGE,
        })
    }

    /// This search's query string, for the page of calls older than `before`.
    fn page_after(&self, before: i64) -> String {
        format::query(&[
            ("id", self.id.clone()),
            ("room", self.room.clone()),
            ("phone", self.phone.clone()),
            ("slug", self.slug.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("before", before.to_string()),
        ])
    }
}

#[derive(Template)]
#[template(path = "dashboard/calls.html")]
struct CallsPage {
    frame: Frame,
    form: CallsForm,
    problem: Option<String>,
    calls: Vec<CallRow>,
    next: Option<String>,
}

struct CallRow {
    id: i64,
    room_name: String,
    workflow_slug: String,
    call_slug: String,
    phase: String,
    created: String,
}

impl From<CallSummary> for CallRow {
    fn from(c: CallSummary) -> CallRow {
        CallRow {
            id: c.id,
            created: format::time(c.created_at),
            room_name: c.room_name,
            workflow_slug: c.workflow_slug,
            call_slug: c.call_slug,
            phase: c.phase,
        }
    }
}

pub async fn list(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    form: Result<Query<CallsForm>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let form = form.map(|Query(f)| f).unwrap_or_default();
    let (calls, problem) = match form.search() {
        Ok(search) => (s.store.search_calls(&search).await?, None),
        Err(problem) => (Vec::new(), Some(problem)),
    };
    let next = match calls.last() {
        Some(last) if calls.len() as i64 == PAGE => Some(form.page_after(last.id)),
        _ => None,
    };
    let page = CallsPage {
        frame: Frame::new(&s, &session, "calls", "Calls".into()),
        problem,
        calls: calls.into_iter().map(CallRow::from).collect(),
        next,
        form,
    };
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "dashboard/call.html")]
struct CallPage {
    frame: Frame,
    notice: Option<String>,
    call: CallSummary,
    phone: Option<String>,
    created: String,
    duration: Option<i64>,
    recording: Option<String>,
    repairs: Vec<String>,
    timeline: Vec<Moment>,
    deliveries: Vec<DeliveryView>,
    runtime_data: Option<String>,
}

/// One line of a call's timeline.
struct Moment {
    at_ms: i64,
    at: String,
    class: &'static str,
    direction: &'static str,
    event: String,
    id: String,
    outcome: String,
}

struct DeliveryView {
    id: i64,
    event_type: String,
    status: String,
    webhook_id: String,
    created: String,
    last_error: Option<String>,
    attempts: Vec<AttemptView>,
}

struct AttemptView {
    at: String,
    class: &'static str,
    status: String,
    latency_ms: i64,
    endpoint: String,
    error: Option<String>,
    /// The start of the response body, and all of it.
    excerpt: Option<(String, String)>,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> AttemptView {
        let ok = a.status_code.is_some_and(|s| (200..300).contains(&s));
        AttemptView {
            at: format::time(a.attempted_at),
            class: if ok { "ok" } else { "failed" },
            status: a
                .status_code
                .map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}")),
            latency_ms: a.latency_ms,
            endpoint: a.endpoint.clone(),
            error: a.error.clone(),
            excerpt: a
                .response_body
                .as_ref()
                .filter(|b| !b.is_empty())
                .map(|b| (b.chars().take(EXCERPT_CHARS).collect(), b.clone())),
        }
    }
}

#[derive(Deserialize)]
pub struct CallQuery {
    retried: Option<i64>,
}

pub async fn show(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    Query(q): Query<CallQuery>,
) -> PageResult {
    let Path(id) =
        id.map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "a call id is a number"))?;
    let Some(detail) = s.store.call_detail(id).await? else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("no call {id}"),
        ));
    };
    let state = &detail.state;
    let text = |key: &str| state.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let phone = text("sip_phone").or_else(|| text("metadata_phone"));
    let repairs = state
        .get("repairs")
        .and_then(|r| r.as_array())
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut timeline: Vec<Moment> = detail
        .livekit_events
        .iter()
        .map(|e| Moment {
            at_ms: e.received_at,
            at: format::time(e.received_at),
            class: "in",
            direction: "LiveKit → bridge",
            event: e.event_type.clone(),
            id: e.event_id.clone(),
            outcome: "received".into(),
        })
        .collect();
    for d in &detail.deliveries {
        timeline.push(Moment {
            at_ms: d.created_at,
            at: format::time(d.created_at),
            class: "out",
            direction: "bridge → customer",
            event: d.event_type.clone(),
            id: d.webhook_id.clone(),
            outcome: format!("queued; now {}", d.status),
        });
    }
    for a in &detail.attempts {
        let event = detail
            .deliveries
            .iter()
            .find(|d| d.id == a.outbox_id)
            .map_or_else(String::new, |d| d.event_type.clone());
        let view = AttemptView::from(a);
        timeline.push(Moment {
            at_ms: a.attempted_at,
            at: view.at,
            class: "timeline-attempt",
            direction: "attempt",
            event,
            id: format!("delivery {}", a.outbox_id),
            outcome: format!("{}, {} ms", view.status, a.latency_ms),
        });
    }
    timeline.sort_by_key(|m| m.at_ms);
    let page = CallPage {
        frame: Frame::new(&s, &session, "calls", format!("Call {id}")),
        notice: q
            .retried
            .map(|d| format!("Delivery {d} is sent again now: its attempt appears below.")),
        phone,
        created: format::time(detail.call.created_at),
        duration: state.get("duration_seconds").and_then(|v| v.as_i64()),
        recording: recording_url(&detail.deliveries),
        repairs,
        timeline,
        deliveries: detail
            .deliveries
            .iter()
            .map(|d| DeliveryView {
                id: d.id,
                event_type: d.event_type.clone(),
                status: d.status.clone(),
                webhook_id: d.webhook_id.clone(),
                created: format::time(d.created_at),
                last_error: d.last_error.clone(),
                attempts: detail
                    .attempts
                    .iter()
                    .filter(|a| a.outbox_id == d.id)
                    .map(AttemptView::from)
                    .collect(),
            })
            .collect(),
        runtime_data: detail
            .runtime_data
            .as_ref()
            .map(|d| serde_json::to_string_pretty(d).unwrap_or_default()),
        call: detail.call,
    };
    Ok(html(&page))
}

/// The recording's address from the `call_finalized` body, when it is a web address
/// (a link of any other scheme is not followed from the dashboard).
fn recording_url(deliveries: &[DeliverySummary]) -> Option<String> {
    deliveries
        .iter()
        .filter(|d| d.event_type == "call_finalized")
        .find_map(|d| {
            let body: serde_json::Value = serde_json::from_str(&d.payload).ok()?;
            let url = body.pointer("/data/recording_url")?.as_str()?.to_owned();
            (url.starts_with("https://") || url.starts_with("http://")).then_some(url)
        })
}
