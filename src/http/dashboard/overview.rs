//! The overview: calls and the outbox's backlog over the last hour, traffic per minute
//! as a chart drawn on the server, and every endpoint with its state (healthy, its
//! circuit open until a time, or disabled by a 410) and its workflow's failed and
//! pending deliveries since the oldest.

use std::{sync::Arc, time::UNIX_EPOCH};

use askama::Template;
use axum::{
    Extension, Form,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};
use serde::Deserialize;

use super::{Frame, PageError, PageResult, Session, check_csrf, format, html};
use crate::{
    http::operator::OperatorState,
    store::{MinuteTraffic, now_ms},
};

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct OverviewPage {
    frame: Frame,
    notice: Option<String>,
    calls_live: i64,
    calls_ended: i64,
    calls_finalized: i64,
    pending: i64,
    failed: i64,
    oldest_pending: Option<String>,
    chart: Chart,
    endpoints: Vec<EndpointRow>,
}

/// Two bars a minute, webhooks in and attempts out, scaled to the busiest minute.
struct Chart {
    width: i64,
    height: i64,
    bar_width: i64,
    peak: i64,
    total_in: i64,
    total_out: i64,
    bars: Vec<Bar>,
}

struct Bar {
    x: i64,
    out_x: i64,
    in_y: i64,
    in_height: i64,
    out_y: i64,
    out_height: i64,
    label: String,
}

const CHART_HEIGHT: i64 = 100;
const BAR_WIDTH: i64 = 4;
const BAR_GAP: i64 = 2;

impl Chart {
    fn of(minutes: &[MinuteTraffic]) -> Chart {
        let peak = minutes
            .iter()
            .map(|m| m.webhooks_in.max(m.events_out))
            .max()
            .unwrap_or(0);
        let scale = |n: i64| {
            if peak == 0 {
                0
            } else {
                // A minute with any traffic shows at least a sliver.
                (n * CHART_HEIGHT / peak).max(i64::from(n > 0))
            }
        };
        let step = 2 * BAR_WIDTH + BAR_GAP;
        let bars = minutes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let x = i as i64 * step;
                let (in_height, out_height) = (scale(m.webhooks_in), scale(m.events_out));
                Bar {
                    x,
                    out_x: x + BAR_WIDTH,
                    in_y: CHART_HEIGHT - in_height,
                    in_height,
                    out_y: CHART_HEIGHT - out_height,
                    out_height,
                    label: format!(
                        "{}: {} webhooks in, {} attempts out",
                        format::time(m.minute_ms),
                        m.webhooks_in,
                        m.events_out
                    ),
                }
            })
            .collect();
        Chart {
            width: (minutes.len() as i64 * step).max(step),
            height: CHART_HEIGHT,
            bar_width: BAR_WIDTH,
            peak,
            total_in: minutes.iter().map(|m| m.webhooks_in).sum(),
            total_out: minutes.iter().map(|m| m.events_out).sum(),
            bars,
        }
    }
}

struct EndpointRow {
    workflow: Option<String>,
    url: String,
    /// `healthy`, `open` or `disabled`, for the eye.
    class: &'static str,
    state: &'static str,
    detail: String,
    disabled: bool,
    /// The workflow's failed deliveries and when the oldest was queued.
    failed: i64,
    failed_since: String,
    pending: i64,
    pending_since: String,
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    enabled: Option<String>,
}

pub async fn page(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    Query(q): Query<OverviewQuery>,
) -> PageResult {
    let overview = s.store.overview().await?;
    let disabled = s.store.disabled_endpoints().await?;
    let now = now_ms();
    let workflows = s.workflows.load();
    let mut endpoints: Vec<EndpointRow> = workflows
        .iter()
        .map(|w| {
            let url = &w.events_webhook_url;
            let (class, state, detail) = match disabled.iter().find(|d| &d.url == url) {
                Some(d) => (
                    "disabled",
                    "disabled by 410",
                    format!("since {} ({})", format::time(d.disabled_at), d.reason),
                ),
                None => match s.circuits.open_until(url) {
                    Some(until) => {
                        let until = until
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        (
                            "open",
                            "circuit open",
                            format!("until {}", format::time(until)),
                        )
                    }
                    None => ("healthy", "healthy", String::new()),
                },
            };
            let backlog = overview.backlog.iter().find(|b| b.workflow_id == w.id);
            let since = |at: Option<i64>| at.map(format::time).unwrap_or_default();
            EndpointRow {
                workflow: Some(w.slug.clone()),
                url: url.clone(),
                class,
                state,
                detail,
                disabled: class == "disabled",
                failed: backlog.map_or(0, |b| b.failed),
                failed_since: since(backlog.and_then(|b| b.oldest_failed_at)),
                pending: backlog.map_or(0, |b| b.pending),
                pending_since: since(backlog.and_then(|b| b.oldest_pending_at)),
            }
        })
        .collect();
    for d in disabled
        .iter()
        .filter(|d| !workflows.iter().any(|w| w.events_webhook_url == d.url))
    {
        endpoints.push(EndpointRow {
            workflow: None,
            url: d.url.clone(),
            class: "disabled",
            state: "disabled by 410",
            detail: format!("since {} ({})", format::time(d.disabled_at), d.reason),
            disabled: true,
            failed: 0,
            failed_since: String::new(),
            pending: 0,
            pending_since: String::new(),
        });
    }
    let page = OverviewPage {
        frame: Frame::new(&s, &session, "overview", "Overview".into()),
        notice: q
            .enabled
            .map(|url| format!("{url} enabled: its held events are sent")),
        calls_live: overview.calls_live,
        calls_ended: overview.calls_ended,
        calls_finalized: overview.calls_finalized,
        pending: overview.deliveries_pending,
        failed: overview.deliveries_failed,
        oldest_pending: overview.oldest_pending_at.map(|at| format::age(at, now)),
        chart: Chart::of(&overview.traffic),
        endpoints,
    };
    Ok(html(&page))
}

#[derive(Deserialize)]
pub struct EnableForm {
    csrf: String,
    url: String,
}

/// Enables an endpoint a 410 disabled: its held events are sent.
pub async fn enable_endpoint(
    State(s): State<Arc<OperatorState>>,
    Extension(session): Extension<Session>,
    Form(form): Form<EnableForm>,
) -> PageResult {
    check_csrf(&session, &form.csrf)?;
    if !s.store.enable_endpoint(&form.url).await? {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("{} is not disabled", form.url),
        ));
    }
    tracing::info!(endpoint = %form.url, "endpoint enabled again by an operator (dashboard)");
    s.delivery.notify_one();
    let to = format!("/?{}", format::query(&[("enabled", form.url)]));
    Ok(Redirect::to(&to).into_response())
}
