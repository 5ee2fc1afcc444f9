//! `/v1/keys`: create, list, read, change, revoke, verify.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keyward_service::api::{
    BulkRevoke, BulkRevoked, CreateKey, CreatedKey, KeyPage, KeyView, ListKeysQuery, ListRemindersQuery, PatchKey,
    ReminderPage, RevealedKey, RevokeKey, RotateKey, RotatedKey, VerifyRequest, VerifyResponse,
};
use keyward_service::import::{ImportKeys, ImportResult};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};
use crate::request_id::RequestId;

/// Create a key. The response holds the key itself, shown this once.
#[utoipa::path(post, path = "/v1/keys", operation_id = "createKey", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.create_key(&actor, req).await?)))
}

/// List keys, filtered, in pages.
#[utoipa::path(get, path = "/v1/keys", operation_id = "listKeys", tag = "keys", params(ListKeysQuery),
    responses((status = 200, body = KeyPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<ListKeysQuery>,
) -> Result<axum::Json<KeyPage>, ApiError> {
    Ok(axum::Json(state.service.list_keys(&actor, query).await?))
}

/// Read one key (never the key itself: its hint).
#[utoipa::path(get, path = "/v1/keys/{id}", operation_id = "getKey", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(state.service.get_key(&actor, &id).await?))
}

/// Change a key's name, owner, meta, expiry or enabled flag. Takes effect on the next verify.
#[utoipa::path(patch, path = "/v1/keys/{id}", operation_id = "patchKey", tag = "keys", params(("id" = String, Path)), request_body = PatchKey,
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<PatchKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(state.service.patch_key(&actor, &id, req).await?))
}

/// Revoke a key, at once and for good; the response carries the revocation health check.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", operation_id = "revokeKey", tag = "keys", params(("id" = String, Path)), request_body = RevokeKey,
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<RevokeKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(state.service.revoke_and_check(&actor, &id, req).await?))
}

/// Rotate a key: a new key (shown once) with the same settings; the old key keeps
/// working, deprecated, for `overlap_ms` (default 24 h), then verifies `ROTATED`.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", operation_id = "rotateKey", tag = "keys", params(("id" = String, Path)), request_body = RotateKey,
    responses((status = 201, body = RotatedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<RotateKey>,
) -> Result<(StatusCode, axum::Json<RotatedKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.rotate_key(&actor, &id, req).await?)))
}

/// Show a key of a recoverable keyspace again (admin; at most 10 a minute per root key;
/// audited). Keyspaces without `recoverable` keep hashes only: 409.
#[utoipa::path(post, path = "/v1/keys/{id}/reveal", operation_id = "revealKey", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = RevealedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn reveal(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<RevealedKey>, ApiError> {
    Ok(axum::Json(state.service.reveal_key(&actor, &id).await?))
}

/// Emergency revocation of every key of an owner, a keyspace and/or created before an
/// instant, as one audited action; `dry_run` reports the count and ids only.
#[utoipa::path(post, path = "/v1/keys/revoke", operation_id = "bulkRevokeKeys", tag = "keys", request_body = BulkRevoke,
    responses((status = 200, body = BulkRevoked), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn bulk_revoke(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<BulkRevoke>,
) -> Result<axum::Json<BulkRevoked>, ApiError> {
    Ok(axum::Json(state.service.bulk_revoke(&actor, req).await?))
}

/// Import keys from another system by their SHA-256 hashes (up to 1000 per call),
/// so their holders keep using them; one audit record per call.
#[utoipa::path(post, path = "/v1/keys/import", operation_id = "importKeys", tag = "keys", request_body = ImportKeys,
    responses((status = 201, body = ImportResult), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn import(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<ImportKeys>,
) -> Result<(StatusCode, axum::Json<ImportResult>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.import_keys(&actor, req).await?)))
}

/// Stored reminders of keys nearing expiry (14, 7 and 1 days before).
#[utoipa::path(get, path = "/v1/reminders", operation_id = "listReminders", tag = "keys", params(ListRemindersQuery),
    responses((status = 200, body = ReminderPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn reminders(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<ListRemindersQuery>,
) -> Result<axum::Json<ReminderPage>, ApiError> {
    Ok(axum::Json(state.service.list_reminders(&actor, query).await?))
}

/// Decide whether a key may make a request. Always 200 for a decision: read `valid` and `code`.
#[utoipa::path(post, path = "/v1/keys/verify", operation_id = "verifyKey", tag = "keys", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Extension(rid): Extension<RequestId>,
    Json(req): Json<VerifyRequest>,
) -> Result<axum::response::Response, ApiError> {
    let (answer, limits) = state.service.verify_request(&actor, &req, &rid.0).await?;
    Ok(verify_answer(answer, limits))
}

/// A verify's 200: the decision, and the key's tightest window as the IETF
/// draft's headers (the body has the same figures in `ratelimit`).
pub(crate) fn verify_answer(
    answer: VerifyResponse,
    limits: Option<keyward_core::policy::RateLimitFields>,
) -> axum::response::Response {
    let mut res = axum::Json(answer).into_response();
    for (name, value) in limits.map(|l| l.headers(false)).unwrap_or_default() {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            res.headers_mut().insert(axum::http::HeaderName::from_static(name), v);
        }
    }
    res
}

/// A key's usage over time, from the rollups: requests by outcome and status class,
/// bytes, distinct addresses, latency percentiles, per minute, hour or day.
#[utoipa::path(get, path = "/v1/keys/{id}/analytics", operation_id = "keyAnalytics", tag = "keys",
    params(("id" = String, Path), keyward_service::analytics::AnalyticsQuery),
    responses((status = 200, body = keyward_service::analytics::Series), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn analytics(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Query(query): Query<keyward_service::analytics::AnalyticsQuery>,
) -> Result<axum::Json<keyward_service::analytics::Series>, ApiError> {
    Ok(axum::Json(state.service.key_analytics(&actor, &id, query).await?))
}
