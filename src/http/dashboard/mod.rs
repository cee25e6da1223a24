//! The operator's dashboard: HTML pages on the operator listener that answer "what
//! happened to this call", "which endpoint is failing" and "send those failed events
//! again" without a terminal.
//!
//! Pages are rendered on the server from templates that escape every value (room
//! names, metadata, phone numbers and response bodies come from LiveKit or customers),
//! so they read the same with JavaScript off; a small script only refreshes the page's
//! main part while it is open. Assets are compiled in. The guard is the operator API's
//! (a loopback `Host:` without a token; the token, through a login form, with one), and
//! every change is a POST carrying the session's CSRF token from a same-origin page.
//! One file per page; the store's queries live in the store.

mod assets;
mod calls;
mod deliveries;
mod format;
mod login;
mod overview;
mod session;

use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};

use session::Session;
pub use session::SessionKey;

use super::operator::{
    OperatorState, bearer_token, refuse_foreign_host, refuse_foreign_origin, same_secret,
};
use crate::store::StoreError;

pub fn router(state: Arc<OperatorState>) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/calls", get(calls::list))
        .route("/calls/{id}", get(calls::show))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{id}/retry", post(deliveries::retry))
        .route("/deliveries/replay", get(deliveries::confirm_replay))
        .route("/deliveries/replay", post(deliveries::replay))
        .route("/endpoints/enable", post(overview::enable_endpoint))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/assets/{name}", get(assets::serve))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The operator API's guard, for pages: the `Host:` and `Origin:` checks, then a
/// session (or the bearer token). A browser without a session is sent to the login
/// form when a token is set, and given a session when none is.
async fn guard(
    State(state): State<Arc<OperatorState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = state.token.as_ref();
    if let Some(refused) = refuse_foreign_host(&request, token.is_some()) {
        return refused;
    }
    if !request.method().is_safe()
        && let Some(refused) = refuse_foreign_origin(&request)
    {
        return refused;
    }
    let path = request.uri().path();
    let open = path == "/login" || path.starts_with("/assets/");
    let session = state.sessions.session_of(request.headers());
    let session = match (session, token) {
        (Some(session), _) => session,
        (None, None) => state.sessions.issue(),
        (None, Some(token)) if same_secret(bearer_token(&request), token.expose()) => {
            state.sessions.issue()
        }
        (None, Some(_)) if open => {
            return next.run(request).await;
        }
        (None, Some(_)) if request.method().is_safe() => {
            let back = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let to = format!("/login?next={}", format::url_encoded(back));
            return Redirect::to(&to).into_response();
        }
        (None, Some(_)) => {
            return page_error(StatusCode::UNAUTHORIZED, "log in first");
        }
    };
    request.extensions_mut().insert(session.clone());
    let mut response = next.run(request).await;
    if session.new {
        response
            .headers_mut()
            .append(header::SET_COOKIE, session.set_cookie());
    }
    response
}

/// A rendered page, with the headers every page has: no framing, no script or style
/// from elsewhere, nothing cached.
fn html(template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => {
            let mut response = Html(body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "dashboard: a page could not be rendered");
            page_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
        }
    }
}

/// What every page's frame shows: the navigation and the forms' CSRF token.
pub struct Frame {
    pub title: String,
    /// Which navigation entry is this page's.
    pub section: &'static str,
    pub csrf: String,
    /// A logout button: there is a token to log in with again.
    pub logout: bool,
}

impl Frame {
    fn new(
        state: &OperatorState,
        session: &Session,
        section: &'static str,
        title: String,
    ) -> Frame {
        Frame {
            title,
            section,
            csrf: session.csrf.clone(),
            logout: state.token.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

/// A page that says what went wrong.
fn page_error(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        message,
    };
    let body = page
        .render()
        .unwrap_or_else(|_| "the page could not be rendered".into());
    (status, Html(body)).into_response()
}

/// A page's failure: its status and what to tell the operator.
pub struct PageError(StatusCode, String);

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError(status, message.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        page_error(self.0, &self.1)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(error_id = %id, error = %e, "dashboard: store error");
        PageError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the store could not answer (error id {id} in the daemon's log)"),
        )
    }
}

impl From<super::operator::ApiError> for PageError {
    fn from(e: super::operator::ApiError) -> PageError {
        PageError(e.0, e.1)
    }
}

/// Refuses a form whose CSRF token is not the session's.
fn check_csrf(session: &Session, given: &str) -> Result<(), PageError> {
    if session.accepts(given) {
        return Ok(());
    }
    tracing::warn!("dashboard form without this session's CSRF token refused");
    Err(PageError::new(
        StatusCode::FORBIDDEN,
        "this form is stale or came from elsewhere: reload the page and try again",
    ))
}

type PageResult = Result<Response, PageError>;
