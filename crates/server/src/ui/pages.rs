//! The dashboard's pages: each handler calls the service as the session's
//! actor and renders the answer; forms post back and redirect (or, for a
//! created or rotated key, show the key once).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_core::Permission;
use keyward_service::alerts::{AlertAction, AlertQuery, AlertStatus, DeliveryQuery};
use keyward_service::analytics::{AnalyticsQuery, TopQuery};
use keyward_service::api::{KeyView, ListAuditQuery, ListKeysQuery, PatchKey, RotateKey};
use keyward_service::events::EventQuery;
use keyward_service::incidents::{IncidentQuery, ListIncidentsQuery};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::session::{self, LOGIN_COOKIE};
use super::{PageError, St, User, cookie, html_response, over_tls, page_error, same_site, set_cookie};
use crate::error::ApiError;

type Page = Result<Response, PageError>;

/// Query parameters; a bad one is a 400 page.
pub struct UiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for UiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|q| UiQuery(q.0)).map_err(|e| {
            page_error(
                StatusCode::BAD_REQUEST,
                &format!("Bad query string: {}", crate::error::sanitize(&e.body_text())),
            )
        })
    }
}

/// A form body; a bad one is a 400 page.
pub struct UiForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for UiForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        axum::Form::<T>::from_request(req, state).await.map(|f| UiForm(f.0)).map_err(|e| {
            page_error(e.status(), &format!("The form could not be read: {}", crate::error::sanitize(&e.body_text())))
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Nav {
    Overview,
    Keys,
    Keyspaces,
    Alerts,
    Incidents,
    Audit,
    Webhooks,
}

const NAV: [(Nav, &str, &str); 7] = [
    (Nav::Overview, "/ui/", "Overview"),
    (Nav::Keys, "/ui/keys", "Keys"),
    (Nav::Keyspaces, "/ui/keyspaces", "Keyspaces"),
    (Nav::Alerts, "/ui/alerts", "Alerts"),
    (Nav::Incidents, "/ui/incidents", "Incidents"),
    (Nav::Audit, "/ui/audit", "Audit log"),
    (Nav::Webhooks, "/ui/webhooks", "Webhooks"),
];

fn head(title: &str, charts: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · keyward" }
            link rel="stylesheet" href="/ui/assets/ui.css";
            @if charts {
                link rel="stylesheet" href="/ui/assets/uPlot.css";
                script src="/ui/assets/uPlot.js" defer {}
            }
            script src="/ui/assets/ui.js" defer {}
        }
    }
}

/// A page of the signed-in dashboard.
fn layout(user: &User, nav: Nav, title: &str, charts: bool, body: Markup) -> Response {
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, charts))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "keyward" }
                    nav aria-label="Main" {
                        ul {
                            @for (n, href, label) in NAV.iter().filter(|(n, _, _)| shows(user, *n)) {
                                li { a href=(href) aria-current=[(*n == nav).then_some("page")] { (label) } }
                            }
                        }
                    }
                    div.who {
                        span title="The root key this session acts as" { (user.actor.root_key_id) " · " (user.actor.role.as_str()) }
                        form method="post" action="/ui/logout" {
                            (csrf(user))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    };
    html_response(m)
}

/// Whether the session's role may read what a page shows (the service
/// refuses the rest anyway; the navigation just does not offer it).
fn shows(user: &User, nav: Nav) -> bool {
    match nav {
        Nav::Overview => true,
        Nav::Keys | Nav::Keyspaces | Nav::Incidents => can(user, Permission::KeysRead),
        Nav::Alerts | Nav::Webhooks => can(user, Permission::AlertsRead),
        Nav::Audit => can(user, Permission::AuditRead),
    }
}

fn csrf(user: &User) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.session.csrf); }
}

fn can(user: &User, p: Permission) -> bool {
    user.actor.role.allows(p)
}

