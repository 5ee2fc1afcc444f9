//! The web dashboard at `/ui/`: server-rendered pages (maud) over the same
//! [`Service`](keyward_service::Service) calls as the JSON API, with every
//! asset embedded in the binary (uPlot 1.6.32, vendored under
//! `crates/server/assets/uplot` with its licence; our CSS and a little JS).
//!
//! Invariants:
//! * A page acts as the root key its session was opened with, re-checked on
//!   every request: revoking or expiring that key ends the session, and its
//!   role limits what pages show and allow (the service refuses the rest).
//! * Every state change is a POST carrying the session's CSRF token (the
//!   login form: a double-submit cookie), refused cross-site by
//!   `Sec-Fetch-Site` / `Origin` as well.
//! * Every answer carries a strict Content-Security-Policy (no inline script
//!   or style), `nosniff`, `Referrer-Policy: same-origin` (with `no-referrer`
//!   browsers send `Origin: null` on our own posts, which the check refuses),
//!   frame denial; pages are `no-store`.
//! * A raw key appears only in the one answer that creates or rotates it.

mod pages;
pub mod session;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keyward_service::{Actor, AuthError};
use maud::{DOCTYPE, Markup, html};

use crate::AppState;
use crate::error::ApiError;
use crate::request_id::RequestId;
use session::Session;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, all under `/ui`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/keys", get(pages::keys).post(pages::create_key))
        .route("/ui/keys/{id}", get(pages::key))
        .route("/ui/keys/{id}/{action}", post(pages::key_action))
        .route("/ui/keyspaces", get(pages::keyspaces))
        .route("/ui/alerts", get(pages::alerts))
        .route("/ui/alerts/{id}", get(pages::alert))
        .route("/ui/alerts/{id}/{action}", post(pages::alert_action))
        .route("/ui/incidents", get(pages::incidents))
        .route("/ui/incidents/{id}", get(pages::incident))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/webhooks", get(pages::webhooks))
        .route("/ui/webhooks/{id}", get(pages::webhook))
        .route("/ui/api/series", get(pages::workspace_series))
        .route("/ui/api/keys/{id}/series", get(pages::key_series))
        .route("/ui/assets/{name}", get(asset))
        .fallback(|| async { page_error(StatusCode::NOT_FOUND, "There is no such page.") })
        .layer(axum::middleware::from_fn(headers))
}

/// The security headers of every dashboard answer.
async fn headers(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/ui/assets/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(if asset { "public, max-age=3600" } else { "no-store" }));
    res
}

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { name: "uPlot.js", mime: "text/javascript", body: include_bytes!("../../assets/uplot/uPlot.iife.min.js") },
    Asset { name: "uPlot.css", mime: "text/css", body: include_bytes!("../../assets/uplot/uPlot.min.css") },
    Asset {
        name: "uPlot-LICENSE.txt",
        mime: "text/plain; charset=utf-8",
        body: include_bytes!("../../assets/uplot/LICENSE"),
    },
    Asset { name: "ui.css", mime: "text/css", body: include_bytes!("../../assets/ui.css") },
    Asset { name: "ui.js", mime: "text/javascript", body: include_bytes!("../../assets/ui.js") },
];

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => ([(header::CONTENT_TYPE, a.mime)], a.body).into_response(),
        None => page_error(StatusCode::NOT_FOUND, "There is no such asset."),
    }
}

/// The signed-in operator: the session, and the actor its root key makes.
pub struct User {
    pub actor: Actor,
    pub session: Session,
}

/// Where a request without a live session goes: pages to the login form,
/// the chart API to a 401 problem.
pub enum NoSession {
    Login,
    Api(ApiError),
    Refused(Response),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Login => Redirect::to("/ui/login").into_response(),
            NoSession::Api(e) => e.into_response(),
            NoSession::Refused(r) => r,
        }
    }
}

/// The value of cookie `name`, if sent.
pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request came over TLS (cookies are then `Secure`).
pub(crate) fn over_tls(parts: &Parts) -> bool {
    parts.extensions.get::<crate::tls::ClientCert>().is_some()
}

