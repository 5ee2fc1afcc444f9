//! Workspaces, root keys and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_service::api::{
    AuditPage, AuditVerifyView, CreateRootKey, CreateWorkspace, CreatedRootKey, CreatedWorkspace, ListAuditQuery,
    RootKeyView,
};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

/// Create an isolated workspace; the response holds its first admin root key, shown once.
#[utoipa::path(post, path = "/v1/workspaces", operation_id = "createWorkspace", tag = "admin", request_body = CreateWorkspace,
    responses((status = 201, body = CreatedWorkspace), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create_workspace(
    State(st): State<AppState>,
    Auth(a): Auth,
    Json(req): Json<CreateWorkspace>,
) -> Result<(StatusCode, axum::Json<CreatedWorkspace>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(st.service.create_workspace(&a, req).await?)))
}

/// Create a root key with a role; the key is shown once.
#[utoipa::path(post, path = "/v1/root-keys", operation_id = "createRootKey", tag = "admin", request_body = CreateRootKey,
    responses((status = 201, body = CreatedRootKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create_root_key(
    State(st): State<AppState>,
    Auth(a): Auth,
    Json(req): Json<CreateRootKey>,
) -> Result<(StatusCode, axum::Json<CreatedRootKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(st.service.create_root_key(&a, req).await?)))
}

/// List the workspace's root keys (hints only).
#[utoipa::path(get, path = "/v1/root-keys", operation_id = "listRootKeys", tag = "admin",
    responses((status = 200, body = Vec<RootKeyView>), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list_root_keys(
    State(st): State<AppState>,
    Auth(a): Auth,
) -> Result<axum::Json<Vec<RootKeyView>>, ApiError> {
    Ok(axum::Json(st.service.list_root_keys(&a).await?))
}

/// Revoke a root key at once (not the last admin key).
#[utoipa::path(delete, path = "/v1/root-keys/{id}", operation_id = "deleteRootKey", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = RootKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn delete_root_key(
    State(st): State<AppState>,
    Auth(a): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<RootKeyView>, ApiError> {
    Ok(axum::Json(st.service.revoke_root_key(&a, &id).await?))
}

/// The admin audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", operation_id = "listAudit", tag = "admin", params(ListAuditQuery),
    responses((status = 200, body = AuditPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list_audit(
    State(st): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<ListAuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    Ok(axum::Json(st.service.list_audit(&a, q).await?))
}

/// Recompute the audit log's hash chain and report the first broken link.
#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verifyAudit", tag = "admin",
    responses((status = 200, body = AuditVerifyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn verify_audit(State(st): State<AppState>, Auth(a): Auth) -> Result<axum::Json<AuditVerifyView>, ApiError> {
    Ok(axum::Json(st.service.verify_audit(&a).await?))
}