/// The message of a `?done=` code after a form's redirect. Only these codes
/// show anything: a crafted link cannot put its own words on a page.
fn notice(done: &Option<String>) -> Markup {
    let text = match done.as_deref() {
        Some("enabled") => "Key enabled.",
        Some("disabled") => "Key disabled: it verifies DISABLED until enabled.",
        Some("revoked") => "Key revoked.",
        Some("acknowledged") => "Alert acknowledged.",
        Some("resolved") => "Alert resolved.",
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

// ---------------------------------------------------------------- login ---

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    root_key: String,
    #[serde(default)]
    csrf: String,
}

fn login_page(token: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in", false))
            body {
                main.narrow #main {
                    h1 { "keyward" }
                    p { "Log in with a root key. Its role decides what you can see and do." }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form.login method="post" action="/ui/login" autocomplete="off" {
                        input type="hidden" name="csrf" value=(token);
                        label for="root_key" { "Root key" }
                        input #root_key type="password" name="root_key" required autofocus spellcheck="false" placeholder="kw_root_…";
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// A fresh login form and its double-submit cookie.
fn login_response(parts_tls: bool, status: StatusCode, error: Option<&str>) -> Page {
    let token = session::token()?;
    let mut res = (status, html_response(login_page(&token, error))).into_response();
    res.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, "/ui/login", 3600, parts_tls)?);
    Ok(res)
}

pub async fn login_form(parts: Parts) -> Page {
    login_response(over_tls(&parts), StatusCode::OK, None)
}

pub async fn login(state: St, parts: Parts, UiForm(form): UiForm<LoginForm>) -> Page {
    let tls = over_tls(&parts);
    same_site(&parts)?;
    let expected = cookie(&parts, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same_token(&form.csrf, expected) {
        return Err(super::csrf_refused());
    }
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let request_id = parts.extensions.get::<crate::request_id::RequestId>().map(|r| r.0.clone());
    let actor = match crate::extract::authenticate_token(&state, &parts, peer, request_id, Ok(form.root_key.trim())) {
        Ok(a) => a,
        Err(e) => {
            let detail = if e.status == StatusCode::UNAUTHORIZED {
                "That root key is not valid: check that it was copied whole, has not expired and has not been revoked."
                    .to_owned()
            } else {
                e.detail.clone()
            };
            return login_response(tls, e.status, Some(&detail));
        }
    };
    let now = keyward_core::time::now_ms();
    let (id, _) = state.ui_sessions.open(&actor.root_key_id, now)?;
    tracing::info!(root_key_id = %actor.root_key_id, "Dashboard login.");
    let mut res = Redirect::to("/ui/").into_response();
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(session::COOKIE, &id, "/ui", session::TTL_MS / 1000, tls)?);
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", "/ui/login", 0, tls)?);
    Ok(res)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(state: St, parts: Parts, user: User, UiForm(form): UiForm<CsrfForm>) -> Page {
    user.check_csrf(&form.csrf)?;
    if let Some(id) = cookie(&parts, session::COOKIE) {
        state.ui_sessions.close(id);
    }
    tracing::info!(root_key_id = %user.actor.root_key_id, "Dashboard logout.");
    let mut res = Redirect::to("/ui/login").into_response();
    res.headers_mut().append(header::SET_COOKIE, set_cookie(session::COOKIE, "", "/ui", 0, over_tls(&parts))?);
    Ok(res)
}

// ------------------------------------------------------------- overview ---

fn ago(hours: i64) -> String {
    keyward_core::time::to_rfc3339(keyward_core::time::now_ms() - hours * 3600 * 1000)
}

fn range_query(since: String, granularity: &str) -> AnalyticsQuery {
    AnalyticsQuery { since: Some(since), until: None, granularity: Some(granularity.into()) }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    range: Option<String>,
    done: Option<String>,
}

pub async fn overview(state: St, user: User, UiQuery(p): UiQuery<OverviewQuery>) -> Page {
    let range = p.range.unwrap_or_else(|| "6h".into());
    series_range(Some(&range))?;
    let svc = &state.service;
    let a = &user.actor;
    let mut body = Vec::new();
    if can(&user, Permission::KeysRead) {
        let day = svc.workspace_analytics(a, range_query(ago(24), "hour")).await?;
        let top = |by: &str| TopQuery {
            dimension: Some("key".into()),
            by: Some(by.into()),
            since: Some(ago(24)),
            until: None,
            limit: Some(10),
        };
        let top_req = svc.top(a, top("requests")).await?;
        let top_denied = svc.top(a, top("denials")).await?;
        let t = &day.totals;
        let denials: Vec<(&str, u64)> =
            t.outcomes.iter().filter(|(k, _)| **k != "VALID").map(|(k, v)| (*k, *v)).collect();
        body.push(html! {
            section aria-labelledby="traffic" {
                h2 #traffic { "Traffic, last 24 hours" }
                dl.stats {
                    div { dt { "Requests" } dd { (t.requests) } }
                    div { dt { "Valid" } dd { (t.valid) } }
                    div { dt { "Denied" } dd { (t.denied) } }
                    div { dt { "Denial rate" } dd { (percent(t.denied, t.requests)) } }
                }
                (ranges("/ui/?range=", &range))
                div.charts data-src={ "/ui/api/series?range=" (range) } data-charts="requests errors auth" {}
            }
            div.cols {
                section aria-labelledby="denials" {
                    h2 #denials { "Denials by reason" }
                    @if denials.is_empty() { p.empty { "No denials in the last 24 hours." } } @else {
                        table { thead { tr { th scope="col" { "Outcome" } th.num scope="col" { "Requests" } } }
                            tbody { @for (code, n) in &denials { tr { td { code { (code) } } td.num { (n) } } } } }
                    }
                }
                section aria-labelledby="topkeys" {
                    h2 #topkeys { "Top keys by requests" }
                    (top_table(&top_req.items, "Requests"))
                }
                section aria-labelledby="topdenied" {
                    h2 #topdenied { "Top keys by denials" }
                    (top_table(&top_denied.items, "Denials"))
                }
            }
        });
    }
    if can(&user, Permission::AlertsRead) {
        let q = AlertQuery { status: Some(AlertStatus::Open), limit: Some(10), ..Default::default() };
        let open = svc.list_alerts(a, q).await?;
        body.push(html! {
            section aria-labelledby="open" {
                h2 #open { "Open alerts" }
                (alert_table(&user, &open.data, "/ui/"))
                p { a href="/ui/alerts" { "All alerts" } }
            }
        });
    }
    Ok(layout(&user, Nav::Overview, "Overview", true, html! { (notice(&p.done)) @for b in body { (b) } }))
}

/// The chart range links (the current one marked).
fn ranges(href: &str, current: &str) -> Markup {
    html! {
        nav.ranges aria-label="Chart range" {
            @for r in ["1h", "6h", "24h", "7d", "30d"] {
                a href={ (href) (r) } aria-current=[(r == current).then_some("page")] { (r) }
            }
        }
    }
}

fn percent(n: u64, of: u64) -> String {
    if of == 0 { "–".into() } else { format!("{:.1} %", n as f64 * 100.0 / of as f64) }
}

fn top_table(items: &[keyward_service::analytics::TopItem], what: &str) -> Markup {
    html! {
        @if items.is_empty() { p.empty { "No traffic in the last 24 hours." } } @else {
            table {
                thead { tr { th scope="col" { "Key" } th.num scope="col" { (what) } } }
                tbody {
                    @for i in items {
                        tr {
                            td { a href={ "/ui/keys/" (i.id) } { (i.name.as_deref().or(i.hint.as_deref()).unwrap_or(&i.id)) } }
                            td.num { (if what == "Requests" { i.requests } else { i.denied }) }
                        }
                    }
                }
            }
        }
    }
}

/// A JSON value as text: strings bare, null empty.
fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn alert_table(user: &User, alerts: &[keyward_service::alerts::AlertView], back: &str) -> Markup {
    let write = can(user, Permission::AlertsWrite);
    html! {
        @if alerts.is_empty() { p.empty { "No alerts." } } @else {
            table.alerts {
                thead { tr {
                    th scope="col" { "Severity" } th scope="col" { "Rule" } th scope="col" { "Subject" }
                    th scope="col" { "What was seen" } th scope="col" { "Last seen" } th scope="col" { "Status" }
                    @if write { th scope="col" { "Actions" } }
                } }
                tbody {
                    @for al in alerts {
                        @let (rule, severity, status) = (al.rule.as_str(), al.severity.as_str(), al.status.as_str());
                        tr data-alert=(al.id) data-rule=(rule) {
                            td { span class={ "sev sev-" (severity) } { (severity) } }
                            td { a href={ "/ui/alerts/" (al.id) } { code { (rule) } } }
                            td {
                                @if let Some(k) = &al.subject.key_id {
                                    a href={ "/ui/keys/" (k) } { (al.subject.key_hint.as_deref().unwrap_or(k)) }
                                } @else { (al.subject.ip.as_deref().unwrap_or("")) }
                            }
                            td { (al.detail) }
                            td { time { (al.last_seen) } }
                            td { (status) }
                            @if write {
                                td { div.actions {
                                    @if status == "open" {
                                        form method="post" action={ "/ui/alerts/" (al.id) "/ack" } {
                                            (csrf(user)) input type="hidden" name="back" value=(back);
                                            button type="submit" aria-label={ "Acknowledge alert " (al.id) } { "Acknowledge" }
                                        }
                                    }
                                    @if status != "resolved" {
                                        form method="post" action={ "/ui/alerts/" (al.id) "/resolve" } {
                                            (csrf(user)) input type="hidden" name="back" value=(back);
                                            button type="submit" aria-label={ "Resolve alert " (al.id) } { "Resolve" }
                                        }
                                    }
                                }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// `1h`, `6h` (default), `24h`, `7d` or `30d`.
    range: Option<String>,
}

/// A range name as a query: minutes up to 6 hours, then hours, then days.
fn series_range(range: Option<&str>) -> Result<AnalyticsQuery, PageError> {
    let (hours, gran) = match range.unwrap_or("6h") {
        "1h" => (1, "minute"),
        "6h" => (6, "minute"),
        "24h" => (24, "hour"),
        "7d" => (24 * 7, "hour"),
        "30d" => (24 * 30, "day"),
        _ => return Err(PageError::new(StatusCode::BAD_REQUEST, "range must be 1h, 6h, 24h, 7d or 30d")),
    };
    Ok(range_query(ago(hours), gran))
}

pub async fn workspace_series(state: St, user: User, UiQuery(q): UiQuery<SeriesQuery>) -> Result<Response, ApiError> {
    let q = series_range(q.range.as_deref()).map_err(|e| ApiError::bad_request(e.1))?;
    Ok(axum::Json(state.service.workspace_analytics(&user.actor, q).await?).into_response())
}

pub async fn key_series(
    state: St,
    user: User,
    Path(id): Path<String>,
    UiQuery(q): UiQuery<SeriesQuery>,
) -> Result<Response, ApiError> {
    let q = series_range(q.range.as_deref()).map_err(|e| ApiError::bad_request(e.1))?;
    Ok(axum::Json(state.service.key_analytics(&user.actor, &id, q).await?).into_response())
}

// ----------------------------------------------------------------- keys ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysPageQuery {
    q: Option<String>,
    status: Option<String>,
    keyspace_id: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

pub async fn keys(state: St, user: User, UiQuery(p): UiQuery<KeysPageQuery>) -> Page {
    let status = p.status.clone().filter(|s| !s.is_empty());
    let keyspace_id = p.keyspace_id.clone().filter(|s| !s.is_empty());
    let q = p.q.clone().filter(|s| !s.trim().is_empty());
    let list = ListKeysQuery {
        keyspace_id: keyspace_id.clone(),
        owner_id: None,
        status: status.clone(),
        q: q.clone(),
        cursor: p.cursor.clone(),
        limit: Some(50),
    };
    let page = state.service.list_keys(&user.actor, list).await?;
    let keyspaces = state.service.list_keyspaces(&user.actor).await?;
    let next = page.next_cursor.as_ref().map(|c| {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        pairs.extend(q.as_deref().map(|v| ("q", v)));
        pairs.extend(status.as_deref().map(|v| ("status", v)));
        pairs.extend(keyspace_id.as_deref().map(|v| ("keyspace_id", v)));
        pairs.push(("cursor", c));
        format!("/ui/keys?{}", serde_urlencoded::to_string(&pairs).unwrap_or_default())
    });
    let body = html! {
        (notice(&p.done))
        form.search role="search" method="get" action="/ui/keys" {
            label for="q" { "Search" }
            input #q type="search" name="q" value=[q.as_deref()] placeholder="name, owner, hint or id";
            label for="status" { "Status" }
            select #status name="status" {
                option value="" { "any" }
                @for st in ["active", "disabled", "expired", "revoked"] {
                    option value=(st) selected[status.as_deref() == Some(st)] { (st) }
                }
            }
            label for="keyspace_id" { "Keyspace" }
            select #keyspace_id name="keyspace_id" {
                option value="" { "any" }
                @for ks in &keyspaces {
                    option value=(ks.id) selected[keyspace_id.as_deref() == Some(ks.id.as_str())] { (ks.name) }
                }
            }
            button type="submit" { "Search" }
        }
        (key_table(&page.data))
        @if let Some(n) = &next { p { a rel="next" href=(n) { "Next page" } } }
        @if can(&user, Permission::KeysWrite) && !keyspaces.is_empty() {
            details.create {
                summary { "Create a key" }
                form method="post" action="/ui/keys" {
                    (csrf(&user))
                    label for="new_ks" { "Keyspace" }
                    select #new_ks name="keyspace_id" required {
                        @for ks in &keyspaces { option value=(ks.id) { (ks.name) " (" (ks.prefix) ")" } }
                    }
                    label for="new_name" { "Name" }
                    input #new_name type="text" name="name" maxlength="200";
                    label for="new_owner" { "Owner id" }
                    input #new_owner type="text" name="owner_id" maxlength="200";
                    label for="new_scopes" { "Scopes (space or comma separated)" }
                    input #new_scopes type="text" name="scopes";
                    button type="submit" { "Create key" }
                }
            }
        }
    };
    Ok(layout(&user, Nav::Keys, "Keys", false, body))
}

fn key_table(keys: &[KeyView]) -> Markup {
    html! {
        @if keys.is_empty() { p.empty { "No keys match." } } @else {
            table.keys {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Hint" } th scope="col" { "Owner" }
                    th scope="col" { "Status" } th scope="col" { "Last used" } th scope="col" { "Created" }
                } }
                tbody {
                    @for k in keys {
                        tr {
                            td { a href={ "/ui/keys/" (k.id) } { (k.name.as_deref().unwrap_or(&k.id)) } }
                            td { code { (k.hint) } }
                            td { (k.owner_id.as_deref().unwrap_or("")) }
                            td { span class={ "status status-" (k.status) } { (k.status) } }
                            td { (k.last_used_at.as_deref().unwrap_or("never")) }
                            td { (k.created_at) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct CreateKeyForm {
    #[serde(default)]
    csrf: String,
    keyspace_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner_id: String,
    #[serde(default)]
    scopes: String,
}

fn opt(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

pub async fn create_key(state: St, user: User, UiForm(f): UiForm<CreateKeyForm>) -> Page {
    user.check_csrf(&f.csrf)?;
    let scopes: Vec<&str> = f.scopes.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    let mut req = json!({ "keyspace_id": f.keyspace_id, "name": opt(&f.name), "owner_id": opt(&f.owner_id) });
    if !scopes.is_empty() {
        req["scopes"] = json!(scopes);
    }
    let req = serde_json::from_value(req)
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, crate::error::sanitize(&e.to_string())))?;
    let created = state.service.create_key(&user.actor, req).await?;
    Ok(shown_once(&user, "Key created", &created.key, &created.view, created.warning.as_deref()))
}

/// The one page that shows a raw key.
fn shown_once(user: &User, title: &str, key: &str, view: &KeyView, warning: Option<&str>) -> Response {
    let body = html! {
        p.notice role="status" { "Copy this key now: keyward keeps only its hash and will not show it again." }
        p { label for="newkey" { "The key" } }
        input #newkey.secret type="text" readonly value=(key) data-select-on-focus;
        @if let Some(w) = warning { p.warning { (w) } }
        p { a href={ "/ui/keys/" (view.id) } { "Go to " (view.name.as_deref().unwrap_or(&view.id)) } }
    };
    layout(user, Nav::Keys, title, false, body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPageQuery {
    range: Option<String>,
    done: Option<String>,
}

pub async fn key(state: St, user: User, Path(id): Path<String>, UiQuery(p): UiQuery<KeyPageQuery>) -> Page {
    let svc = &state.service;
    let k = svc.get_key(&user.actor, &id).await?;
    let range = p.range.clone().unwrap_or_else(|| "1h".into());
    series_range(Some(&range))?;
    let events = svc
        .query_events(
            &user.actor,
            EventQuery {
                key_id: Some(k.id.clone()),
                owner_id: None,
                ip: None,
                code: None,
                status: None,
                since: None,
                until: None,
                cursor: None,
                limit: Some(200),
                order: None,
            },
        )
        .await?;
    let mut ips: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for e in &events.data {
        if let Some(ip) = &e.ip {
            let entry = ips.entry(ip.clone()).or_insert((0, e.timestamp.clone()));
            entry.0 += 1;
        }
    }
    let mut ips: Vec<(String, (u64, String))> = ips.into_iter().collect();
    ips.sort_by(|a, b| b.1.1.cmp(&a.1.1));
    let v = serde_json::to_value(&k).unwrap_or_default();
    let write = can(&user, Permission::KeysWrite);
    let title = k.name.clone().unwrap_or_else(|| k.id.clone());
    let body = html! {
        (notice(&p.done))
        dl.facts {
            div { dt { "Id" } dd { code { (k.id) } } }
            div { dt { "Hint" } dd { code { (k.hint) } } }
            div { dt { "Status" } dd { span class={ "status status-" (k.status) } { (k.status) } } }
            div { dt { "Owner" } dd { (k.owner_id.as_deref().unwrap_or("–")) } }
            div { dt { "Keyspace" } dd { a href={ "/ui/keys?keyspace_id=" (k.keyspace_id) } { (k.keyspace_id) } } }
            div { dt { "Created" } dd { (k.created_at) } }
            div { dt { "Expires" } dd { (k.expires_at.as_deref().unwrap_or("never")) } }
            div { dt { "Last used" } dd { (k.last_used_at.as_deref().unwrap_or("never")) " " (k.last_used_ip.as_deref().unwrap_or("")) } }
            @if let Some(r) = &k.revoked_at { div { dt { "Revoked" } dd { (r) " (" (k.revoke_reason.as_deref().unwrap_or("")) ")" } } }
            @if let Some(r) = &k.rotated_to { div { dt { "Replaced by" } dd { a href={ "/ui/keys/" (r) } { (r) } " (overlap until " (k.overlap_until.as_deref().unwrap_or("–")) ")" } } }
        }
        section aria-labelledby="usage" {
            h2 #usage { "Usage" }
            (ranges(&format!("/ui/keys/{}?range=", k.id), &range))
            div.charts data-src={ "/ui/api/keys/" (k.id) "/series?range=" (range) } data-charts="requests errors bytes auth" {}
        }
        section aria-labelledby="policy" {
            h2 #policy { "Policy" }
            dl.facts {
                div { dt { "Scopes" } dd { @if k.scopes.is_empty() { "none" } @else { @for sc in &k.scopes { code { (sc) } " " } } } }
                div { dt { "IP allowlist" } dd { (list_or(&v["ip_allowlist"], "keyspace default")) } }
                div { dt { "Rate limits" } dd { (ratelimits(&v["ratelimits"])) } }
                div { dt { "Quota left" } dd { (k.remaining.map_or("unlimited".to_owned(), |r| r.to_string())) } }
                div { dt { "Refill" } dd { (s(&v["refill"])) } }
                div { dt { "Meta" } dd { code { (v["meta"]) } } }
            }
        }
        @if write && k.revoked_at.is_none() {
            section.danger aria-labelledby="actions" {
                h2 #actions { "Actions" }
                div.action-row {
                    form method="post" action={ "/ui/keys/" (k.id) (if k.enabled { "/disable" } else { "/enable" }) } {
                        (csrf(&user))
                        button type="submit" { (if k.enabled { "Disable" } else { "Enable" }) }
                    }
                    form method="post" action={ "/ui/keys/" (k.id) "/rotate" } {
                        (csrf(&user))
                        label for="overlap" { "Old key keeps working for" }
                        select #overlap name="overlap_hours" {
                            @for (h, l) in [(0, "no overlap"), (1, "1 hour"), (24, "24 hours"), (168, "7 days")] {
                                option value=(h) selected[h == 24] { (l) }
                            }
                        }
                        button type="submit" { "Rotate" }
                    }
                }
                form.revoke method="post" action={ "/ui/keys/" (k.id) "/revoke" } {
                    (csrf(&user))
                    fieldset {
                        legend { "Revoke, at once and for good" }
                        label for="reason" { "Reason" }
                        select #reason name="reason" {
                            @for r in ["compromised", "leaked", "rotated", "unused", "other"] { option value=(r) selected[r == "other"] { (r) } }
                        }
                        label for="note" { "Note (for the audit log)" }
                        input #note type="text" name="note" maxlength="500";
                        label.check { input #confirm type="checkbox" name="confirm" value="yes" required; " I understand this key stops working now and cannot be restored" }
                        button.danger type="submit" { "Revoke key" }
                    }
                }
            }
        }
        section aria-labelledby="ips" {
            h2 #ips { "Recent addresses" }
            @if ips.is_empty() { p.empty { "No recent use." } } @else {
                table { thead { tr { th scope="col" { "Address" } th.num scope="col" { "Requests (of the last 200)" } th scope="col" { "Last seen" } } }
                    tbody { @for (ip, (n, last)) in &ips { tr { td { code { (ip) } } td.num { (n) } td { (last) } } } } }
            }
        }
        section aria-labelledby="events" {
            h2 #events { "Recent events" }
            @if events.data.is_empty() { p.empty { "No events yet." } } @else {
                (events_table(&events.data[..events.data.len().min(25)], false))
            }
        }
    };
    Ok(layout(&user, Nav::Keys, &title, true, body))
}

fn list_or(v: &Value, none: &str) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(s).collect::<Vec<_>>().join(", "),
        Some(_) => "none".into(),
        None => none.into(),
    }
}

fn ratelimits(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|r| format!("{}: {} per {} ms", s(&r["name"]), s(&r["limit"]), s(&r["window_ms"])))
            .collect::<Vec<_>>()
            .join("; "),
        Some(_) => "none".into(),
        None => "keyspace default".into(),
    }
}

#[derive(Deserialize)]
pub struct KeyActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    overlap_hours: Option<i64>,
}

pub async fn key_action(
    state: St,
    user: User,
    Path((id, action)): Path<(String, String)>,
    UiForm(f): UiForm<KeyActionForm>,
) -> Page {
    user.check_csrf(&f.csrf)?;
    let svc = &state.service;
    let a = &user.actor;
    let action = KeyAction::parse(&action)?;
    // Every action is confirmed: a form without `confirm=yes` gets a page
    // that asks, holding the same fields.
    if f.confirm.as_deref() != Some("yes") {
        let k = svc.get_key(a, &id).await?;
        return Ok(confirm_page(&user, &k, action, &f));
    }
    let done = match action {
        KeyAction::Disable | KeyAction::Enable => {
            let enabled = action == KeyAction::Enable;
            svc.patch_key(a, &id, PatchKey { enabled: Some(enabled), ..Default::default() }).await?;
            if enabled { "enabled" } else { "disabled" }
        }
        KeyAction::Revoke => {
            let req =
                json!({ "reason": f.reason.as_deref().unwrap_or("other"), "note": f.note.as_deref().and_then(opt) });
            let req = serde_json::from_value(req)
                .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, crate::error::sanitize(&e.to_string())))?;
            svc.revoke_and_check(a, &id, req).await?;
            "revoked"
        }
        KeyAction::Rotate => {
            let hours = f.overlap_hours.unwrap_or(24);
            if !(0..=720).contains(&hours) {
                return Err(PageError::new(StatusCode::BAD_REQUEST, "The overlap is 0 to 720 hours."));
            }
            let r = svc.rotate_key(a, &id, RotateKey { overlap_ms: Some(hours * 3600 * 1000) }).await?;
            return Ok(shown_once(&user, "Key rotated", &r.key, &r.view, None));
        }
    };
    Ok(Redirect::to(&format!("/ui/keys/{}?done={done}", urlencode(&id))).into_response())
}

/// What a key's page can do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAction {
    Disable,
    Enable,
    Revoke,
    Rotate,
}

impl KeyAction {
    const ALL: [KeyAction; 4] = [KeyAction::Disable, KeyAction::Enable, KeyAction::Revoke, KeyAction::Rotate];

    fn parse(s: &str) -> Result<KeyAction, PageError> {
        KeyAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "There is no such action."))
    }

    fn as_str(self) -> &'static str {
        match self {
            KeyAction::Disable => "disable",
            KeyAction::Enable => "enable",
            KeyAction::Revoke => "revoke",
            KeyAction::Rotate => "rotate",
        }
    }
}

/// "Do you mean it?" for a key action, with the form's fields carried over.
fn confirm_page(user: &User, k: &KeyView, action: KeyAction, f: &KeyActionForm) -> Response {
    let name = k.name.clone().unwrap_or_else(|| k.id.clone());
    let what = match action {
        KeyAction::Disable => "It verifies DISABLED until it is enabled again.".to_owned(),
        KeyAction::Enable => "It verifies again under its policy.".to_owned(),
        KeyAction::Rotate => format!(
            "A new key is made and shown once; this one keeps working for {} hour(s), then verifies ROTATED.",
            f.overlap_hours.unwrap_or(24)
        ),
        KeyAction::Revoke => "It stops working at once and for good; this cannot be undone.".to_owned(),
    };
    let action = action.as_str();
    let body = html! {
        p.warning role="alert" { (what) }
        form.confirm method="post" action={ "/ui/keys/" (k.id) "/" (action) } {
            (csrf(user))
            input type="hidden" name="confirm" value="yes";
            @if let Some(r) = &f.reason { input type="hidden" name="reason" value=(r); }
            @if let Some(n) = &f.note { input type="hidden" name="note" value=(n); }
            @if let Some(h) = f.overlap_hours { input type="hidden" name="overlap_hours" value=(h); }
            button.danger type="submit" { "Yes, " (action) " " (name) }
            " "
            a href={ "/ui/keys/" (k.id) } { "Cancel" }
        }
    };
    layout(user, Nav::Keys, &format!("{} {name}?", capitalized(action)), false, body)
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn urlencode(s: &str) -> String {
    // `to_string` of one pair is "x=…": the value part, encoded.
    serde_urlencoded::to_string([("x", s)]).unwrap_or_default().split_off(2)
}

// ------------------------------------------------------------ keyspaces ---

pub async fn keyspaces(state: St, user: User) -> Page {
    let list = state.service.list_keyspaces(&user.actor).await?;
    let body = html! {
        @if list.is_empty() { p.empty { "No keyspaces yet: create one with POST /v1/keyspaces or `keyward keyspaces create`." } } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Default scopes" } th scope="col" { "Default TTL" } th scope="col" { "Recoverable" } th scope="col" { "Created" } } }
                tbody {
                    @for ks in &list {
                        tr {
                            td { a href={ "/ui/keys?keyspace_id=" (ks.id) } { (ks.name) } " " small { code { (ks.id) } } }
                            td { code { (ks.prefix) } }
                            td { (ks.default_scopes.join(", ")) }
                            td { (ks.default_ttl_ms.map(|t| format!("{} h", t / 3_600_000)).unwrap_or_else(|| "none".into())) }
                            td { (if ks.recoverable { "yes" } else { "no" }) }
                            td { (ks.created_at) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&user, Nav::Keyspaces, "Keyspaces", false, body))
}

// --------------------------------------------------------------- alerts ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsPageQuery {
    status: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

pub async fn alerts(state: St, user: User, UiQuery(p): UiQuery<AlertsPageQuery>) -> Page {
    let status =
        match p.status.as_deref() {
            None | Some("") => None,
            Some(st) => Some(AlertStatus::parse(st).ok_or_else(|| {
                PageError::new(StatusCode::BAD_REQUEST, "status must be open, acknowledged or resolved")
            })?),
        };
    let q = AlertQuery { status, cursor: p.cursor.clone(), limit: Some(50), ..Default::default() };
    let page = state.service.list_alerts(&user.actor, q).await?;
    let current = p.status.clone().unwrap_or_default();
    let body = html! {
        (notice(&p.done))
        nav.ranges aria-label="Alert status" {
            @for (st, label) in [("", "all"), ("open", "open"), ("acknowledged", "acknowledged"), ("resolved", "resolved")] {
                a href={ "/ui/alerts?status=" (st) } aria-current=[(st == current).then_some("page")] { (label) }
            }
        }
        (alert_table(&user, &page.data, "/ui/alerts"))
        @if let Some(c) = &page.next_cursor { p { a rel="next" href={ "/ui/alerts?status=" (current) "&cursor=" (c) } { "Next page" } } }
    };
    Ok(layout(&user, Nav::Alerts, "Alerts", false, body))
}

/// Usage events as a table: time, outcome, the key (`with_key`), address,
/// request and status (a key's page, an alert's evidence).
fn events_table(events: &[keyward_service::events::EventView], with_key: bool) -> Markup {
    html! {
        table.events {
            thead { tr {
                th scope="col" { "Time" } th scope="col" { "Outcome" }
                @if with_key { th scope="col" { "Key" } }
                th scope="col" { "Address" } th scope="col" { "Request" } th scope="col" { "Status" }
            } }
            tbody {
                @for e in events {
                    tr {
                        td { (e.timestamp) }
                        td { code { (e.code.as_str()) } }
                        @if with_key {
                            td { @if let Some(k) = &e.key_id { a href={ "/ui/keys/" (k) } { (e.key_hint.as_deref().unwrap_or(k)) } } }
                        }
                        td { (e.ip.as_deref().unwrap_or("")) }
                        td { (e.method.as_deref().unwrap_or("")) " " (e.path.as_deref().unwrap_or("")) }
                        td { (e.status.map(|s| s.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

/// One alert and the events that crossed it.
pub async fn alert(state: St, user: User, Path(id): Path<String>) -> Page {
    let d = state.service.get_alert(&user.actor, &id).await?;
    let body = html! {
        (alert_table(&user, std::slice::from_ref(&d.alert), "/ui/alerts"))
        dl.facts {
            div { dt { "First seen" } dd { (d.alert.first_seen) } }
            div { dt { "Findings folded in" } dd { (d.alert.count) } }
            div { dt { "Value / threshold" } dd { (d.alert.value) " / " (d.alert.threshold) } }
            div { dt { "Acknowledged" } dd { (d.alert.acknowledged_at.as_deref().unwrap_or("–")) " " (d.alert.acknowledged_by.as_deref().unwrap_or("")) } }
            div { dt { "Resolved" } dd { (d.alert.resolved_at.as_deref().unwrap_or("–")) " " (d.alert.resolved_by.as_deref().unwrap_or("")) } }
        }
        section aria-labelledby="evidence" {
            h2 #evidence { "The events that crossed it" }
            @if d.events.is_empty() { p.empty { "None in the log (a signal, or past retention)." } } @else {
                (events_table(&d.events, true))
            }
        }
    };
    Ok(layout(&user, Nav::Alerts, &format!("Alert {}", d.alert.id), false, body))
}

#[derive(Deserialize)]
pub struct AlertActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: Option<String>,
}

pub async fn alert_action(
    state: St,
    user: User,
    Path((id, action)): Path<(String, String)>,
    UiForm(f): UiForm<AlertActionForm>,
) -> Page {
    user.check_csrf(&f.csrf)?;
    let resolve = match action.as_str() {
        "ack" => false,
        "resolve" => true,
        _ => return Err(PageError::new(StatusCode::NOT_FOUND, "There is no such action.")),
    };
    state
        .service
        .act_on_alert(&user.actor, &id, resolve, AlertAction { note: Some("from the dashboard".into()) })
        .await?;
    let back = match f.back.as_deref() {
        Some("/ui/") => "/ui/",
        _ => "/ui/alerts",
    };
    let done = if resolve { "resolved" } else { "acknowledged" };
    Ok(Redirect::to(&format!("{back}?done={done}")).into_response())
}

// ------------------------------------------------------------ incidents ---

pub async fn incidents(state: St, user: User, UiQuery(q): UiQuery<ListIncidentsQuery>) -> Page {
    let page = state.service.list_incidents(&user.actor, q).await?;
    let body = html! {
        @if page.data.is_empty() { p.empty { "No incidents." } } @else {
            table {
                thead { tr { th scope="col" { "Title" } th scope="col" { "Status" } th scope="col" { "Keys" } th scope="col" { "Detected" } th scope="col" { "Updated" } } }
                tbody {
                    @for i in &page.data {
                        @let v = serde_json::to_value(i).unwrap_or_default();
                        tr {
                            td { a href={ "/ui/incidents/" (i.id) } { (i.fields.title) } }
                            td { (s(&v["status"])) }
                            td { (i.fields.key_ids.len()) }
                            td { (i.fields.detected_at) }
                            td { (i.updated_at) }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &page.next_cursor { p { a rel="next" href={ "/ui/incidents?cursor=" (c) } { "Next page" } } }
    };
    Ok(layout(&user, Nav::Incidents, "Incidents", false, body))
}

pub async fn incident(state: St, user: User, Path(id): Path<String>) -> Page {
    let v = state.service.get_incident(&user.actor, &id, IncidentQuery { review_days: Some(7) }).await?;
    let report = keyward_service::incidents::markdown(&v);
    let body = html! {
        dl.facts {
            div { dt { "Id" } dd { code { (v.id) } } }
            div { dt { "Detected" } dd { (v.fields.detected_at) } }
            div { dt { "Keys" } dd { @for k in &v.fields.key_ids { a href={ "/ui/keys/" (k) } { (k) } " " } } }
            div { dt { "Impact" } dd { (v.fields.impact) } }
        }
        section aria-labelledby="review" {
            h2 #review { "Usage review, last 7 days" }
            @if let Some(r) = &v.review {
                @for k in &r.keys {
                    h3 { a href={ "/ui/keys/" (k.key_id) } { (k.hint.as_deref().unwrap_or(&k.key_id)) } " · " (k.status.as_deref().unwrap_or("gone")) " · " (k.total) " requests" }
                    div.cols {
                        table { caption { "Addresses" } thead { tr { th scope="col" { "Address" } th.num scope="col" { "Requests" } th scope="col" { "First seen" } th scope="col" { "Last seen" } } }
                            tbody { @for ip in &k.ips { tr { td { code { (ip.ip) } } td.num { (ip.count) } td { (ip.first_seen) } td { (ip.last_seen) } } } } }
                        table { caption { "Endpoints" } thead { tr { th scope="col" { "Request" } th.num scope="col" { "Requests" } } }
                            tbody { @for e in &k.endpoints { tr { td { (e.method) " " (e.path) } td.num { (e.count) } } } } }
                        table { caption { "Outcomes" } thead { tr { th scope="col" { "Outcome" } th.num scope="col" { "Requests" } } }
                            tbody { @for o in &k.outcomes { tr { td { code { (o.code) } } td.num { (o.count) } } } } }
                    }
                }
            }
        }
        section aria-labelledby="report" {
            h2 #report { "Report (Markdown)" }
            pre.report { (report) }
        }
    };
    Ok(layout(&user, Nav::Incidents, &v.fields.title, false, body))
}

// ---------------------------------------------------------------- audit ---

pub async fn audit(state: St, user: User, UiQuery(q): UiQuery<ListAuditQuery>) -> Page {
    let check = state.service.verify_audit(&user.actor).await?;
    let page = state.service.list_audit(&user.actor, q).await?;
    let body = html! {
        @if check.ok {
            p.notice role="status" { "The hash chain holds: all " (check.entries) " entries are intact and in order." }
        } @else {
            p.error role="alert" { "The hash chain is broken at entry " (check.first_bad_seq.map(|s| s.to_string()).unwrap_or_default()) ": the log was changed outside keyward." }
        }
        table.audit {
            thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "From" } } }
            tbody {
                @for e in &page.data {
                    tr {
                        td.num { (e.seq) }
                        td { (e.at) }
                        td { code { (e.actor) } }
                        td { code { (e.action) } }
                        td { (e.target_type) " " code { (e.target_id) } }
                        td { (e.source_ip.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if let Some(c) = &page.next_cursor { p { a rel="next" href={ "/ui/audit?cursor=" (c) } { "Older entries" } } }
    };
    Ok(layout(&user, Nav::Audit, "Audit log", false, body))
}

// ------------------------------------------------------------- webhooks ---

pub async fn webhooks(state: St, user: User) -> Page {
    let list = state.service.list_webhooks(&user.actor).await?;
    let body = html! {
        @if list.is_empty() { p.empty { "No webhooks: add one with POST /v1/webhooks or `keyward webhooks create`." } } @else {
            table {
                thead { tr { th scope="col" { "Endpoint" } th scope="col" { "Events" } th scope="col" { "Format" } th scope="col" { "Description" } th scope="col" { "Created" } } }
                tbody {
                    @for w in &list {
                        tr {
                            td { a href={ "/ui/webhooks/" (w.id) } { (w.url) } }
                            td { (w.events.join(", ")) }
                            td { (w.format) }
                            td { (w.description.as_deref().unwrap_or("")) }
                            td { (w.created_at) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&user, Nav::Webhooks, "Webhooks", false, body))
}

pub async fn webhook(state: St, user: User, Path(id): Path<String>, UiQuery(q): UiQuery<DeliveryQuery>) -> Page {
    let page = state.service.list_deliveries(&user.actor, &id, q).await?;
    let body = html! {
        @if page.data.is_empty() { p.empty { "No deliveries yet." } } @else {
            table {
                thead { tr { th scope="col" { "Created" } th scope="col" { "Event" } th scope="col" { "Status" } th.num scope="col" { "Attempts" } th scope="col" { "Last answer" } th scope="col" { "Next attempt" } } }
                tbody {
                    @for d in &page.data {
                        tr {
                            td { (d.created_at) }
                            td { code { (d.event_type) } }
                            td { (d.status) }
                            td.num { (d.attempts) }
                            td { (d.last_status.map(|s| s.to_string()).unwrap_or_default()) " " (d.last_error.as_deref().unwrap_or("")) }
                            td { (d.next_attempt_at.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &page.next_cursor { p { a rel="next" href={ "/ui/webhooks/" (id) "?cursor=" (c) } { "Next page" } } }
    };
    Ok(layout(&user, Nav::Webhooks, &format!("Deliveries of {id}"), false, body))
}
