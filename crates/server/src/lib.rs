//! keyward's HTTP API. [`api`] builds the whole stack (the router of [`app`]
//! and the verify fast path in front of it, `fast`); routes live in
//! `routes`, one module per resource; [`error::ApiError`] is the only thing
//! that turns failures into responses.
//!
//! Invariants:
//! * Only this crate knows HTTP status codes.
//! * `Authorization` and `X-API-Key` are marked sensitive before any layer
//!   that could log headers, and no error detail echoes them.
//! * Every response carries `X-Request-Id`; every 4xx/5xx of the API is
//!   problem+json (the dashboard's, under `/ui`, are HTML pages).

pub mod error;
pub mod extract;
mod fast;
pub mod listen;
pub mod metrics_catalog;
pub mod request_id;
pub mod routes;
pub mod throttle;
pub mod tls;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::IntoResponse;
use keyward_service::Service;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach: one allocation shared by every request
/// (axum clones the state per request; a clone is one reference count).
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct App {
    pub service: Arc<Service>,
    /// The OpenAPI document, rendered once.
    pub openapi: Arc<String>,
    pub ops: Ops,
    /// Longer request targets are answered 414.
    pub max_uri_bytes: usize,
    /// Metric handles of the HTTP layer, made once per route and status.
    pub http_metrics: request_id::HttpMetrics,
    /// Failed root-key authentications, per source address.
    pub throttle: throttle::AuthThrottle,
    pub auth_failures: metrics::Counter,
    pub auth_throttled: metrics::Counter,
    /// `/metrics` and `/readyz` need a root key.
    pub ops_need_root_key: bool,
    /// The dashboard's sessions.
    pub ui_sessions: ui::session::Sessions,
}

/// Operational parts the binary owns and the server reports on.
#[derive(Clone, Default)]
pub struct Ops {
    /// Renders `/metrics`; `None` answers 404 there.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// GitHub secret-scanning public keys, by identifier.
    pub github_keys: keyward_service::github::GithubKeys,
    /// mTLS for root-key callers (`tls.client_ca`): a root key is taken only
    /// on a connection with a verified client certificate.
    pub client_cert_for_root_keys: bool,
}

/// Limits of the HTTP layer: the `[http]` section of the config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body, bytes. Default 65536 (env `KEYWARD_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Largest body of the bulk calls (key import, leak reports, GitHub
    /// alerts), bytes. Default 8388608.
    pub max_bulk_body_bytes: usize,
    /// A request still running after this long is answered 503, ms. Default 30000.
    pub request_timeout_ms: u64,
    /// A request body that sends nothing for this long is answered 408, ms. Default 10000.
    pub body_read_timeout_ms: u64,
    /// Time allowed for a complete request head, counted from when the server
    /// starts waiting for it: on a kept-alive connection, from the end of the
    /// previous response, so this is also the keep-alive idle timeout, ms. Default 10000.
    pub header_read_timeout_ms: u64,
    /// A connection with no byte read or written for this long is closed, ms. Default 60000.
    pub idle_timeout_ms: u64,
    /// Most open connections. Default 10000 (keep it below the file descriptor limit).
    pub max_connections: usize,
    /// Most open connections from one source address. Default 1000.
    pub max_connections_per_ip: usize,
    /// Longest request target (path and query), bytes; longer is answered 414. Default 8192.
    pub max_uri_bytes: usize,
    /// How long a graceful stop waits for requests in flight, ms. Default 10000.
    pub shutdown_grace_ms: u64,
    /// Failed root-key authentications one address may make within a minute
    /// before it is refused (429) for a minute, doubling up to an hour while
    /// it goes on. Default 20.
    pub root_auth_failures_per_minute: u32,
    /// `/metrics` and `/readyz` answer only with a root key (any role), for a
    /// listener others can reach. Default false. Env `KEYWARD_OPS_NEED_ROOT_KEY`.
    pub ops_need_root_key: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            max_bulk_body_bytes: 8 * 1024 * 1024,
            request_timeout_ms: 30_000,
            body_read_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_uri_bytes: 8192,
            shutdown_grace_ms: 10_000,
            root_auth_failures_per_minute: 20,
            ops_need_root_key: false,
        }
    }
}

impl HttpConfig {
    /// Every problem with these values, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, v) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_bulk_body_bytes", self.max_bulk_body_bytes as u64),
        ] {
            if v == 0 {
                p.push(format!("http.{name}: must be at least 1"));
            }
        }
        if !(1..=10_000).contains(&self.root_auth_failures_per_minute) {
            p.push("http.root_auth_failures_per_minute: must be between 1 and 10000".into());
        }
        if self.max_uri_bytes < 256 {
            p.push("http.max_uri_bytes: must be at least 256".into());
        }
        p
    }
}

/// The body limit of the route, for the `Json` extractor's lingering read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How long a request body may stall, for the `Json` extractor.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

#[derive(OpenApi)]
#[openapi(
    info(title = "keyward", description = "API key management: issue, verify, log, alert, rotate, revoke.", license(name = "Apache-2.0")),
    modifiers(&RootKeyAuth),
    tags(
        (name = "keys", description = "API keys and their verification"),
        (name = "keyspaces", description = "Families of keys with a prefix and defaults"),
        (name = "admin", description = "Workspaces, root keys, audit log"),
        (name = "events", description = "Usage events and usage reports"),
        (name = "incidents", description = "Incidents, leak reports, GitHub secret scanning"),
        (name = "operations", description = "Health and documents"),
    )
)]
struct ApiDoc;