impl FromRequestParts<AppState> for User {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NoSession> {
        let api = parts.uri.path().starts_with("/ui/api/");
        let none = || if api { NoSession::Api(ApiError::unauthorized(AuthError::Missing)) } else { NoSession::Login };
        let now = keyward_core::time::now_ms();
        let Some(session) = cookie(parts, session::COOKIE).and_then(|id| state.ui_sessions.get(id, now)) else {
            return Err(none());
        };
        let (workspace_id, role) = match state.service.root_key_live(&session.root_key_id) {
            Ok(who) => who,
            Err(_) => {
                if let Some(id) = cookie(parts, session::COOKIE) {
                    state.ui_sessions.close(id);
                }
                return Err(none());
            }
        };
        if state.ops.client_cert_for_root_keys
            && parts.extensions.get::<crate::tls::ClientCert>() != Some(&crate::tls::ClientCert(true))
        {
            return Err(NoSession::Refused(page_error(
                StatusCode::UNAUTHORIZED,
                "This server takes root keys only over TLS with a client certificate (tls.client_ca).",
            )));
        }
        if parts.method == Method::POST
            && let Err(r) = same_site(parts)
        {
            return Err(NoSession::Refused(r.into_response()));
        }
        tracing::Span::current().record("root_key_id", session.root_key_id.as_str());
        let source_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        let actor = Actor { workspace_id, root_key_id: session.root_key_id.clone(), role, source_ip, request_id };
        Ok(User { actor, session })
    }
}

impl User {
    /// Refuses a form whose `csrf` field is not this session's token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), PageError> {
        if session::same_token(sent, &self.session.csrf) { Ok(()) } else { Err(csrf_refused()) }
    }
}

pub(crate) fn csrf_refused() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "This form is missing its security token (CSRF) or holds a stale one. Reload the page and try again.",
    )
}

/// Refuses a POST a browser marks as sent from another site.
pub(crate) fn same_site(parts: &Parts) -> Result<(), PageError> {
    let fetch_site = parts.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site") | Some("same-site")) {
        return Err(csrf_refused());
    }
    let origin = parts.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let (Some(origin), Some(host)) = (origin, host) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        // `null` (a sandboxed frame, a privacy redirect) is refused too.
        if origin == "null" || origin_host != host {
            return Err(csrf_refused());
        }
    }
    Ok(())
}

/// A refused or failed page request, answered as an HTML page.
#[derive(Debug)]
pub struct PageError(pub StatusCode, pub String);

impl PageError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        PageError(status, detail.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        page_error(self.0, &self.1)
    }
}

/// No random bytes for a session or token: nothing is opened.
impl From<getrandom::Error> for PageError {
    fn from(e: getrandom::Error) -> Self {
        tracing::error!(error = %e, "The operating system's random source failed.");
        PageError::new(StatusCode::SERVICE_UNAVAILABLE, "the server could not make a session token; try again")
    }
}

/// A service failure with the API's status and detail.
impl From<keyward_service::ServiceError> for PageError {
    fn from(e: keyward_service::ServiceError) -> Self {
        let e = ApiError::from(e);
        if let Some(cause) = &e.internal {
            tracing::error!(status = e.status.as_u16(), cause = %cause, "Dashboard request failed.");
        }
        PageError(e.status, e.detail)
    }
}

/// A bare error page (no navigation: the user may have no session).
pub(crate) fn page_error(status: StatusCode, detail: &str) -> Response {
    let detail = keyward_core::redact::redact(detail, &[]);
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "keyward: " (status.canonical_reason().unwrap_or("error")) } link rel="stylesheet" href="/ui/assets/ui.css"; }
            body {
                main.narrow {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
                    p.error role="alert" { (detail) }
                    p { a href="/ui/" { "Back to the dashboard" } }
                }
            }
        }
    };
    (status, html_response(body)).into_response()
}

pub(crate) fn html_response(m: Markup) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

/// `Set-Cookie` for `name`: HttpOnly, SameSite=Strict, on `path`, Secure under TLS.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age_s: i64,
    tls: bool,
) -> Result<HeaderValue, PageError> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(|_| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "a cookie could not be written"))
}

/// Keeps handlers' `State` extraction in one place for the pages module.
pub(crate) type St = State<AppState>;
