//! `/v1/keys`: create, list, read, change, revoke, verify.

use std::net::IpAddr;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::Permission;
use keyward_core::time::to_rfc3339;
use keyward_service::api::{
    BulkRevoke, BulkRevoked, CreateKey, CreatedKey, KeyPage, KeyView, ListKeysQuery, ListRemindersQuery, PatchKey,
    RateLimitState, ReminderPage, RevokeKey, RotateKey, RotatedKey, VerifyRequest, VerifyResponse,
};
use keyward_service::import::{ImportKeys, ImportResult};
use keyward_service::{RequestCtx, VerifyInput};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};
use crate::request_id::RequestId;

/// Create a key. The response holds the key itself, shown this once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create(
    State(st): State<AppState>,
    Auth(a): Auth,
    Json(req): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(st.service.create_key(&a, req).await?)))
}

/// List keys, filtered, in pages.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(ListKeysQuery),
    responses((status = 200, body = KeyPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<ListKeysQuery>,
) -> Result<axum::Json<KeyPage>, ApiError> {
    Ok(axum::Json(st.service.list_keys(&a, q).await?))
}

/// Read one key (never the key itself: its hint).
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn get(
    State(st): State<AppState>,
    Auth(a): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(st.service.get_key(&a, &id).await?))
}

/// Change a key's name, owner, meta, expiry or enabled flag. Takes effect on the next verify.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)), request_body = PatchKey,
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn patch(
    State(st): State<AppState>,
    Auth(a): Auth,
    Path(id): Path<String>,
    Json(req): Json<PatchKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(st.service.patch_key(&a, &id, req).await?))
}

/// Revoke a key, at once and for good; the response carries the revocation health check.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys", params(("id" = String, Path)), request_body = RevokeKey,
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn revoke(
    State(st): State<AppState>,
    Auth(a): Auth,
    Path(id): Path<String>,
    Json(req): Json<RevokeKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(st.service.revoke_and_check(&a, &id, req).await?))
}

/// Rotate a key: a new key (shown once) with the same settings; the old key keeps
/// working, deprecated, for `overlap_ms` (default 24 h), then verifies `ROTATED`.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path)), request_body = RotateKey,
    responses((status = 201, body = RotatedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn rotate(
    State(st): State<AppState>,
    Auth(a): Auth,
    Path(id): Path<String>,
    Json(req): Json<RotateKey>,
) -> Result<(StatusCode, axum::Json<RotatedKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(st.service.rotate_key(&a, &id, req).await?)))
}

/// Emergency revocation of every key of an owner, a keyspace and/or created before an
/// instant, as one audited action; `dry_run` reports the count and ids only.
#[utoipa::path(post, path = "/v1/keys/revoke", tag = "keys", request_body = BulkRevoke,
    responses((status = 200, body = BulkRevoked), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn bulk_revoke(
    State(st): State<AppState>,
    Auth(a): Auth,
    Json(req): Json<BulkRevoke>,
) -> Result<axum::Json<BulkRevoked>, ApiError> {
    Ok(axum::Json(st.service.bulk_revoke(&a, req).await?))
}

/// Import keys from another system by their SHA-256 hashes (up to 1000 per call),
/// so their holders keep using them; one audit record per call.
#[utoipa::path(post, path = "/v1/keys/import", tag = "keys", request_body = ImportKeys,
    responses((status = 201, body = ImportResult), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn import(
    State(st): State<AppState>,
    Auth(a): Auth,
    Json(req): Json<ImportKeys>,
) -> Result<(StatusCode, axum::Json<ImportResult>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(st.service.import_keys(&a, req).await?)))
}

/// Stored reminders of keys nearing expiry (14, 7 and 1 days before).
#[utoipa::path(get, path = "/v1/reminders", tag = "keys", params(ListRemindersQuery),
    responses((status = 200, body = ReminderPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn reminders(
    State(st): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<ListRemindersQuery>,
) -> Result<axum::Json<ReminderPage>, ApiError> {
    Ok(axum::Json(st.service.list_reminders(&a, q).await?))
}

/// Decide whether a key may make a request. Always 200 for a decision: read `valid` and `code`.
#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn verify(
    State(st): State<AppState>,
    Auth(a): Auth,
    Extension(rid): Extension<RequestId>,
    Json(req): Json<VerifyRequest>,
) -> Result<axum::Json<VerifyResponse>, ApiError> {
    a.require(Permission::Verify, "verify keys")?;
    let ip = match req.ip.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<IpAddr>().map_err(|_| ApiError::bad_request("ip is not an IPv4 or IPv6 address"))?),
    };
    if let Some(m) = &req.method
        && (m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(ApiError::bad_request("method must be an HTTP method such as GET or POST"));
    }
    if let Some(p) = &req.path
        && (!p.starts_with('/') || p.len() > 4096)
    {
        return Err(ApiError::bad_request("path must start with / and be at most 4096 characters"));
    }
    let scopes = req.scopes.unwrap_or_default();
    if scopes.len() > keyward_core::policy::MAX_SCOPES || !scopes.iter().all(|s| keyward_core::policy::valid_scope(s)) {
        return Err(ApiError::bad_request("scopes must be at most 64 scopes such as read or invoices:write"));
    }
    let input = VerifyInput {
        key: &req.key,
        ip,
        method: req.method.as_deref(),
        path: req.path.as_deref(),
        scopes: &scopes,
        cost: u64::from(req.cost.unwrap_or(1)),
    };
    let ctx = RequestCtx { request_id: &rid.0, user_agent: req.user_agent.as_deref() };
    let d = st.service.verify(&a.workspace_id, &input, &ctx).await?;
    let outcome = d.outcome;
    let deprecated_until = d.deprecated_until();
    let k = d.key.as_ref().map(|k| &k.record);
    Ok(axum::Json(VerifyResponse {
        valid: outcome.is_valid(),
        code: outcome,
        key_id: k.map(|k| k.id.clone()),
        keyspace_id: k.map(|k| k.keyspace_id.clone()),
        owner_id: k.and_then(|k| k.owner_id.clone()),
        name: k.and_then(|k| k.name.clone()),
        scopes: k.map(|k| k.scopes.clone()).unwrap_or_default(),
        meta: k.map(|k| k.meta.clone()),
        expires_at: k.and_then(|k| k.expires_at.map(to_rfc3339)),
        remaining: d.remaining,
        ratelimit: d.window.map(|w| RateLimitState {
            limit: w.limit,
            remaining: w.remaining,
            reset: to_rfc3339(w.reset),
        }),
        deprecated: deprecated_until.is_some(),
        deprecated_until: deprecated_until.map(to_rfc3339),
        message: d.message,
    }))
}