struct RootKeyAuth;

impl Modify for RootKeyAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "root_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A root key, `kw_root_…`")).build(),
            ),
        );
    }
}

/// The routes and the OpenAPI document, built from the same registrations.
fn routes(bulk_body_bytes: usize) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    use routes::{admin, alerts, events, keys, keyspaces, lifecycle, ops};
    // Calls that carry up to 1000 items take larger bodies than the rest.
    let bulk = OpenApiRouter::new()
        .routes(routes!(keys::import))
        .routes(routes!(lifecycle::report_leaks))
        .routes(routes!(lifecycle::github_secret_scanning))
        .layer(DefaultBodyLimit::max(bulk_body_bytes))
        .layer(axum::Extension(BodyLimit(bulk_body_bytes)));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::openapi))
        .routes(routes!(ops::metrics))
        .routes(routes!(events::list))
        .routes(routes!(events::report))
        .routes(routes!(events::top))
        .routes(routes!(keyspaces::create, keyspaces::list))
        .routes(routes!(keyspaces::get, keyspaces::patch))
        .routes(routes!(keyspaces::analytics))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::verify))
        .routes(routes!(keys::get, keys::patch))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::reveal))
        .routes(routes!(keys::bulk_revoke))
        .routes(routes!(keys::reminders))
        .routes(routes!(keys::analytics))
        .routes(routes!(lifecycle::create_incident, lifecycle::list_incidents))
        .routes(routes!(lifecycle::get_incident, lifecycle::patch_incident))
        .routes(routes!(admin::create_workspace))
        .routes(routes!(admin::create_root_key, admin::list_root_keys))
        .routes(routes!(admin::delete_root_key))
        .routes(routes!(admin::rotate_root_key))
        .routes(routes!(admin::list_audit))
        .routes(routes!(admin::verify_audit))
        .routes(routes!(admin::master_key))
        .routes(routes!(admin::rotate_master_key))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::get))
        .routes(routes!(alerts::ack))
        .routes(routes!(alerts::resolve))
        .routes(routes!(alerts::rules, alerts::put_rules))
        .routes(routes!(alerts::create_webhook, alerts::list_webhooks))
        .routes(routes!(alerts::delete_webhook))
        .routes(routes!(alerts::deliveries))
        .routes(routes!(alerts::redeliver))
        .merge(bulk)
        .split_for_parts()
}

/// The OpenAPI document of exactly the routes [`app`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(HttpConfig::default().max_bulk_body_bytes).1
}

/// Builds the service's HTTP stack. Layers run outside-in in this order:
/// 1. sensitive headers: `Authorization`/`X-API-Key` are redacted from any
///    later debug output of the request;
/// 2. request id + span + problem bodies (`request_id::layer`);
/// 3. panic catcher: a handler panic becomes a 500 problem, not a dropped
///    connection;
/// 4. timeout;
/// 5. body limit, enforced by our `Json` extractor;
/// 6. the routes, with problem+json fallbacks for unknown paths.
pub fn app(service: Arc<Service>, http: &HttpConfig, ops: Ops) -> axum::Router {
    api(service, http, ops).router
}

/// What [`listen::serve`] serves: the router, and the verify fast path in
/// front of it (`fast`), which answers `POST /v1/keys/verify` with the same
/// guarantees and without the layers' cost.
pub struct Api {
    router: axum::Router,
    fast: fast::Fast,
}

/// Builds the [`Api`]: [`app`]'s router and the fast path over the same state.
pub fn api(service: Arc<Service>, http: &HttpConfig, ops: Ops) -> Api {
    let (router, api) = routes(http.max_bulk_body_bytes);
    let openapi = Arc::new(api.to_json().expect("the OpenAPI document serializes"));
    let state = AppState(Arc::new(App {
        service,
        openapi,
        ops,
        max_uri_bytes: http.max_uri_bytes,
        http_metrics: request_id::HttpMetrics::default(),
        throttle: throttle::AuthThrottle::new(http.root_auth_failures_per_minute),
        auth_failures: metrics::counter!("keyward_root_auth_failures_total"),
        auth_throttled: metrics::counter!("keyward_root_auth_throttled_total"),
        ops_need_root_key: http.ops_need_root_key,
        ui_sessions: Default::default(),
    }));
    let fast = fast::Fast {
        route: state.http_metrics.route(Some(fast::VERIFY_PATH)),
        state: state.clone(),
        max_body_bytes: http.max_body_bytes,
        body_timeout: Duration::from_millis(http.body_read_timeout_ms),
        request_timeout: Duration::from_millis(http.request_timeout_ms),
    };
    let router = router
        .merge(ui::router())
        .fallback(|| async { StatusCode::NOT_FOUND.into_response() })
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::Extension(BodyLimit(http.max_body_bytes)))
        .layer(axum::Extension(BodyTimeout(Duration::from_millis(http.body_read_timeout_ms))))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(http.request_timeout_ms),
        ))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(state.clone(), request_id::layer))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, HeaderName::from_static("x-api-key")]))
        .with_state(state);
    Api { router, fast }
}

#[cfg(test)]
mod tests;
