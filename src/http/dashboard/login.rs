//! Logging in with the operator token, and out. The token is compared in constant
//! time; a session cookie replaces it, so the browser never keeps the token itself.

use std::sync::Arc;

use askama::Template;
use axum::{
    Extension, Form,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{PageResult, Session, check_csrf, format, html, session};
use crate::http::operator::{OperatorState, same_secret};

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    next: String,
    failed: bool,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

pub async fn form(Query(q): Query<LoginQuery>) -> Response {
    html(&LoginPage {
        next: format::local_path(&q.next).to_owned(),
        failed: false,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

pub async fn submit(State(s): State<Arc<OperatorState>>, Form(f): Form<LoginForm>) -> Response {
    let next = format::local_path(&f.next).to_owned();
    let Some(token) = &s.token else {
        // Nothing to log in to: every loopback visitor has a session already.
        return Redirect::to(&next).into_response();
    };
    if !same_secret(f.token.trim(), token.expose()) {
        tracing::warn!("dashboard login with a wrong token refused");
        let mut page = html(&LoginPage { next, failed: true });
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    let session = s.sessions.issue();
    tracing::info!("an operator logged in to the dashboard");
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session.set_cookie());
    response
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    Extension(session): Extension<Session>,
    Form(f): Form<LogoutForm>,
) -> PageResult {
    check_csrf(&session, &f.csrf)?;
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::clear_cookie());
    Ok(response)
}
