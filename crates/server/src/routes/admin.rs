//! Workspaces, root keys and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_service::api::{
    AuditPage, AuditVerifyView, CreateRootKey, CreateWorkspace, CreatedRootKey, CreatedWorkspace, ListAuditQuery,
    RootKeyView, RotateRootKey, RotatedRootKey,
};

use keyward_service::secrets::{MasterKeyRotated, MasterKeyView, RotateMasterKey};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

/// Create an isolated workspace; the response holds its first admin root key, shown once.
#[utoipa::path(post, path = "/v1/workspaces", operation_id = "createWorkspace", tag = "admin", request_body = CreateWorkspace,
    responses((status = 201, body = CreatedWorkspace), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create_workspace(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateWorkspace>,
) -> Result<(StatusCode, axum::Json<CreatedWorkspace>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.create_workspace(&actor, req).await?)))
}

/// Create a root key with a role; the key is shown once.
#[utoipa::path(post, path = "/v1/root-keys", operation_id = "createRootKey", tag = "admin", request_body = CreateRootKey,
    responses((status = 201, body = CreatedRootKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create_root_key(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateRootKey>,
) -> Result<(StatusCode, axum::Json<CreatedRootKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.create_root_key(&actor, req).await?)))
}

/// List the workspace's root keys (hints only).
#[utoipa::path(get, path = "/v1/root-keys", operation_id = "listRootKeys", tag = "admin",
    responses((status = 200, body = Vec<RootKeyView>), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list_root_keys(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> Result<axum::Json<Vec<RootKeyView>>, ApiError> {
    Ok(axum::Json(state.service.list_root_keys(&actor).await?))
}

/// Revoke a root key at once (not the last admin key).
#[utoipa::path(delete, path = "/v1/root-keys/{id}", operation_id = "deleteRootKey", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = RootKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn delete_root_key(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<RootKeyView>, ApiError> {
    Ok(axum::Json(state.service.revoke_root_key(&actor, &id).await?))
}

/// Rotate a root key: a new secret (shown once) with the same name and role; the old one
/// stops now or after `overlap_ms`.
#[utoipa::path(post, path = "/v1/root-keys/{id}/rotate", operation_id = "rotateRootKey", tag = "admin", params(("id" = String, Path)), request_body = RotateRootKey,
    responses((status = 201, body = RotatedRootKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn rotate_root_key(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<RotateRootKey>,
) -> Result<(StatusCode, axum::Json<RotatedRootKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.rotate_root_key(&actor, &id, req).await?)))
}

/// The admin audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", operation_id = "listAudit", tag = "admin", params(ListAuditQuery),
    responses((status = 200, body = AuditPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list_audit(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<ListAuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    Ok(axum::Json(state.service.list_audit(&actor, query).await?))
}

/// Recompute the audit log's hash chain and report the first broken link.
#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verifyAudit", tag = "admin",
    responses((status = 200, body = AuditVerifyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn verify_audit(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> Result<axum::Json<AuditVerifyView>, ApiError> {
    Ok(axum::Json(state.service.verify_audit(&actor).await?))
}

/// Whether the data dir is encrypted at rest, and the id of its master key (admin).
#[utoipa::path(get, path = "/v1/master-key", operation_id = "getMasterKey", tag = "admin",
    responses((status = 200, body = MasterKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn master_key(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> Result<axum::Json<MasterKeyView>, ApiError> {
    Ok(axum::Json(state.service.master_key(&actor)?))
}

/// Re-wrap every data key under a new master key, online (admin; audited).
#[utoipa::path(post, path = "/v1/master-key/rotate", operation_id = "rotateMasterKey", tag = "admin", request_body = RotateMasterKey,
    responses((status = 200, body = MasterKeyRotated), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn rotate_master_key(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<RotateMasterKey>,
) -> Result<axum::Json<MasterKeyRotated>, ApiError> {
    Ok(axum::Json(state.service.rotate_master_key(&actor, req).await?))
}
