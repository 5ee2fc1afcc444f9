//! `/v1/keys`: create, list, read, change, revoke, verify.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::time::to_rfc3339;
use keyward_core::{Outcome, Permission};
use keyward_service::VerifyInput;
use keyward_service::api::{CreateKey, CreatedKey, KeyPage, KeyView, ListKeysQuery, PatchKey, RevokeKey, VerifyRequest, VerifyResponse};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

/// Create a key. The response holds the key itself, shown this once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = "4XX", body = Problem)), security(("root_key" = [])))]
pub async fn create(State(st): State<AppState>, Auth(a): Auth, Json(req): Json<CreateKey>) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(st.service.create_key(&a, req).await?)))
}

/// List keys, filtered, in pages.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(ListKeysQuery),
    responses((status = 200, body = KeyPage), (status = "4XX", body = Problem)), security(("root_key" = [])))]
pub async fn list(State(st): State<AppState>, Auth(a): Auth, Query(q): Query<ListKeysQuery>) -> Result<axum::Json<KeyPage>, ApiError> {
    Ok(axum::Json(st.service.list_keys(&a, q).await?))
}

/// Read one key (never the key itself: its hint).
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem)), security(("root_key" = [])))]
pub async fn get(State(st): State<AppState>, Auth(a): Auth, Path(id): Path<String>) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(st.service.get_key(&a, &id).await?))
}

/// Change a key's name, owner, meta, expiry or enabled flag. Takes effect on the next verify.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)), request_body = PatchKey,
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem)), security(("root_key" = [])))]
pub async fn patch(State(st): State<AppState>, Auth(a): Auth, Path(id): Path<String>, Json(req): Json<PatchKey>) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(st.service.patch_key(&a, &id, req).await?))
}

/// Revoke a key, at once and for good.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys", params(("id" = String, Path)), request_body = RevokeKey,
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem)), security(("root_key" = [])))]
pub async fn revoke(State(st): State<AppState>, Auth(a): Auth, Path(id): Path<String>, Json(req): Json<RevokeKey>) -> Result<axum::Json<KeyView>, ApiError> {
    Ok(axum::Json(st.service.revoke_key(&a, &id, req).await?))
}

/// Decide whether a key may make a request. Always 200 for a decision: read `valid` and `code`.
#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = "4XX", body = Problem)), security(("root_key" = [])))]
pub async fn verify(State(st): State<AppState>, Auth(a): Auth, Json(req): Json<VerifyRequest>) -> Result<axum::Json<VerifyResponse>, ApiError> {
    a.require(Permission::Verify, "verify keys")?;
    let ip = match req.ip.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<IpAddr>().map_err(|_| ApiError::bad_request("ip is not an IPv4 or IPv6 address"))?),
    };
    if req.cost == Some(0) {
        return Err(ApiError::bad_request("cost must be at least 1"));
    }
    let d = st.service.verify(&a.workspace_id, &VerifyInput { key: &req.key, ip }).await?;
    let mut outcome = d.outcome;
    // Keys carry no scopes yet: a request that needs any scope is refused.
    if outcome.is_valid() && req.scopes.as_ref().is_some_and(|s| !s.is_empty()) {
        outcome = Outcome::Forbidden;
    }
    let k = d.key.as_ref().map(|k| &k.record);
    Ok(axum::Json(VerifyResponse {
        valid: outcome.is_valid(),
        code: outcome,
        key_id: k.map(|k| k.id.clone()),
        keyspace_id: k.map(|k| k.keyspace_id.clone()),
        owner_id: k.and_then(|k| k.owner_id.clone()),
        name: k.and_then(|k| k.name.clone()),
        scopes: Vec::new(),
        meta: k.map(|k| k.meta.clone()),
        expires_at: k.and_then(|k| k.expires_at.map(to_rfc3339)),
        remaining: None,
        ratelimit: None,
        deprecated: false,
    }))
}
