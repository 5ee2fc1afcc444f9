//! Operational routes: liveness, readiness, the OpenAPI document.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Auth;

/// With `http.ops_need_root_key`, an operational route answers only a caller
/// with a root key (any role); otherwise anyone.
fn guard(state: &AppState, auth: Result<Auth, ApiError>) -> Result<(), ApiError> {
    match auth {
        Err(e) if state.ops_need_root_key => Err(e),
        _ => Ok(()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Readiness, with the state of the event pipeline and of each sink. A
/// failing sink does not make the node unready (its events wait in the log),
/// but it shows here and in `/metrics`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub events: Option<PipelineView>,
    /// Every key use (last-use mark, quota) before this instant is durable.
    pub usage_durable_through: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub sinks: Vec<keyward_service::SinkHealth>,
    /// The rules engine, when alerting is on.
    pub alerts: Option<MonitorView>,
    /// On a node of a cluster: how far behind the other nodes' changes it may be.
    pub cluster: Option<ClusterView>,
    /// When Redis holds the limits: whether it answers.
    pub limits: Option<LimitsView>,
}

/// A cluster node's view of the change feed.
#[derive(Serialize, ToSchema)]
pub struct ClusterView {
    /// Milliseconds since the feed was last read in full.
    pub lag_ms: i64,
}

/// The shared limiter.
#[derive(Serialize, ToSchema)]
pub struct LimitsView {
    pub backend: &'static str,
    pub up: bool,
    /// `closed` (verifications refused while Redis is away) or `local`.
    #[schema(value_type = String)]
    pub on_unavailable: keyward_service::cluster::OnUnavailable,
}

/// What the rules engine has done since the start.
#[derive(Serialize, ToSchema)]
pub struct MonitorView {
    /// Usage events evaluated.
    pub events: u64,
    /// Events and signals it could not take in time (its queue was full).
    pub dropped: u64,
    /// Alert changes written.
    pub changes: u64,
    pub write_errors: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineView {
    pub enqueued: u64,
    pub written: u64,
    pub dropped: u64,
    pub write_errors: u64,
    /// Every event enqueued before this instant is durable.
    pub durable_through: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Response {
    // A trailing newline, so `curl /healthz` leaves the prompt on its own line.
    let body = serde_json::to_string(&Health { status: "ok" }).unwrap_or_default() + "\n";
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Readiness: the store answers; also reports the event pipeline and sinks.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>, auth: Result<Auth, ApiError>) -> Response {
    if let Err(refused) = guard(&state, auth) {
        return refused.into_response();
    }
    if !state.service.ready().await {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "the store is not answering")
            .into_response();
    }
    let limits = state.service.check_limits().await;
    if let Some((false, keyward_service::cluster::OnUnavailable::Closed)) = limits {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Redis, which holds the cluster's rate limits, is not answering: verifications are refused (redis.on_unavailable = closed)",
        )
        .into_response();
    }
    if let Err(e) = state.service.check_fresh_now() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", e.to_string()).into_response();
    }
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(pipeline) = state.service.events()
        && pipeline.stats().failing.load(Relaxed)
    {
        let detail = if pipeline.stats().disk_full.load(Relaxed) {
            "usage events cannot be written: the disk is full; free space in the data dir"
        } else {
            "usage events cannot be written; see the server log"
        };
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", detail).into_response();
    }
    let events = state.service.events().map(|pipeline| {
        let stats = pipeline.stats();
        PipelineView {
            enqueued: stats.enqueued.load(Relaxed),
            written: stats.written.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            write_errors: stats.write_errors.load(Relaxed),
            durable_through: Some(stats.durable_through_ms.load(Relaxed))
                .filter(|at| *at > 0)
                .map(keyward_core::time::to_rfc3339),
        }
    });
    let usage_durable_through =
        Some(state.service.usage_durable_through()).filter(|at| *at > 0).map(keyward_core::time::to_rfc3339);
    let sinks = state.service.sink_health();
    let alerts = state.service.monitor().map(|m| {
        let stats = m.stats();
        MonitorView {
            events: stats.events.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            changes: stats.changes.load(Relaxed),
            write_errors: stats.write_errors.load(Relaxed),
        }
    });
    let cluster = state.service.cluster_lag_ms().map(|lag_ms| ClusterView { lag_ms });
    let limits = limits.map(|(up, on_unavailable)| LimitsView { backend: "redis", up, on_unavailable });
    axum::Json(Readiness { status: "ready", events, usage_durable_through, sinks, alerts, cluster, limits })
        .into_response()
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>, auth: Result<Auth, ApiError>) -> Response {
    if let Err(refused) = guard(&state, auth) {
        return refused.into_response();
    }
    let Some(handle) = &state.ops.metrics else {
        return ApiError::new(StatusCode::NOT_FOUND, "not-found", "metrics are not enabled on this server")
            .into_response();
    };
    if let Some(pipeline) = state.service.events() {
        use std::sync::atomic::Ordering::Relaxed;
        metrics::gauge!("keyward_events_last_id").set(pipeline.stats().last_id.load(Relaxed) as f64);
    }
    metrics::gauge!("keyward_keys_cached").set(state.service.index().len() as f64);
    metrics::gauge!("keyward_negative_cache_entries").set(state.service.negative_cache().len() as f64);
    let mut text = handle.render();
    text.push_str(&state.http_metrics.render_latency());
    text.push_str(&state.service.render_metrics().await);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], state.openapi.as_ref().clone()).into_response()
}
