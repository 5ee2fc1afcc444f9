//! `/v1/keyspaces`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_service::api::{CreateKeyspace, KeyspaceView, PatchKeyspace};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

/// Create a keyspace: a prefix and defaults for a family of keys.
#[utoipa::path(post, path = "/v1/keyspaces", operation_id = "createKeyspace", tag = "keyspaces", request_body = CreateKeyspace,
    responses((status = 201, body = KeyspaceView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateKeyspace>,
) -> Result<(StatusCode, axum::Json<KeyspaceView>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.create_keyspace(&actor, req).await?)))
}

/// List the keyspaces of the caller's workspace.
#[utoipa::path(get, path = "/v1/keyspaces", operation_id = "listKeyspaces", tag = "keyspaces",
    responses((status = 200, body = Vec<KeyspaceView>), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list(State(state): State<AppState>, Auth(actor): Auth) -> Result<axum::Json<Vec<KeyspaceView>>, ApiError> {
    Ok(axum::Json(state.service.list_keyspaces(&actor).await?))
}

/// Read one keyspace.
#[utoipa::path(get, path = "/v1/keyspaces/{id}", operation_id = "getKeyspace", tag = "keyspaces", params(("id" = String, Path)),
    responses((status = 200, body = KeyspaceView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyspaceView>, ApiError> {
    Ok(axum::Json(state.service.get_keyspace(&actor, &id).await?))
}

/// Change a keyspace's name, prefix (for new keys) or defaults.
#[utoipa::path(patch, path = "/v1/keyspaces/{id}", operation_id = "patchKeyspace", tag = "keyspaces", params(("id" = String, Path)), request_body = PatchKeyspace,
    responses((status = 200, body = KeyspaceView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<PatchKeyspace>,
) -> Result<axum::Json<KeyspaceView>, ApiError> {
    Ok(axum::Json(state.service.patch_keyspace(&actor, &id, req).await?))
}

/// A keyspace's usage over time, from the rollups (as for a key).
#[utoipa::path(get, path = "/v1/keyspaces/{id}/analytics", operation_id = "keyspaceAnalytics", tag = "keyspaces",
    params(("id" = String, Path), keyward_service::analytics::AnalyticsQuery),
    responses((status = 200, body = keyward_service::analytics::Series), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn analytics(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Query(query): Query<keyward_service::analytics::AnalyticsQuery>,
) -> Result<axum::Json<keyward_service::analytics::Series>, ApiError> {
    Ok(axum::Json(state.service.keyspace_analytics(&actor, &id, query).await?))
}
