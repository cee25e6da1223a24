//! The operator API: what happened to a call, which deliveries failed, and putting
//! them back in line, plus `/metrics` and a readiness that says why. Served on its own
//! listener (`[api] listen`, loopback by default) so it is never exposed beside
//! LiveKit's webhook route by accident.
//!
//! Loopback is not a wall against a browser on the same machine: a page can make it
//! send requests there (CSRF) or point its own host name at 127.0.0.1 (DNS
//! rebinding). So without a token, a request must name a loopback host in `Host:`
//! (else 421), and every mutating request must be `Content-Type: application/json`
//! (else 415, which a cross-site form cannot send without a CORS preflight nobody
//! answers) from no foreign `Origin` (else 403). A store error is logged with an id
//! and answered with that id, never with the store's own words.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{
        Path, Query, Request, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{GaugeCache, dashboard, error, ops};
use crate::{
    config::{Secret, SharedWorkflows},
    delivery::breaker::Circuits,
    store::{Store, StoreError},
};

pub(crate) struct OperatorState {
    pub store: Store,
    pub workflows: SharedWorkflows,
    pub token: Option<Secret>,
    /// Wakes the delivery worker after a retry or replay.
    pub delivery: Arc<Notify>,
    /// `/readyz` answers 503 once shutdown has begun.
    pub shutdown: CancellationToken,
    /// The store's counts for `/metrics`.
    pub gauges: GaugeCache,
    /// Which endpoints' circuits the delivery worker holds open.
    pub circuits: Circuits,
    /// Signs the dashboard's session cookies and CSRF tokens.
    pub sessions: dashboard::SessionKey,
}

pub(crate) fn router(state: Arc<OperatorState>) -> Router {
    let api = Router::new()
        .route("/api/calls", get(list_calls))
        .route("/api/calls/{id}", get(show_call))
        .route("/api/deliveries", get(list_deliveries))
        .route("/api/deliveries/{id}/retry", post(retry))
        .route("/api/deliveries/replay", post(replay))
        .route("/api/endpoints", get(list_endpoints))
        .route("/api/endpoints/enable", post(enable_endpoint))
        .route("/metrics", get(ops::metrics))
        .route("/readyz", get(ops::operator_readyz))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state.clone());
    api.merge(dashboard::router(state))
}

/// Why a request is refused before the token is even looked at, if it is.
fn refuse_from_a_browser(request: &Request, token_set: bool) -> Option<Response> {
    if let Some(refused) = refuse_foreign_host(request, token_set) {
        return Some(refused);
    }
    if request.method().is_safe() {
        return None;
    }
    if let Some(refused) = refuse_foreign_origin(request) {
        return Some(refused);
    }
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json",
        ));
    }
    None
}

/// Without a token, a `Host:` that is not this machine's is a DNS rebinding: 421.
pub(super) fn refuse_foreign_host(request: &Request, token_set: bool) -> Option<Response> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !token_set && host.is_some_and(|host| !is_loopback_host(host)) {
        tracing::warn!(host, path = %request.uri().path(), "operator API request for a foreign Host refused");
        return Some(error(
            StatusCode::MISDIRECTED_REQUEST,
            "this API answers only to a loopback Host (localhost, 127.0.0.1, [::1])",
        ));
    }
    None
}

/// A request that names an `Origin:` other than the listener's own comes from another
/// site's page: 403.
pub(super) fn refuse_foreign_origin(request: &Request) -> Option<Response> {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN)?;
    let same = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .and_then(|o| authority(&o))
        .is_some_and(|o| host.is_some_and(|h| o.eq_ignore_ascii_case(h)));
    if same {
        return None;
    }
    tracing::warn!(origin = ?origin, path = %request.uri().path(), "operator API request from a foreign Origin refused");
    Some(error(
        StatusCode::FORBIDDEN,
        "requests from another origin are refused",
    ))
}

/// `host[:port]` of an origin URL, as a `Host:` header would name it.
fn authority(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// Whether a `Host:` value names this machine: `localhost` (or a `.localhost` name,
/// which resolvers keep on loopback) or a loopback address, with any port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token of an `Authorization: Bearer` header, else "".
pub(super) fn bearer_token(request: &Request) -> &str {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110); the token is not.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim())
}

/// Whether `given` is `expected`, in a time that does not tell how much of it matched.
pub(super) fn same_secret(given: &str, expected: &str) -> bool {
    let expected = expected.as_bytes();
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn authorize(
    State(state): State<Arc<OperatorState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(refused) = refuse_from_a_browser(&request, state.token.is_some()) {
        return refused;
    }
    if let Some(token) = &state.token
        && !same_secret(bearer_token(&request), token.expose())
    {
        tracing::warn!(path = %request.uri().path(), "operator API request without a valid token");
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    next.run(request).await
}

/// An operator API failure: a status and a message, answered as `{"error": ...}`.
pub(crate) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(error_id = %id, error = %e, "operator API: store error");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the store could not answer (error id {id} in the daemon's log)"),
        )
    }
}

/// A path, query or body axum could not read (a non-numeric id, a malformed replay
/// body) gets the same `{"error": ...}` shape as every other failure, with axum's reason.
macro_rules! rejection_is_api_error {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(r: $rejection) -> ApiError {
                ApiError(r.status(), r.body_text())
            }
        }
    )*};
}

rejection_is_api_error!(PathRejection, QueryRejection, JsonRejection);

type ApiResult = Result<Json<serde_json::Value>, ApiError>;

#[derive(Deserialize)]
struct CallsQuery {
    phase: Option<String>,
    limit: Option<i64>,
}

