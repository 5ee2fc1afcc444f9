//! `/v1/alerts`, `/v1/alert-rules` and `/v1/webhooks`: alerts raised by the
//! rules engine, the rules themselves, and the endpoints notified.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_service::alerts::{
    AlertAction, AlertDetail, AlertPage, AlertQuery, AlertView, CreateWebhook, CreatedWebhook, DeliveryPage,
    DeliveryQuery, PutRules, RulesQuery, RulesView, WebhookView,
};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

/// List alerts, newest first.
#[utoipa::path(get, path = "/v1/alerts", operation_id = "listAlerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<AlertQuery>,
) -> Result<axum::Json<AlertPage>, ApiError> {
    Ok(axum::Json(state.service.list_alerts(&actor, query).await?))
}

/// Read one alert, with the usage events that crossed it.
#[utoipa::path(get, path = "/v1/alerts/{id}", operation_id = "getAlert", tag = "alerts", params(("id" = String, Path)),
    responses((status = 200, body = AlertDetail), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<AlertDetail>, ApiError> {
    Ok(axum::Json(state.service.get_alert(&actor, &id).await?))
}

/// Acknowledge an alert: someone is on it (an escalation opens it again).
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", operation_id = "ackAlert", tag = "alerts", params(("id" = String, Path)), request_body = AlertAction,
    responses((status = 200, body = AlertView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn ack(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<AlertAction>,
) -> Result<axum::Json<AlertView>, ApiError> {
    Ok(axum::Json(state.service.act_on_alert(&actor, &id, false, req).await?))
}

/// Resolve an alert.
#[utoipa::path(post, path = "/v1/alerts/{id}/resolve", operation_id = "resolveAlert", tag = "alerts", params(("id" = String, Path)), request_body = AlertAction,
    responses((status = 200, body = AlertView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<AlertAction>,
) -> Result<axum::Json<AlertView>, ApiError> {
    Ok(axum::Json(state.service.act_on_alert(&actor, &id, true, req).await?))
}

/// The alert rules in force for the workspace, a keyspace (`keyspace_id`) or a key (`key_id`).
#[utoipa::path(get, path = "/v1/alert-rules", operation_id = "getAlertRules", tag = "alerts", params(RulesQuery),
    responses((status = 200, body = RulesView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn rules(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<RulesQuery>,
) -> Result<axum::Json<RulesView>, ApiError> {
    Ok(axum::Json(state.service.get_alert_rules(&actor, query).await?))
}

/// Replace one level's rule overrides (workspace, keyspace or key); audited.
#[utoipa::path(put, path = "/v1/alert-rules", operation_id = "putAlertRules", tag = "alerts", request_body = PutRules,
    responses((status = 200, body = RulesView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn put_rules(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<PutRules>,
) -> Result<axum::Json<RulesView>, ApiError> {
    Ok(axum::Json(state.service.put_alert_rules(&actor, req).await?))
}

/// Add a webhook endpoint; the answer holds its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "createWebhook", tag = "alerts", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateWebhook>,
) -> Result<(StatusCode, axum::Json<CreatedWebhook>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.create_webhook(&actor, req).await?)))
}

/// List webhook endpoints (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "listWebhooks", tag = "alerts",
    responses((status = 200, body = Vec<WebhookView>), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> Result<axum::Json<Vec<WebhookView>>, ApiError> {
    Ok(axum::Json(state.service.list_webhooks(&actor).await?))
}

/// Delete a webhook endpoint; its pending deliveries end.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "alerts", params(("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookView>, ApiError> {
    Ok(axum::Json(state.service.delete_webhook(&actor, &id).await?))
}

/// An endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "listDeliveries", tag = "alerts", params(("id" = String, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> Result<axum::Json<DeliveryPage>, ApiError> {
    Ok(axum::Json(state.service.list_deliveries(&actor, &id, query).await?))
}

/// Send a delivery again now (after a fix on the receiving side, or a dead one).
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", operation_id = "redeliver", tag = "alerts",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, description = "queued"), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn redeliver(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.service.redeliver(&actor, &id, &delivery_id).await?;
    Ok(StatusCode::ACCEPTED)
}
