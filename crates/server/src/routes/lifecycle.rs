//! Incidents, leak reports, and GitHub's secret-scanning partner endpoint.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use keyward_service::github::{GithubLabel, GithubToken};
use keyward_service::incidents::{
    CreateIncident, IncidentPage, IncidentQuery, IncidentView, ListIncidentsQuery, PatchIncident,
};
use keyward_service::leaks::{LeakAnswer, LeakReport};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

/// Open an incident: keys, detection time, affected systems, actions, impact.
#[utoipa::path(post, path = "/v1/incidents", operation_id = "createIncident", tag = "incidents", request_body = CreateIncident,
    responses((status = 201, body = IncidentView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create_incident(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateIncident>,
) -> Result<(StatusCode, axum::Json<IncidentView>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(state.service.create_incident(&actor, req).await?)))
}

/// List incidents.
#[utoipa::path(get, path = "/v1/incidents", operation_id = "listIncidents", tag = "incidents", params(ListIncidentsQuery),
    responses((status = 200, body = IncidentPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list_incidents(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<ListIncidentsQuery>,
) -> Result<axum::Json<IncidentPage>, ApiError> {
    Ok(axum::Json(state.service.list_incidents(&actor, query).await?))
}

/// One incident, with a review of its keys' recent usage from the usage events.
#[utoipa::path(get, path = "/v1/incidents/{id}", operation_id = "getIncident", tag = "incidents", params(("id" = String, Path), IncidentQuery),
    responses((status = 200, body = IncidentView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn get_incident(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Query(query): Query<IncidentQuery>,
) -> Result<axum::Json<IncidentView>, ApiError> {
    Ok(axum::Json(state.service.get_incident(&actor, &id, query).await?))
}

/// Update an incident (status, actions taken, impact, notes, …).
#[utoipa::path(patch, path = "/v1/incidents/{id}", operation_id = "patchIncident", tag = "incidents", params(("id" = String, Path)), request_body = PatchIncident,
    responses((status = 200, body = IncidentView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn patch_incident(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<PatchIncident>,
) -> Result<axum::Json<IncidentView>, ApiError> {
    Ok(axum::Json(state.service.patch_incident(&actor, &id, req).await?))
}

/// Report leaked key strings: live keys of this workspace are revoked (reason
/// `leaked`) and put on a new incident. The answer never repeats the strings.
#[utoipa::path(post, path = "/v1/leaks", operation_id = "reportLeaks", tag = "incidents", request_body = LeakReport,
    responses((status = 200, body = LeakAnswer), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn report_leaks(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<LeakReport>,
) -> Result<axum::Json<LeakAnswer>, ApiError> {
    Ok(axum::Json(state.service.report_leaks(&actor, req).await?))
}

/// GitHub secret-scanning partner endpoint. Authenticated by GitHub's ECDSA
/// signature of the body (headers `Github-Public-Key-Identifier` and
/// `Github-Public-Key-Signature`) against public keys from the configuration;
/// each token is handled as a leak report in whatever workspace holds it.
#[utoipa::path(post, path = "/v1/github/secret-scanning", operation_id = "githubSecretScanning", tag = "incidents", request_body = Vec<GithubToken>,
    responses((status = 200, body = Vec<GithubLabel>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn github_secret_scanning(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Vec<GithubLabel>>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let key_id = header("github-public-key-identifier");
    let signature = header("github-public-key-signature");
    Ok(axum::Json(state.service.github_secret_scanning(&state.ops.github_keys, key_id, signature, &body).await?))
}