async fn list_calls(
    State(s): State<Arc<OperatorState>>,
    q: Result<Query<CallsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let calls = s
        .store
        .list_calls(q.phase.as_deref(), q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "calls": calls })))
}

async fn show_call(
    State(s): State<Arc<OperatorState>>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    match s.store.call_detail(id).await? {
        Some(detail) => Ok(Json(
            serde_json::to_value(detail).map_err(StoreError::from)?,
        )),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no call {id}"))),
    }
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    workflow: Option<String>,
    limit: Option<i64>,
}

pub(super) fn workflow_id(s: &OperatorState, slug: &str) -> Result<i64, ApiError> {
    s.workflows
        .load()
        .iter()
        .find(|w| w.slug == slug)
        .map(|w| w.id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no workflow {slug:?}")))
}

async fn list_deliveries(
    State(s): State<Arc<OperatorState>>,
    q: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    if let Some(status) = q.status.as_deref()
        && !matches!(status, "pending" | "delivered" | "failed")
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "status must be pending, delivered or failed".into(),
        ));
    }
    let workflow = q
        .workflow
        .as_deref()
        .map(|slug| workflow_id(&s, slug))
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let deliveries = s
        .store
        .list_deliveries(q.status.as_deref(), workflow, limit)
        .await?;
    Ok(Json(json!({ "deliveries": deliveries })))
}

async fn retry(
    State(s): State<Arc<OperatorState>>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let Some(workflow) = s.store.retry_now(id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no delivery {id}")));
    };
    let enabled = enable_workflow_endpoint(&s, workflow).await?;
    tracing::info!(outbox_id = id, "delivery put back in line by an operator");
    s.delivery.notify_one();
    Ok(Json(json!({ "retried": id, "enabled": enabled })))
}

#[derive(Deserialize)]
struct ReplayRequest {
    workflow: String,
    since: String,
    until: String,
}

pub(super) fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("{field}: not RFC 3339 ({e})"),
            )
        })
}

async fn replay(
    State(s): State<Arc<OperatorState>>,
    r: Result<Json<ReplayRequest>, JsonRejection>,
) -> ApiResult {
    let Json(r) = r?;
    let workflow = workflow_id(&s, &r.workflow)?;
    let since = parse_time("since", &r.since)?;
    let until = parse_time("until", &r.until)?;
    let n = s.store.replay_failed(workflow, since, until).await?;
    let enabled = enable_workflow_endpoint(&s, workflow).await?;
    tracing::info!(workflow = %r.workflow, since = %r.since, until = %r.until, replayed = n,
        "failed deliveries replayed by an operator");
    s.delivery.notify_one();
    Ok(Json(json!({ "replayed": n, "enabled": enabled })))
}

/// A retry or replay asks for the workflow's events to be sent: its events endpoint is
/// enabled again if a 410 had disabled it. The enabled URL, if any.
pub(super) async fn enable_workflow_endpoint(
    s: &OperatorState,
    workflow_id: i64,
) -> Result<Option<String>, ApiError> {
    let url = s
        .workflows
        .load()
        .iter()
        .find(|w| w.id == workflow_id)
        .map(|w| w.events_webhook_url.clone());
    let Some(url) = url else { return Ok(None) };
    if !s.store.enable_endpoint(&url).await? {
        return Ok(None);
    }
    tracing::info!(endpoint = %url, "endpoint enabled again by an operator's retry or replay");
    Ok(Some(url))
}

/// Each configured workflow's events endpoint and whether it is disabled (it answered
/// 410 Gone), plus disabled endpoints no workflow uses any more.
async fn list_endpoints(State(s): State<Arc<OperatorState>>) -> ApiResult {
    let disabled = s.store.disabled_endpoints().await?;
    let workflows = s.workflows.load();
    let mut endpoints: Vec<serde_json::Value> = workflows
        .iter()
        .map(|w| {
            let d = disabled.iter().find(|d| d.url == w.events_webhook_url);
            json!({
                "url": w.events_webhook_url,
                "workflow": w.slug,
                "disabled": d.is_some(),
                "disabled_at": d.map(|d| d.disabled_at),
                "reason": d.map(|d| d.reason.clone()),
            })
        })
        .collect();
    for d in disabled
        .iter()
        .filter(|d| !workflows.iter().any(|w| w.events_webhook_url == d.url))
    {
        endpoints.push(json!({
            "url": d.url,
            "workflow": null,
            "disabled": true,
            "disabled_at": d.disabled_at,
            "reason": d.reason,
        }));
    }
    Ok(Json(json!({ "endpoints": endpoints })))
}

#[derive(Deserialize)]
struct EnableRequest {
    url: String,
}

/// Enables an endpoint a 410 disabled: its held events are sent.
async fn enable_endpoint(
    State(s): State<Arc<OperatorState>>,
    r: Result<Json<EnableRequest>, JsonRejection>,
) -> ApiResult {
    let Json(r) = r?;
    if !s.store.enable_endpoint(&r.url).await? {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{:?} is not disabled", r.url),
        ));
    }
    tracing::info!(endpoint = %r.url, "endpoint enabled again by an operator");
    s.delivery.notify_one();
    Ok(Json(json!({ "enabled": r.url })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_this_machine() {
        for host in [
            "localhost",
            "localhost:8789",
            "LOCALHOST.",
            "api.localhost:1",
            "127.0.0.1",
            "127.0.0.1:8789",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8789",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8789",
            "localhost.evil.example",
            "10.0.0.1:8789",
            "[::2]:8789",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
